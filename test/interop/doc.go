// Package interop runs other projects' SSE clients against sser: what each
// does with sser's frames (the id-only frame on connect, the stream field
// of several-stream subscriptions), so the README can say which clients
// need which settings. It is a module of its own, so those clients are
// not dependencies of sser.
package interop
