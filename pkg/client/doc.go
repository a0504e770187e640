// Package client is a Server-Sent Events client for Go services, written for
// sser but usable against any spec-conforming SSE server.
//
// It has three layers:
//
//   - Parser reads an event stream exactly as the WHATWG HTML "Server-sent
//     events" section describes (BOM, CR/LF/CRLF line ends split anywhere,
//     one space stripped after the colon, data lines joined with LF, the event
//     type defaulting to "message", ids with NUL ignored, retry only when all
//     digits, events without data not dispatched, an unterminated final event
//     discarded).
//   - Stream keeps one subscription alive: it reconnects with exponential
//     backoff and jitter, honours the server's retry field, sends
//     Last-Event-ID so the server can resume, restarts the connection when
//     nothing arrives within a read timeout, and stops on 204 No Content or
//     when the error handler says so. Events arrive on a channel or through a
//     handler. Stream is configured with Options.
//   - Mux is the form for long-running consumers of sser: register a Listener
//     per stream name; each one gets its own Stream that reconnects forever and
//     asks the Listener, on every error, whether to go on.
//
// Event ids written by sser are opaque position vectors. The client never
// interprets them; it only hands the last one back on reconnect, which lets a
// subscriber resume on any replica with no gap and no duplicate.
package client
