package sser

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// namedFinder is a NamedPeerFinder whose set the test changes.
type namedFinder struct {
	initial []peerfinder.Peer
	updates chan []peerfinder.Peer
}

func (f *namedFinder) Start(context.Context) ([]string, <-chan []string, error) {
	panic("the server must use StartNamed when the finder names its peers")
}

func (f *namedFinder) StartNamed(ctx context.Context) ([]peerfinder.Peer, <-chan []peerfinder.Peer, error) {
	out := make(chan []peerfinder.Peer)
	go func() {
		defer close(out)
		for {
			select {
			case set := <-f.updates:
				select {
				case out <- set:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return f.initial, out, nil
}

// peerSeriesByLabel reads every series with a peer label from reg: for
// each value of the label, the metric names that have it, and the address
// of its sser_peer_info.
func peerSeriesByLabel(t *testing.T, reg *prometheus.Registry) (names map[string][]string, address map[string]string) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names, address = map[string][]string{}, map[string]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			peer, ok := labels["peer"]
			if !ok {
				continue
			}
			names[peer] = append(names[peer], f.GetName())
			if f.GetName() == "sser_peer_info" {
				address[peer] = labels["address"]
				if v := m.GetGauge().GetValue(); v != 1 {
					t.Errorf("sser_peer_info{peer=%q} = %v, want 1", peer, v)
				}
			}
		}
	}
	return names, address
}

// Every series a peer has from the moment it joins.
var peerSeriesNames = []string{"sser_peer_cutoffs_total", "sser_peer_events_sent_total", "sser_peer_info", "sser_peer_lag",
	"sser_peer_post_duration_seconds", "sser_peer_post_errors_total", "sser_peer_queue_length", "sser_peer_requests_total", "sser_peer_up"}

// A peer's series are labelled with its pod name where the finder knows it
// (an IP changes with every rollout), sser_peer_info maps the name to the
// address, a new pod on the same IP gets series of its own, and the series
// of a peer that left are gone, so the label's values are the peer set's.
func TestPeerSeriesAreLabelledByNameAndForgotten(t *testing.T) {
	const self, other = "127.0.0.1", "127.0.0.254"
	f := &namedFinder{
		initial: []peerfinder.Peer{{IP: self, Name: "sser-self"}, {IP: other, Name: "sser-a"}},
		updates: make(chan []peerfinder.Peer),
	}
	// The peer is never reached (port 1 refuses): its series exist anyway.
	ts := startServer(t, Options{PeerFinder: f, PeerPort: 1, WarmUpTimeout: -1, AntiEntropyInterval: -1})
	reg := ts.m.registry
	want := func(what string, label string) {
		t.Helper()
		var names map[string][]string
		var address map[string]string
		testproc.Eventually(t, 10*time.Second, what, func() bool {
			names, address = peerSeriesByLabel(t, reg)
			if label == "" {
				return len(names) == 0
			}
			got := names[label]
			slices.Sort(got)
			return len(names) == 1 && slices.Equal(slices.Compact(got), peerSeriesNames) && address[label] == other+":1"
		})
		t.Logf("%s: %v", what, slices.Sorted(maps.Keys(names)))
	}
	want("series under the pod name", "sser-a")
	if v, ok := gaugeValue(t, reg, "sser_peer_cutoffs_total", "sser-a"); !ok || v != 0 {
		t.Errorf("sser_peer_cutoffs_total{peer=sser-a} = %v (present %v), want 0 from the start", v, ok)
	}

	f.updates <- []peerfinder.Peer{{IP: self, Name: "sser-self"}, {IP: other, Name: "sser-b"}}
	want("a new pod on the same IP: series under its name, the old name's gone", "sser-b")

	f.updates <- []peerfinder.Peer{{IP: self, Name: "sser-self"}}
	want("the peer left: no peer series at all", "")
}

// A finder that knows no names labels peers by IP, as before.
func TestPeerSeriesFallBackToTheIP(t *testing.T) {
	const other = "127.0.0.254"
	ts := startServer(t, Options{PeerFinder: staticFinder(t, "127.0.0.1", other), PeerPort: 1, WarmUpTimeout: -1, AntiEntropyInterval: -1})
	testproc.Eventually(t, 10*time.Second, "series under the IP", func() bool {
		names, address := peerSeriesByLabel(t, ts.m.registry)
		return len(names) == 1 && len(names[other]) > 0 && address[other] == other+":1"
	})
}

// gaugeValue is the value of the counter or gauge name{peer=peer}.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name, peer string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" && l.GetValue() == peer {
					if c := m.GetCounter(); c != nil {
						return c.GetValue(), true
					}
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}
