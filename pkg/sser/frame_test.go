package sser

import (
	"strings"
	"testing"
)

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ev   Event
		want string
	}{
		{"plain", "", Event{Msg: "hello"}, "data: hello\n\n"},
		{"id and type", "a.1", Event{Msg: "x", Event: "tick"}, "id: a.1\nevent: tick\ndata: x\n\n"},
		{"LF lines", "", Event{Msg: "a\nb\nc"}, "data: a\ndata: b\ndata: c\n\n"},
		{"CRLF lines", "", Event{Msg: "a\r\nb"}, "data: a\ndata: b\n\n"},
		{"lone CR", "", Event{Msg: "a\rb"}, "data: a\ndata: b\n\n"},
		{"trailing newline kept", "", Event{Msg: "a\n"}, "data: a\ndata: \n\n"},
		{"CR then LF pair at end", "", Event{Msg: "a\r\n"}, "data: a\ndata: \n\n"},
		{"blank lines inside", "", Event{Msg: "a\n\nb"}, "data: a\ndata: \ndata: b\n\n"},
		{"leading space kept", "", Event{Msg: " x"}, "data:  x\n\n"},
		{"colon in data", "", Event{Msg: "k: v"}, "data: k: v\n\n"},
		{"unicode", "", Event{Msg: "π ≈ 3.14 ✓"}, "data: π ≈ 3.14 ✓\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendFrame(nil, tt.id, &tt.ev))
			if got != tt.want {
				t.Errorf("appendFrame = %q, want %q", got, tt.want)
			}
			// What a spec parser makes of it is the message with LF line ends.
			evs := parseFrames(t, got)
			if len(evs) != 1 {
				t.Fatalf("parsed %d events, want 1", len(evs))
			}
			wantMsg := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(tt.ev.Msg)
			if evs[0].data != wantMsg {
				t.Errorf("round trip data = %q, want %q", evs[0].data, wantMsg)
			}
		})
	}
}

func TestAppendIDFrameAndRetry(t *testing.T) {
	if got := string(appendIDFrame(nil, "")); got != "" {
		t.Errorf("empty id frame = %q, want nothing (an empty id would reset the client)", got)
	}
	if got := string(appendIDFrame(nil, "o.1")); got != "id: o.1\n\n" {
		t.Errorf("id frame = %q", got)
	}
	if got := string(appendRetry(nil, 3000)); got != "retry: 3000\n" {
		t.Errorf("retry = %q", got)
	}
}

type parsedEvent struct{ id, typ, data string }

// parseFrames is a minimal WHATWG SSE parser for checking the encoder.
func parseFrames(t testing.TB, s string) []parsedEvent {
	t.Helper()
	var out []parsedEvent
	var data []string
	var typ, id string
	has := false
	s = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(s)
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.HasSuffix(line, "\n") {
			if line != "" {
				t.Fatalf("unterminated line %q", line)
			}
			break
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if has {
				out = append(out, parsedEvent{id, typ, strings.Join(data, "\n")})
			}
			data, typ, has = nil, "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		f, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch f {
		case "data":
			data, has = append(data, v), true
		case "event":
			typ = v
		case "id":
			if !strings.Contains(v, "\x00") {
				id = v
			}
		}
	}
	return out
}
