package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TicketPrefix starts every ticket, so a ticket is told from a JWT.
const TicketPrefix = "t1."

// Ticket TTLs.
const (
	DefaultTicketTTL    = 60 * time.Second
	DefaultTicketMaxTTL = time.Hour
)

// Ticketer mints and verifies tickets: "t1." + base64url(payload) + "." +
// base64url(HMAC-SHA256(key, "t1." + payload)). Every replica given the same
// key verifies every other's tickets with no shared state. The payload
// (subject, streams, expiry, a random nonce) is not secret, only unforgeable;
// clients must treat tickets as opaque. Safe for concurrent use.
type Ticketer struct {
	keys   [][]byte // keys[0] signs; all verify (rotation)
	maxTTL time.Duration
	now    func() time.Time
}

// NewTicketer returns a ticketer signing with keys[0] and accepting tickets
// signed with any of keys (so a key can be rotated without a flag day).
// maxTTL caps the TTL of minted tickets (default one hour).
func NewTicketer(maxTTL time.Duration, keys ...[]byte) (*Ticketer, error) {
	if len(keys) == 0 {
		return nil, errors.New("auth: ticket key required")
	}
	for _, k := range keys {
		if len(k) < MinSecretBytes {
			return nil, fmt.Errorf("auth: ticket key has %d bytes, want at least %d", len(k), MinSecretBytes)
		}
	}
	if maxTTL <= 0 {
		maxTTL = DefaultTicketMaxTTL
	}
	return &Ticketer{keys: keys, maxTTL: maxTTL, now: time.Now}, nil
}

// MaxTTL is the longest TTL a ticket is minted with.
func (t *Ticketer) MaxTTL() time.Duration { return t.maxTTL }

type ticketPayload struct {
	Sub     string   `json:"s,omitempty"`
	Streams []string `json:"g"`
	Exp     int64    `json:"e"`
	Nonce   string   `json:"n"`
}

// Errors of Mint.
var (
	ErrTicketStreams = errors.New("auth: a ticket needs 1-100 streams, each a stream name or pattern")
	ErrTicketTTL     = errors.New("auth: ticket TTL must be positive and at most the maximum")
	ErrTicketSubject = errors.New("auth: ticket subject must be at most 256 printable characters")
)

// Mint returns a ticket for subject and streams that expires after ttl
// (DefaultTicketTTL when 0), and when it expires.
func (t *Ticketer) Mint(subject string, streams []string, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultTicketTTL
	}
	if ttl < 0 || ttl > t.maxTTL {
		return "", time.Time{}, fmt.Errorf("%w (%s)", ErrTicketTTL, t.maxTTL)
	}
	if len(streams) == 0 || len(streams) > 100 {
		return "", time.Time{}, ErrTicketStreams
	}
	for _, s := range streams {
		if !ValidPattern(s) {
			return "", time.Time{}, ErrTicketStreams
		}
	}
	if len(subject) > 256 || strings.IndexFunc(subject, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return "", time.Time{}, ErrTicketSubject
	}
	var nonce [9]byte
	_, _ = rand.Read(nonce[:])
	// Whole seconds: the expiry a ticket carries is the one answered.
	exp := t.now().Add(ttl).Truncate(time.Second)
	payload, err := json.Marshal(ticketPayload{Sub: subject, Streams: streams, Exp: exp.Unix(), Nonce: base64.RawURLEncoding.EncodeToString(nonce[:])})
	if err != nil {
		return "", time.Time{}, err
	}
	body := TicketPrefix + base64.RawURLEncoding.EncodeToString(payload)
	return body + "." + base64.RawURLEncoding.EncodeToString(ticketMAC(t.keys[0], body)), exp, nil
}

func ticketMAC(key []byte, body string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Verify checks a ticket and returns its principal.
func (t *Ticketer) Verify(ticket string) (*Principal, error) {
	if len(ticket) > MaxCredentialBytes {
		return nil, invalid("credential too large")
	}
	if !strings.HasPrefix(ticket, TicketPrefix) {
		return nil, invalid("not a ticket")
	}
	i := strings.LastIndexByte(ticket, '.')
	body, sigText := ticket[:i], ticket[i+1:]
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigText)
	if err != nil || len(sig) != sha256.Size {
		return nil, invalid("malformed ticket")
	}
	ok := false
	for _, k := range t.keys {
		ok = hmac.Equal(sig, ticketMAC(k, body)) || ok
	}
	if !ok {
		return nil, invalid("bad signature")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body[len(TicketPrefix):])
	if err != nil {
		return nil, invalid("malformed ticket")
	}
	var p ticketPayload
	if err := json.Unmarshal(raw, &p); err != nil || p.Exp == 0 {
		return nil, invalid("malformed ticket")
	}
	exp := time.Unix(p.Exp, 0)
	if !t.now().Before(exp) {
		return nil, expired()
	}
	var grants []string
	for _, s := range p.Streams {
		if ValidPattern(s) {
			grants = append(grants, s)
		}
	}
	return &Principal{Subject: p.Sub, Grants: grants, Expires: exp}, nil
}
