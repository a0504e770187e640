package sser

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sser-dev/sser/pkg/auth"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// BenchmarkConnect measures subscriptions per second on one replica over
// loopback HTTP: connect, read the preamble (its retry line),
// disconnect; without authentication and with each credential kind.
func BenchmarkConnect(b *testing.B) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	hs, _ := auth.HS256Key(testJWTSecret)
	rs, _ := auth.PublicKey("r1", &rsaKey.PublicKey)
	v, _ := auth.NewJWTVerifier(auth.JWTConfig{Keys: auth.StaticKeys{hs, rs}})
	tk, _ := auth.NewTicketer(time.Hour, testTicketKey)
	authn := &auth.Authenticator{JWT: v, Tickets: tk}
	ticket, _, _ := tk.Mint("bench", []string{"s"}, time.Hour)
	hsTok, _ := auth.MintHS256(testJWTSecret, "", auth.DevClaims("bench", []string{"s"}, nil, time.Hour, time.Now()))
	rt := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(auth.DevClaims("bench", []string{"s"}, nil, time.Hour, time.Now())))
	rt.Header["kid"] = "r1"
	rsTok, _ := rt.SignedString(rsaKey)

	for _, tc := range []struct {
		name, query string
		auth        bool
	}{
		{"none", "", false},
		{"ticket", "&ticket=" + url.QueryEscape(ticket), true},
		{"jwt-hs256", "&access_token=" + hsTok, true},
		{"jwt-rs256", "&access_token=" + rsTok, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{}
			if tc.auth {
				opts.Authenticate = authn.Authenticate
			}
			pf, _ := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
			opts.PeerFinder, opts.InternalAddr = pf, "127.0.0.1:0"
			srv, err := NewWithOptions(opts)
			if err != nil {
				b.Fatal(err)
			}
			ctx, stop := context.WithCancel(b.Context())
			defer stop()
			if err := srv.Start(ctx); err != nil {
				b.Fatal(err)
			}
			front := httptest.NewServer(srv.ClientConnectionHandler(ctx))
			defer front.Close()
			ts := &testServer{ServerImpl: srv, front: front}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			u := ts.url("stream=s" + tc.query)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rctx, cancel := context.WithCancel(ctx)
					req, _ := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
					resp, err := client.Do(req)
					if err != nil || resp.StatusCode != 200 {
						cancel()
						b.Errorf("connect: %v %v", err, resp)
						return
					}
					r := bufio.NewReader(resp.Body)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							b.Error(err)
							break
						}
						if strings.HasPrefix(line, "retry:") {
							break
						}
					}
					cancel()
					_ = resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
		})
	}
}

// BenchmarkAuthenticate is the verification alone, per credential kind.
func BenchmarkAuthenticate(b *testing.B) {
	hs, _ := auth.HS256Key(testJWTSecret)
	v, _ := auth.NewJWTVerifier(auth.JWTConfig{Keys: auth.StaticKeys{hs}})
	tk, _ := auth.NewTicketer(time.Hour, testTicketKey)
	authn := &auth.Authenticator{JWT: v, Tickets: tk}
	ticket, _, _ := tk.Mint("bench", []string{"s"}, time.Hour)
	hsTok, _ := auth.MintHS256(testJWTSecret, "", auth.DevClaims("bench", []string{"s"}, nil, time.Hour, time.Now()))
	for name, q := range map[string]string{"ticket": "ticket=" + ticket, "jwt-hs256": "access_token=" + hsTok} {
		b.Run(name, func(b *testing.B) {
			r, _ := http.NewRequest(http.MethodGet, "http://x/events?stream=s&"+q, nil)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := authn.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
