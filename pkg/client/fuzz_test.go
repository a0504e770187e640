package client

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// refParse is a literal, whole-input transcription of the spec's parsing
// steps, used as the oracle for FuzzParser.
func refParse(in []byte, initialID string) parseResult {
	s := string(decodeUTF8(in))
	s = strings.TrimPrefix(s, "\uFEFF")
	var res parseResult
	var data, typ strings.Builder
	idBuf, lastID := initialID, initialID
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			break // the unterminated last line (and event) is discarded
		}
		line := s[:i]
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
		switch {
		case line == "":
			changed := lastID != idBuf
			lastID = idBuf
			if data.Len() == 0 {
				typ.Reset()
				if changed {
					res.idOnly = append(res.idOnly, lastID)
				}
				continue
			}
			ev := Event{ID: lastID, Type: "message", Data: strings.TrimSuffix(data.String(), "\n")}
			if typ.Len() > 0 {
				ev.Type = typ.String()
			}
			res.events = append(res.events, ev)
			data.Reset()
			typ.Reset()
		case line[0] == ':':
			res.comments = append(res.comments, strings.TrimPrefix(line[1:], " "))
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				typ.Reset()
				typ.WriteString(value)
			case "data":
				data.WriteString(value)
				data.WriteByte('\n')
			case "id":
				if !strings.Contains(value, "\x00") {
					idBuf = value
				}
			case "retry":
				if value != "" && strings.Trim(value, "0123456789") == "" {
					n, err := strconv.ParseInt(value, 10, 64)
					d := time.Duration(n) * time.Millisecond
					if err != nil || n > int64(1<<63-1)/int64(time.Millisecond) {
						d = time.Duration(1<<63 - 1)
					}
					res.retries = append(res.retries, d)
				}
			}
		}
	}
	res.lastID = lastID
	res.err = io.EOF
	return res
}

func sameResult(a, b parseResult) bool {
	return slices.Equal(a.events, b.events) && slices.Equal(a.comments, b.comments) &&
		slices.Equal(a.idOnly, b.idOnly) && slices.Equal(a.retries, b.retries) && a.lastID == b.lastID
}

// FuzzParser checks the parser against refParse with the input cut into
// reads at fuzzed places. Its seed corpus (below and in
// testdata/fuzz/FuzzParser) runs as a regular test.
func FuzzParser(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n",
		"\uFEFFdata: a\r\n\r\n",
		"id: 1\nevent: e\ndata: x\ndata: y\n\nid\n\n",
		"retry: 100\n: c\ndata\n\r\r",
		"data: \xff\xe2\x82\n\n",
		"id: a\x00\ndata:  b\rdata:c\r\n\n",
		"\xEF\xBB",
		"data: a\n\ndata: b",
	} {
		f.Add([]byte(s), uint16(1), uint16(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, a, b uint16) {
		want := refParse(in, "seed")
		cutA, cutB := int(a)%(len(in)+1), int(b)%(len(in)+1)
		if cutA > cutB {
			cutA, cutB = cutB, cutA
		}
		s := string(in)
		got := parseAll(&splitReader{chunks: []string{s[:cutA], s[cutA:cutB], s[cutB:]}}, "seed")
		if got.err != io.EOF {
			t.Fatalf("err = %v", got.err)
		}
		if !sameResult(got, want) {
			t.Fatalf("cuts %d,%d of %q:\n got %+v\nwant %+v", cutA, cutB, in, got, want)
		}
		for _, ev := range got.events {
			if !utf8ValidString(ev.ID) || !utf8ValidString(ev.Type) || !utf8ValidString(ev.Data) {
				t.Fatalf("invalid UTF-8 in %q", ev)
			}
		}
	})
}

func utf8ValidString(s string) bool { return string(decodeUTF8([]byte(s))) == s }
