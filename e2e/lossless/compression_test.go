package lossless

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// curl --compressed -N reads a replica's gzip stream event by event: each
// event shows in curl's output before the next is published (the stream is
// flushed per write), multi-line data included, and when the replica ends
// the connection (maximum connection time) the gzip stream is whole: curl
// exits 0, where a bad checksum or a truncated stream would make it fail.
func TestCurlReadsCompressedStream(t *testing.T) {
	skipShort(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not found")
	}
	c := newCluster(t, 1, "--compression=gzip", "--max-connection-time=5s")
	c.startAll()
	headers := filepath.Join(t.TempDir(), "headers")
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "--compressed", "-N", "-sS", "-D", headers, c.eventsURL(0))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, deadline, "curl to get the connect preamble", func() bool { return strings.Contains(out.String(), "id: ") })

	msgs := []string{`{"sym":"ACME","px":12.51}`, "first line\nsecond line", `{"sym":"ACME","px":12.52}`, "a\n\nb"}
	for _, m := range msgs {
		publishOn(t, c, 0, m)
		want := "data: " + strings.ReplaceAll(m, "\n", "\ndata: ") + "\n\n"
		waitFor(t, deadline, "curl to show "+strings.ReplaceAll(m, "\n", `\n`), func() bool { return strings.Contains(out.String(), want) },
			func() string { return "curl output so far:\n" + out.String() })
	}
	h, err := os.ReadFile(headers)
	if err != nil {
		t.Fatal(err)
	}
	lower := strings.ToLower(string(h))
	if !strings.Contains(lower, "content-encoding: gzip") || !strings.Contains(lower, "vary: accept-encoding") {
		t.Errorf("response headers lack Content-Encoding: gzip or Vary: Accept-Encoding:\n%s", h)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Errorf("curl exited %d when the replica ended the stream (a broken gzip stream?): %s", ee.ExitCode(), out.String())
		} else if err != nil {
			t.Errorf("curl: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("the replica did not end the connection at its maximum connection time")
	}
	if n := c.metric(0, "sser_connections_compressed_total"); n != 1 {
		t.Errorf("sser_connections_compressed_total = %v, want 1", n)
	}
}

// A browser's EventSource reads gzip streams (Chromium always asks for
// gzip) through a drain: its replica ends the stream, it reconnects to the
// other with Last-Event-ID, and shows every event once, in order.
func TestBrowserEventSourceReadsGzip(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	c := newCluster(t, 2, "--retry=300ms", "--compression=gzip")
	c.startAll()
	b, blog := browserRun(t, bin, c, browserPage)
	drained, other, msgs, opens := drainUnderBrowser(t, c, b, blog, 40)
	if n := c.metric(other, "sser_connections_compressed_total"); n < 1 {
		t.Errorf("replica %d answered %v subscriptions with gzip, want the browser's", other, n)
	}
	t.Logf("browser over gzip: %d events once each, in order, across %d connections; replica %d drained", msgs, opens, drained)
}
