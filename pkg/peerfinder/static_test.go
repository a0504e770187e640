package peerfinder

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestStatic(t *testing.T) {
	tests := []struct {
		name    string
		ips     []string
		want    []string
		wantErr error
	}{
		{"one", []string{"127.0.0.2"}, []string{"127.0.0.2"}, nil},
		{"sorted, trimmed, deduplicated", []string{" 127.0.0.4", "127.0.0.2", "", "127.0.0.4 "}, []string{"127.0.0.2", "127.0.0.4"}, nil},
		{"IPv6 normalised", []string{"fd00:0::1", "127.0.0.1"}, []string{"127.0.0.1", "fd00::1"}, nil},
		{"empty", nil, nil, ErrInvalidIP},
		{"only blanks", []string{" ", ""}, nil, ErrInvalidIP},
		{"host name", []string{"sser-0"}, nil, ErrInvalidIP},
		{"with port", []string{"127.0.0.2:7000"}, nil, ErrInvalidIP},
		{"with zone", []string{"fe80::1%eth0"}, nil, ErrInvalidIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pf, err := NewPeerFinderStatic(tt.ips)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			got, _ := startAndStop(t, pf)
			if !slices.Equal(got, tt.want) {
				t.Errorf("set = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLocalhost(t *testing.T) {
	got, _ := startAndStop(t, NewPeerFinderLocalhost())
	if want := []string{"127.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("set = %v, want %v", got, want)
	}
}

// startAndStop starts pf, cancels it and checks that its channel then closes
// without having sent anything.
func startAndStop(t *testing.T, pf PeerFinder) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	set, updates, err := pf.Start(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	cancel()
	select {
	case v, ok := <-updates:
		if ok {
			t.Errorf("fixed finder sent %v", v)
		}
	case <-time.After(waitFor):
		t.Error("channel not closed after cancel")
	}
	return set, nil
}
