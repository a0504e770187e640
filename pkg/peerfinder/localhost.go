package peerfinder

import "context"

// LocalhostIP is the single peer NewPeerFinderLocalhost reports.
const LocalhostIP = "127.0.0.1"

// NewPeerFinderLocalhost returns a PeerFinder for one replica with no cluster:
// the set is always just 127.0.0.1.
func NewPeerFinderLocalhost() PeerFinder {
	return fixed{ips: []string{LocalhostIP}}
}

// fixed reports a set that never changes.
type fixed struct {
	ips []string
}

// Start returns the fixed set and a channel that only closes when ctx ends.
func (f fixed) Start(ctx context.Context) ([]string, <-chan []string, error) {
	out := make(chan []string)
	go func() {
		<-ctx.Done()
		close(out)
	}()
	return append([]string(nil), f.ips...), out, nil
}
