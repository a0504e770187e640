package sser

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"GZIP", true},
		{"x-gzip", true},
		{"gzip, deflate, br, zstd", true}, // Chromium's
		{"deflate, gzip;q=1.0, *;q=0.5", true},
		{"br;q=1.0, gzip;q=0.8", true},
		{"gzip;q=0", false},
		{"gzip; q=0.000", false},
		{"gzip;q=0, *", false}, // refused by name: * does not bring it back
		{"*", true},
		{"*;q=0", false},
		{"identity", false},
		{"deflate, br", false},
		{"gzip;q=abc", false},
		{"gzip;q=2", false},
		{" gzip ;q=0.5 ", true},
		{",,gzip,,", true},
	} {
		if got := acceptsGzip(tc.header); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0", "*;q=0.1", "deflate, gzip;q=1.0, *;q=0.5", ";;=,", "gzip;q=", "x-gzip;Q=0.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got := acceptsGzip(h)
		// Refusing gzip by name wins over anything else in the header.
		if got && acceptsGzip(h+",gzip;q=0") {
			t.Errorf("%q with gzip;q=0 appended still accepts gzip", h)
		}
		if !acceptsGzip(h+",gzip") && !strings.Contains(strings.ToLower(h), "gzip") {
			t.Errorf("%q with gzip appended does not accept gzip", h)
		}
	})
}

// gunzip inflates a whole gzip stream, trailer checked.
func gunzip(t *testing.T, z []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflating: %v", err)
	}
	return out
}

// A connection's gzip stream inflates to exactly the frames written, in
// every mix of shared and per-connection deflates, and uses an event's
// shared bytes exactly when its last frame is the one they were made
// after.
func TestGzStreamSharesWhatFits(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.gzip = true
	var ents []*histEntry
	for i := 1; i <= 6; i++ {
		msg := `{"sym":"ACME","px":` + strconv.Itoa(100+i) + `}`
		if i == 4 {
			msg = "line one\nline two\r\nline three" // multi-line data
		}
		h.apply([]Event{{Stream: "s", Msg: msg, Origin: "o", Seq: uint64(i)}}, "peer")
		h.mu.Lock()
		ss := h.streams["s"]
		ents = append(ents, ss.hist.at(ss.hist.len()-1))
		h.mu.Unlock()
	}
	for i, e := range ents {
		if e.gz == nil {
			t.Fatalf("entry %d has no shared deflate", i)
		}
		if i > 0 && !sameBytes(e.gz.prev, ents[i-1].frame) {
			t.Fatalf("entry %d's dictionary is not the frame before it", i)
		}
	}
	frames := func(es []*histEntry) [][]byte {
		var out [][]byte
		for _, e := range es {
			out = append(out, e.frame)
		}
		return out
	}
	join := func(fs [][]byte) []byte { return bytes.Join(fs, nil) }

	// A subscriber that got the preamble, then every event, one write each.
	z := &gzStream{}
	preamble := [][]byte{appendRetry(nil, 3000), appendIDFrame(nil, "o.0")}
	out := z.encode(nil, preamble, []*histEntry{nil, nil})
	var plain [][]byte
	plain = append(plain, preamble...)
	for i, e := range ents {
		before := len(out)
		out = z.encode(out, [][]byte{e.frame}, []*histEntry{e})
		plain = append(plain, e.frame)
		shared := bytes.Equal(out[before:], e.gz.z)
		// The first event follows the preamble, not the stream's previous
		// frame: deflated for this connection. Every later one fits.
		if want := i > 0; shared != want {
			t.Errorf("event %d: shared bytes used %v, want %v", i+1, shared, want)
		}
	}
	// A heartbeat, then the rest as one batch after a re-encoded frame.
	out = z.encode(out, [][]byte{heartbeatFrame}, nil)
	plain = append(plain, heartbeatFrame)
	reencoded := appendFrame(nil, "o.9", &ents[0].ev)
	batch := append([][]byte{reencoded}, frames(ents[1:])...)
	out = z.encode(out, batch, append([]*histEntry{ents[0]}, ents[1:]...))
	plain = append(plain, batch...)
	out = z.end(out)
	if got, want := gunzip(t, out), join(plain); !bytes.Equal(got, want) {
		t.Fatalf("inflated %q\nwant %q", got, want)
	}
	raw := len(join(plain))
	t.Logf("%d bytes of frames in %d gzip bytes", raw, len(out))
}

// compressedServer is a server that compresses, and a client that asks for
// gzip and inflates as it reads (Go's transport does: Resp.Uncompressed).
func startCompressed(t *testing.T, opts Options, kind frontKind) *testServer {
	opts.Compression = CompressionGzip
	return startServerFront(t, opts, kind)
}

// A compressed subscription reads each event as soon as it is written (the
// stream is flushed per write: no event waits for the next), multi-line
// data and heartbeats included, on every way a connection is served; two
// subscribers in step share the events' deflated bytes; and a client that
// does not ask gets the plain stream.
func TestCompressedSubscriptionReadsEventByEvent(t *testing.T) {
	for _, kind := range []frontKind{frontHTTP1, frontWrapped, frontHTTP2} {
		t.Run(kind.String(), func(t *testing.T) {
			ts := startCompressed(t, Options{Heartbeat: 200 * time.Millisecond}, kind)
			a, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=z"), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(a.Close)
			b, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=z"), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			plain, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=z"), "", map[string]string{"Accept-Encoding": "identity"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(plain.Close)
			for _, s := range []*ssetest.Sub{a, b} {
				if !s.Resp.Uncompressed {
					t.Fatalf("the response was not gzip (Content-Encoding %q)", s.Resp.Header.Get("Content-Encoding"))
				}
				if v := s.Resp.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") {
					t.Errorf("Vary %q, want Accept-Encoding", v)
				}
			}
			if plain.Resp.Uncompressed || plain.Resp.Header.Get("Content-Encoding") != "" {
				t.Errorf("a client that did not ask got Content-Encoding %q", plain.Resp.Header.Get("Content-Encoding"))
			}
			if v := plain.Resp.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") {
				t.Errorf("plain response: Vary %q, want Accept-Encoding (a cache must not serve it to a gzip client)", v)
			}
			for _, s := range []*ssetest.Sub{a, b, plain} {
				s.WaitID(t, 5*time.Second)
			}
			for i := 1; i <= 5; i++ {
				msg := `{"sym":"ACME","px":` + strconv.Itoa(100+i) + `}`
				if i%2 == 0 {
					msg += "\nsecond line\n\nafter an empty one"
				}
				if err := ts.Send(t.Context(), "z", msg); err != nil {
					t.Fatal(err)
				}
				// Nothing more is published until every reader has this
				// one: a read that needed more data would time out here.
				for _, s := range []*ssetest.Sub{a, b, plain} {
					if got := s.Next(t, 5*time.Second); got.Data != msg {
						t.Fatalf("event %d: got %q, want %q", i, got.Data, msg)
					}
				}
			}
			testproc.Eventually(t, 5*time.Second, "a heartbeat through the gzip stream", func() bool { return a.Comments() > 0 })
			if err := ts.Send(t.Context(), "z", "after the heartbeat"); err != nil {
				t.Fatal(err)
			}
			if got := a.Next(t, 5*time.Second); got.Data != "after the heartbeat" {
				t.Fatalf("got %q after a heartbeat", got.Data)
			}
		})
	}
}

// A stream the server ends (maximum connection time, drain) ends as a
// whole gzip stream, checksum and size included: the reader sees EOF, not
// a truncated or corrupt stream. A resume through gzip replays from history.
func TestCompressedStreamEndsWithItsTrailer(t *testing.T) {
	for _, kind := range []frontKind{frontHTTP1, frontWrapped, frontHTTP2} {
		t.Run(kind.String(), func(t *testing.T) {
			ts := startCompressed(t, Options{MaxConnectionTime: 400 * time.Millisecond}, kind)
			sub, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=e"), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sub.Close)
			first := sub.WaitID(t, 5*time.Second)
			for i := range 3 {
				if err := ts.Send(t.Context(), "e", "m"+strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
			if got := sub.Next(t, 5*time.Second); got.Data != "m0" {
				t.Fatalf("got %q", got.Data)
			}
			select {
			case <-sub.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection did not end at its maximum age")
			}
			if err := sub.Err(); !errors.Is(err, io.EOF) {
				t.Errorf("the gzip stream ended with %v, want a clean EOF (trailer and checksum right)", err)
			}
			again, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url("stream=e"), first, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(again.Close)
			if got := again.Collect(3, 5*time.Second); datas(got) != "m0,m1,m2" {
				t.Errorf("resumed through gzip and got %s, want m0,m1,m2", datas(got))
			}
		})
	}
}

// The bytes on the wire of a compressed connection are its gzip bytes:
// a repetitive JSON workload writes several times less than plain.
func TestCompressedBytesWritten(t *testing.T) {
	ts := startCompressed(t, Options{}, frontHTTP1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func(encoding string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.url("stream=w"), nil)
		req.Header.Set("Accept-Encoding", encoding)
		// A transport that does not ask for gzip by itself: the test
		// counts the bytes as they come.
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	const events = 200
	read := func(resp *http.Response) int64 {
		cr := &countingReader{r: resp.Body}
		var body io.Reader = cr
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(cr)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		br := bufio.NewReader(body)
		for seen := 0; seen < events; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "data: ") {
				seen++
			}
		}
		return cr.n
	}
	zresp, presp := open("gzip"), open("identity")
	if zresp.Header.Get("Content-Encoding") != "gzip" || presp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("Content-Encoding %q and %q, want gzip and none", zresp.Header.Get("Content-Encoding"), presp.Header.Get("Content-Encoding"))
	}
	for i := range events {
		msg := `{"type":"tick","sym":"ACME","px":` + strconv.Itoa(10000+i%37) + `,"bid":12.50,"ask":12.52,"venue":"XNAS"}`
		if err := ts.Send(t.Context(), "w", msg); err != nil {
			t.Fatal(err)
		}
	}
	zn, pn := read(zresp), read(presp)
	if zn*2 > pn {
		t.Errorf("compressed %d bytes, plain %d: want under half", zn, pn)
	}
	t.Logf("%d events: %d bytes compressed, %d plain", events, zn, pn)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// FuzzGzStream: frames cut from data (at 0x00) form a stream's chain of
// shared deflates; a connection writes them in batches (cut at 0x01),
// some through their shared bytes and some, out of step (a 0x02 frame is
// written in place of its entry's, as for a client ahead), deflated for it
// alone. The gzip stream always inflates to exactly what was written.
func FuzzGzStream(f *testing.F) {
	f.Add([]byte("data: a\n\n\x00data: b\n\n\x01\x00data: c\nd\n\n\x00\x02x\x00"))
	f.Add([]byte(`{"sym":"ACME","px":1}` + "\x00" + `{"sym":"ACME","px":2}` + "\x01\x00" + `{"sym":"ACME","px":3}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var ents []*histEntry
		var prev []byte
		for _, part := range bytes.Split(data, []byte{0}) {
			e := &histEntry{frame: part, gz: &gzShared{prev: prev}}
			prev = part
			ents = append(ents, e)
		}
		z := &gzStream{}
		var out, plain []byte
		var frames [][]byte
		var fe []*histEntry
		flush := func() {
			out = z.encode(out, frames, fe)
			frames, fe = nil, nil
		}
		for _, e := range ents {
			f := e.frame
			if bytes.HasPrefix(f, []byte{1}) {
				flush()
				f = f[1:]
			}
			if bytes.HasPrefix(f, []byte{2}) {
				f = append([]byte(nil), f...) // not the entry's bytes
			}
			frames, fe = append(frames, f), append(fe, e)
			plain = append(plain, f...)
		}
		flush()
		out = z.end(out)
		r, err := gzip.NewReader(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("inflating: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("inflated %q, want %q", got, plain)
		}
	})
}

// The fan-out deflates an event once when its stream has compressed
// subscribers, before any writer asks (writers finding it missing would
// wait on one another), and not at all for a stream without them.
func TestFanOutDeflatesForCompressedSubscribersOnly(t *testing.T) {
	h, _ := testHub(100, time.Minute)
	h.gzip = true
	plain := newSubscriber([]string{"plain"}, 16)
	zipped := newSubscriber([]string{"zipped"}, 16)
	zipped.gz = &gzConn{}
	for _, s := range []*subscriber{plain, zipped} {
		if _, ok := h.subscribe(s, nil, false, 3000); !ok {
			t.Fatal("subscribe refused")
		}
	}
	last := func(stream string) *histEntry {
		h.mu.Lock()
		defer h.mu.Unlock()
		ss := h.streams[stream]
		return ss.hist.at(ss.hist.len() - 1)
	}
	for i, stream := range []string{"plain", "zipped"} {
		h.apply([]Event{{Stream: stream, Msg: "m", Origin: "o", Seq: uint64(i + 1)}}, "peer")
	}
	if z := last("zipped").gz.z; len(z) == 0 {
		t.Error("no shared deflate made at fan-out for a stream with a compressed subscriber")
	}
	if z := last("plain").gz.z; z != nil {
		t.Errorf("a shared deflate (%d bytes) made for a stream with no compressed subscriber", len(z))
	}
	h.unsubscribe(zipped)
	h.apply([]Event{{Stream: "zipped", Msg: "m", Origin: "o", Seq: 3}}, "peer")
	if z := last("zipped").gz.z; z != nil {
		t.Error("the count of compressed subscribers did not drop when the last one left")
	}
}
