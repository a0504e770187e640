package app

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/sser"
)

// limitFlags are the limit flags, their variables, a value to set and what
// the library then holds.
var limitFlags = []struct {
	flag, env, value string
	lib              func(sser.Options) string
}{
	{"max-connections", "SSER_MAX_CONNECTIONS", "400", func(s sser.Options) string { return fmt.Sprint(s.MaxConnections) }},
	{"max-connections-per-ip", "SSER_MAX_CONNECTIONS_PER_IP", "50", func(s sser.Options) string { return fmt.Sprint(s.MaxConnectionsPerIP) }},
	{"connection-rate", "SSER_CONNECTION_RATE", "12.5", func(s sser.Options) string { return fmt.Sprint(s.ConnectionRate) }},
	{"trusted-proxies", "SSER_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1", func(s sser.Options) string { return strings.Join(s.TrustedProxies, ",") }},
	{"publish-rate", "SSER_PUBLISH_RATE", "100", func(s sser.Options) string { return fmt.Sprint(s.PublishRate) }},
	{"memory-watermark", "SSER_MEMORY_WATERMARK", "800000000", func(s sser.Options) string { return fmt.Sprint(s.MemoryWatermark) }},
	{"max-streams-per-connection", "SSER_MAX_STREAMS_PER_CONNECTION", "8", func(s sser.Options) string { return fmt.Sprint(s.MaxStreamsPerConnection) }},
	{"max-replay-events", "SSER_MAX_REPLAY_EVENTS", "500", func(s sser.Options) string { return fmt.Sprint(s.MaxReplayEvents) }},
	{"max-replay-bytes", "SSER_MAX_REPLAY_BYTES", "65536", func(s sser.Options) string { return fmt.Sprint(s.MaxReplayBytes) }},
	{"max-history-streams", "SSER_MAX_HISTORY_STREAMS", "1000", func(s sser.Options) string { return fmt.Sprint(s.MaxHistoryStreams) }},
	{"max-history-bytes", "SSER_MAX_HISTORY_BYTES", "1048576", func(s sser.Options) string { return fmt.Sprint(s.MaxHistoryBytes) }},
	{"max-stream-history-bytes", "SSER_MAX_STREAM_HISTORY_BYTES", "4096", func(s sser.Options) string { return fmt.Sprint(s.MaxStreamHistoryBytes) }},
}

// TestLimitFlags: every limit is set by its variable, a flag beats the
// variable, and the value reaches the library.
func TestLimitFlags(t *testing.T) {
	for _, f := range limitFlags {
		for _, how := range []string{"env", "flag", "flag beats env"} {
			t.Run(f.flag+"/"+how, func(t *testing.T) {
				var args []string
				switch how {
				case "env":
					t.Setenv(f.env, f.value)
				case "flag":
					args = []string{"--" + f.flag + "=" + f.value}
				default:
					t.Setenv(f.env, "7")
					args = []string{"--" + f.flag + "=" + f.value}
				}
				o := NewOptions()
				fs := flag.NewFlagSet("t", flag.ContinueOnError)
				if errs := o.Flags(fs); len(errs) > 0 {
					t.Fatal(errs)
				}
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				if errs := o.Validate(); len(errs) > 0 {
					t.Fatalf("valid options rejected: %v", errs)
				}
				o.PeerFinder = FinderLocal
				so, err := o.ServerOptions(logr.Discard())
				if err != nil {
					t.Fatal(err)
				}
				if got := f.lib(so); got != f.value {
					t.Fatalf("library holds %s, want %s", got, f.value)
				}
			})
		}
	}
}

// TestLimitDefaultsAreTheLibrarys: the binary's defaults are the
// library's, and 0 is passed on as 0 (the library's default, or no cap),
// never turned into something else.
func TestLimitDefaultsAreTheLibrarys(t *testing.T) {
	o := NewOptions()
	if errs := o.Flags(flag.NewFlagSet("t", flag.ContinueOnError)); len(errs) > 0 {
		t.Fatal(errs)
	}
	o.PeerFinder = FinderLocal
	so, err := o.ServerOptions(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	d := sser.DefaultOptions()
	got := fmt.Sprint(so.MaxStreamsPerConnection, so.MaxReplayEvents, so.MaxReplayBytes, so.MaxHistoryStreams, so.MaxHistoryBytes, so.MaxStreamHistoryBytes)
	want := fmt.Sprint(d.MaxStreamsPerConnection, d.MaxReplayEvents, d.MaxReplayBytes, d.MaxHistoryStreams, d.MaxHistoryBytes, d.MaxStreamHistoryBytes)
	if got != want {
		t.Errorf("defaults %s, want the library's %s", got, want)
	}
	// Derived by the library at start, so 0 here.
	if so.MaxConnections != 0 || so.MemoryWatermark != 0 {
		t.Errorf("max connections %d, memory watermark %d: want 0 (derived by the library)", so.MaxConnections, so.MemoryWatermark)
	}
	// No cap by default, in the library as here.
	if so.MaxConnectionsPerIP != 0 || so.ConnectionRate != 0 || so.PublishRate != 0 || len(so.TrustedProxies) != 0 {
		t.Errorf("per-IP %d, connection rate %v, publish rate %v, proxies %q: want none", so.MaxConnectionsPerIP, so.ConnectionRate, so.PublishRate, so.TrustedProxies)
	}
	// Every limit's usage says what its default is.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	NewOptions().Flags(fs)
	for _, f := range limitFlags {
		u := fs.Lookup(f.flag).Usage
		if !strings.Contains(u, f.env) {
			t.Errorf("--%s: usage does not name %s: %q", f.flag, f.env, u)
		}
		if f.flag != "trusted-proxies" && !strings.Contains(u, "0 =") {
			t.Errorf("--%s: usage does not say what 0 means: %q", f.flag, u)
		}
	}
}

func TestLimitValidation(t *testing.T) {
	o := NewOptions()
	o.MaxConnections, o.MemoryWatermark = -1, -1 // no cap, never shed: valid
	o.MaxConnectionsPerIP = -1
	o.MaxStreamsPerConnection = -1
	o.MaxReplayEvents = -1
	o.MaxReplayBytes = -1
	o.MaxHistoryStreams = -1
	o.MaxHistoryBytes = -1
	o.MaxStreamHistoryBytes = -1
	o.ConnectionRate = -1
	o.PublishRate = math.NaN()
	o.TrustedProxies = []string{"10.0.0.0/8", "::1", "proxy.local", "10.0.0.0/33"}
	want := []string{"--max-connections-per-ip", "--max-streams-per-connection", "--max-replay-events", "--max-replay-bytes",
		"--max-history-streams", "--max-history-bytes", "--max-stream-history-bytes", "--connection-rate", "--publish-rate",
		`"proxy.local"`, `"10.0.0.0/33"`}
	errs := o.Validate()
	all := fmt.Sprint(errs)
	if len(errs) != len(want) {
		t.Fatalf("%d errors, want %d: %s", len(errs), len(want), all)
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no error names %s: %s", w, all)
		}
	}
}

func TestLimitBadEnvIsReported(t *testing.T) {
	t.Setenv("SSER_CONNECTION_RATE", "fast")
	t.Setenv("SSER_MAX_HISTORY_BYTES", "1GiB")
	errs := NewOptions().Flags(flag.NewFlagSet("t", flag.ContinueOnError))
	if all := fmt.Sprint(errs); len(errs) != 2 || !strings.Contains(all, "SSER_CONNECTION_RATE") || !strings.Contains(all, "SSER_MAX_HISTORY_BYTES") {
		t.Fatalf("errors %s, want both variables named", all)
	}
}

func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	peer, publish, internal := write("peer", "peer-secret\n"), write("publish", "publish-secret\r\n"), write("internal", "old-secret")
	empty := write("empty", "\n")
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    [3]string // peer, publish, internal
		wantErr []string
	}{
		{name: "files, newline trimmed", args: []string{"--peer-token-file=" + peer, "--publish-token-file=" + publish, "--internal-token-file=" + internal},
			want: [3]string{"peer-secret", "publish-secret", "old-secret"}},
		{name: "files from env", env: map[string]string{"SSER_PEER_TOKEN_FILE": peer, "SSER_PUBLISH_TOKEN_FILE": publish},
			want: [3]string{"peer-secret", "publish-secret", ""}},
		{name: "env tokens still work", env: map[string]string{"SSER_PEER_TOKEN": "p", "SSER_PUBLISH_TOKEN": "q"}, want: [3]string{"p", "q", ""}},
		{name: "value and file", env: map[string]string{"SSER_PEER_TOKEN": "p"}, args: []string{"--peer-token-file=" + peer},
			wantErr: []string{"--peer-token and --peer-token-file"}},
		{name: "missing and empty files", args: []string{"--publish-token-file=" + filepath.Join(dir, "none"), "--internal-token-file=" + empty},
			wantErr: []string{"--publish-token-file", "--internal-token-file " + empty + " is empty"}},
		{name: "same token in both files", args: []string{"--peer-token-file=" + peer, "--publish-token-file=" + peer},
			wantErr: []string{"must differ"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o := NewOptions()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			if errs := o.Flags(fs); len(errs) > 0 {
				t.Fatal(errs)
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			errs := append(o.readTokenFiles(), o.Validate()...)
			all := fmt.Sprint(errs)
			if len(errs) != len(tt.wantErr) {
				t.Fatalf("errors %s, want %q", all, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(all, w) {
					t.Errorf("no error says %q: %s", w, all)
				}
			}
			if len(tt.wantErr) == 0 {
				if got := [3]string{o.PeerToken, o.PublishToken, o.InternalToken}; got != tt.want {
					t.Fatalf("tokens %q, want %q", got, tt.want)
				}
			}
		})
	}
}

// TestNotFoundIsJSON: the frontend's 404 is valid JSON whatever bytes the
// path holds.
func TestNotFoundIsJSON(t *testing.T) {
	for _, target := range []string{"/x", "/%ff%fe", "/%22%5c%00", "/\u2028", "/%e2%80"} {
		rec := httptest.NewRecorder()
		notFound(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %q", target, rec.Code, rec.Header().Get("Content-Type"))
		}
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || !strings.Contains(body.Error, "no such endpoint") {
			t.Fatalf("%s: body %q is not the JSON error: %v", target, rec.Body.String(), err)
		}
	}
}

func TestFrontendCap(t *testing.T) {
	derived := func() int { return 1000 }
	for _, tt := range []struct{ in, want int }{{0, 1000 + listenerSlack}, {400, 400 + listenerSlack}, {-1, 0}} {
		if got := frontendCap(tt.in, derived); got != tt.want {
			t.Errorf("frontendCap(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestCapListener, on real loopback sockets: sockets past the cap are
// answered 503 with Retry-After and closed before any request is read,
// however long the sockets under the cap stay idle; a socket closed gives
// its place back.
func TestCapListener(t *testing.T) {
	const capacity = 3
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	cl := newCapListener(ln, capacity, func() { refused.Add(1) })
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }),
		// Far longer than the test: idle sockets are not timed out here.
		ReadHeaderTimeout: time.Minute,
	}
	go srv.Serve(cl)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	// Idle sockets (and one trickling a header) fill the cap.
	var idle []net.Conn
	for i := range capacity {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 0 {
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		}
		idle = append(idle, c)
	}
	testproc.Eventually(t, 5*time.Second, "the idle sockets accepted", func() bool { return cl.open.Load() == capacity })

	for i := range 5 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// The request may be sent or not: the answer comes either way.
		if i%2 == 0 {
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("socket %d past the cap: %v", i, err)
		}
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		var body struct{ Error string }
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || ra < 2 || ra > 4 || derr != nil || body.Error == "" {
			t.Fatalf("socket %d past the cap: %s, Retry-After %q, body error %q (%v)", i, resp.Status, resp.Header.Get("Retry-After"), body.Error, derr)
		}
		// Closed at once: the next read ends.
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("socket %d past the cap still open: %d, %v", i, n, err)
		}
		c.Close()
	}
	if got := refused.Load(); got != 5 {
		t.Fatalf("%d refusals counted, want 5", got)
	}
	if got := cl.open.Load(); got != capacity {
		t.Fatalf("%d sockets held, want %d", got, capacity)
	}

	// A closed socket gives its place back: a request is served again.
	idle[0].Close()
	testproc.Eventually(t, 5*time.Second, "a request served after a socket closed", func() bool {
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// TestServeCapsOnlyTheFrontend runs the serve command: with the frontend
// full of idle sockets, new ones are refused and counted, and the internal
// port still answers its probes.
func TestServeCapsOnlyTheFrontend(t *testing.T) {
	front, internal := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--frontend-addr=" + front, "--internal-addr=" + internal, "--peer-finder=local",
			"--max-connections=2", "--drain-window=0", "--log-level=info", "--demo-page=false"}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(u string) int {
		resp, err := hc.Get(u)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	testproc.Eventually(t, 10*time.Second, "the replica up", func() bool { return get("http://"+internal+"/healthz") == http.StatusOK })
	// The frontend listens a moment after the internal port.
	testproc.Eventually(t, 10*time.Second, "the frontend up", func() bool { return get("http://"+front+"/nowhere") == http.StatusNotFound })
	hc.CloseIdleConnections()

	// Two subscriptions plus the slack fill the frontend.
	for range 2 + listenerSlack {
		c, err := net.DialTimeout("tcp", front, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	testproc.Eventually(t, 10*time.Second, "a socket past the cap refused", func() bool {
		c, err := net.DialTimeout("tcp", front, 5*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == http.StatusServiceUnavailable
	})
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := get("http://" + internal + p); code != http.StatusOK {
			t.Fatalf("%s answered %d with the frontend full", p, code)
		}
	}
	n, ok, err := testproc.Metric("http://"+internal+"/metrics", "sser_refused_total", `limit="frontend_connections"`)
	if err != nil || !ok || n < 1 {
		t.Fatalf("sser_refused_total{limit=\"frontend_connections\"} = %v (found %v, %v), want at least 1", n, ok, err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
