package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func testTicketer(t *testing.T, now *time.Time, keys ...[]byte) *Ticketer {
	t.Helper()
	if len(keys) == 0 {
		keys = [][]byte{[]byte("ticket-key-0123456789abcdef0123456789")}
	}
	tk, err := NewTicketer(time.Hour, keys...)
	if err != nil {
		t.Fatal(err)
	}
	tk.now = func() time.Time { return *now }
	return tk
}

func TestTickets(t *testing.T) {
	now := testNow
	tk := testTicketer(t, &now)
	tok, exp, err := tk.Mint("alice", []string{"users/alice/inbox", "rooms/*"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := testNow.Add(DefaultTicketTTL); !exp.Equal(want) {
		t.Errorf("expires %v, want %v", exp, want)
	}
	if !strings.HasPrefix(tok, TicketPrefix) || strings.ContainsAny(tok, "+/=%&? ") {
		t.Errorf("ticket %q is not compact and URL-safe", tok)
	}
	p, err := tk.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "alice" || !p.Expires.Equal(exp) || !p.Allows("users/alice/inbox") || !p.Allows("rooms/x") || p.Allows("users/bob/inbox") {
		t.Fatalf("principal %+v", p)
	}

	// Another replica with the same key accepts it; one with another key does not.
	other := testTicketer(t, &now)
	if _, err := other.Verify(tok); err != nil {
		t.Errorf("same key on another replica: %v", err)
	}
	stranger := testTicketer(t, &now, []byte("another-ticket-key-0123456789abcdef0"))
	if _, err := stranger.Verify(tok); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("other key: %v", err)
	}
	// Rotation: the new key signs, the old still verifies.
	rotated := testTicketer(t, &now, []byte("new-ticket-key-0123456789abcdef01234"), []byte("ticket-key-0123456789abcdef0123456789"))
	if _, err := rotated.Verify(tok); err != nil {
		t.Errorf("rotated keys: %v", err)
	}

	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "rooms/*", "*/*", 1))) + "." + parts[2]
	for name, bad := range map[string]string{
		"tampered":        forged,
		"bad signature":   tok[:len(tok)-2] + "AA",
		"padded base64":   tok + "=",
		"truncated":       tok[:len(tok)-5],
		"no signature":    parts[0] + "." + parts[1],
		"not a ticket":    "t2." + parts[1] + "." + parts[2],
		"malformed":       "t1.!!!.???",
		"empty":           "",
		"oversized":       TicketPrefix + strings.Repeat("A", MaxCredentialBytes),
		"signature twice": tok + "." + parts[2],
	} {
		if p, err := tk.Verify(bad); !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("%s: Verify = %+v, %v", name, p, err)
		} else if len(bad) > 12 && strings.Contains(err.Error(), bad[4:12]) {
			t.Errorf("%s: error %q quotes the ticket", name, err)
		}
	}

	now = exp
	if _, err := tk.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v, want ErrExpired", err)
	}
}

func TestTicketMintBounds(t *testing.T) {
	now := testNow
	tk := testTicketer(t, &now)
	for name, c := range map[string]struct {
		sub     string
		streams []string
		ttl     time.Duration
		want    error
	}{
		"ttl over max":   {"a", []string{"x"}, 2 * time.Hour, ErrTicketTTL},
		"negative ttl":   {"a", []string{"x"}, -time.Second, ErrTicketTTL},
		"no streams":     {"a", nil, time.Minute, ErrTicketStreams},
		"bad stream":     {"a", []string{"a b"}, time.Minute, ErrTicketStreams},
		"bad pattern":    {"a", []string{"["}, time.Minute, ErrTicketStreams},
		"control in sub": {"a\nb", []string{"x"}, time.Minute, ErrTicketSubject},
	} {
		if _, _, err := tk.Mint(c.sub, c.streams, c.ttl); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := NewTicketer(0, []byte("short")); err == nil {
		t.Error("NewTicketer accepted a short key")
	}
	if tk2, err := NewTicketer(0, []byte("ticket-key-0123456789abcdef0123456789")); err != nil || tk2.MaxTTL() != DefaultTicketMaxTTL {
		t.Errorf("default max TTL: %v %v", tk2, err)
	}
}
