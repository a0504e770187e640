// Package wsclient subscribes to sser over WebSocket: one connection for
// several streams, which can change while it is open.
//
// A Client keeps its subscription alive: it connects to sser's /events
// with Upgrade: websocket, naming its streams and the last id it
// delivered, so the server resumes it exactly (on any replica); it
// reconnects by itself when the connection ends (a drain, a lost network,
// the server's maximum connection time), at once when the server asked
// for it and with backoff and jitter otherwise; and it answers the
// server's pings, restarting a connection on which nothing arrived for
// the read timeout.
//
// Subscribe and Unsubscribe change the streams of the open connection and
// return once the server confirmed the change: a stream kept across a
// change misses nothing and gets nothing twice, and an added stream starts
// at the change. A change the server refuses (a stream the credential
// does not grant) is returned as a *CloseError and the subscription goes
// on with the streams it had.
//
// Event ids are opaque position vectors; the client only hands the last
// one back when it reconnects. pkg/client is the SSE client.
package wsclient
