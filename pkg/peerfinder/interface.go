package peerfinder

import (
	"context"
	"errors"
)

// PeerFinder reports the set of replicas of one sser deployment.
//
// Implementations are safe to Start once; Start may be called from any
// goroutine.
type PeerFinder interface {
	// Start begins discovery. The returned slice and every value on the
	// channel are the full, sorted set of peer IPs, this replica's own
	// included, and a value is sent only when the set changes. A consumer
	// that falls behind receives the newest set, not every intermediate one.
	// The channel is closed when ctx ends, after every goroutine Start began
	// has returned.
	Start(ctx context.Context) ([]string, <-chan []string, error)
}

// Peer is one replica in the set: its IP address and, where the finder
// knows it, a stable name for it (the Kubernetes finder's is the pod name).
// Name is empty when the finder knows none; the IP then names the peer.
type Peer struct {
	IP   string `json:"ip"`
	Name string `json:"name,omitempty"`
}

// NamedPeerFinder is a PeerFinder that also names its peers. The server
// uses the names where an address would be a poor label: a pod's IP
// changes on every rollout, its name says which pod it is.
type NamedPeerFinder interface {
	PeerFinder
	// StartNamed is Start with each peer's name. The set is sorted by IP,
	// one entry per IP, and a value is sent when an IP or a name changes.
	// Start and StartNamed are alternatives: call one of them, once.
	StartNamed(ctx context.Context) ([]Peer, <-chan []Peer, error)
}

var (
	// ErrForbidden means the API server refused to list or watch pods: the
	// identity lacks RBAC permission (get, list, watch on pods in the
	// namespace).
	ErrForbidden = errors.New("sser: peerfinder: forbidden")
	// ErrUnauthorized means the API server did not accept the credentials.
	ErrUnauthorized = errors.New("sser: peerfinder: unauthorized")
	// ErrInvalidSelector means the label selector does not parse.
	ErrInvalidSelector = errors.New("sser: peerfinder: invalid label selector")
	// ErrInvalidIP means a static peer is not an IP address.
	ErrInvalidIP = errors.New("sser: peerfinder: invalid IP address")
	// ErrNotSynced means the pod list could not be loaded in time.
	ErrNotSynced = errors.New("sser: peerfinder: pod list not loaded in time")
)
