// Package sser is a horizontally scaled Server-Sent Events hub.
//
// A Server keeps the SSE subscribers of one replica, delivers every event it is
// given to the subscribers of that event's stream, keeps a bounded history per
// stream so that clients can resume, and broadcasts the events published on this
// replica to every peer replica over HTTP (one sender per peer, batched,
// retried with backoff, never blocking Send).
//
// Every event published through a replica is stamped with that process's
// origin (random per process start) and a sequence number. A replica applies
// the events of each origin in sequence order, and the SSE id of each frame is
// the replica's position vector (origin to last applied sequence), so an id
// means the same on every replica: a client can resume on any of them.
//
// The original API (Server, New, Event, PeerEndpointURLPath, QueryParameterName,
// ErrStreamNameRequired, ErrOnlySendNoneEmptyMessages) is kept; NewWithOptions
// configures everything else.
package sser
