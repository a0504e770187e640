// Package lossless proves sser's delivery promises end to end with real sser
// processes on loopback, no cluster: ids that resume exactly on any replica,
// history warm-up, gap repair, duplicate suppression, the graceful drain,
// no silent loss under bursts, slow, paused and killed peers, and a peer port
// that forged or abusive requests cannot break.
//
// Each replica is the real binary (internal/testproc) on its own address in
// 127.0.55.0/24 with the same ports and a static peer list, as pods behind a
// Service are. Subscribers reach them through a small in-test load balancer
// that, like a Service, sends each new connection to a replica whose /readyz
// answers 200, so a client that loses its replica reconnects elsewhere.
// Subscribers are the project's Go clients (pkg/client for SSE, pkg/wsclient
// for WebSocket) and headless Chromium: its EventSource and WebSocket, and
// the playground (the demo page) and the status page, driven over the
// DevTools protocol (chromedp), which read the page's DOM and take
// screenshots (saved in the test's temporary directory, and in
// $SSER_ARTIFACTS when set).
//
// The browser tests need Chromium (hack/install-chromium.sh installs
// Debian's package; SSER_CHROMIUM names another); without it they skip, or
// fail when SSER_REQUIRE_REAL=1. Every other test needs only the Go
// toolchain.
package lossless
