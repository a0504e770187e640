package lossless

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
)

// browserPage subscribes with EventSource, shows each event in #log as sser's
// demo page does, and reports everything it sees to /report, numbered so the
// test can put the reports back in order.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>sser lossless</title></head><body>
<pre id="log"></pre>
<script>
let k = 0;
function report(kind, data, id) {
  const body = JSON.stringify({k: k++, kind: kind, data: data, id: id});
  fetch('/report', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: body});
}
const es = new EventSource('/events?stream=` + stream + `');
es.onopen = () => report('open', '', '');
es.onerror = () => report('error', String(es.readyState), '');
es.onmessage = (e) => {
  document.getElementById('log').textContent += e.data + '\n';
  report('message', e.data, e.lastEventId);
};
es.addEventListener('sser-lost', (e) => report('lost', e.data, e.lastEventId));
</script></body></html>
`

type browserReport struct {
	K    int    `json:"k"`
	Kind string `json:"kind"`
	Data string `json:"data"`
	ID   string `json:"id"`
	// Extra is what else a page reports: a WebSocket event's stream, a
	// subscribed message's resume.
	Extra string `json:"extra"`
}

// browserLog collects the page's reports.
type browserLog struct {
	mu      sync.Mutex
	reports map[int]browserReport
}

func (l *browserLog) add(r browserReport) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports[r.K] = r
}

// ordered returns the reports in the page's order, up to the first one not
// yet received.
func (l *browserLog) ordered() []browserReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []browserReport
	for k := 0; ; k++ {
		r, ok := l.reports[k]
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

func (l *browserLog) kinds() (msgs []string, opens, errs, lost int) {
	for _, r := range l.ordered() {
		switch r.Kind {
		case "message":
			msgs = append(msgs, r.Data)
		case "open":
			opens++
		case "error":
			errs++
		case "lost":
			lost++
		}
	}
	return msgs, opens, errs, lost
}

// findChromium returns Chromium's path, skipping the test when there is
// none (failing it with SSER_REQUIRE_REAL=1).
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SSER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testproc.RequireReal(t, "Chromium not found (hack/install-chromium.sh installs Debian's chromium; SSER_CHROMIUM names another)")
	return ""
}

// startChromium opens u in headless Chromium, which is killed (with its
// helper processes) on cleanup.
func startChromium(t *testing.T, bin, u string) {
	t.Helper()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), u)
	out := &syncWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
}

type syncWriter struct {
	mu sync.Mutex
	b  []byte
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.b) < 1<<20 {
		w.b = append(w.b, p...)
	}
	return len(p), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// A browser's EventSource subscribes through the balancer; its
// replica is drained; the browser reconnects by itself (to the other
// replica, with Last-Event-ID) and shows every event once, in order.
func TestBrowserEventSourceSurvivesDrain(t *testing.T) {
	skipShort(t)
	bin := findChromium(t)
	c := newCluster(t, 2, "--retry=300ms")
	c.startAll()
	b, blog := browserRun(t, bin, c, browserPage)
	drained, other, msgs, opens := drainUnderBrowser(t, c, b, blog, 60)
	if b.activeOn(other) != 1 {
		t.Errorf("the browser's connection is not on the other replica (active %d and %d)", b.activeOn(0), b.activeOn(1))
	}
	t.Logf("browser: %d events once each, in order, across %d connections; replica %d drained and exited 0", msgs, opens, drained)
}

// browserRun serves page on a balancer over c and opens it in Chromium;
// the page reports what its EventSource sees to /report.
func browserRun(t *testing.T, bin string, c *cluster, page string) (*balancer, *browserLog) {
	t.Helper()
	b := newBalancer(t, c)
	b.waitReady(t, 0, 1)
	blog := &browserLog{reports: make(map[int]browserReport)}
	b.handle("/page.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})
	b.handle("/report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		blog.add(rep)
		w.WriteHeader(http.StatusNoContent)
	})
	startChromium(t, bin, b.URL+"/page.html")
	return b, blog
}

// drainUnderBrowser waits for the browser's EventSource to open, publishes
// ten rounds, then drains (SIGTERM) the replica the browser is on while two
// publishers keep going until each has sent 10+more events. It checks that
// the drained replica exits 0 and that the browser showed every event
// once, in order, across a reconnection, resumed by id on the other
// replica with nothing lost. It returns the replicas and what the browser saw.
func drainUnderBrowser(t *testing.T, c *cluster, b *balancer, blog *browserLog, more int) (drained, other, msgCount, opens int) {
	t.Helper()
	waitFor(t, deadline, "the browser's EventSource to open", func() bool {
		_, opens, _, _ := blog.kinds()
		return opens == 1 && b.activeOn(0)+b.activeOn(1) == 1
	}, func() string { return fmt.Sprintf("reports %+v", blog.ordered()) })
	if b.activeOn(1) == 1 {
		drained = 1
	}
	other = 1 - drained

	// p publishes on the replica that stays; q on the drained one until it
	// is no longer ready, then on the other.
	p, q := newPublisher(c, b, "p", other), newPublisher(c, b, "q", drained)
	publishRounds(t, 10, p, q)
	waitFor(t, deadline, "the browser to show 20 events", func() bool { msgs, _, _, _ := blog.kinds(); return len(msgs) >= 20 })

	r := c.rep(drained)
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Publish through the whole drain window and a little past it.
	runAll(t, 20, 10+more, p, q)
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	if err := r.Wait(ctx); err != nil {
		t.Fatalf("drained replica: %v, want exit 0", err)
	}
	total := p.sent() + q.sent()
	waitFor(t, deadline, fmt.Sprintf("the browser to show all %d events", total), func() bool {
		msgs, _, _, _ := blog.kinds()
		return len(msgs) >= total
	}, func() string {
		msgs, opens, errs, lost := blog.kinds()
		return fmt.Sprintf("%d events, %d opens, %d errors, %d lost", len(msgs), opens, errs, lost)
	})

	msgs, opens, _, lost := blog.kinds()
	if tl := check(msgs, p, q); !tl.ok() {
		t.Errorf("browser: %d received, %d duplicates, %d missing, %d out of order: %q", tl.received, tl.dups, tl.missing, tl.disorder, tl.problems)
	}
	if opens < 2 || lost > 0 {
		t.Errorf("browser: %d opens, %d sser-lost; want a reconnection and no loss", opens, lost)
	}
	// The browser came back with Last-Event-ID, so the other replica resumed it.
	if n := c.metric(other, "sser_resumes_total", `result="exact"`); n < 1 {
		t.Errorf("sser_resumes_total{result=exact} = %v on the other replica: the browser did not resume by id", n)
	}
	return drained, other, len(msgs), opens
}
