package sser

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// FuzzParseWSMessage: any client message either parses to a subscribe or
// unsubscribe of valid, sorted, distinct streams within the limit, which
// encodes back to itself, or is refused with 4400 and a short message.
// Never a panic.
func FuzzParseWSMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","streams":["a","b"]}`,
		`{"type":"subscribe","streams":["b","a","b"],"lastEventId":"k7f2q9xa0b1c.1"}`,
		`{"type":"subscribe","streams":["a"],"token":"t1.x","lastEventID":"o.1.0.1-p.z"}`,
		`{"type":"unsubscribe","streams":["a"]}`,
		`{"type":"unsubscribe","streams":["a"],"lastEventId":"o.1"}`,
		`{"type":"subscribe","streams":["a","b","c","d","e"]}`,
		`{"type":"subscribe","streams":["a b"]}`,
		`{"type":"subscribe","streams":[]}`, `{"type":"subscribe"}`, `{"type":"ping"}`,
		`{"type":"subscribe","streams":["a"]} {}`, `{"type":"subscribe","streams":"a"}`,
		`{"type":1}`, `{"TYPE":"subscribe","Streams":["a"]}`, `{"type":"subscribe","streams":["a"],"x":1}`,
		`[]`, `null`, `{`, ``, " ", "\xff", `{"type":"subscribe","streams":["\u0000"]}`,
		`{"type":"subscribe","streams":["a"],"lastEventId":"` + strings.Repeat("-", 2000) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxStreams = 4
		m, werr := parseWSMessage(data, maxStreams)
		if werr != nil {
			if werr.code != WSCloseBadMessage || werr.msg == "" || len(werr.msg) > 600 {
				t.Fatalf("refusal %d %q", werr.code, werr.msg)
			}
			return
		}
		if m.Type != wsSubscribe && m.Type != wsUnsubscribe {
			t.Fatalf("accepted type %q", m.Type)
		}
		if len(m.Streams) == 0 || len(m.Streams) > maxStreams || !slices.IsSorted(m.Streams) || len(slices.Compact(slices.Clone(m.Streams))) != len(m.Streams) {
			t.Fatalf("accepted streams %q", m.Streams)
		}
		for _, s := range m.Streams {
			if err := ValidateStreamName(s); err != nil {
				t.Fatalf("accepted stream %q: %v", s, err)
			}
		}
		if m.Type == wsUnsubscribe && (m.LastEventID != "" || m.Token != "") {
			t.Fatalf("unsubscribe with more than streams: %+v", m)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, werr := parseWSMessage(again, maxStreams)
		if werr != nil || m2.Type != m.Type || !slices.Equal(m2.Streams, m.Streams) || m2.LastEventID != m.LastEventID || m2.Token != m.Token {
			t.Fatalf("%s parses to %+v, %v; want %+v", again, m2, werr, m)
		}
	})
}

// FuzzWSEventFrame: any event encodes to one unmasked, final text frame
// whose payload is valid UTF-8 JSON giving back the stream, the type, the
// id and the message as JSON would carry them (invalid UTF-8 replaced).
func FuzzWSEventFrame(f *testing.F) {
	f.Add("s", "", "o.1", "hello")
	f.Add("a/b", "tick", "a1b2c3d4e5f6.z-k7f2q9xa0zz1.1.0.1", "line 1\nline 2\r\n\"quoted\" \\ \t")
	f.Add("s", "t\"e", "", "\x00\x01\x1f\u2028\u2029\xff\xfe")
	f.Add("s", "\xff", "o.1", strings.Repeat("x", 70000))
	f.Add("s", "", "o.1", strings.Repeat("é", 200))
	f.Fuzz(func(t *testing.T, stream, typ, id, msg string) {
		ev := Event{Stream: stream, Event: typ, Msg: msg}
		// Ids are position vectors: their characters only.
		id = strings.Map(func(r rune) rune {
			if r < utf8.RuneSelf && (validOrigin(string(r)) || r == '.' || r == '-') {
				return r
			}
			return -1
		}, id)
		frame := wsEventFrame(id, &ev)
		fr, err := ws.ReadFrame(bytes.NewReader(frame))
		if err != nil {
			t.Fatal(err)
		}
		if !fr.Header.Fin || fr.Header.OpCode != ws.OpText || fr.Header.Masked || int(fr.Header.Length) != len(fr.Payload) || ws.HeaderSize(fr.Header)+len(fr.Payload) != len(frame) {
			t.Fatalf("header %+v for %d bytes", fr.Header, len(frame))
		}
		if !utf8.Valid(fr.Payload) {
			t.Fatalf("payload is not UTF-8: %q", fr.Payload)
		}
		var got wsMsg
		if err := json.Unmarshal(fr.Payload, &got); err != nil {
			t.Fatalf("payload %q: %v", fr.Payload, err)
		}
		want := wsMsg{Type: "event", Stream: jsonRoundTrip(stream), Event: jsonRoundTrip(typ), ID: id, Data: jsonRoundTrip(msg)}
		if got.Type != want.Type || got.Stream != want.Stream || got.Event != want.Event || got.ID != want.ID || got.Data != want.Data {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
		if wsFrameID(frame) != id {
			t.Fatalf("wsFrameID = %q, want %q", wsFrameID(frame), id)
		}
	})
}

// jsonRoundTrip is s as encoding/json carries it.
func jsonRoundTrip(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// FuzzWSReadMessage: any bytes from a client read as whole messages,
// control frames, a close or an error; never a panic, never a message
// over the limit or a text message that is not UTF-8.
func FuzzWSReadMessage(f *testing.F) {
	mask := func(op ws.OpCode, fin bool, p string) []byte {
		return ws.MustCompileFrame(ws.MaskFrameInPlace(ws.NewFrame(op, fin, []byte(p))))
	}
	f.Add(mask(ws.OpText, true, `{"type":"subscribe","streams":["a"]}`))
	f.Add(slices.Concat(mask(ws.OpText, false, `{"type":`), mask(ws.OpPing, true, "p"), mask(ws.OpContinuation, true, `"x"}`)))
	f.Add(mask(ws.OpClose, true, "\x03\xe8bye"))
	f.Add(mask(ws.OpClose, true, "\x00\x01"))
	f.Add(mask(ws.OpBinary, true, "x"))
	f.Add(mask(ws.OpContinuation, true, "x"))
	f.Add(mask(ws.OpPing, false, "x"))
	f.Add(ws.MustCompileFrame(ws.NewTextFrame([]byte("unmasked"))))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Add(mask(ws.OpText, true, "\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for range 64 {
			msg, err := wsReadMessage(r, func([]byte) {})
			if err != nil {
				return
			}
			if len(msg) > wsMaxMessage || !utf8.Valid(msg) {
				t.Fatalf("message of %d bytes, valid UTF-8 %v", len(msg), utf8.Valid(msg))
			}
		}
	})
}

// The encoders and the id reader agree on the other messages too.
func TestWSMessagesDecode(t *testing.T) {
	tests := []struct {
		frame []byte
		want  wsMsg
		id    string
	}{
		{wsSubscribedFrame([]string{"a", "b"}, "o.1", "exact"), wsMsg{Type: "subscribed", Streams: []string{"a", "b"}, ID: "o.1", Resume: "exact"}, "o.1"},
		{wsSubscribedFrame(nil, "o.1.0.1", ""), wsMsg{Type: "subscribed", Streams: []string{}, ID: "o.1.0.1"}, "o.1.0.1"},
		{wsLostFrame(lostNotice{Reason: "gap", Origin: "o", After: 4, UpTo: 9}), wsMsg{Type: "lost", Reason: "gap"}, ""},
		{wsReconnectFrame("drain", "o.2"), wsMsg{Type: "reconnect", Reason: "drain", LastEventID: "o.2"}, ""},
		{wsErrorFrame(WSCloseBadMessage, "bad \"x\""), wsMsg{Type: "error", Code: 4400, Message: `bad "x"`}, ""},
		{wsExpiredFrame, wsMsg{Type: "expired", Reason: "credential expired"}, ""},
	}
	for _, tt := range tests {
		fr, err := ws.ReadFrame(bytes.NewReader(tt.frame))
		if err != nil {
			t.Fatal(err)
		}
		var got wsMsg
		if err := json.Unmarshal(fr.Payload, &got); err != nil {
			t.Fatalf("%q: %v", fr.Payload, err)
		}
		if got.Type != tt.want.Type || got.ID != tt.want.ID || got.Resume != tt.want.Resume || got.Reason != tt.want.Reason ||
			got.LastEventID != tt.want.LastEventID || got.Code != tt.want.Code || got.Message != tt.want.Message ||
			(tt.want.Streams != nil && !slices.Equal(got.Streams, tt.want.Streams)) {
			t.Errorf("%s decodes to %+v, want %+v", fr.Payload, got, tt.want)
		}
		if id := wsFrameID(tt.frame); id != tt.id {
			t.Errorf("%s: wsFrameID %q, want %q", fr.Payload, id, tt.id)
		}
	}
	long := strings.Repeat("é", 100)
	c, reason := ws.ParseCloseFrameData(must(ws.ReadFrame(bytes.NewReader(wsCloseFrame(4400, long)))).Payload)
	if c != 4400 || len(reason) > wsMaxCloseReason || !utf8.ValidString(reason) || !strings.HasPrefix(long, reason) {
		t.Errorf("close frame %d %q", c, reason)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
