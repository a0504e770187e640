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
