package peerfinder

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NewPeerFinderStatic returns a PeerFinder that always reports ips, for tests
// and for setups outside Kubernetes. The list must include this replica's own
// IP. Each entry must be an IPv4 or IPv6 address (no port, no zone);
// surrounding spaces and empty entries are ignored, duplicates are dropped and
// the set is reported sorted.
func NewPeerFinderStatic(ips []string) (PeerFinder, error) {
	set := make([]string, 0, len(ips))
	for _, s := range ips {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("%w: %q", ErrInvalidIP, s)
		}
		set = append(set, addr.String())
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("%w: no peers given", ErrInvalidIP)
	}
	slices.Sort(set)
	return fixed{ips: slices.Compact(set)}, nil
}
