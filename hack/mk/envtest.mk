# Real control plane for tests: kube-apiserver and kube-controller-manager built
# from the Go module proxy, etcd from Debian (hack/envtest-assets.sh).

# KUBEBUILDER_ASSETS for the recipes below; built on first use, cached outside
# the repository in $${SSER_TOOLS_DIR:-$$HOME/.cache/sser-tools}.
ENVTEST_ASSETS = set -o pipefail; assets=$$(hack/envtest-assets.sh | tail -n1)

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver, kube-controller-manager and install etcd for envtest; prints the KUBEBUILDER_ASSETS dir.
	@hack/envtest-assets.sh

.PHONY: test-envtest
test-envtest: ## Run the peer finder tests against a real kube-apiserver and etcd.
	@$(ENVTEST_ASSETS) && KUBEBUILDER_ASSETS=$$assets $(GO) test -race -count=1 ./pkg/peerfinder/...

.PHONY: e2e
e2e: ## Run the end-to-end tests: several sser processes discovering each other through a real kube-apiserver.
	@$(ENVTEST_ASSETS) && KUBEBUILDER_ASSETS=$$assets $(GO) test -race -count=1 -timeout 20m ./e2e/...
