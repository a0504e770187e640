package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzCredential feeds the credential path (FromRequest, then ticket and
// JWT verification) arbitrary query values, headers and cookies: it never
// panics, never grants anything to a credential it did not mint, and never
// puts the credential in an error.
func FuzzCredential(f *testing.F) {
	now := testNow
	tk, err := NewTicketer(time.Hour, []byte("ticket-key-0123456789abcdef0123456789"))
	if err != nil {
		f.Fatal(err)
	}
	tk.now = func() time.Time { return now }
	hs, _ := HS256Key([]byte("0123456789abcdef0123456789abcdef-test-secret"))
	v, err := NewJWTVerifier(JWTConfig{Keys: StaticKeys{hs}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	a := &Authenticator{JWT: v, Tickets: tk, Cookie: DefaultCookieName}
	// Minted by hand, not by Mint (its nonce is random): every fuzz worker
	// must know the one valid credential.
	body := TicketPrefix + base64.RawURLEncoding.EncodeToString([]byte(`{"s":"seed","g":["a"],"e":1800000060,"n":"fixed"}`))
	valid := body + "." + base64.RawURLEncoding.EncodeToString(ticketMAC([]byte("ticket-key-0123456789abcdef0123456789"), body))
	f.Add("ticket=", "", "")
	f.Add("ticket="+valid, "", "")
	f.Add("access_token=eyJhbGciOiJub25lIn0.eyJleHAiOjF9.", "", "")
	f.Add("", "Bearer eyJ.eyJ.x", "")
	f.Add("", "", "sser_token=t1.e30.AAAA")
	f.Add("ticket=t1.eyJnIjpbIioiXSwiZSI6OTk5OTk5OTk5OX0.", "", "")
	f.Add("%74icket=a&ticket=b", "Basic x", "sser_token=a; sser_token=b")
	f.Fuzz(func(t *testing.T, query, header, cookie string) {
		r := httptest.NewRequest(http.MethodGet, "/events", nil)
		r.URL.RawQuery = query
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		_ = RedactQuery(query)
		c, cerr := FromRequest(r, DefaultCookieName)
		p, err := a.Authenticate(r)
		if cerr != nil {
			if err == nil {
				t.Fatalf("Authenticate accepted what FromRequest refused: %v", cerr)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrNoCredential) && !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("unexpected error kind %v", err)
			}
			if len(c.Value) >= 8 && strings.Contains(err.Error(), c.Value) {
				t.Fatalf("error %q quotes the credential", err)
			}
			return
		}
		if c.Value != valid {
			t.Fatalf("a credential that was never minted was accepted: %+v", p)
		}
		if strings.Contains(RedactQuery(query), valid) {
			if q, _ := url.ParseQuery(query); q.Get("ticket") == valid {
				t.Fatalf("RedactQuery kept the ticket: %q", RedactQuery(query))
			}
		}
	})
}
