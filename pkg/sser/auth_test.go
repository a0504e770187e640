package sser

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/pkg/auth"
)

var (
	testJWTSecret = []byte("jwt-secret-0123456789abcdef0123456789")
	testTicketKey = []byte("ticket-key-0123456789abcdef0123456789")
)

// logLines collects every log line of a server, to be searched for secrets.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, prefix+" "+args)
}

func (l *logLines) containing(secrets ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				out = append(out, line)
			}
		}
	}
	return out
}

// startAuthServer runs a server that authenticates subscribers with HS256
// JWTs (template users/{sub}/*) and tickets, logging at V(1) into logs.
func startAuthServer(t *testing.T, opts Options) (*testServer, *auth.Ticketer, *logLines) {
	t.Helper()
	hs, err := auth.HS256Key(testJWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := auth.ParseTemplate("users/{sub}/*")
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewJWTVerifier(auth.JWTConfig{Keys: auth.StaticKeys{hs}, Templates: []auth.Template{tmpl}})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := auth.NewTicketer(time.Hour, testTicketKey)
	if err != nil {
		t.Fatal(err)
	}
	a := &auth.Authenticator{JWT: v, Tickets: tk, Cookie: auth.DefaultCookieName}
	opts.Authenticate = a.Authenticate
	opts.Tickets = tk
	logs := &logLines{}
	opts.Logger = funcr.New(logs.add, funcr.Options{Verbosity: 1})
	return startServer(t, opts), tk, logs
}

func mintJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	tok, err := auth.MintHS256(testJWTSecret, "", claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSubscriberAuthentication(t *testing.T) {
	ts, tk, logs := startAuthServer(t, Options{})
	now := time.Now()
	alice := mintJWT(t, auth.DevClaims("alice", []string{"news", "rooms/*"}, nil, time.Minute, now))
	expired := mintJWT(t, auth.DevClaims("alice", []string{"news"}, nil, -time.Second, now))
	future := mintJWT(t, map[string]any{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix(), "streams": "news"})
	forged, _ := auth.MintHS256([]byte("another-secret-0123456789abcdef01234"), "", auth.DevClaims("alice", []string{"*"}, nil, time.Minute, now))
	ticket, _, err := tk.Mint("bob", []string{"users/bob/inbox"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{alice, expired, future, forged, ticket}

	cases := []struct {
		name   string
		query  string
		header string
		cookie string
		status int
		msg    string // in the error
	}{
		{name: "no credential", query: "stream=news", status: 401, msg: "credentials required"},
		{name: "bearer JWT", query: "stream=news&stream=rooms/1", header: "Bearer " + alice, status: 200},
		{name: "access_token", query: "stream=news&access_token=" + alice, status: 200},
		{name: "cookie", query: "stream=news", cookie: alice, status: 200},
		{name: "template grant", query: "stream=users/alice/inbox", header: "Bearer " + alice, status: 200},
		{name: "ticket", query: "stream=users/bob/inbox&ticket=" + ticket, status: 200},
		{name: "ticket as cookie", query: "stream=users/bob/inbox", cookie: ticket, status: 200},
		{name: "expired", query: "stream=news", header: "Bearer " + expired, status: 401, msg: "expired"},
		{name: "not yet valid", query: "stream=news", header: "Bearer " + future, status: 401, msg: "not valid yet"},
		{name: "forged", query: "stream=news", header: "Bearer " + forged, status: 401, msg: "bad signature"},
		{name: "garbage", query: "stream=news&access_token=eyJ%21%21.x.y", status: 401, msg: "malformed"},
		{name: "oversized", query: "stream=news&access_token=" + strings.Repeat("a", auth.MaxCredentialBytes+1), status: 401, msg: "too large"},
		{name: "stream outside the grant", query: "stream=news&stream=prices", header: "Bearer " + alice, status: 403, msg: `"prices"`},
		{name: "repeated stream, one outside", query: "stream=news&stream=news&stream=users/bob/inbox", header: "Bearer " + alice, status: 403, msg: `"users/bob/inbox"`},
		{name: "another user's stream", query: "stream=users/bob/inbox", header: "Bearer " + alice, status: 403, msg: "users/bob/inbox"},
		{name: "another user's stream, other case", query: "stream=users/ALICE/inbox", header: "Bearer " + alice, status: 403},
		{name: "dot-dot out of one's own streams", query: "stream=users/alice/../bob/inbox", header: "Bearer " + alice, status: 403},
		{name: "dot-dot segment", query: "stream=users/alice/..", header: "Bearer " + alice, status: 403},
		{name: "escaped slash", query: "stream=users%2Falice%2F..%2Fbob%2Finbox", header: "Bearer " + alice, status: 403},
		{name: "ticket for another stream", query: "stream=users/alice/inbox&ticket=" + ticket, status: 403},
		{name: "ticket pattern does not reach deeper", query: "stream=users/bob/inbox/x&ticket=" + ticket, status: 403},
		{name: "two tickets", query: "stream=users/bob/inbox&ticket=" + ticket + "&ticket=" + ticket, status: 401, msg: "more than once"},
		{name: "tampered ticket", query: "stream=users/bob/inbox&ticket=" + ticket[:len(ticket)-3] + "AAA", status: 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.url(tc.query), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			if tc.cookie != "" {
				req.AddCookie(&http.Cookie{Name: auth.DefaultCookieName, Value: tc.cookie})
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status == 200 {
				if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
					t.Fatalf("Content-Type %q", ct)
				}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("body %q is not a JSON error", b)
			}
			if !strings.Contains(e.Error, tc.msg) {
				t.Errorf("error %q does not say %q", e.Error, tc.msg)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			for _, s := range secrets {
				if strings.Contains(string(b), s) || strings.Contains(string(b), s[len(s)-16:]) {
					t.Errorf("the answer %q holds a credential", b)
				}
			}
		})
	}
	if leaked := logs.containing(append(secrets, alice[len(alice)-16:], ticket[len(ticket)-16:])...); len(leaked) > 0 {
		t.Fatalf("log lines hold a credential:\n%s", strings.Join(leaked, "\n"))
	}
	if len(logs.containing("REDACTED")) == 0 {
		t.Error("no refusal was logged with its redacted URL")
	}
}

// A refused subscription is never subscribed: an event published after
// the refusal reaches only the authenticated subscriber.
func TestRefusedSubscriberGetsNothing(t *testing.T) {
	ts, tk, _ := startAuthServer(t, Options{})
	ticket, _, err := tk.Mint("a", []string{"s"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ok := ssetest.Dial(t, ts.url("stream=s&ticket="+ticket), "")
	if _, err := ssetest.Connect(t.Context(), ts.url("stream=s"), ""); err == nil {
		t.Fatal("a subscription without credentials was served")
	}
	if err := ts.Send(t.Context(), "s", "one"); err != nil {
		t.Fatal(err)
	}
	if ev := ok.Next(t, 5*time.Second); ev.Data != "one" {
		t.Fatalf("got %+v", ev)
	}
	if n := ts.hub.subscriberCount(); n != 1 {
		t.Fatalf("%d subscribers, want 1", n)
	}
}

// When the credential expires, the subscriber gets sser-expired after what
// was queued, and the connection ends.
func TestCredentialExpiryEndsConnection(t *testing.T) {
	ts, tk, _ := startAuthServer(t, Options{})
	ticket, exp, err := tk.Mint("a", []string{"s"}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sub := ssetest.Dial(t, ts.url("stream=s&ticket="+ticket), "")
	if err := ts.Send(t.Context(), "s", "before"); err != nil {
		t.Fatal(err)
	}
	if ev := sub.Next(t, 5*time.Second); ev.Data != "before" {
		t.Fatalf("got %+v", ev)
	}
	ev := sub.Next(t, 10*time.Second)
	if ev.Event != ExpiredEventType {
		t.Fatalf("got %+v, want %s", ev, ExpiredEventType)
	}
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection open after its credential expired")
	}
	if late := time.Since(exp); late < 0 || late > 2*time.Second/10+time.Second {
		t.Errorf("closed %s after expiry; want within the jitter", late)
	}
	// Reconnecting with the same URL is now refused.
	if _, err := ssetest.Connect(t.Context(), ts.url("stream=s&ticket="+ticket), ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("reconnect with the expired ticket: %v", err)
	}
}

func TestExpiryTimerJitter(t *testing.T) {
	if c, _ := expiryTimer(time.Time{}); c != nil {
		t.Fatal("a credential with no expiry got a timer")
	}
	for range 50 {
		exp := time.Now().Add(100 * time.Millisecond)
		c, stop := expiryTimer(exp)
		at := <-c
		stop()
		if at.Before(exp) || at.Sub(exp) > 10*time.Millisecond+50*time.Millisecond {
			t.Fatalf("fired %s after expiry; want within a tenth of the time left", at.Sub(exp))
		}
	}
}

func TestTicketsEndpoint(t *testing.T) {
	ts, _, logs := startAuthServer(t, Options{PublishToken: "pub-token-0123456789"})
	ask := func(token, body string) (*http.Response, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.internal+TicketsURLPath, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := ask("", `{"subject":"a","streams":["s"]}`); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	if resp, _ := ask("wrong", `{"subject":"a","streams":["s"]}`); resp.StatusCode != 403 {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	for body, want := range map[string]int{
		`{"subject":"a","streams":["s"],"ttl":"2h"}`: 400,
		`{"subject":"a","streams":[]}`:               400,
		`{"subject":"a","streams":["a b"]}`:          400,
		`{"subject":"a","streams":["s"],"ttl":"x"}`:  400,
		`{"subject":"a","streams":["s"],"extra":1}`:  400,
		`not json`: 400,
	} {
		if resp, b := ask("pub-token-0123456789", body); resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", body, resp.StatusCode, b, want)
		}
	}
	resp, b := ask("pub-token-0123456789", `{"subject":"carol","streams":["users/carol/*"],"ttl":"30s"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var ans struct {
		Ticket  string
		Expires time.Time
	}
	if err := json.Unmarshal([]byte(b), &ans); err != nil || ans.Ticket == "" {
		t.Fatalf("answer %s: %v", b, err)
	}
	if d := time.Until(ans.Expires); d <= 25*time.Second || d > 31*time.Second {
		t.Errorf("expires in %s, want about 30s", d)
	}
	ssetest.Dial(t, ts.url("stream=users/carol/x&ticket="+url.QueryEscape(ans.Ticket)), "")
	if leaked := logs.containing(ans.Ticket, "pub-token-0123456789"); len(leaked) > 0 {
		t.Fatalf("log lines hold a credential:\n%s", strings.Join(leaked, "\n"))
	}
}

func TestPublishWithJWT(t *testing.T) {
	ts, _, logs := startAuthServer(t, Options{PublishToken: "pub-token-0123456789"})
	app := mintJWT(t, auth.DevClaims("app", nil, []string{"app/*"}, time.Minute, time.Now()))
	reader := mintJWT(t, auth.DevClaims("reader", []string{"app/*"}, nil, time.Minute, time.Now()))
	sub := ssetest.Dial(t, ts.url("stream=app/x&access_token="+reader), "")
	publish := func(token, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.internal+PublishURLPath, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		name, token, body string
		status            int
		msg               string
	}{
		{"publish token", "pub-token-0123456789", `{"stream":"other","msg":"x"}`, 200, ""},
		{"JWT inside its grant", app, `[{"stream":"app/x","msg":"one"},{"stream":"app/y","msg":"two"}]`, 200, ""},
		{"JWT outside its grant", app, `[{"stream":"app/x","msg":"no"},{"stream":"other","msg":"no"}]`, 403, `other`},
		{"JWT with no publish claim", reader, `{"stream":"app/x","msg":"no"}`, 403, "no publish claim"},
		{"forged JWT", mintJWT(t, nil)[:20] + ".eyJ.x", `{"stream":"app/x","msg":"no"}`, 403, "not accepted"},
		{"JWT, bad body", app, `{"stream":`, 400, ""},
		{"wrong plain token", "nope", `{"stream":"app/x","msg":"no"}`, 403, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, b := publish(tc.token, tc.body)
			if status != tc.status || !strings.Contains(b, tc.msg) {
				t.Fatalf("%d %s, want %d with %q", status, b, tc.status, tc.msg)
			}
		})
	}
	// Only the granted batch was published, whole: the marker published
	// last comes right after it.
	if status, b := publish("pub-token-0123456789", `{"stream":"app/x","msg":"marker"}`); status != 200 {
		t.Fatalf("marker: %d %s", status, b)
	}
	got := sub.Collect(2, 10*time.Second)
	if len(got) != 2 || got[0].Data != "one" || got[1].Data != "marker" {
		t.Fatalf("subscriber of app/x got %+v, want \"one\" then \"marker\"", got)
	}
	if leaked := logs.containing(app, reader); len(leaked) > 0 {
		t.Fatalf("log lines hold a credential:\n%s", strings.Join(leaked, "\n"))
	}
}
