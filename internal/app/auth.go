package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/sser-dev/sser/pkg/auth"
	"github.com/sser-dev/sser/pkg/sser"
)

// AuthOptions are the subscriber authentication settings. Secrets come from
// files (a mounted Secret) or environment variables, never from flags'
// values, and are never logged.
type AuthOptions struct {
	HS256SecretFile string
	PublicKeyFile   string
	JWKSFile        string
	JWKSURL         string
	JWKSRefresh     time.Duration
	Issuer          string
	Audience        string
	StreamsClaim    string
	Templates       []string
	Cookie          string
	TicketKeyFile   string
	TicketMaxTTL    time.Duration

	// From the environment only (SSER_AUTH_JWT_HS256_SECRET, SSER_TICKET_KEY).
	hs256Secret string
	ticketKey   string
}

// Environment variables that hold secrets themselves.
const (
	envHS256Secret = "SSER_AUTH_JWT_HS256_SECRET"
	envTicketKey   = "SSER_TICKET_KEY"
)

func newAuthOptions() AuthOptions {
	return AuthOptions{StreamsClaim: auth.DefaultStreamsClaim, Cookie: auth.DefaultCookieName, TicketMaxTTL: auth.DefaultTicketMaxTTL, JWKSRefresh: 5 * time.Minute}
}

func (a *AuthOptions) flags(e *envFlags) {
	e.str(&a.HS256SecretFile, "auth-jwt-hs256-secret-file", "SSER_AUTH_JWT_HS256_SECRET_FILE", "file holding the HS256 secret subscribers' JWTs are signed with (or the secret itself in "+envHS256Secret+")")
	e.str(&a.PublicKeyFile, "auth-jwt-public-key-file", "SSER_AUTH_JWT_PUBLIC_KEY_FILE", "PEM file of RS256, ES256 or EdDSA public keys (or certificates) JWTs are verified with")
	e.str(&a.JWKSFile, "auth-jwks-file", "SSER_AUTH_JWKS_FILE", "JWKS file of public keys JWTs are verified with (reloaded every --auth-jwks-refresh)")
	e.str(&a.JWKSURL, "auth-jwks-url", "SSER_AUTH_JWKS_URL", "http(s) URL of a JWKS, fetched at start, every --auth-jwks-refresh and on an unknown kid (at most every 10s)")
	e.dur(&a.JWKSRefresh, "auth-jwks-refresh", "SSER_AUTH_JWKS_REFRESH", "how often a JWKS is reloaded")
	e.str(&a.Issuer, "auth-issuer", "SSER_AUTH_ISSUER", "when set, JWTs must have this iss")
	e.str(&a.Audience, "auth-audience", "SSER_AUTH_AUDIENCE", "when set, JWTs must have this aud")
	e.str(&a.StreamsClaim, "auth-streams-claim", "SSER_AUTH_STREAMS_CLAIM", "JWT claim listing the streams (names or glob patterns) the token may read")
	// Repeatable: each flag adds a template; the variable's list (comma
	// separated) applies when no flag is given.
	if v, ok := e.lookup("auth-stream-template", "SSER_AUTH_STREAM_TEMPLATES"); ok {
		a.Templates = splitList(v)
	}
	fromEnv := true
	e.fs.Func("auth-stream-template", e.usage("streams every valid JWT may read, from its string claims, e.g. users/{sub}/* (repeatable)", "SSER_AUTH_STREAM_TEMPLATES, comma-separated"), func(s string) error {
		if fromEnv {
			a.Templates, fromEnv = nil, false
		}
		a.Templates = append(a.Templates, s)
		return nil
	})
	e.str(&a.Cookie, "auth-cookie", "SSER_AUTH_COOKIE", "cookie a JWT or ticket is read from (empty: none)")
	e.str(&a.TicketKeyFile, "ticket-key-file", "SSER_TICKET_KEY_FILE", "file holding the key tickets are signed with, the same on every replica (or the key itself in "+envTicketKey+"); enables POST "+sser.TicketsURLPath)
	e.dur(&a.TicketMaxTTL, "ticket-max-ttl", "SSER_TICKET_MAX_TTL", "longest TTL a ticket is minted with")
	a.hs256Secret = os.Getenv(envHS256Secret)
	a.ticketKey = os.Getenv(envTicketKey)
}

// jwtEnabled reports whether any JWT key source is configured.
func (a *AuthOptions) jwtEnabled() bool {
	return a.HS256SecretFile != "" || a.hs256Secret != "" || a.PublicKeyFile != "" || a.JWKSFile != "" || a.JWKSURL != ""
}

func (a *AuthOptions) ticketsEnabled() bool { return a.TicketKeyFile != "" || a.ticketKey != "" }

// Enabled reports whether subscribers are authenticated.
func (a *AuthOptions) Enabled() bool { return a.jwtEnabled() || a.ticketsEnabled() }

func (a *AuthOptions) validate() []error {
	var errs []error
	if a.HS256SecretFile != "" && a.hs256Secret != "" {
		errs = append(errs, errors.New("--auth-jwt-hs256-secret-file and "+envHS256Secret+": give one"))
	}
	if a.TicketKeyFile != "" && a.ticketKey != "" {
		errs = append(errs, errors.New("--ticket-key-file and "+envTicketKey+": give one"))
	}
	if a.JWKSFile != "" && a.JWKSURL != "" {
		errs = append(errs, errors.New("--auth-jwks-file and --auth-jwks-url: give one"))
	}
	if a.JWKSURL != "" && !strings.HasPrefix(a.JWKSURL, "https://") && !strings.HasPrefix(a.JWKSURL, "http://") {
		errs = append(errs, fmt.Errorf("--auth-jwks-url %q: want an http(s) URL", a.JWKSURL))
	}
	if !a.jwtEnabled() {
		for name, v := range map[string]bool{"--auth-issuer": a.Issuer != "", "--auth-audience": a.Audience != "", "--auth-stream-template": len(a.Templates) > 0} {
			if v {
				errs = append(errs, fmt.Errorf("%s needs a JWT key source (--auth-jwt-hs256-secret-file, --auth-jwt-public-key-file, --auth-jwks-file or --auth-jwks-url)", name))
			}
		}
	}
	for _, t := range a.Templates {
		if _, err := auth.ParseTemplate(t); err != nil {
			errs = append(errs, fmt.Errorf("--auth-stream-template: %w", err))
		}
	}
	if a.StreamsClaim == "" {
		errs = append(errs, errors.New("--auth-streams-claim must not be empty"))
	}
	if a.TicketMaxTTL <= 0 {
		errs = append(errs, fmt.Errorf("--ticket-max-ttl must be positive, got %s", a.TicketMaxTTL))
	}
	if a.JWKSRefresh <= 0 {
		errs = append(errs, fmt.Errorf("--auth-jwks-refresh must be positive, got %s", a.JWKSRefresh))
	}
	return errs
}

// readSecret returns the secret in file, else env's value, trimmed of a
// final newline.
func readSecret(file, env string) ([]byte, error) {
	if file == "" {
		return []byte(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

// authOptions builds the library's authentication. With nothing configured
// it returns the zero value and logs, once and loudly, that the frontend
// is open.
func (a *AuthOptions) authOptions(ctx context.Context, log logr.Logger) (sser.AuthOptions, error) {
	var out sser.AuthOptions
	if !a.Enabled() {
		log.Info("WARNING: subscriber authentication is off: anyone who reaches the frontend can read every stream (set a JWT key source or --ticket-key-file)", "severity", "warning")
		return out, nil
	}
	authn := &auth.Authenticator{Cookie: a.Cookie}
	if a.ticketsEnabled() {
		key, err := readSecret(a.TicketKeyFile, a.ticketKey)
		if err != nil {
			return out, fmt.Errorf("--ticket-key-file: %w", err)
		}
		tk, err := auth.NewTicketer(a.TicketMaxTTL, key)
		if err != nil {
			return out, err
		}
		authn.Tickets, out.Tickets = tk, tk
	}
	if a.jwtEnabled() {
		var keys []auth.Key
		var sources auth.KeySource
		if a.HS256SecretFile != "" || a.hs256Secret != "" {
			secret, err := readSecret(a.HS256SecretFile, a.hs256Secret)
			if err != nil {
				return out, fmt.Errorf("--auth-jwt-hs256-secret-file: %w", err)
			}
			k, err := auth.HS256Key(secret)
			if err != nil {
				return out, err
			}
			keys = append(keys, k)
		}
		if a.PublicKeyFile != "" {
			b, err := os.ReadFile(a.PublicKeyFile)
			if err != nil {
				return out, fmt.Errorf("--auth-jwt-public-key-file: %w", err)
			}
			ks, err := auth.ParsePEMKeys(b)
			if err != nil {
				return out, fmt.Errorf("--auth-jwt-public-key-file: %w", err)
			}
			keys = append(keys, ks...)
		}
		sources = auth.StaticKeys(keys)
		if a.JWKSFile != "" || a.JWKSURL != "" {
			o := auth.JWKSOptions{Refresh: a.JWKSRefresh}
			var set *auth.JWKS
			var err error
			if a.JWKSFile != "" {
				set, err = auth.NewJWKSFile(ctx, a.JWKSFile, o)
			} else {
				set, err = auth.NewJWKSURL(ctx, a.JWKSURL, o)
			}
			if err != nil {
				return out, fmt.Errorf("JWKS: %w", err)
			}
			sources = mergedKeys{static: keys, set: set}
		}
		var templates []auth.Template
		for _, t := range a.Templates {
			tt, _ := auth.ParseTemplate(t) // validated
			templates = append(templates, tt)
		}
		v, err := auth.NewJWTVerifier(auth.JWTConfig{Keys: sources, Issuer: a.Issuer, Audience: a.Audience, StreamsClaim: a.StreamsClaim, Templates: templates, Leeway: 5 * time.Second})
		if err != nil {
			return out, err
		}
		authn.JWT = v
	}
	out.Authenticate = authn.Authenticate
	log.Info("subscriber authentication on", "jwt", a.jwtEnabled(), "tickets", a.ticketsEnabled(), "cookie", a.Cookie, "templates", a.Templates)
	return out, nil
}

// mergedKeys are fixed keys and a JWKS's.
type mergedKeys struct {
	static []auth.Key
	set    *auth.JWKS
}

func (m mergedKeys) Keys(ctx context.Context, kid string) []auth.Key {
	return append(append([]auth.Key(nil), m.static...), m.set.Keys(ctx, kid)...)
}
