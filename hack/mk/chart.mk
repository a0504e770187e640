# Helm chart, plain manifests and their tests (charts/sser, manifests/, examples/).

.PHONY: helm
helm: ## Build helm from the Go module proxy into the tools cache (no-op when present).
	hack/install-helm.sh

.PHONY: helm-lint
helm-lint: ## helm lint --strict the chart with its default and ci/ values.
	@helm="$${SSER_HELM:-$$(hack/install-helm.sh | tail -n1)}"; \
	set -e; \
	for f in charts/sser/ci/*-values.yaml examples/sidecar/values.yaml; do \
	  echo "helm lint --strict -f $$f"; \
	  "$$helm" lint --strict charts/sser -f "$$f"; \
	done

.PHONY: manifests
manifests: ## Regenerate manifests/base and manifests/components from the chart.
	hack/gen-manifests.sh

.PHONY: verify-manifests
verify-manifests: ## Fail when manifests/ is stale against the chart.
	hack/verify-manifests.sh

.PHONY: chart-docs
chart-docs: ## Regenerate the values table in charts/sser/README.md from values.yaml's comments.
	$(GO) run ./hack/chartdocs -chart charts/sser

.PHONY: verify-chart-docs
verify-chart-docs: ## Fail when the values table in charts/sser/README.md is stale.
	$(GO) run ./hack/chartdocs -chart charts/sser -check

verify: helm-lint verify-manifests verify-chart-docs

.PHONY: test-crds
test-crds: ## Fetch the ServiceMonitor, PodMonitor, PrometheusRule and HTTPRoute CRDs from the Go module proxy; prints their directory.
	@hack/test-crds.sh

.PHONY: promtool
promtool: ## Build Prometheus's promtool from the Go module proxy into the tools cache (no-op when present).
	hack/install-promtool.sh

.PHONY: test-chart
test-chart: ## Chart tests: lint, templates, schema, alert rules (promtool), the helm test script on real replicas, server-side dry-run (CRDs included), RBAC on envtest.
	SSER_HELM="$${SSER_HELM:-$$(hack/install-helm.sh | tail -n1)}" \
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/envtest-assets.sh | tail -n1)}" \
	SSER_TEST_CRDS="$${SSER_TEST_CRDS:-$$(hack/test-crds.sh | tail -n1)}" \
	SSER_PROMTOOL="$${SSER_PROMTOOL:-$$(hack/install-promtool.sh | tail -n1)}" \
	SSER_BIN="$${SSER_BIN:-$$(mkdir -p .cache && $(GO) build -o .cache/sser-chart ./cmd/sser && echo $$PWD/.cache/sser-chart)}" \
	$(GO) test -race -count=1 ./test/chart/...

.PHONY: e2e-helm
e2e-helm: ## helm install end to end: real API server, controllers, node agent, sser processes.
	SSER_HELM="$${SSER_HELM:-$$(hack/install-helm.sh | tail -n1)}" \
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/envtest-assets.sh | tail -n1)}" \
	$(GO) test -race -count=1 -timeout 20m ./e2e/helm/...
