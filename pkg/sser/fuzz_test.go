package sser

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeEvents: any body either decodes to valid events that survive a
// JSON round trip, or fails with one of the package's errors. Never a panic.
func FuzzDecodeEvents(f *testing.F) {
	for _, s := range []string{
		`{"stream":"s","msg":"m"}`,
		`[{"stream":"a","msg":"1","event":"t","origin":"o","seq":1}]`,
		`[]`, `{`, `"x"`, `[{"stream":"a b","msg":"x"}]`, `{"stream":"s","msg":"a\nb"}`,
		`{"stream":"s","msg":"m"} trailing`, "\x00", `[{"stream":"s","msg":"m","seq":1e30}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := decodeEvents(body, 100)
		if err != nil {
			if evs != nil {
				t.Fatalf("events returned with error %v", err)
			}
			known := []error{ErrInvalidBody, ErrStreamNameRequired, ErrInvalidStreamName, ErrOnlySendNoneEmptyMessages, ErrInvalidEventType, ErrInvalidOrigin, ErrTooManyEvents}
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("unexpected error kind: %v", err)
		}
		for _, ev := range evs {
			if err := ev.Validate(); err != nil {
				t.Fatalf("decoded an invalid event %+v: %v", ev, err)
			}
		}
		again, err := json.Marshal(evs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeEvents(again, 100); err != nil {
			t.Fatalf("re-encoded events do not decode: %v", err)
		}
	})
}

// FuzzAppendFrame: any valid event encodes to a frame that a spec parser
// reads back as exactly one event with the same type and data.
func FuzzAppendFrame(f *testing.F) {
	f.Add("hello", "", "o.1")
	f.Add("a\nb\r\nc\rd", "tick", "")
	f.Add("\n", "x", "a.1-b.z")
	f.Add(" leading", "", "")
	f.Add("data: injected\n\nevent: evil", "", "")
	f.Fuzz(func(t *testing.T, msg, typ, id string) {
		ev := Event{Stream: "s", Msg: msg, Event: typ}
		if ev.Validate() != nil || !utf8.ValidString(msg) {
			return
		}
		if _, err := parsePosition(id); err != nil {
			return
		}
		frame := string(appendFrame(nil, id, &ev))
		evs := parseFrames(t, frame)
		if len(evs) != 1 {
			t.Fatalf("frame %q parsed into %d events", frame, len(evs))
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(msg)
		if evs[0].data != want || evs[0].typ != typ || evs[0].id != id {
			t.Fatalf("frame %q parsed as %+v", frame, evs[0])
		}
	})
}

// FuzzParsePosition: a Last-Event-ID from a client either is rejected or
// round-trips exactly through the encoding (so ids are canonical).
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "a.1", "a.1-b.z", "abc.zzzzzzzzzzzzz", "a.1-a.2", "b.1-a.1", "a.0", "a.-1", "x", "a.1\x00", strings.Repeat("a.1-", 3)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePosition(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("parsePosition(%q).String() = %q", s, p.String())
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("accepted an id with CR, LF or NUL: %q", s)
		}
	})
}

// FuzzSetFrame: a frame for a set of streams parses as one event with the
// message intact and names its stream, as a field or in a JSON envelope
// that encoding/json reads back exactly (invalid UTF-8 as U+FFFD, as
// encoding/json writes it).
func FuzzSetFrame(f *testing.F) {
	f.Add("hello", "", "a/b", "o.1")
	f.Add("a\nb\r\nc\"\\\t\x01<>&\u2028", "tick", "s", "")
	f.Add("\xff\xfe", "", "x", "a.1-b.z")
	f.Fuzz(func(t *testing.T, msg, typ, stream, id string) {
		ev := Event{Stream: stream, Msg: msg, Event: typ}
		if ev.Validate() != nil {
			return
		}
		if _, err := parsePosition(id); err != nil {
			return
		}
		env := string(appendSetFrame(nil, id, &ev, formatEnvelope))
		evs := parseFrames(t, env)
		if len(evs) != 1 || evs[0].typ != typ || evs[0].id != id {
			t.Fatalf("envelope frame %q parsed as %+v", env, evs)
		}
		var got struct{ Stream, Data string }
		if err := json.Unmarshal([]byte(evs[0].data), &got); err != nil {
			t.Fatalf("envelope %q: %v", evs[0].data, err)
		}
		want, _ := json.Marshal(msg)
		var wantMsg string
		_ = json.Unmarshal(want, &wantMsg)
		if got.Stream != stream || got.Data != wantMsg {
			t.Fatalf("envelope %q read as %+v, want stream %q data %q", evs[0].data, got, stream, wantMsg)
		}
		if !utf8.ValidString(msg) {
			return
		}
		tagged := string(appendSetFrame(nil, id, &ev, formatTagged))
		if !strings.Contains(tagged, "\nstream: "+stream+"\n") && !strings.HasPrefix(tagged, "stream: "+stream+"\n") {
			t.Fatalf("tagged frame %q does not name stream %q", tagged, stream)
		}
		evs = parseFrames(t, tagged)
		plain := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(msg)
		if len(evs) != 1 || evs[0].data != plain || evs[0].typ != typ || evs[0].id != id {
			t.Fatalf("tagged frame %q parsed as %+v", tagged, evs)
		}
	})
}
