package app

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
)

// serveForTest runs the serve command with args and waits until the
// replica is ready and its frontend answers.
func serveForTest(t *testing.T, args ...string) (front, internal string) {
	t.Helper()
	front, internal = freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, append([]string{"--frontend-addr=" + front, "--internal-addr=" + internal, "--drain-window=0"}, args...), io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	testproc.Eventually(t, 10*time.Second, "the replica ready and its frontend up", func() bool {
		for _, u := range []string{"http://" + internal + "/readyz", "http://" + front + "/nowhere"} {
			resp, err := hc.Get(u)
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 500 {
				return false
			}
		}
		return true
	})
	return front, internal
}

func doRequest(t *testing.T, method, u, contentType, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// With the demo page on, the frontend publishes exactly as the internal
// port does: the publish token is required, bad requests get the same
// JSON errors and change nothing, and a good publish reaches subscribers.
func TestDemoPublish(t *testing.T) {
	front, internal := serveForTest(t, "--demo-page=true", "--publish-token=pub-secret",
		"--peer-finder=static", "--peers=127.0.0.1,127.0.0.77")
	sub := ssetest.Dial(t, "http://"+front+"/events?stream=demo", "")
	u := "http://" + front + DemoPublishPath
	const good = `{"stream":"demo","event":"price","msg":"line 1\nline 2"}`
	tests := []struct {
		name, method, contentType, token, body string
		status                                 int
		want                                   string // in the body
	}{
		{"no token", http.MethodPost, "application/json", "", good, http.StatusUnauthorized, "credentials required"},
		{"wrong token", http.MethodPost, "application/json", "not-it", good, http.StatusForbidden, "wrong credentials"},
		{"not JSON", http.MethodPost, "text/plain", "pub-secret", good, http.StatusUnsupportedMediaType, "Content-Type must be application/json"},
		{"bad body", http.MethodPost, "application/json", "pub-secret", `{"stream":`, http.StatusBadRequest, `"error"`},
		{"bad stream", http.MethodPost, "application/json", "pub-secret", `{"stream":"a b","msg":"x"}`, http.StatusBadRequest, "stream"},
		{"reserved type", http.MethodPost, "application/json", "pub-secret", `{"stream":"demo","event":"sser-lost","msg":"x"}`, http.StatusBadRequest, "sser-lost"},
		{"GET", http.MethodGet, "", "pub-secret", "", http.StatusMethodNotAllowed, "not allowed"},
		{"good", http.MethodPost, "application/json", "pub-secret", good, http.StatusOK, `"accepted":1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := doRequest(t, tt.method, u, tt.contentType, tt.token, tt.body)
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s: %s %q %s, want %d with %q", tt.name, resp.Status, resp.Header.Get("Content-Type"), body, tt.status, tt.want)
			}
			if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
	// Only the good publish arrived: a refused one would come before it,
	// and before a last one published the usual way.
	n, _, err := testproc.Metric("http://"+internal+"/metrics", "sser_events_published_total")
	if err != nil || n != 1 {
		t.Errorf("sser_events_published_total = %v (%v), want 1", n, err)
	}
	if resp, body := doRequest(t, http.MethodPost, "http://"+internal+sser.PublishURLPath, "application/json", "pub-secret", `{"stream":"demo","msg":"last"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("publish on the internal port: %s %s", resp.Status, body)
	}
	got := sub.Collect(2, 5*time.Second)
	if len(got) != 2 || got[0].Event != "price" || got[0].Data != "line 1\nline 2" || got[0].ID == "" || got[1].Data != "last" {
		t.Errorf("subscriber got %+v, want the demo publish then the last one", got)
	}

	// The page: strict CSP by hash, the real publish URL, no peer list.
	resp, page := doRequest(t, http.MethodGet, "http://"+front+"/", "", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %s", resp.Status)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		parts := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(page, -1)
		if len(parts) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(parts), tag)
		}
		sum := sha256.Sum256([]byte(parts[0][1]))
		if want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q is not strict", csp)
	}
	if !strings.Contains(page, "http://"+internal+sser.PublishURLPath) || strings.Contains(page, "localhost:7000") {
		t.Errorf("the page does not show the publish URL http://%s%s", internal, sser.PublishURLPath)
	}
	if strings.Contains(page, "127.0.0.77") {
		t.Error("the public page shows a peer's address")
	}
	if !strings.Contains(page, "required on these replicas") {
		t.Error("the page does not say a publish token is required")
	}
}

// Without the demo page, the frontend takes no publishes.
func TestNoDemoPageNoPublishOnTheFrontend(t *testing.T) {
	front, _ := serveForTest(t, "--demo-page=false", "--peer-finder=local")
	for _, p := range []string{"/", DemoPublishPath} {
		resp, body := doRequest(t, http.MethodPost, "http://"+front+p, "application/json", "", `{"stream":"demo","msg":"x"}`)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s on the frontend without the demo page: %s %s, want 404", p, resp.Status, body)
		}
	}
}

func TestInternalURL(t *testing.T) {
	tests := []struct{ bound, host, want string }{
		{"127.0.0.2:7000", "example.com:8000", "http://127.0.0.2:7000"},
		{"[::]:7000", "example.com:8000", "http://example.com:7000"},
		{"0.0.0.0:7001", "10.1.2.3", "http://10.1.2.3:7001"},
		{"[::]:7000", "[fd00::1]:8000", "http://[fd00::1]:7000"},
		{"[::]:7000", "localhost:8000", "http://localhost:7000"},
		{"[::]:7000", `evil"><script>`, "http://localhost:7000"},
		{"[::]:7000", "", "http://localhost:7000"},
		{"[::1]:7000", "x", "http://[::1]:7000"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tt.host
		if got := internalURL(r, tt.bound); got != tt.want {
			t.Errorf("internalURL(Host %q, bound %q) = %q, want %q", tt.host, tt.bound, got, tt.want)
		}
	}
}

// FuzzInternalURL: whatever the Host header, the URL shown is an http URL
// with a host and the internal port, and nothing that needs escaping.
func FuzzInternalURL(f *testing.F) {
	for _, h := range []string{"example.com:8000", "[fd00::1]:8000", "", "a:b:c", "[::1", `"><x`, "host:99999"} {
		f.Add(h)
	}
	safe := regexp.MustCompile(`^http://[A-Za-z0-9.:\[\]-]+$`)
	f.Fuzz(func(t *testing.T, host string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		got := internalURL(r, "[::]:7000")
		if !safe.MatchString(got) || !strings.HasSuffix(got, ":7000") {
			t.Fatalf("Host %q gave %q", host, got)
		}
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(got, "http://")); err != nil {
			t.Fatalf("Host %q gave %q: %v", host, got, err)
		}
	})
}

// The status page and its JSON are on the internal port only.
func TestStatusOnlyOnTheInternalPort(t *testing.T) {
	front, internal := serveForTest(t, "--demo-page=true", "--peer-finder=local", "--pod-name=sser-0")
	resp, body := doRequest(t, http.MethodGet, "http://"+internal+sser.StatusURLPath, "", "", "")
	var st sser.Status
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Replica.PodName != "sser-0" {
		t.Errorf("internal %s: %s %s", sser.StatusURLPath, resp.Status, body)
	}
	for _, p := range []string{sser.StatusPagePath, sser.StatusURLPath, sser.StatusEventsURLPath} {
		if resp, _ := doRequest(t, http.MethodGet, "http://"+front+p, "", "", ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("frontend %s: %s, want 404", p, resp.Status)
		}
	}
}

// With no publish token, the playground's publish answers only clients on
// this machine: the frontend is the public port. Forwarded-for headers
// change nothing.
func TestDemoPublishWithoutTokenOnlyFromThisMachine(t *testing.T) {
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sser.NewWithOptions(sser.Options{PeerFinder: pf, InternalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h := newDemo(srv, NewOptions()).publish()
	for _, tc := range []struct {
		remote, forwarded string
		refused           bool
	}{
		{"203.0.113.9:4000", "", true},
		{"10.1.2.3:4000", "127.0.0.1", true},
		{"[2001:db8::1]:4000", "", true},
		{"127.0.0.1:4000", "", false},
		{"[::1]:4000", "", false},
	} {
		req := httptest.NewRequest(http.MethodPost, DemoPublishPath, strings.NewReader(`{"stream":"demo","msg":"x"}`))
		req.RemoteAddr = tc.remote
		req.Header.Set("Content-Type", "application/json")
		if tc.forwarded != "" {
			req.Header.Set("X-Forwarded-For", tc.forwarded)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		refused := rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), "publish token")
		if refused != tc.refused {
			t.Errorf("from %s (forwarded %q): %d %s; refused %v, want %v", tc.remote, tc.forwarded, rec.Code, rec.Body.String(), refused, tc.refused)
		}
	}
}
