package sser

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// appendFrame encodes ev as one SSE frame: an optional id line, an optional
// event line, one data line per line of the message, and the blank line that
// dispatches it. CR, LF and CRLF in the message all split lines, as the SSE
// parser would, so the client sees the message with LF line ends. id and
// ev.Event must hold no CR, LF or NUL (Validate and the position encoding
// guarantee it).
func appendFrame(dst []byte, id string, ev *Event) []byte {
	return appendFrameTagged(dst, id, ev, "")
}

// appendFrameTagged is appendFrame with a "stream:" field before the data
// when stream is not empty.
func appendFrameTagged(dst []byte, id string, ev *Event, stream string) []byte {
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
	if stream != "" {
		dst = append(dst, "stream: "...)
		dst = append(dst, stream...)
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

// appendSetFrame encodes ev for a subscriber of several streams or of
// patterns: the frame names its stream in the set's format.
func appendSetFrame(dst []byte, id string, ev *Event, f frameFormat) []byte {
	switch f {
	case formatEnvelope:
		env := *ev
		env.Msg = string(appendEnvelope(make([]byte, 0, len(ev.Msg)+len(ev.Stream)+24), ev))
		return appendFrame(dst, id, &env)
	case formatTagged:
		return appendFrameTagged(dst, id, ev, ev.Stream)
	case formatWS:
		if dst == nil {
			return wsEventFrame(id, ev)
		}
		return append(dst, wsEventFrame(id, ev)...)
	}
	return appendFrame(dst, id, ev)
}

// appendEnvelope is the JSON object {"stream":"...","data":"..."} that an
// envelope frame carries as its data.
func appendEnvelope(dst []byte, ev *Event) []byte {
	dst = append(dst, `{"stream":`...)
	dst = appendJSONString(dst, ev.Stream)
	dst = append(dst, `,"data":`...)
	dst = appendJSONString(dst, ev.Msg)
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r < 0x20 || r == '<' || r == '>' || r == '&' || r == 0x2028 || r == 0x2029:
			dst = append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return append(dst, '"')
}
