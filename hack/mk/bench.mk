# Benchmarks. `make bench` compares sser with other Go SSE servers on
# loopback (bench/, a module of its own); `make bench-micro` runs the
# library's micro-benchmarks.

.PHONY: bench
bench: ## Compare sser, r3labs/sse and go-sse on loopback (about 4 minutes; ROUNDS=, EVENTS=, OUT=).
	bench/compare.sh

.PHONY: bench-micro
bench-micro: ## Run the pkg/sser micro-benchmarks (-benchmem -count=5).
	$(GO) test -run '^$$' -bench . -benchmem -count=5 ./pkg/sser/

.PHONY: bench-test
bench-test: ## Vet and test the bench module (a quick run of every engine; about 10s).
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 ./...
