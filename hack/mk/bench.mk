# Benchmarks. `make bench` compares sser with other Go SSE servers on
# loopback (bench/, a module of its own); `make bench-micro` runs the
# library's micro-benchmarks.

.PHONY: bench
bench: ## Compare sser, a floor, r3labs/sse and go-sse on loopback (ROUNDS=, EVENTS=, LAT2_RATE=, IDLE=, STORM=, BASE=<rev>, OUT=).
	bench/compare.sh

.PHONY: bench-soak
bench-soak: ## Soak one replica: 15,000 subscribers at 10 events/s for 60 s, RSS sampled (SUBS=, RATE=, SOAK_SECONDS=, BASE=<rev>, OUT=).
	bench/soak.sh

.PHONY: bench-mesh
bench-mesh: ## Measure meshes of real sser processes on loopback (ROUNDS=, MESH_NS="3 10 20 40", BASE=<rev>, OUT=).
	bench/mesh.sh

.PHONY: bench-micro
bench-micro: ## Run the pkg/sser micro-benchmarks (-benchmem -count=5).
	$(GO) test -run '^$$' -bench . -benchmem -count=5 ./pkg/sser/

.PHONY: bench-test
bench-test: ## Vet and test the bench module (a quick run of every engine and a two-replica ssemesh run; about 20s).
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 ./...
