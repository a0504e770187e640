# sser Makefile. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN_DIR ?= bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_.-]+:.*##/ {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the sser binary into bin/.
	CGO_ENABLED=0 $(GO) build -o $(BIN_DIR)/sser ./cmd/sser

.PHONY: run
run: ## Run one replica locally (no cluster needed).
	$(GO) run ./cmd/sser

.PHONY: local-cluster
local-cluster: ## Run 3 replicas on 127.0.0.2-4 with static peers (no cluster needed); Ctrl-C stops them.
	hack/local-cluster.sh 3

.PHONY: unit
unit: ## Run the Go tests that need no real control plane (race detector on).
	$(GO) test -race ./...

.PHONY: test
test: ## Run every test, real kube-apiserver/etcd/helm included (installs what it needs).
	hack/test.sh

.PHONY: fmt
fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: lint
lint: ## gofmt, go vet and go mod tidy must be clean.
	hack/verify-go.sh

.PHONY: verify
verify: lint ## Everything `lint` checks, plus generated files and chart lint.

# Each part of the project adds its own targets here (envtest, chart, e2e, bench).
include $(sort $(wildcard hack/mk/*.mk))
