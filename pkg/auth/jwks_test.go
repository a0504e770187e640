package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A JWKS served over HTTP on loopback: the issuer rotates its key, and a
// token signed with the new key is accepted at once (an unknown kid
// reloads the set) without a restart; the old key stops working once it is
// gone from the set; unknown kids cannot make the verifier fetch more than
// once per MinInterval.
func TestJWKSRotation(t *testing.T) {
	k := theKeys(t)
	var mu sync.Mutex
	doc := jwksOf(t, map[string]any{"k1": &k.rsa.PublicKey})
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	defer srv.Close()

	now := testNow
	var clock sync.Mutex
	tick := func(d time.Duration) { clock.Lock(); now = now.Add(d); clock.Unlock() }
	getNow := func() time.Time { clock.Lock(); defer clock.Unlock(); return now }

	set, err := NewJWKSURL(t.Context(), srv.URL, JWKSOptions{Refresh: time.Hour, MinInterval: 10 * time.Second, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	set.now = getNow
	v, err := NewJWTVerifier(JWTConfig{Keys: set, Now: getNow})
	if err != nil {
		t.Fatal(err)
	}
	claims := func() jwt.MapClaims { return jwt.MapClaims{"exp": getNow().Add(time.Minute).Unix(), "streams": "a"} }
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, "k1", claims())); err != nil {
		t.Fatalf("k1: %v", err)
	}

	// Made-up kids: one fetch per MinInterval at most.
	before := fetches.Load()
	for range 20 {
		if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, "nope", claims())); err == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	if n := fetches.Load() - before; n > 1 {
		t.Fatalf("%d fetches for 20 unknown kids within MinInterval, want at most 1", n)
	}

	// The issuer rotates to k2 and drops k1.
	mu.Lock()
	doc = jwksOf(t, map[string]any{"k2": &k.rsa2.PublicKey})
	mu.Unlock()
	tick(11 * time.Second)
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa2, "k2", claims())); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, "k1", claims())); err == nil {
		t.Fatal("k1 accepted after it left the set")
	}

	// The issuer goes away: the keys held keep working.
	srv.Close()
	tick(2 * time.Hour)
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa2, "k2", claims())); err != nil {
		t.Fatalf("k2 with the issuer down: %v", err)
	}
	if set.Err() == nil {
		t.Error("Err() = nil after a failed reload")
	}
}

func TestJWKSFile(t *testing.T) {
	k := theKeys(t)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwksOf(t, map[string]any{"e1": &k.ec.PublicKey}), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := NewJWKSFile(t.Context(), file, JWKSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ks := set.Keys(t.Context(), "e1"); len(ks) != 1 || ks[0].Alg != AlgES256 {
		t.Fatalf("keys %+v", ks)
	}
	if _, err := NewJWKSFile(t.Context(), filepath.Join(t.TempDir(), "missing"), JWKSOptions{}); err == nil {
		t.Fatal("a missing file loaded")
	}
}
