package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testNow = time.Unix(1_800_000_000, 0)

func TestJWTVerify(t *testing.T) {
	k := theKeys(t)
	rsaPEM := pemOf(t, &k.rsa.PublicKey)
	pemKeys, err := ParsePEMKeys(rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(jwksOf(t, map[string]any{"rsa-1": &k.rsa.PublicKey, "ec-1": &k.ec.PublicKey, "ed-1": k.ed.Public()}))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := HS256Key(k.secret)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ParseTemplate("users/{sub}/*")
	if err != nil {
		t.Fatal(err)
	}
	all := append(append(StaticKeys{hs}, set...), pemKeys...)
	exp := testNow.Add(time.Minute).Unix()
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "exp": exp, "iss": "https://issuer", "aud": "sser", "streams": []any{"news", "prices/*"}}
	}
	with := func(kv ...any) jwt.MapClaims {
		c := base()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	tamper := func(tok string) string {
		parts := strings.Split(tok, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), `"news"`, `"*"`, 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		return strings.Join(parts, ".")
	}
	none := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name   string
		keys   KeySource
		token  string
		reason string // "" means valid
		allow  []string
		deny   []string
	}{
		{name: "HS256 valid", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", base()), allow: []string{"news", "prices/acme", "users/alice/inbox"}, deny: []string{"prices/acme/x", "users/bob/inbox", "other"}},
		{name: "RS256 from JWKS", keys: all, token: sign(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", base()), allow: []string{"news"}},
		{name: "RS256 from PEM, any kid", keys: StaticKeys(pemKeys), token: sign(t, jwt.SigningMethodRS256, k.rsa, "whatever", base()), allow: []string{"news"}},
		{name: "ES256", keys: all, token: sign(t, jwt.SigningMethodES256, k.ec, "ec-1", base()), allow: []string{"news"}},
		{name: "EdDSA", keys: all, token: sign(t, jwt.SigningMethodEdDSA, k.ed, "ed-1", base()), allow: []string{"news"}},
		{name: "expired", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("exp", testNow.Add(-time.Second).Unix())), reason: "expired"},
		{name: "no exp", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("exp", nil)), reason: "exp"},
		{name: "not yet valid", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("nbf", testNow.Add(time.Minute).Unix())), reason: "not valid yet"},
		{name: "wrong HS256 secret", keys: all, token: sign(t, jwt.SigningMethodHS256, []byte("another secret, 32 bytes or more......"), "", base()), reason: "bad signature"},
		{name: "RS256 signed by another key", keys: all, token: sign(t, jwt.SigningMethodRS256, k.rsa2, "rsa-1", base()), reason: "bad signature"},
		{name: "unknown kid", keys: StaticKeys(set), token: sign(t, jwt.SigningMethodRS256, k.rsa, "rsa-9", base()), reason: "no key"},
		{name: "kid of another algorithm", keys: StaticKeys(set), token: sign(t, jwt.SigningMethodRS256, k.rsa, "ec-1", base()), reason: "no key"},
		{name: "alg none", keys: all, token: none(base()), reason: "bad signature"},
		{name: "HS256 signed with the RSA public key (confusion)", keys: all, token: sign(t, jwt.SigningMethodHS256, rsaPEM, "rsa-1", base()), reason: "bad signature"},
		{name: "HS256 with only RSA keys configured", keys: StaticKeys(pemKeys), token: sign(t, jwt.SigningMethodHS256, rsaPEM, "", base()), reason: "no key"},
		{name: "RS384 not accepted", keys: all, token: sign(t, jwt.SigningMethodRS384, k.rsa, "rsa-1", base()), reason: "bad signature"},
		{name: "wrong issuer", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("iss", "https://evil")), reason: "issuer"},
		{name: "wrong audience", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("aud", []any{"other"})), reason: "audience"},
		{name: "tampered claims", keys: all, token: tamper(sign(t, jwt.SigningMethodHS256, k.secret, "", base())), reason: "bad signature"},
		{name: "oversized", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("pad", strings.Repeat("x", MaxCredentialBytes))), reason: "too large"},
		{name: "malformed base64", keys: all, token: "eyJ!!!.eyJ.sig", reason: "malformed"},
		{name: "not a JWT", keys: all, token: "hello", reason: "malformed"},
		{name: "sub with a slash gets no template grant", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("sub", "alice/../bob", "streams", nil)), deny: []string{"users/alice/../bob/x", "users/bob/x"}},
		{name: "sub .. gets no template grant", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("sub", "..", "streams", nil)), deny: []string{"users/../x", "users/bob/x"}},
		{name: "sub glob gets no template grant", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("sub", "*", "streams", nil)), deny: []string{"users/bob/x", "users/*/x"}},
		{name: "numeric sub gets no template grant", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("sub", 7, "streams", nil)), deny: []string{"users/7/x"}},
		{name: "invalid stream patterns in the claim are skipped", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("streams", []any{"[", "ok", 5, "a b"})), allow: []string{"ok"}, deny: []string{"a b", "["}},
		{name: "streams claim as one string", keys: all, token: sign(t, jwt.SigningMethodHS256, k.secret, "", with("streams", "solo")), allow: []string{"solo"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewJWTVerifier(JWTConfig{Keys: tc.keys, Issuer: "https://issuer", Audience: "sser", Templates: []Template{tmpl}, Now: func() time.Time { return testNow }})
			if err != nil {
				t.Fatal(err)
			}
			p, err := v.Verify(t.Context(), tc.token)
			if tc.reason != "" {
				if err == nil || !errors.Is(err, ErrInvalidCredential) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("Verify = %v, %v; want an invalid credential error saying %q", p, err, tc.reason)
				}
				if strings.Contains(err.Error(), tc.token) || (len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[10:20])) {
					t.Fatalf("error %q quotes the token", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !p.Expires.Equal(time.Unix(exp, 0)) {
				t.Errorf("Expires = %v, want %v", p.Expires, time.Unix(exp, 0))
			}
			for _, s := range tc.allow {
				if !p.Allows(s) {
					t.Errorf("Allows(%q) = false; grants %q", s, p.Grants)
				}
			}
			for _, s := range tc.deny {
				if p.Allows(s) {
					t.Errorf("Allows(%q) = true; grants %q", s, p.Grants)
				}
			}
		})
	}
}

func TestJWTExpiredIsErrExpired(t *testing.T) {
	k := theKeys(t)
	hs, _ := HS256Key(k.secret)
	v, err := NewJWTVerifier(JWTConfig{Keys: StaticKeys{hs}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"exp": testNow.Unix()}))
	if !errors.Is(err, ErrExpired) || !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("err = %v, want ErrExpired and ErrInvalidCredential", err)
	}
}

func TestPublishClaim(t *testing.T) {
	k := theKeys(t)
	hs, _ := HS256Key(k.secret)
	v, err := NewJWTVerifier(JWTConfig{Keys: StaticKeys{hs}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := MintHS256(k.secret, "", DevClaims("app", nil, []string{"app/*"}, time.Minute, testNow))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !p.AllowsPublish("app/x") || p.AllowsPublish("other/x") || p.Allows("app/x") {
		t.Fatalf("publish grants %q, read grants %q", p.Publish, p.Grants)
	}
}

func TestKeyBounds(t *testing.T) {
	if _, err := HS256Key([]byte("short")); err == nil {
		t.Error("HS256Key accepted a 5-byte secret")
	}
	if _, err := ParsePEMKeys([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Error("ParsePEMKeys accepted a private key block")
	}
	if _, err := ParsePEMKeys(nil); err == nil {
		t.Error("ParsePEMKeys accepted no key")
	}
	if _, err := ParseJWKS([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)); err == nil {
		t.Error("ParseJWKS took a symmetric key")
	}
	k := theKeys(t)
	doc := jwksOf(t, map[string]any{"ed": k.ed.Public().(ed25519.PublicKey)})
	doc = []byte(strings.Replace(string(doc), `"kty":"OKP"`, `"kty":"OKP","alg":"RS256"`, 1))
	if _, err := ParseJWKS(doc); err == nil {
		t.Error("ParseJWKS took an Ed25519 key labelled RS256")
	}
}
