package client

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// parseResult is everything a parse makes observable.
type parseResult struct {
	events   []Event
	comments []string
	idOnly   []string // OnLastEventID calls
	retries  []time.Duration
	lastID   string
	err      error
}

func parseAll(r io.Reader, initialID string) parseResult {
	var res parseResult
	p := NewParser(r, ParserConfig{
		LastEventID:   initialID,
		OnComment:     func(s string) { res.comments = append(res.comments, s) },
		OnRetry:       func(d time.Duration) { res.retries = append(res.retries, d) },
		OnLastEventID: func(id string) { res.idOnly = append(res.idOnly, id) },
	})
	for {
		ev, err := p.Next()
		if err != nil {
			res.err = err
			break
		}
		res.events = append(res.events, ev)
	}
	res.lastID = p.LastEventID()
	return res
}

// splitReader returns its chunks one Read at a time.
type splitReader struct{ chunks []string }

func (r *splitReader) Read(b []byte) (int, error) {
	for len(r.chunks) > 0 && r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// chunkings is every way the tests cut an input: whole, one cut at every
// byte boundary, and one byte per read.
func chunkings(in string) map[string]func() io.Reader {
	m := map[string]func() io.Reader{
		"whole":    func() io.Reader { return strings.NewReader(in) },
		"onebyte":  func() io.Reader { return iotest.OneByteReader(strings.NewReader(in)) },
		"dataerr":  func() io.Reader { return iotest.DataErrReader(strings.NewReader(in)) },
		"halfread": func() io.Reader { return iotest.HalfReader(strings.NewReader(in)) },
	}
	for k := 1; k < len(in); k++ {
		m["cut"+string(rune('0'+k%10))+"@"+itoa(k)] = func() io.Reader {
			return &splitReader{chunks: []string{in[:k], in[k:]}}
		}
	}
	return m
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func msg(id, data string) Event { return Event{ID: id, Type: "message", Data: data} }

func TestParserRules(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		in        string
		initialID string
		events    []Event
		lastID    string
		comments  []string
		idOnly    []string
		retries   []time.Duration
	}{
		{name: "simple", in: "data: hello\n\n", events: []Event{msg("", "hello")}},
		{name: "bom stripped", in: "\uFEFFdata: a\n\n", events: []Event{msg("", "a")}},
		{name: "only one bom stripped", in: "\uFEFF\uFEFFdata: a\n\ndata: b\n\n", events: []Event{msg("", "b")}},
		{name: "bom later is data", in: "data: a\n\n\uFEFFdata: b\n\n", events: []Event{msg("", "a")}},
		{name: "bom then nothing", in: "\uFEFF"},
		{name: "partial bom is not a bom", in: "\xEF\xBBdata: a\n\ndata: b\n\n", events: []Event{msg("", "b")}},
		{name: "LF", in: "data: a\ndata: b\n\n", events: []Event{msg("", "a\nb")}},
		{name: "stream field", in: "id: 1\nevent: t\nstream: prices/BTC\ndata: a\n\ndata: b\n\n", events: []Event{{ID: "1", Type: "t", Data: "a", Stream: "prices/BTC"}, msg("1", "b")}},
		{name: "stream field without data dispatches nothing", in: "stream: x\n\ndata: b\n\n", events: []Event{msg("", "b")}},
		{name: "CR", in: "data: a\rdata: b\r\r", events: []Event{msg("", "a\nb")}},
		{name: "CRLF", in: "data: a\r\ndata: b\r\n\r\n", events: []Event{msg("", "a\nb")}},
		{name: "mixed line ends", in: "data: a\r\n\rdata: b\n\r\ndata: c\r\r", events: []Event{msg("", "a"), msg("", "b"), msg("", "c")}},
		{name: "LF CR is two line ends", in: "data: a\n\r", events: []Event{msg("", "a")}},
		{name: "CR CR LF", in: "data: a\r\r\n", events: []Event{msg("", "a")}},
		{name: "field without colon", in: "data\n\n", events: []Event{msg("", "")}},
		{name: "two fields without colon", in: "data\ndata\n\n", events: []Event{msg("", "\n")}},
		{name: "empty data value dispatches", in: "data:\n\n", events: []Event{msg("", "")}},
		{name: "one space stripped", in: "data:  two\n\n", events: []Event{msg("", " two")}},
		{name: "no space", in: "data:none\n\n", events: []Event{msg("", "none")}},
		{name: "only a space", in: "data: \n\n", events: []Event{msg("", "")}},
		{name: "tab not stripped", in: "data:\tx\n\n", events: []Event{msg("", "\tx")}},
		{name: "colon in value", in: "data: a:b: c\n\n", events: []Event{msg("", "a:b: c")}},
		{name: "value starting with colon", in: "data:: x\n\n", events: []Event{msg("", ": x")}},
		{name: "multi-line data joined with LF", in: "data: YHOO\ndata: +2\ndata: 10\n\n", events: []Event{msg("", "YHOO\n+2\n10")}},
		{name: "trailing empty data line kept", in: "data: a\ndata:\n\n", events: []Event{msg("", "a\n")}},
		{name: "event type", in: "event: add\ndata: x\n\ndata: y\n\n", events: []Event{{Type: "add", Data: "x"}, msg("", "y")}},
		{name: "last event field wins", in: "event: a\nevent: b\ndata: x\n\n", events: []Event{{Type: "b", Data: "x"}}},
		{name: "event type reset by empty dispatch", in: "event: a\n\ndata: x\n\n", events: []Event{msg("", "x")}},
		{name: "event without colon is default", in: "event\ndata: x\n\n", events: []Event{msg("", "x")}},
		{name: "event type with unicode", in: "event: ü\ndata: x\n\n", events: []Event{{Type: "ü", Data: "x"}}},
		{name: "id persists", in: "id: 1\ndata: a\n\ndata: b\n\n", events: []Event{msg("1", "a"), msg("1", "b")}, lastID: "1"},
		{name: "last id field wins", in: "id: 3\nid: 4\ndata: a\n\n", events: []Event{msg("4", "a")}, lastID: "4"},
		{name: "id with NUL ignored", in: "id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n", events: []Event{msg("1", "a"), msg("1", "b")}, lastID: "1"},
		{name: "empty id resets", in: "id: 1\ndata: a\n\nid\ndata: b\n\n", events: []Event{msg("1", "a"), msg("", "b")}, lastID: ""},
		{name: "empty id with colon resets", in: "id: 1\ndata: a\n\nid:\ndata: b\n\n", events: []Event{msg("1", "a"), msg("", "b")}},
		{name: "id only frame sets last id", in: "id: v1\n\n", lastID: "v1", idOnly: []string{"v1"}},
		{name: "id only frame then event", in: "id: v1\n\ndata: a\n\n", events: []Event{msg("v1", "a")}, lastID: "v1", idOnly: []string{"v1"}},
		{name: "id only frame unchanged is silent", in: "id: v1\n\n", initialID: "v1", lastID: "v1"},
		{name: "initial id carried", in: "data: a\n\n", initialID: "5", events: []Event{msg("5", "a")}, lastID: "5"},
		{name: "initial id reset by empty id", in: "id\n\n", initialID: "5", lastID: "", idOnly: []string{""}},
		{name: "id of unterminated event not committed", in: "id: 1\ndata: a\n\nid: 2\ndata: b\n", events: []Event{msg("1", "a")}, lastID: "1"},
		{name: "id opaque", in: "id: k7f2q9xa:1042,abc:7\ndata: a\n\n", events: []Event{msg("k7f2q9xa:1042,abc:7", "a")}, lastID: "k7f2q9xa:1042,abc:7"},
		{name: "retry", in: "retry: 1500\n", retries: []time.Duration{1500 * ms}},
		{name: "retry zero", in: "retry: 0\n", retries: []time.Duration{0}},
		{name: "retry not digits", in: "retry: 15x\nretry: -1\nretry: 1.5\nretry\nretry:\nretry:  10\nretry: 10 \n"},
		{name: "retry huge is clamped", in: "retry: 99999999999999999999999\n", retries: []time.Duration{time.Duration(1<<63 - 1)}},
		{name: "retry then event", in: "retry: 10\ndata: a\n\n", retries: []time.Duration{10 * ms}, events: []Event{msg("", "a")}},
		{name: "comments", in: ": hello\n:x\n:  two\n\n", comments: []string{"hello", "x", " two"}},
		{name: "heartbeat comment between events", in: "data: a\n\n: heartbeat\n\ndata: b\n\n", comments: []string{"heartbeat"}, events: []Event{msg("", "a"), msg("", "b")}},
		{name: "comment inside event", in: "data: a\n: c\ndata: b\n\n", comments: []string{"c"}, events: []Event{msg("", "a\nb")}},
		{name: "unknown field ignored", in: "foo: bar\ndata: x\nDATA: y\ndata : z\n\n", events: []Event{msg("", "x")}},
		{name: "no data not dispatched", in: "event: x\n\n\n\nid\n\n"},
		{name: "unterminated final event discarded", in: "data: a\n\ndata: b", events: []Event{msg("", "a")}},
		{name: "final event without blank line discarded", in: "data: a\n\ndata: b\n", events: []Event{msg("", "a")}},
		{name: "final CR only", in: "data: a\r", events: nil},
		{name: "empty input"},
		{name: "blank lines only", in: "\n\r\n\r"},
		{name: "multibyte utf8", in: "data: héllo 世界 😀\n\n", events: []Event{msg("", "héllo 世界 😀")}},
		{name: "invalid utf8 per WHATWG", in: "data: \xff\xe2\x82x\xf0\x9f\x98\n\n", events: []Event{msg("", "\uFFFD\uFFFDx\uFFFD")}},
		{name: "surrogate is invalid", in: "data: \xed\xa0\x80\n\n", events: []Event{msg("", "\uFFFD\uFFFD\uFFFD")}},
		{name: "overlong is invalid", in: "data: \xc0\xaf\n\n", events: []Event{msg("", "\uFFFD\uFFFD")}},
		{name: "NUL in data kept", in: "data: a\x00b\n\n", events: []Event{msg("", "a\x00b")}},
		{
			name: "spec example",
			in:   ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
			events: []Event{
				msg("1", "first event"), msg("", "second event"), msg("", " third event"),
			},
			comments: []string{"test stream"},
		},
		{name: "spec example empty data", in: "data\n\ndata\ndata\n\ndata:", events: []Event{msg("", ""), msg("", "\n")}},
		{name: "spec example same events", in: "data:test\n\ndata: test\n\n", events: []Event{msg("", "test"), msg("", "test")}},
		{
			name:   "sser frames",
			in:     "retry: 3000\nid: o1:0\n\n: heartbeat\n\nid: o1:1\nevent: tick\ndata: line1\ndata: line2\n\n",
			events: []Event{{ID: "o1:1", Type: "tick", Data: "line1\nline2"}},
			lastID: "o1:1", idOnly: []string{"o1:0"}, comments: []string{"heartbeat"}, retries: []time.Duration{3 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for how, r := range chunkings(tt.in) {
				got := parseAll(r(), tt.initialID)
				if !errors.Is(got.err, io.EOF) {
					t.Fatalf("%s: err = %v, want io.EOF", how, got.err)
				}
				if !slices.Equal(got.events, tt.events) {
					t.Fatalf("%s: events = %q, want %q", how, got.events, tt.events)
				}
				wantLast := tt.lastID
				if wantLast == "" && len(tt.events) > 0 {
					wantLast = tt.events[len(tt.events)-1].ID
				}
				if got.lastID != wantLast {
					t.Fatalf("%s: last id = %q, want %q", how, got.lastID, wantLast)
				}
				if !slices.Equal(got.comments, tt.comments) {
					t.Fatalf("%s: comments = %q, want %q", how, got.comments, tt.comments)
				}
				if !slices.Equal(got.idOnly, tt.idOnly) {
					t.Fatalf("%s: id-only = %q, want %q", how, got.idOnly, tt.idOnly)
				}
				if !slices.Equal(got.retries, tt.retries) {
					t.Fatalf("%s: retries = %v, want %v", how, got.retries, tt.retries)
				}
			}
		})
	}
}

func TestParserMultibyteSplitEverywhere(t *testing.T) {
	// Every 2-way and 3-way cut of a multibyte-heavy event.
	in := "\uFEFFevent: 世\r\ndata: 😀é\u2028\rdata: \xe2\x82\r\n\r\n"
	want := []Event{{Type: "世", Data: "😀é\u2028\n\uFFFD"}}
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			got := parseAll(&splitReader{chunks: []string{in[:i], in[i:j], in[j:]}}, "")
			if !slices.Equal(got.events, want) {
				t.Fatalf("cut %d,%d: events = %q, want %q", i, j, got.events, want)
			}
		}
	}
}

func TestParserLargeEvents(t *testing.T) {
	big := strings.Repeat("x", 10<<20)
	tests := []struct {
		name    string
		in      string
		max     int
		want    string
		wantErr error
	}{
		{name: "10MB one line", in: "data: " + big + "\n\n", want: big},
		{name: "10MB many lines", in: strings.Repeat("data: "+big[:1<<20]+"\r\n", 10) + "\r\n", want: strings.TrimSuffix(strings.Repeat(big[:1<<20]+"\n", 10), "\n")},
		{name: "over limit one line", in: "data: " + big + "\n\n", max: 1 << 20, wantErr: ErrEventTooLarge},
		{name: "over limit many lines", in: strings.Repeat("data: "+big[:1<<10]+"\n", 2<<10) + "\n", max: 1 << 20, wantErr: ErrEventTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewParser(iotest.HalfReader(strings.NewReader(tt.in)), ParserConfig{MaxEventSize: tt.max})
			ev, err := p.Next()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if _, err2 := p.Next(); !errors.Is(err2, tt.wantErr) {
					t.Fatalf("second Next err = %v, want sticky %v", err2, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Data != tt.want {
				t.Fatalf("data has %d bytes, want %d", len(ev.Data), len(tt.want))
			}
			if _, err := p.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("err = %v, want EOF", err)
			}
		})
	}
}

func TestParserReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom))
	got := parseAll(r, "")
	if !errors.Is(got.err, boom) {
		t.Fatalf("err = %v, want %v", got.err, boom)
	}
	if !slices.Equal(got.events, []Event{msg("", "a")}) {
		t.Fatalf("events = %q", got.events)
	}
}

func TestDecodeUTF8(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xff", "\uFFFD"},
		{"\xc2", "\uFFFD"},
		{"\xc2a", "\uFFFDa"},
		{"\xe2\x82", "\uFFFD"},
		{"\xe2\x82\xac", "€"},
		{"\xe0\x80\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\x80", "😀"},
		{"\x80\x80", "\uFFFD\uFFFD"},
		{"\xed\x9f\xbf", "\ud7ff"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(decodeUTF8([]byte(tt.in))); got != tt.want {
				t.Fatalf("decode(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// BenchmarkParser measures parsing sser-shaped frames (id, event, one data
// line of 100 bytes) from memory.
func BenchmarkParser(b *testing.B) {
	frame := "id: k7f2q9xa:1042,m3p8z1qd:77\nevent: tick\ndata: " + strings.Repeat("x", 100) + "\n\n"
	in := strings.Repeat(frame, 1000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		p := NewParser(strings.NewReader(in), ParserConfig{})
		for {
			if _, err := p.Next(); err != nil {
				break
			}
		}
	}
}
