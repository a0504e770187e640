# End-to-end delivery tests (lossless resume, warm-up, gap repair, drain, stress, WebSocket,
# trust, authentication, limits) with
# real sser processes on loopback, and headless Chromium for the browser tests.

.PHONY: chromium
chromium: ## Install headless Chromium from Debian for the browser test (no-op when present; needs root).
	hack/install-chromium.sh

.PHONY: e2e-lossless
e2e-lossless: ## Lossless end-to-end tests: resume anywhere, warm-up, gap repair, rolling restart, drain, WebSocket, browser (EventSource, WebSocket, playground, status page).
	SSER_CHROMIUM="$${SSER_CHROMIUM:-$$(hack/install-chromium.sh | tail -n1)}" \
	$(GO) test -race -count=1 -timeout 15m -v ./e2e/lossless/...
