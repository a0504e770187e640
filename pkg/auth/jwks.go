package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// KeySource gives the verification keys for a token's kid. Implementations
// must be safe for concurrent use.
type KeySource interface {
	Keys(ctx context.Context, kid string) []Key
}

// StaticKeys is a fixed key set.
type StaticKeys []Key

// Keys returns every key.
func (s StaticKeys) Keys(context.Context, string) []Key { return s }

// JWKS is a key set loaded from a file or a URL, reloaded every Refresh and
// when a token names a kid it does not hold, at most once per MinInterval:
// keys rotated by the issuer are picked up without a restart, and a flood
// of tokens with made-up kids cannot turn into a flood of fetches.
type JWKS struct {
	load        func(ctx context.Context) ([]byte, error)
	refresh     time.Duration
	minInterval time.Duration
	now         func() time.Time

	mu       sync.Mutex
	keys     []Key
	loaded   time.Time     // when keys were last loaded
	tried    time.Time     // when a load was last started
	inflight chan struct{} // closed when the running load ends; nil when none
	lastErr  error
}

// JWKSOptions tune a JWKS.
type JWKSOptions struct {
	// Refresh is how often the set is reloaded (default 5m).
	Refresh time.Duration
	// MinInterval is the least time between two loads (default 10s).
	MinInterval time.Duration
	// Client fetches a URL (default a client with a 10s timeout).
	Client *http.Client
}

func (o *JWKSOptions) defaults() {
	if o.Refresh <= 0 {
		o.Refresh = 5 * time.Minute
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
}

// maxJWKSBytes bounds a key set document.
const maxJWKSBytes = 1 << 20

// NewJWKSFile loads a key set from a file (a mounted Secret or ConfigMap is
// updated in place, so it is reloaded like a URL).
func NewJWKSFile(ctx context.Context, file string, o JWKSOptions) (*JWKS, error) {
	return newJWKS(ctx, func(context.Context) ([]byte, error) { return os.ReadFile(file) }, o)
}

// NewJWKSURL loads a key set from an http(s) URL.
func NewJWKSURL(ctx context.Context, url string, o JWKSOptions) (*JWKS, error) {
	o.defaults()
	client := o.Client
	return newJWKS(ctx, func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json, application/jwk-set+json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	}, o)
}

// newJWKS loads the set once; a set that cannot be loaded at start is an
// error, so a wrong path or URL is found when the replica starts.
func newJWKS(ctx context.Context, load func(context.Context) ([]byte, error), o JWKSOptions) (*JWKS, error) {
	o.defaults()
	j := &JWKS{load: load, refresh: o.Refresh, minInterval: o.MinInterval, now: time.Now}
	j.reload(ctx)
	if j.keys == nil {
		return nil, j.lastErr
	}
	return j, nil
}

// Keys returns the keys for kid, reloading the set first when it is stale,
// or when kid is not in it and the last load is older than MinInterval.
func (j *JWKS) Keys(ctx context.Context, kid string) []Key {
	j.mu.Lock()
	now := j.now()
	stale := now.Sub(j.loaded) >= j.refresh
	unknown := kid != "" && !hasKid(j.keys, kid)
	keys := j.keys
	due := now.Sub(j.tried) >= j.minInterval
	j.mu.Unlock()
	if (stale || unknown) && due {
		j.reload(ctx)
		j.mu.Lock()
		keys = j.keys
		j.mu.Unlock()
	}
	return keys
}

func hasKid(keys []Key, kid string) bool {
	for _, k := range keys {
		if k.ID == kid {
			return true
		}
	}
	return false
}

// reload loads the set, or waits for the load already running. A failed
// load keeps the keys held.
func (j *JWKS) reload(ctx context.Context) {
	j.mu.Lock()
	if ch := j.inflight; ch != nil {
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	if j.now().Sub(j.tried) < j.minInterval && j.keys != nil {
		j.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	j.inflight = ch
	j.tried = j.now()
	j.mu.Unlock()

	data, err := j.load(ctx)
	var keys []Key
	if err == nil {
		keys, err = ParseJWKS(data)
	}
	j.mu.Lock()
	if err == nil {
		j.keys, j.loaded = keys, j.now()
	}
	j.lastErr = err
	j.inflight = nil
	j.mu.Unlock()
	close(ch)
}

// Err is the error of the last load, nil when it succeeded.
func (j *JWKS) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lastErr
}

// errNoKeys is returned when no configured key fits a token.
var errNoKeys = errors.New("no key for this token")
