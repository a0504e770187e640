package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestAuthenticator(t *testing.T) {
	k := theKeys(t)
	now := testNow
	tk := testTicketer(t, &now)
	hs, _ := HS256Key(k.secret)
	v, err := NewJWTVerifier(JWTConfig{Keys: StaticKeys{hs}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ticket, _, err := tk.Mint("alice", []string{"a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"exp": now.Add(time.Minute).Unix(), "streams": "b"})
	a := &Authenticator{JWT: v, Tickets: tk, Cookie: DefaultCookieName}
	cases := []struct {
		name  string
		req   func() *http.Request
		grant string
		err   error
	}{
		{"ticket in query", func() *http.Request { return get("/events?ticket=" + url.QueryEscape(ticket)) }, "a", nil},
		{"ticket as bearer", func() *http.Request { r := get("/events"); r.Header.Set("Authorization", "Bearer "+ticket); return r }, "a", nil},
		{"ticket in cookie", func() *http.Request {
			r := get("/events")
			r.AddCookie(&http.Cookie{Name: DefaultCookieName, Value: ticket})
			return r
		}, "a", nil},
		{"ticket as access_token", func() *http.Request { return get("/events?access_token=" + ticket) }, "", ErrInvalidCredential},
		{"jwt as access_token", func() *http.Request { return get("/events?access_token=" + token) }, "b", nil},
		{"jwt as bearer", func() *http.Request { r := get("/events"); r.Header.Set("Authorization", "Bearer "+token); return r }, "b", nil},
		{"jwt as ticket", func() *http.Request { return get("/events?ticket=" + token) }, "", ErrInvalidCredential},
		{"nothing", func() *http.Request { return get("/events") }, "", ErrNoCredential},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(tc.req())
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || !p.Allows(tc.grant) {
				t.Fatalf("Authenticate = %+v, %v", p, err)
			}
		})
	}
	if _, err := (&Authenticator{Tickets: tk}).Authenticate(get("/events?access_token=" + token)); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("JWT without a verifier: %v", err)
	}
	if _, err := (&Authenticator{JWT: v}).Authenticate(get("/events?ticket=" + ticket)); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("ticket without a ticketer: %v", err)
	}
}

func get(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }
