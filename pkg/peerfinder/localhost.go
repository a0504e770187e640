package peerfinder

import "context"

// LocalhostIP is the single peer NewPeerFinderLocalhost reports.
const LocalhostIP = "127.0.0.1"

// NewPeerFinderLocalhost returns a PeerFinder for one replica with no cluster:
// the set is always just this replica. It reports 127.0.0.1; a server bound
// to another address takes its own address instead (see Lone), so it never
// sends its events to an address that is not itself.
func NewPeerFinderLocalhost() PeerFinder {
	return lone{fixed{ips: []string{LocalhostIP}}}
}

// Lone is implemented by finders whose peer set is the replica alone,
// whatever address it has.
type Lone interface {
	PeerFinder
	Lone() bool
}

type lone struct{ fixed }

func (lone) Lone() bool { return true }

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
