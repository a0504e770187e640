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

// Namer is implemented by a PeerFinder that knows the pod behind each
// address (the Kubernetes finder), so that a status page can name peers.
type Namer interface {
	// PodNames maps the IPs of the current peers to their pod names, as far
	// as known now: empty before Start. Safe for concurrent use.
	PodNames() map[string]string
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
