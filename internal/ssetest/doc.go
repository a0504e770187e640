// Package ssetest is a small SSE subscriber for tests: it connects, parses
// frames (id, event, data, comments) and hands them over on a channel. It
// does not reconnect: tests that want reconnection use pkg/client.
package ssetest
