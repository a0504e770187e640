package app

import (
	"bytes"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func parseAuth(t *testing.T, args ...string) (*Options, []error) {
	t.Helper()
	o := NewOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	errs := o.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o, append(errs, o.Validate()...)
}

func TestAuthFlagsRefuseHalfConfigured(t *testing.T) {
	for _, args := range [][]string{
		{"--auth-stream-template", "users/{sub}/*"},
		{"--auth-issuer", "https://issuer"},
		{"--auth-audience", "sser"},
		{"--auth-jwks-file", "a", "--auth-jwks-url", "https://b"},
		{"--auth-jwks-url", "file:///etc/passwd"},
		{"--ticket-key-file", "k", "--ticket-max-ttl", "0s"},
		{"--auth-jwt-hs256-secret-file", "k", "--auth-stream-template", "users/{sub"},
	} {
		if _, errs := parseAuth(t, args...); len(errs) == 0 {
			t.Errorf("%q accepted", args)
		}
	}
	o, errs := parseAuth(t, "--auth-jwt-hs256-secret-file", "k", "--auth-stream-template", "users/{sub}/*", "--auth-stream-template", "teams/{team}/*")
	if len(errs) != 0 || len(o.Auth.Templates) != 2 {
		t.Fatalf("errs %v, templates %q", errs, o.Auth.Templates)
	}
	if o, _ := parseAuth(t); o.Auth.Enabled() {
		t.Error("authentication on by default")
	}
}

// The secrets in files build a working authenticator; nothing logged holds them.
func TestAuthOptionsFromFiles(t *testing.T) {
	dir := t.TempDir()
	secret, key := "hs256-secret-0123456789abcdef0123456789", "ticket-key-0123456789abcdef0123456789"
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	o, errs := parseAuth(t, "--auth-jwt-hs256-secret-file", write("jwt", secret), "--ticket-key-file", write("ticket", key), "--auth-stream-template", "users/{sub}/*")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var logs bytes.Buffer
	so, err := o.Auth.authOptions(t.Context(), newLogger(&logs, "debug", "json"))
	if err != nil {
		t.Fatal(err)
	}
	if so.Authenticate == nil || so.Tickets == nil {
		t.Fatal("authentication not built")
	}
	// sser token and sser ticket with the same secrets.
	var out, errOut bytes.Buffer
	t.Setenv("SSER_AUTH_JWT_HS256_SECRET_FILE", filepath.Join(dir, "jwt"))
	if err := RunToken(t.Context(), []string{"--sub", "alice", "--stream", "news", "--ttl", "1m"}, &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	out.Reset()
	t.Setenv("SSER_TICKET_KEY_FILE", filepath.Join(dir, "ticket"))
	if err := RunTicket(t.Context(), []string{"--sub", "bob", "--stream", "rooms/*", "--ttl", "30s"}, &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	ticket := strings.TrimSpace(out.String())
	for _, c := range []struct {
		query, allow, deny string
	}{
		{"access_token=" + tok, "users/alice/x", "users/bob/x"},
		{"access_token=" + tok, "news", "other"},
		{"ticket=" + ticket, "rooms/1", "news"},
	} {
		p, err := so.Authenticate(get("/events?" + c.query))
		if err != nil {
			t.Fatalf("%s: %v", c.query[:8], err)
		}
		if !p.Allows(c.allow) || p.Allows(c.deny) {
			t.Errorf("grants %q: allow %s, deny %s", p.Grants, c.allow, c.deny)
		}
		if time.Until(p.Expires) > time.Minute+time.Second {
			t.Errorf("expires %v", p.Expires)
		}
	}
	for _, s := range []string{secret, key, tok, ticket} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("logs hold a secret: %s", logs.String())
		}
	}
}

func get(target string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://x"+target, nil)
	return r
}
