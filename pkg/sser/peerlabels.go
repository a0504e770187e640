package sser

import (
	"context"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sser-dev/sser/pkg/peerfinder"
)

// startPeers starts pf and reports the peer set with each peer's name when
// pf knows names (the Kubernetes finder's pod names), else with none.
func startPeers(ctx context.Context, pf PeerFinder) ([]peerfinder.Peer, <-chan []peerfinder.Peer, error) {
	if named, ok := pf.(peerfinder.NamedPeerFinder); ok {
		return named.StartNamed(ctx)
	}
	ips, updates, err := pf.Start(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan []peerfinder.Peer)
	go func() {
		defer close(out)
		for ips := range updates { // closed once ctx ends
			select {
			case out <- unnamed(ips):
			case <-ctx.Done():
				return
			}
		}
	}()
	return unnamed(ips), out, nil
}

func unnamed(ips []string) []peerfinder.Peer {
	out := make([]peerfinder.Peer, len(ips))
	for i, ip := range ips {
		out[i] = peerfinder.Peer{IP: ip}
	}
	return out
}

// peerLabel is the value of a peer's "peer" label: its name when the finder
// knows one (a pod's name stays what it is while its IP changes with every
// rollout), else its IP.
func peerLabel(p peerfinder.Peer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.IP
}

// peerSeries are one peer's metric series under one label. A sender
// reads them through an atomic pointer: a new pod on the same IP gets new
// series without stopping the sender.
type peerSeries struct {
	label    string
	address  string // IP and port, the sser_peer_info label
	requests prometheus.Counter
	sent     prometheus.Counter
	acks     prometheus.Observer
	errs     prometheus.Counter
	up       prometheus.Gauge
}

// peerSeries makes a peer's series, each at 0 (sser_peer_up at up), and
// its sser_peer_info.
func (m *metrics) peerSeries(label, ip string, port int, up bool) *peerSeries {
	ps := &peerSeries{
		label:    label,
		address:  net.JoinHostPort(ip, strconv.Itoa(port)),
		requests: m.peerRequests.WithLabelValues(label),
		sent:     m.peerEventsSent.WithLabelValues(label),
		acks:     m.peerPostDuration.WithLabelValues(label),
		errs:     m.peerPostErrors.WithLabelValues(label),
		up:       m.peerUp.WithLabelValues(label),
	}
	m.peerCutoffs.WithLabelValues(label)
	m.peerInfo.WithLabelValues(label, ps.address).Set(1)
	if up {
		ps.up.Set(1)
	}
	return ps
}

// forgetPeer removes a departed (or renamed) peer's series, so /metrics
// shows it gone and the label's cardinality stays that of the peer set.
func (m *metrics) forgetPeer(ps *peerSeries) {
	m.peerEventsSent.DeleteLabelValues(ps.label)
	m.peerPostDuration.DeleteLabelValues(ps.label)
	m.peerPostErrors.DeleteLabelValues(ps.label)
	m.peerRequests.DeleteLabelValues(ps.label)
	m.peerUp.DeleteLabelValues(ps.label)
	m.peerCutoffs.DeleteLabelValues(ps.label)
	m.peerInfo.DeleteLabelValues(ps.label, ps.address)
}
