package sser

import (
	"strconv"
	"strings"
)

// appendFrame encodes ev as one SSE frame: an optional id line, an optional
// event line, one data line per line of the message, and the blank line that
// dispatches it. CR, LF and CRLF in the message all split lines, as the SSE
// parser would, so the client sees the message with LF line ends. id and
// ev.Event must hold no CR, LF or NUL (Validate and the position encoding
// guarantee it).
func appendFrame(dst []byte, id string, ev *Event) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if ev.Event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Event...)
		dst = append(dst, '\n')
	}
	msg := ev.Msg
	for {
		i := strings.IndexAny(msg, "\r\n")
		dst = append(dst, "data: "...)
		if i < 0 {
			dst = append(dst, msg...)
			dst = append(dst, '\n')
			break
		}
		dst = append(dst, msg[:i]...)
		dst = append(dst, '\n')
		if msg[i] == '\r' && i+1 < len(msg) && msg[i+1] == '\n' {
			i++
		}
		msg = msg[i+1:]
	}
	return append(dst, '\n')
}

// encodeFrame is appendFrame into a buffer sized for the frame, so the
// per-event encoding allocates once.
func encodeFrame(id string, ev *Event) []byte {
	n := len(id) + len(ev.Event) + len(ev.Msg) + 24 + 7*strings.Count(ev.Msg, "\n")
	return appendFrame(make([]byte, 0, n), id, ev)
}

// appendIDFrame encodes a frame that only sets the client's last event ID.
// Per the SSE spec it updates EventSource.lastEventId without dispatching an
// event, so a client that disconnects before its first event still resumes
// from the right place.
func appendIDFrame(dst []byte, id string) []byte {
	if id == "" {
		return dst
	}
	dst = append(dst, "id: "...)
	dst = append(dst, id...)
	return append(dst, '\n', '\n')
}

// appendRetry encodes the reconnection delay the client should use.
func appendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, '\n')
}

var heartbeatFrame = []byte(": heartbeat\n\n")
