package sser

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

// slots is the number of connection-limit slots held.
func (ts *testServer) slots() int {
	ts.conns.mu.Lock()
	defer ts.conns.mu.Unlock()
	return ts.conns.total
}

// dial subscribes through the server's own client (TLS and HTTP/2 for an
// HTTP/2 front) and waits for the connect preamble.
func (ts *testServer) dial(t *testing.T, query, lastID string, hdr map[string]string) *ssetest.Sub {
	t.Helper()
	sub, err := ssetest.ConnectClient(t.Context(), ts.client, ts.url(query), lastID, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	sub.WaitID(t, 5*time.Second)
	return sub
}

// The same subscription works on every front: a hijacked HTTP/1.1
// connection, one whose writer cannot be hijacked, and HTTP/2. Only the
// first is hijacked.
func TestSubscriptionOnEveryFront(t *testing.T) {
	for _, kind := range []frontKind{frontHTTP1, frontWrapped, frontHTTP2} {
		t.Run(kind.String(), func(t *testing.T) {
			ts := startServerFront(t, Options{Heartbeat: 50 * time.Millisecond, CORSOrigins: []string{"https://app.example"}}, kind)
			ctx := t.Context()
			sub := ts.dial(t, "stream=a&stream=b", "", map[string]string{"Origin": "https://app.example"})
			h := sub.Resp.Header
			for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
				"X-Accel-Buffering": "no", "Access-Control-Allow-Origin": "https://app.example", "Access-Control-Allow-Credentials": "true"} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if wantProto := map[frontKind]int{frontHTTP2: 2}[kind]; wantProto != 0 && sub.Resp.ProtoMajor != wantProto {
				t.Errorf("served over HTTP/%d", sub.Resp.ProtoMajor)
			}
			wantOpen := 0
			if kind == frontHTTP1 {
				wantOpen = 1
			}
			if n := ts.writers.openConns(); n != wantOpen {
				t.Errorf("%d hijacked connections, want %d", n, wantOpen)
			}
			for i := 1; i <= 4; i++ {
				if err := ts.Send(ctx, string(rune('a'+i%2)), strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
			got := sub.Collect(4, 5*time.Second)
			if data := eventData(got); data != "1,2,3,4" {
				t.Fatalf("got %s, want 1,2,3,4", data)
			}
			testproc.Eventually(t, 5*time.Second, "two heartbeats", func() bool { return sub.Comments() >= 2 })

			// Resume exactly, on the same front.
			last := sub.LastID()
			sub.Close()
			for i := 5; i <= 7; i++ {
				if err := ts.Send(ctx, "a", strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
			again := ts.dial(t, "stream=a&stream=b", last, nil)
			if r := again.Resp.Header.Get("X-Sser-Resume"); r != "exact" {
				t.Errorf("X-Sser-Resume = %q", r)
			}
			if data := eventData(again.Collect(3, 5*time.Second)); data != "5,6,7" {
				t.Fatalf("resumed with %s, want 5,6,7", data)
			}
			testproc.Eventually(t, 5*time.Second, "the first connection to be unsubscribed", func() bool { return ts.hub.subscriberCount() == 1 })
		})
	}
}

func eventData(evs []ssetest.Event) string {
	var d []string
	for _, e := range evs {
		d = append(d, e.Data)
	}
	return strings.Join(d, ",")
}

// A ResponseRecorder cannot be hijacked: the handler serves it from its own
// goroutine, as before, until the connection's time is up.
func TestRecorderGetsTheStream(t *testing.T) {
	ts := startServer(t, Options{MaxConnectionTime: 500 * time.Millisecond})
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/?stream=r", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ts.ClientConnectionHandler(t.Context())(rec, req)
	}()
	testproc.Eventually(t, 5*time.Second, "the recorder to subscribe", func() bool { return ts.hub.subscriberCount() == 1 })
	if err := ts.Send(t.Context(), "r", "recorded"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("handler still serving the recorder after its maximum connection time")
	}
	body := rec.Body.String()
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(body, "retry: ") || !strings.Contains(body, "data: recorded\n\n") {
		t.Fatalf("recorder got %d %q: %q", rec.Code, rec.Header().Get("Content-Type"), body)
	}
}

// A handler made per request with the request's context is not hijacked:
// that context ends when the handler returns.
func TestHandlerWithRequestContextIsNotHijacked(t *testing.T) {
	ts := startServer(t, Options{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.ClientConnectionHandler(r.Context())(w, r)
	}))
	t.Cleanup(front.Close)
	sub := ssetest.Dial(t, front.URL+"/?stream=q", "")
	sub.WaitID(t, 5*time.Second)
	if err := ts.Send(t.Context(), "q", "per request"); err != nil {
		t.Fatal(err)
	}
	if got := sub.Next(t, 5*time.Second); got.Data != "per request" {
		t.Fatalf("got %+v", got)
	}
	if n := ts.writers.openConns(); n != 0 {
		t.Errorf("%d hijacked connections, want none", n)
	}
}

// rawSub is a subscriber on a bare TCP connection that reads (or does not
// read) the chunks of its answer itself.
type rawSub struct {
	conn   net.Conn
	br     *bufio.Reader
	status string
	header http.Header
	since  time.Time // when the head was read
	dialed time.Time // before the connection was dialed
}

// dialRaw subscribes over a bare socket with a receive buffer of rcvbuf
// bytes (0: the system's), without reading the answer.
func dialRaw(t *testing.T, ts *testServer, query string, rcvbuf int) *rawSub {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			return errors.Join(err, serr)
		}
	}
	host := strings.TrimPrefix(ts.front.URL, "http://")
	dialed := time.Now()
	conn, err := d.DialContext(t.Context(), "tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", query, host); err != nil {
		t.Fatal(err)
	}
	return &rawSub{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), dialed: dialed}
}

// readHead reads the status line and headers.
func (r *rawSub) readHead(t *testing.T) {
	t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the status line: %v", err)
	}
	r.status = strings.TrimRight(line, "\r\n")
	r.header = http.Header{}
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading headers: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ": ")
		r.header.Add(k, v)
	}
	r.since = time.Now()
}

// chunk reads the next chunk of the body: io.EOF after the terminating
// chunk, another error when the connection ends without it.
func (r *rawSub) chunk(timeout time.Duration) ([]byte, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.br.ReadString('\n')
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF // closed without the terminating chunk
	}
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseInt(strings.TrimRight(line, "\r\n"), 16, 64)
	if err != nil {
		return nil, fmt.Errorf("chunk size line %q: %w", line, err)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, err
	}
	if string(b[n:]) != "\r\n" {
		return nil, fmt.Errorf("chunk of %d bytes not followed by CRLF: %q", n, b)
	}
	if n == 0 {
		if _, err := r.br.ReadByte(); err != io.EOF {
			return nil, fmt.Errorf("bytes after the terminating chunk (%v)", err)
		}
		return nil, io.EOF
	}
	return b[:n], nil
}

// events reads chunks until n event frames (data lines) arrived or the
// stream ends; it returns their data and how the stream ended (nil if not).
func (r *rawSub) events(n int, timeout time.Duration) ([]string, error) {
	var out []string
	for len(out) < n {
		c, err := r.chunk(timeout)
		if err != nil {
			return out, err
		}
		for _, line := range strings.Split(string(c), "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// The hijacked answer on the wire: net/http's status line and headers,
// chunked, one chunk per batch, and the terminating chunk when the server
// ends the stream.
func TestHijackedWire(t *testing.T) {
	ts := startServer(t, Options{CORSOrigins: []string{"*"}, Retry: 1500 * time.Millisecond})
	r := dialRaw(t, ts, "stream=w", 0)
	r.readHead(t)
	if r.status != "HTTP/1.1 200 OK" {
		t.Fatalf("status line %q", r.status)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "keep-alive",
		"X-Accel-Buffering": "no", "Access-Control-Allow-Origin": "", "Transfer-Encoding": "chunked"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if _, err := http.ParseTime(r.header.Get("Date")); err != nil {
		t.Errorf("Date %q: %v", r.header.Get("Date"), err)
	}
	pre, err := r.chunk(5 * time.Second)
	if err != nil || !strings.HasPrefix(string(pre), "retry: 1500\n\nid: ") || !strings.HasSuffix(string(pre), "\n\n") {
		t.Fatalf("first chunk %q (%v), want the retry line and the id frame", pre, err)
	}
	if err := ts.Send(t.Context(), "w", "one"); err != nil {
		t.Fatal(err)
	}
	c, err := r.chunk(5 * time.Second)
	if err != nil || !strings.HasSuffix(string(c), "\ndata: one\n\n") || strings.Count(string(c), "data:") != 1 {
		t.Fatalf("second chunk %q (%v), want the event alone", c, err)
	}
	ts.hub.drain(0)
	if c, err := r.chunk(5 * time.Second); err != io.EOF {
		t.Fatalf("after the drain: chunk %q, %v; want the terminating chunk", c, err)
	}
}

// The CORS check above asked without an Origin; with one, the hijacked
// head carries the same CORS headers net/http would.
func TestHijackedHeadCarriesCORS(t *testing.T) {
	ts := startServer(t, Options{CORSOrigins: []string{"*"}})
	sub := ts.dial(t, "stream=c", "", map[string]string{"Origin": "https://any.example"})
	if got := sub.Resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q", got)
	}
	if ts.writers.openConns() != 1 {
		t.Error("not hijacked")
	}
}

// batchConn records the writes made to it.
type batchConn struct {
	net.Conn
	writes [][]byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, slices.Clone(p))
	return len(p), nil
}

func TestWriteChunked(t *testing.T) {
	big := []byte(strings.Repeat("b", writeChunk+10))
	small := []byte("data: x\n\n")
	tests := []struct {
		name   string
		head   string
		frames [][]byte
		last   bool
		want   []string // one per write
	}{
		{"head and one frame", "HEAD", [][]byte{small}, false, []string{"HEAD9\r\ndata: x\n\n\r\n"}},
		{"a batch is one chunk", "", [][]byte{small, small}, false, []string{"12\r\ndata: x\n\ndata: x\n\n\r\n"}},
		{"the terminator goes with the last chunk", "", [][]byte{small}, true, []string{"9\r\ndata: x\n\n\r\n0\r\n\r\n"}},
		{"terminator alone", "", nil, true, []string{"0\r\n\r\n"}},
		{"head and terminator", "H", nil, true, []string{"H0\r\n\r\n"}},
		{"a frame larger than a chunk goes alone", "", [][]byte{small, big, small}, false, []string{
			"9\r\ndata: x\n\n\r\n", strconv.FormatInt(int64(len(big)), 16) + "\r\n" + string(big) + "\r\n", "9\r\ndata: x\n\n\r\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &batchConn{}
			var head []byte
			if tt.head != "" {
				head = []byte(tt.head)
			}
			n, err := writeChunked(c, head, tt.frames, tt.last, newMetrics(nil))
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			for _, f := range tt.frames {
				want += len(f)
			}
			if n != want {
				t.Errorf("counted %d bytes, want %d", n, want)
			}
			var got []string
			for _, w := range c.writes {
				got = append(got, string(w))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("writes\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// An idle hijacked connection gets a heartbeat after each interval of
// silence; a connection written to in between does not.
func TestHijackedHeartbeats(t *testing.T) {
	const interval = 300 * time.Millisecond
	ts := startServer(t, Options{Heartbeat: interval})
	r := dialRaw(t, ts, "stream=h", 0)
	r.readHead(t)
	if _, err := r.chunk(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	last := time.Now()
	var gaps []time.Duration
	for len(gaps) < 5 {
		c, err := r.chunk(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(c) != string(heartbeatFrame) {
			t.Fatalf("idle connection got %q, want a heartbeat", c)
		}
		gaps = append(gaps, time.Since(last))
		last = time.Now()
	}
	// Sent after the interval less an eighth of silence; the bound allows
	// for a loaded machine.
	for _, g := range gaps {
		if g > interval+interval/2 {
			t.Errorf("heartbeat gaps %v: one is over the %s interval by more than half of it", gaps, interval)
		}
	}
}

// The clock's look at a connection sends a heartbeat only after quiet
// (less a grain) of silence, never while a writer is at it, and lets an
// idle connection's queue go.
func TestBeatOnlyAfterSilence(t *testing.T) {
	b := newBeatTiming(time.Second)
	sub := newConnSubscriber([]string{"s"}, 10)
	pool := &connWriters{idle: make(chan *subscriber, 10)} // a parked writer takes the run
	sub.hc = &hijacked{pool: pool}
	sub.spare = make([][]byte, 0, 8)
	now := monoNow()

	sub.hc.lastWrite = now - b.quiet + b.grain + 1
	if next := sub.beat(now, b); sub.hc.beat || next != b.next(sub.hc.lastWrite) || len(pool.idle) != 0 {
		t.Errorf("written %s ago: beat %v, next in %s", time.Duration(now-sub.hc.lastWrite), sub.hc.beat, time.Duration(next-now))
	}
	sub.hc.lastWrite = now - b.quiet + b.grain
	sub.hc.running = true
	if sub.beat(now, b); sub.hc.beat {
		t.Error("a heartbeat while a writer has the connection")
	}
	sub.hc.running = false
	next := sub.beat(now, b)
	if !sub.hc.beat || !sub.hc.running || next != b.next(now) || sub.spare != nil {
		t.Errorf("silent for quiet: beat %v, writer run %v, next in %s, spare %v", sub.hc.beat, sub.hc.running, time.Duration(next-now), sub.spare)
	}
	if len(pool.idle) != 1 {
		t.Errorf("connection handed to a writer %d times, want once", len(pool.idle))
	}
}

// Connections closed for their maximum time close at random moments
// between 80% and 100% of it, each after the terminating chunk.
func TestHijackedMaxConnectionTimeIsSpread(t *testing.T) {
	const life = time.Second
	const n = 20
	ts := startServer(t, Options{MaxConnectionTime: life})
	subs := make([]*rawSub, n)
	for i := range subs {
		subs[i] = dialRaw(t, ts, "stream=m", 0)
	}
	lived := make([]time.Duration, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, r := range subs {
		r.readHead(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := r.chunk(10 * time.Second)
				if err == io.EOF {
					lived[i] = time.Since(r.dialed)
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a connection did not end with the terminating chunk: %v", err)
	}
	slices.Sort(lived)
	// Measured from before the dial, so never shorter than the server's
	// own count, however late a loaded machine reads the heads.
	if lived[0] < life*8/10 || lived[n-1] > life+2*time.Second {
		t.Errorf("lifetimes %v, want within [%s, %s]", lived, life*8/10, life)
	}
	if lived[n-1]-lived[0] < life/20 {
		t.Errorf("lifetimes %v not spread", lived)
	}
	if got := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("max_age")); got != n {
		t.Errorf("max_age closes counted %v, want %d", got, n)
	}
	testproc.Eventually(t, 5*time.Second, "every connection to be released", func() bool { return ts.writers.openConns() == 0 && ts.slots() == 0 })
}

// A drain close lets the client have every frame queued before it, then
// ends the stream cleanly; frames are queued because the clients have not
// read yet.
func TestHijackedDrainFlushesWhatWasQueued(t *testing.T) {
	const n, events = 4, 2000
	// The clients read 16 MB each only after the drain: under -race on a
	// loaded machine that can take longer than the default write timeout,
	// which this test is not about.
	ts := startServer(t, Options{SubscriberQueue: 2 * events, WriteTimeout: time.Minute})
	subs := make([]*rawSub, n)
	for i := range subs {
		subs[i] = dialRaw(t, ts, "stream=d", 0)
	}
	for _, r := range subs {
		r.readHead(t)
	}
	testproc.Eventually(t, 5*time.Second, "the subscribers", func() bool { return ts.hub.subscriberCount() == n })
	pad := strings.Repeat("x", 8<<10)
	for i := range events {
		if err := ts.Send(t.Context(), "d", strconv.Itoa(i)+" "+pad); err != nil {
			t.Fatal(err)
		}
	}
	// 16 MB for each client is more than loopback's socket buffers hold:
	// some of it is still queued.
	queued := 0
	ts.hub.mu.Lock()
	for sub := range ts.hub.subs {
		sub.mu.Lock()
		queued += len(sub.queue)
		sub.mu.Unlock()
	}
	ts.hub.mu.Unlock()
	if queued == 0 {
		t.Fatal("nothing queued: the test needs frames waiting at the drain")
	}
	ts.hub.drain(0)
	var wg sync.WaitGroup
	for i, r := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The preamble's id frame has no data line: read it first.
			if _, err := r.chunk(10 * time.Second); err != nil {
				t.Errorf("subscriber %d: %v", i, err)
				return
			}
			got, err := r.events(events, 10*time.Second)
			if len(got) != events {
				t.Errorf("subscriber %d got %d of %d events before the end (%v)", i, len(got), events, err)
				return
			}
			for j, d := range got {
				if !strings.HasPrefix(d, strconv.Itoa(j)+" ") {
					t.Errorf("subscriber %d: event %d is %.12q", i, j, d)
					return
				}
			}
			if c, err := r.chunk(10 * time.Second); err != io.EOF {
				t.Errorf("subscriber %d: after the events %q, %v; want the terminating chunk", i, c, err)
			}
		}()
	}
	wg.Wait()
	if got := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("drain")); got != n {
		t.Errorf("drain closes counted %v, want %d", got, n)
	}
}

// Clients that stop reading are disconnected (by the write timeout or by
// their queue overflowing), while a reading subscriber keeps getting
// events promptly: a writer blocked on a client holds up no other.
func TestStalledClientsDoNotHoldUpOthers(t *testing.T) {
	for _, tt := range []struct {
		name  string
		queue int
	}{{"write timeout", 100000}, {"overflow", 64}} {
		t.Run(tt.name, func(t *testing.T) {
			const stalled = 100
			// Long enough that the stalled clients' writers are still
			// blocked when the markers go through.
			const writeTimeout = 8 * time.Second
			ts := startServer(t, Options{SubscriberQueue: tt.queue, WriteTimeout: writeTimeout})
			ts.refront(t, smallSendBuffers)
			good := ts.dial(t, "stream=s", "", nil)
			for range stalled {
				dialRaw(t, ts, "stream=s", 4096) // sends its request, never reads
			}
			testproc.Eventually(t, 10*time.Second, "the stalled clients to subscribe", func() bool { return ts.hub.subscriberCount() == stalled+1 })
			pad := strings.Repeat("x", 64<<10)
			const bulk = 100 // 6.4 MB per client: more than its socket buffers hold
			// In rounds smaller than the queue, so that the reading
			// subscriber keeps up.
			for i := 0; i < bulk; i += 20 {
				for j := i; j < i+20; j++ {
					if err := ts.Send(t.Context(), "s", "bulk"+strconv.Itoa(j)+pad); err != nil {
						t.Fatal(err)
					}
				}
				if got := good.Collect(20, 20*time.Second); len(got) != 20 {
					t.Fatalf("the reading subscriber got %d of 20 events", len(got))
				}
			}
			for i := range 5 {
				start := time.Now()
				if err := ts.Send(t.Context(), "s", "marker"+strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
				if got := good.Next(t, 10*time.Second); got.Data != "marker"+strconv.Itoa(i) {
					t.Fatalf("got %.20q", got.Data)
				}
				if took := time.Since(start); took > writeTimeout/4 {
					t.Errorf("marker %d took %s to arrive", i, took)
				}
			}
			if n := ts.writers.openConns(); n <= 1 {
				t.Errorf("%d hijacked connections left when the markers went through; the stalled clients' writers should still be blocked", n)
			}
			testproc.Eventually(t, 3*writeTimeout, "the stalled clients to be disconnected", func() bool {
				return ts.hub.subscriberCount() == 1 && ts.writers.openConns() == 1 && ts.slots() == 1
			}, func() string {
				return fmt.Sprintf("%d subscribers, %d hijacked connections, %d slots", ts.hub.subscriberCount(), ts.writers.openConns(), ts.slots())
			})
			if tt.queue == 64 {
				if got := testutil.ToFloat64(ts.m.subscriberClosed.WithLabelValues("overflow")); got != stalled {
					t.Errorf("overflow closes counted %v, want %d", got, stalled)
				}
			}
			if got := testutil.ToFloat64(ts.m.connections); got != 1 {
				t.Errorf("sser_connections = %v, want 1", got)
			}
			if err := ts.Send(t.Context(), "s", "after"); err != nil {
				t.Fatal(err)
			}
			if got := good.Next(t, 5*time.Second); got.Data != "after" {
				t.Errorf("got %.20q", got.Data)
			}
		})
	}
}

// refront serves ts's SSE handler on a new front, whose listener is
// wrap's, in place of the one it had.
func (ts *testServer) refront(t *testing.T, wrap func(net.Listener) net.Listener) {
	t.Helper()
	ts.front.Close()
	front := httptest.NewUnstartedServer(ts.ClientConnectionHandler(t.Context()))
	front.Listener = wrap(front.Listener)
	front.Start()
	t.Cleanup(front.Close)
	ts.front, ts.client = front, front.Client()
}

// smallSendBuffers makes the server's side of each connection buffer
// about 32 KB (the kernel doubles what is asked): a client that does not
// read blocks its writer after one large event, not after the megabytes
// loopback would otherwise buffer.
func smallSendBuffers(ln net.Listener) net.Listener { return sndbufListener{ln} }

type sndbufListener struct{ net.Listener }

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// hiddenListener hands out connections that do not expose their socket,
// so the close watcher cannot watch them.
type hiddenListener struct{ net.Listener }

type hiddenConn struct{ net.Conn }

func (l hiddenListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hiddenConn{c}, nil
}

// A client that closes its socket is unsubscribed: at once when the close
// watcher sees it, or once a write to it fails.
func TestClientCloseIsNoticed(t *testing.T) {
	t.Run("watched", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("the close watcher is Linux only")
		}
		ts := startServer(t, Options{Heartbeat: time.Hour})
		sub := ts.dial(t, "stream=c", "", nil)
		if ts.writers.openConns() != 1 {
			t.Fatal("not hijacked")
		}
		sub.Close()
		testproc.Eventually(t, 5*time.Second, "the closed client to be unsubscribed with nothing written", func() bool {
			return testutil.ToFloat64(ts.m.connections) == 0 && ts.writers.openConns() == 0 && ts.slots() == 0
		})
	})
	t.Run("found by a write", func(t *testing.T) {
		ts := startServer(t, Options{Heartbeat: time.Hour})
		ts.refront(t, func(ln net.Listener) net.Listener { return hiddenListener{ln} })
		sub := ts.dial(t, "stream=c", "", nil)
		if ts.writers.openConns() != 1 {
			t.Fatal("not hijacked")
		}
		sub.Close()
		i := 0
		testproc.Eventually(t, 10*time.Second, "the closed client to be unsubscribed after a failed write", func() bool {
			i++
			if err := ts.Send(t.Context(), "c", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
			return testutil.ToFloat64(ts.m.connections) == 0 && ts.writers.openConns() == 0 && ts.slots() == 0
		})
	})
}

// Stopping the server ends every hijacked connection promptly with the
// terminating chunk, stalled clients included, and Done waits for them.
func TestShutdownClosesHijackedConnections(t *testing.T) {
	ts := startServer(t, Options{SubscriberQueue: 100000})
	ts.refront(t, smallSendBuffers)
	subs := make([]*ssetest.Sub, 10)
	for i := range subs {
		subs[i] = ts.dial(t, "stream=s", "", nil)
	}
	for range 5 {
		dialRaw(t, ts, "stream=s", 4096)
	}
	testproc.Eventually(t, 10*time.Second, "the subscribers", func() bool { return ts.hub.subscriberCount() == 15 })
	pad := strings.Repeat("x", 64<<10)
	for i := range 20 {
		if err := ts.Send(t.Context(), "s", strconv.Itoa(i)+pad); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range subs {
		if got := s.Collect(20, 20*time.Second); len(got) != 20 {
			t.Fatalf("got %d of 20 events", len(got))
		}
	}
	start := time.Now()
	ts.cancel()
	select {
	case <-ts.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("server not done 10s after its context ended (%d hijacked connections open)", ts.writers.openConns())
	}
	if took := time.Since(start); took > shutdownGrace+2*time.Second {
		t.Errorf("stopping took %s with stalled clients; the last write to each is bounded by %s", took, shutdownGrace)
	}
	for i, s := range subs {
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d still open after the server stopped", i)
		}
		if err := s.Err(); err != io.EOF {
			t.Errorf("subscriber %d ended with %v, want the end of the stream", i, err)
		}
	}
	if n := ts.writers.openConns(); n != 0 {
		t.Errorf("%d hijacked connections open after Done", n)
	}
}

// Ending the context a handler was made with ends its hijacked
// connections, as it ends a handler goroutine's; the server goes on.
func TestHandlerContextEndsItsConnections(t *testing.T) {
	ts := startServer(t, Options{})
	hctx, hcancel := context.WithCancel(t.Context())
	front := httptest.NewServer(ts.ClientConnectionHandler(hctx))
	t.Cleanup(front.Close)
	var subs []*ssetest.Sub
	for range 5 {
		subs = append(subs, ssetest.Dial(t, front.URL+"/?stream=g", ""))
	}
	other := ts.dial(t, "stream=g", "", nil)
	testproc.Eventually(t, 5*time.Second, "the subscribers", func() bool { return ts.writers.openConns() == 6 })
	hcancel()
	for i, s := range subs {
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d open after its handler's context ended", i)
		}
		if err := s.Err(); err != io.EOF {
			t.Errorf("subscriber %d ended with %v, want the end of the stream", i, err)
		}
	}
	if _, err := ssetest.Connect(t.Context(), front.URL+"/?stream=g", ""); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("subscribing through the ended handler: %v, want 503", err)
	}
	if err := ts.Send(t.Context(), "g", "on"); err != nil {
		t.Fatal(err)
	}
	if got := other.Next(t, 5*time.Second); got.Data != "on" {
		t.Errorf("the other handler's subscriber got %+v", got)
	}
	testproc.Eventually(t, 5*time.Second, "the group to be forgotten", func() bool {
		ts.writers.mu.Lock()
		defer ts.writers.mu.Unlock()
		_, ok := ts.writers.groups[hctx]
		return !ok && ts.writers.open == 1
	})
}

// The connection limit is released however a hijacked connection ends:
// connecting and ending again and again never exhausts it.
func TestConnectionLimitReleasedOnEveryPath(t *testing.T) {
	tests := []struct {
		name   string
		rounds int
		opts   Options
		end    func(t *testing.T, ts *testServer, i int)
	}{
		{"client closes", 30, Options{}, func(t *testing.T, ts *testServer, _ int) {
			ts.dial(t, "stream=l", "", nil).Close()
		}},
		{"maximum connection time", 30, Options{MaxConnectionTime: 50 * time.Millisecond}, func(t *testing.T, ts *testServer, _ int) {
			s := ts.dial(t, "stream=l", "", nil)
			<-s.Done()
		}},
		// The writer of an overflowed client that does not read holds its
		// slot until the write timeout: fewer rounds.
		{"overflow", 10, Options{SubscriberQueue: 4}, func(t *testing.T, ts *testServer, i int) {
			dialRaw(t, ts, "stream=l"+strconv.Itoa(i), 4096)
			testproc.Eventually(t, 5*time.Second, "the subscriber", func() bool { return ts.hub.subscriberCount() == 1 })
			pad := strings.Repeat("x", 64<<10)
			for ts.hub.subscriberCount() == 1 {
				if err := ts.Send(t.Context(), "l"+strconv.Itoa(i), pad); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"drain", 30, Options{}, func(t *testing.T, ts *testServer, _ int) {
			s := ts.dial(t, "stream=l", "", nil)
			ts.hub.mu.Lock()
			ts.hub.draining, ts.hub.drainEnd = false, time.Time{}
			ts.hub.mu.Unlock()
			ts.hub.drain(0)
			<-s.Done()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.MaxConnections, tt.opts.MaxConnectionsPerIP = 2, 2
			tt.opts.WriteTimeout = time.Second
			ts := startServer(t, tt.opts)
			ts.refront(t, smallSendBuffers)
			for i := range tt.rounds {
				// Each round needs a slot the earlier ones gave back.
				testproc.Eventually(t, 10*time.Second, "a free slot", func() bool {
					ts.conns.mu.Lock()
					defer ts.conns.mu.Unlock()
					return ts.conns.total < 2
				})
				tt.end(t, ts, i)
			}
			testproc.Eventually(t, 10*time.Second, "every slot back", func() bool {
				ts.conns.mu.Lock()
				defer ts.conns.mu.Unlock()
				return ts.conns.total == 0 && len(ts.conns.byIP) == 0 && ts.writers.openConns() == 0
			})
			if n := testutil.ToFloat64(ts.m.refused.WithLabelValues("connections")) + testutil.ToFloat64(ts.m.refused.WithLabelValues("connections_per_ip")); n != 0 {
				t.Errorf("%v subscriptions refused", n)
			}
		})
	}
}

// Idle hijacked connections hold no goroutine on the server.
func TestIdleHijackedConnectionsHoldNoGoroutine(t *testing.T) {
	ts := startServer(t, Options{})
	before := runtime.NumGoroutine()
	const n = 200
	for range n {
		r := dialRaw(t, ts, "stream=i", 0) // read by this goroutine: none of its own
		r.readHead(t)
		if _, err := r.chunk(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	testproc.Eventually(t, 10*time.Second, "the handlers' goroutines to end", func() bool {
		return runtime.NumGoroutine()-before < n/10
	}, func() string {
		return fmt.Sprintf("%d goroutines, %d before %d connections", runtime.NumGoroutine(), before, n)
	})
	if ts.writers.openConns() != n {
		t.Errorf("%d hijacked connections, want %d", ts.writers.openConns(), n)
	}
}
