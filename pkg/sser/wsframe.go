package sser

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Server-to-client WebSocket messages. Each is one unmasked text frame,
// encoded whole (header and JSON) so that, like an SSE frame, it is built
// once and the same bytes are queued to every subscriber that gets it.
//
//	{"type":"event","stream":"a","event":"price","id":"…","data":"…"}
//	{"type":"subscribed","streams":["a","b"],"id":"…","resume":"exact"}
//	{"type":"lost","reason":"gap","origin":"…","after":4,"upTo":9}
//	{"type":"expired","reason":"credential expired"}
//	{"type":"reconnect","reason":"drain","lastEventId":"…"}
//	{"type":"error","code":4400,"message":"…"}

// wsHeaderRoom is the room kept in front of a message's JSON for its
// frame header: 2, 4 or 10 bytes by the payload's length.
const wsHeaderRoom = 10

// wsMessage starts a message: room for the header, then {"type":"<typ>".
func wsMessage(typ string, sizeHint int) []byte {
	b := make([]byte, wsHeaderRoom, wsHeaderRoom+sizeHint+len(typ)+12)
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	return append(b, '"')
}

// wsFinish closes the JSON object and writes the frame header into the
// room before it: the returned slice is the whole frame.
func wsFinish(b []byte) []byte {
	b = append(b, '}')
	n := len(b) - wsHeaderRoom
	var start int
	switch {
	case n < 126:
		start = wsHeaderRoom - 2
		b[start+1] = byte(n)
	case n <= 0xffff:
		start = wsHeaderRoom - 4
		b[start+1] = 126
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	default:
		start = 0
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[start] = 0x80 | byte(ws.OpText) // FIN, text
	return b[start:]
}

// wsField appends ,"name":"value" with value escaped as a JSON string.
func wsField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}

func wsUint(b []byte, name string, v uint64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendUint(b, v, 10)
}

func wsStrings(b []byte, name string, vs []string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":[`...)
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, v)
	}
	return append(b, ']')
}

// wsEventFrame is ev as an event message with id (none when empty).
func wsEventFrame(id string, ev *Event) []byte {
	b := wsMessage("event", len(ev.Stream)+len(ev.Event)+len(id)+len(ev.Msg)+48)
	b = wsField(b, "stream", ev.Stream)
	if ev.Event != "" {
		b = wsField(b, "event", ev.Event)
	}
	if id != "" {
		b = wsField(b, "id", id)
	}
	b = wsField(b, "data", ev.Msg)
	return wsFinish(b)
}

// wsSubscribedFrame tells the client the streams it now has and the id
// that covers them; resume is how a resume went ("exact", "lost"), empty
// when the subscription did not resume.
func wsSubscribedFrame(streams []string, id, resume string) []byte {
	n := len(id) + 32
	for _, s := range streams {
		n += len(s) + 3
	}
	b := wsMessage("subscribed", n)
	b = wsStrings(b, "streams", streams)
	b = wsField(b, "id", id)
	if resume != "" {
		b = wsField(b, "resume", resume)
	}
	return wsFinish(b)
}

// wsLostFrame is an sser-lost notice as a message: the same fields.
func wsLostFrame(n lostNotice) []byte {
	b := wsMessage("lost", 64)
	b = wsField(b, "reason", n.Reason)
	if n.Origin != "" {
		b = wsField(b, "origin", n.Origin)
	}
	if n.After != 0 {
		b = wsUint(b, "after", n.After)
	}
	if n.UpTo != 0 {
		b = wsUint(b, "upTo", n.UpTo)
	}
	if len(n.Streams) > 0 {
		b = wsStrings(b, "streams", n.Streams)
	}
	return wsFinish(b)
}

// wsReconnectFrame tells the client the server is closing the connection
// and it should come back (elsewhere) with lastEventId.
func wsReconnectFrame(reason, lastID string) []byte {
	b := wsMessage("reconnect", len(reason)+len(lastID)+24)
	b = wsField(b, "reason", reason)
	if lastID != "" {
		b = wsField(b, "lastEventId", lastID)
	}
	return wsFinish(b)
}

// wsErrorFrame explains the close that follows it.
func wsErrorFrame(code ws.StatusCode, msg string) []byte {
	b := wsMessage("error", len(msg)+24)
	b = wsUint(b, "code", uint64(code))
	b = wsField(b, "message", msg)
	return wsFinish(b)
}

var (
	wsExpiredFrame = wsFinish(wsField(wsMessage("expired", 32), "reason", "credential expired"))
	wsPingFrame    = ws.MustCompileFrame(ws.NewPingFrame(nil))
)

// wsMaxCloseReason is the most bytes of reason a close frame carries
// (125 bytes of payload, 2 of them the code).
const wsMaxCloseReason = 123

// wsCloseFrame is a close frame with code and reason, the reason cut to
// fit on a UTF-8 boundary.
func wsCloseFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > wsMaxCloseReason {
		cut := wsMaxCloseReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	return ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
}

// wsFrameID is the id an event or subscribed message carries, "" for
// other frames: what the client holds once it has read the frame.
func wsFrameID(frame []byte) string {
	if len(frame) < 2 || frame[0] != 0x80|byte(ws.OpText) {
		return ""
	}
	p := frame[2:]
	switch frame[1] & 0x7f {
	case 126:
		p = frame[4:]
	case 127:
		p = frame[10:]
	}
	const ev, sub = `{"type":"event"`, `{"type":"subscribed"`
	if !hasPrefix(p, ev) && !hasPrefix(p, sub) {
		return ""
	}
	// Within a JSON string a quote is always escaped, so the first
	// unescaped ,"id":" is the field; ids hold no quote or backslash.
	const key = `,"id":"`
	for i := 0; i+len(key) <= len(p); i++ {
		if string(p[i:i+len(key)]) == key {
			rest := p[i+len(key):]
			for j, c := range rest {
				if c == '"' {
					return string(rest[:j])
				}
			}
			return ""
		}
	}
	return ""
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }
