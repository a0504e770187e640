package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxCredentialBytes is the longest credential looked at: a longer one is
// refused before it is decoded.
const MaxCredentialBytes = 8 << 10

// DefaultStreamsClaim is the claim that lists the streams a token may read.
const DefaultStreamsClaim = "streams"

// PublishClaim is the claim that lists the streams a token may publish to.
const PublishClaim = "publish"

// JWTConfig configures a JWTVerifier.
type JWTConfig struct {
	// Keys gives the verification keys; required.
	Keys KeySource
	// Issuer, when set, must be the token's "iss".
	Issuer string
	// Audience, when set, must be among the token's "aud".
	Audience string
	// StreamsClaim names the claim listing readable streams (default "streams").
	StreamsClaim string
	// Templates grant every valid token the streams they expand to.
	Templates []Template
	// Leeway is the clock skew allowed on exp and nbf (default 0).
	Leeway time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// JWTVerifier verifies JWTs and turns them into Principals. It is safe for
// concurrent use.
type JWTVerifier struct {
	cfg    JWTConfig
	parser *jwt.Parser
}

// NewJWTVerifier returns a verifier for cfg.
func NewJWTVerifier(cfg JWTConfig) (*JWTVerifier, error) {
	if cfg.Keys == nil {
		return nil, errors.New("auth: JWT verification needs keys")
	}
	if cfg.StreamsClaim == "" {
		cfg.StreamsClaim = DefaultStreamsClaim
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{AlgHS256, AlgRS256, AlgES256, AlgEdDSA}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &JWTVerifier{cfg: cfg, parser: jwt.NewParser(opts...)}, nil
}

// Verify checks token and returns its principal. Errors wrap
// ErrInvalidCredential and say why in fixed words, never quoting the token.
func (v *JWTVerifier) Verify(ctx context.Context, token string) (*Principal, error) {
	if len(token) > MaxCredentialBytes {
		return nil, invalid("credential too large")
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		kid, _ := t.Header["kid"].(string)
		var set jwt.VerificationKeySet
		for _, k := range v.cfg.Keys.Keys(ctx, kid) {
			// A key verifies only its own algorithm, and a key with an id
			// only the tokens that name it.
			if k.Alg == alg && (k.ID == "" || k.ID == kid) {
				set.Keys = append(set.Keys, k.Material)
			}
		}
		if len(set.Keys) == 0 {
			return nil, errNoKeys
		}
		return set, nil
	})
	if err != nil {
		return nil, jwtError(err)
	}
	p := &Principal{}
	p.Subject, _ = claims["sub"].(string)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		p.Expires = exp.Time
	}
	p.Grants = patterns(claims[v.cfg.StreamsClaim])
	for _, t := range v.cfg.Templates {
		if g, ok := t.Expand(claims); ok {
			p.Grants = append(p.Grants, g)
		}
	}
	p.Publish = patterns(claims[PublishClaim])
	return p, nil
}

// patterns reads a claim that is one pattern or a list of them, skipping
// anything that is not a valid pattern.
func patterns(v any) []string {
	var out []string
	add := func(x any) {
		if s, ok := x.(string); ok && ValidPattern(s) {
			out = append(out, s)
		}
	}
	switch x := v.(type) {
	case string:
		add(x)
	case []any:
		for _, e := range x {
			add(e)
		}
	}
	return out
}

// jwtError maps the library's errors to fixed reasons.
func jwtError(err error) error {
	switch {
	case errors.Is(err, errNoKeys):
		return invalid("no key for this token (unknown key id or algorithm)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return invalid("bad signature")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return invalid("algorithm not accepted")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return invalid("expiry (exp) required")
	case errors.Is(err, jwt.ErrTokenExpired):
		return expired()
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid("not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return invalid("wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid("wrong audience")
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return invalid("invalid claims")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrSignatureInvalid):
		return invalid("bad signature")
	}
	return invalid("malformed token")
}

// MintHS256 signs claims with an HS256 secret: for development tokens and
// tests. exp must be among the claims for the token to be accepted.
func MintHS256(secret []byte, kid string, claims map[string]any) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims))
	if kid != "" {
		t.Header["kid"] = kid
	}
	return t.SignedString(secret)
}

// DevClaims are the claims of a development token: subject, readable
// streams, publishable streams and expiry after ttl.
func DevClaims(subject string, streams, publish []string, ttl time.Duration, now time.Time) map[string]any {
	c := map[string]any{"exp": now.Add(ttl).Unix(), "iat": now.Unix()}
	if subject != "" {
		c["sub"] = subject
	}
	if len(streams) > 0 {
		c[DefaultStreamsClaim] = slices.Clone(streams)
	}
	if len(publish) > 0 {
		c[PublishClaim] = slices.Clone(publish)
	}
	return c
}

// LooksLikeJWT reports whether s has the shape of a compact JWS: three
// dot-separated parts, the first a base64url JSON object.
func LooksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ") }
