// Package peerfinder tells an sser replica which replicas exist, so that it can
// broadcast every event to all of them.
//
// A PeerFinder reports the full, sorted set of peer IP addresses, the running
// replica's own included, first from Start and then on a channel each time the
// set changes. Three implementations are provided:
//
//   - NewPeerFinder watches Pods in one namespace through the Kubernetes API
//     with a client-go shared informer, limited by a label selector. It needs
//     only get, list and watch on pods in that namespace. It is also a
//     NamedPeerFinder: StartNamed reports each peer's pod name with its IP.
//   - NewPeerFinderLocalhost always reports 127.0.0.1: one replica, no cluster.
//   - NewPeerFinderStatic reports a fixed list, for tests and for setups
//     outside Kubernetes.
package peerfinder
