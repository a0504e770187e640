package sser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// fakePeers is a peerClient whose answers the test decides. It records
// every batch a sender tried to deliver and the ones accepted. Batches
// come over fake delivery streams, answered at once unless the test holds
// them (hold), or, when openErr says so, one per send.
type fakePeers struct {
	mu       sync.Mutex
	accepted []Event
	attempts []int    // batch size of every batch line or send
	heldFrom []uint64 // heldFrom of every batch line or send
	fail     func(attempt int, events []Event) error
	calls    int

	openErr     func(open int) error // nil: streams open
	opens       int
	posts       int
	hold        bool // lines wait for answer instead of being answered at once
	cur         *fakeStream
	maxInFlight int // most events in flight on one stream
	keepalives  int
	asks        int // lines followed by a keepalive
}

// fakeStream is one delivery stream of fakePeers.
type fakeStream struct {
	f       *fakePeers
	ans     chan streamAnswer
	pending [][]Event // lines not answered yet (hold)
	ended   bool      // the peer said its last word
	closed  bool      // the sender closed it
}

func (f *fakePeers) openStream(context.Context, string, time.Duration) (peerStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens++
	if f.openErr != nil {
		if err := f.openErr(f.opens); err != nil {
			return nil, err
		}
	}
	f.cur = &fakeStream{f: f, ans: make(chan streamAnswer, 1024)}
	return f.cur, nil
}

func (fs *fakeStream) send(events []Event, heldFrom uint64, ask bool) error {
	f := fs.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if fs.closed || fs.ended {
		return errStreamClosed
	}
	if ask {
		f.asks++
	}
	f.calls++
	f.attempts = append(f.attempts, len(events))
	f.heldFrom = append(f.heldFrom, heldFrom)
	fs.pending = append(fs.pending, events)
	n := 0
	for _, l := range fs.pending {
		n += len(l)
	}
	f.maxInFlight = max(f.maxInFlight, n)
	if !f.hold {
		fs.answerLocked(len(fs.pending))
	}
	return nil
}

// answerLocked answers the oldest n pending lines as the peer would:
// accepted unless fail says otherwise, which ends the stream.
func (fs *fakeStream) answerLocked(n int) {
	f := fs.f
	for ; n > 0 && len(fs.pending) > 0 && !fs.ended && !fs.closed; n-- {
		events := fs.pending[0]
		fs.pending = fs.pending[1:]
		if f.fail != nil {
			if err := f.fail(f.calls, events); err != nil {
				fs.ended = true
				fs.ans <- streamAnswer{err: err}
				close(fs.ans)
				return
			}
		}
		f.accepted = append(f.accepted, events...)
		fs.ans <- streamAnswer{accepted: len(events)}
	}
}

func (fs *fakeStream) keepalive() error {
	fs.f.mu.Lock()
	defer fs.f.mu.Unlock()
	if fs.closed || fs.ended {
		return errStreamClosed
	}
	fs.f.keepalives++
	return nil
}

func (fs *fakeStream) answers() <-chan streamAnswer { return fs.ans }

func (fs *fakeStream) close() {
	fs.f.mu.Lock()
	defer fs.f.mu.Unlock()
	fs.closed = true
}

// answer answers the oldest n lines held on the current stream.
func (f *fakePeers) answer(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil {
		f.cur.answerLocked(n)
	}
}

// setHold holds lines unanswered, or answers every line from now on,
// those held included.
func (f *fakePeers) setHold(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
	if !hold && f.cur != nil {
		f.cur.answerLocked(len(f.cur.pending))
	}
}

// pendingEvents is how many events wait for an answer on the current stream.
func (f *fakePeers) pendingEvents() (lines, events int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur == nil || f.cur.closed || f.cur.ended {
		return 0, 0
	}
	for _, l := range f.cur.pending {
		events += len(l)
	}
	return len(f.cur.pending), events
}

func (f *fakePeers) asked() (lines, events, asks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.attempts), len(f.accepted), f.asks
}

func (f *fakePeers) counts() (opens, posts, keepalives int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.posts, f.keepalives
}

func (f *fakePeers) send(_ context.Context, _ string, events []Event, heldFrom uint64, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.posts++
	f.attempts = append(f.attempts, len(events))
	f.heldFrom = append(f.heldFrom, heldFrom)
	if f.fail != nil {
		if err := f.fail(f.calls, events); err != nil {
			return err
		}
	}
	f.accepted = append(f.accepted, events...)
	return nil
}

func (f *fakePeers) rangeRead(context.Context, string, string, uint64, uint64, int) (*rangeAnswer, error) {
	return nil, errors.New("no history here")
}

func (f *fakePeers) snapshotPage(context.Context, string, uint64, int) (*Snapshot, error) {
	return nil, errors.New("no history here")
}

func (f *fakePeers) origins(context.Context, string) ([]OriginInfo, error) {
	return nil, errors.New("no notes here")
}

func (f *fakePeers) setFail(fn func(attempt int, events []Event) error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

func (f *fakePeers) acceptedMsgs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.accepted))
	for i, e := range f.accepted {
		out[i] = e.Msg
	}
	return out
}

func (f *fakePeers) lastAttempt() (int, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.attempts) == 0 {
		return 0, 0
	}
	return f.attempts[len(f.attempts)-1], f.heldFrom[len(f.heldFrom)-1]
}

// testSenders is an outbox with one peer's sender over it.
type testSenders struct {
	b     *broadcaster
	out   *outbox
	peers *fakePeers
	m     *metrics
	clock *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestSenders starts the sender after setup, if given, has prepared it.
func newTestSenders(t *testing.T, opts Options, setup ...func(*testSenders)) *testSenders {
	t.Helper()
	opts.PeerFinder = staticFinder(t, "127.0.0.1", "127.0.0.9")
	opts.setDefaults()
	opts.PeerBackoffMin, opts.PeerBackoffMax = time.Millisecond, 5*time.Millisecond
	ts := &testSenders{peers: &fakePeers{}, m: newMetrics(nil), clock: &fakeClock{now: time.Unix(1e9, 0)}}
	ts.out = newOutbox(opts.OutboxSize, opts.OutboxBytes, opts.PeerCutoff)
	ts.out.now = ts.clock.Now
	ts.b = newBroadcaster(logr.Discard(), ts.m, &opts, "127.0.0.9", ts.peers, ts.out)
	for _, fn := range setup {
		fn(ts)
	}
	ts.b.setPeers(t.Context(), []string{"127.0.0.1", "127.0.0.9"}) // .9 is this replica
	t.Cleanup(ts.b.stop)
	return ts
}

func (ts *testSenders) publish(msgs ...string) ([]cutoffNote, error) {
	events := make([]Event, len(msgs))
	for i, m := range msgs {
		events[i] = Event{Stream: "s", Msg: m}
	}
	cut, err := ts.out.add("me", events)
	ts.b.wakeAll()
	return cut, err
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testproc.Eventually(t, 10*time.Second, what, cond)
}

func msgs(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSenderDeliversInOrderAndRetriesWithoutLoss(t *testing.T) {
	ts := newTestSenders(t, Options{PeerBatch: 7})
	ts.peers.setFail(func(attempt int, _ []Event) error {
		if attempt%3 == 0 {
			return errors.New("connection refused")
		}
		return nil
	})
	for i := 1; i <= 100; i++ {
		if _, err := ts.publish(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every event accepted", func() bool { return len(ts.peers.acceptedMsgs()) >= 100 })
	if got := ts.peers.acceptedMsgs(); !equalStrings(got, msgs(1, 100)) {
		t.Fatalf("peer got %v, want 1..100 once each in order", got)
	}
	waitUntil(t, "lag 0", func() bool { return ts.out.lag("127.0.0.1") == 0 })
	if n := testutil.ToFloat64(ts.m.peerPostErrors.WithLabelValues("127.0.0.1")); n == 0 {
		t.Error("failed sends were not counted")
	}
}

func TestSlowPeerGetsSmallerBatches(t *testing.T) {
	ts := newTestSenders(t, Options{PeerBatch: 256})
	slow := true
	ts.peers.setFail(func(_ int, events []Event) error {
		if slow && len(events) > minPeerBatch {
			return timeoutError{context.DeadlineExceeded}
		}
		return nil
	})
	if _, err := ts.publish(msgs(1, 300)...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "all 300 delivered in small batches", func() bool { return len(ts.peers.acceptedMsgs()) == 300 })
	ts.peers.mu.Lock()
	defer ts.peers.mu.Unlock()
	// Each timeout cut the batch by 4: 256, 64, 16, then 16 at a time.
	if ts.peers.attempts[0] != 256 || ts.peers.attempts[1] != 64 || ts.peers.attempts[2] != 16 {
		t.Errorf("batch sizes %v, want 256, 64, 16, ...", ts.peers.attempts[:4])
	}
}

func TestLaggingPeerGivesBackPressureThenIsCutOff(t *testing.T) {
	ts := newTestSenders(t, Options{OutboxSize: 10, PeerCutoff: 10 * time.Second})
	ts.peers.setFail(func(int, []Event) error { return errors.New("peer paused") })
	if _, err := ts.publish(msgs(1, 10)...); err != nil {
		t.Fatal(err)
	}
	// The outbox is full of events the peer has not acknowledged: the
	// publisher is held back, nothing is dropped.
	_, err := ts.publish("11")
	var bp *backPressureError
	if !errors.Is(err, ErrBackPressure) || !errors.As(err, &bp) || bp.peer != "127.0.0.1" || bp.lag != 10 {
		t.Fatalf("publish into a full outbox: %v, want back-pressure naming the peer 10 behind", err)
	}
	ts.clock.Add(9 * time.Second)
	if _, err := ts.publish("11"); !errors.Is(err, ErrBackPressure) {
		t.Fatalf("publish before the cut-off: %v, want back-pressure", err)
	}
	// Past the cut-off the peer is made to skip what must go.
	ts.clock.Add(2 * time.Second)
	cut, err := ts.publish("11")
	if err != nil || len(cut) != 1 || cut[0].peer != "127.0.0.1" || cut[0].lag != 10 {
		t.Fatalf("publish after the cut-off: %v, cut-offs %+v", err, cut)
	}
	// A cut-off peer holds nothing back: more publishes evict what it lacks.
	if _, err := ts.publish("12", "13"); err != nil {
		t.Fatalf("publish while cut off: %v", err)
	}
	skipped := uint64(3)
	// The peer comes back: it gets what is still held, told from which seq.
	ts.peers.setFail(nil)
	ts.b.wakeAll()
	waitUntil(t, "the rest delivered", func() bool { return ts.out.lag("127.0.0.1") == 0 })
	got := ts.peers.acceptedMsgs()
	if want := msgs(int(skipped)+1, 13); !equalStrings(got, want) {
		t.Fatalf("after the cut-off the peer got %v, want %v", got, want)
	}
	if _, heldFrom := ts.peers.lastAttempt(); heldFrom != skipped+1 {
		t.Errorf("heldFrom %d, want %d: the peer must learn what it cannot get", heldFrom, skipped+1)
	}
}

func TestDepartedPeerHoldsNothingBack(t *testing.T) {
	ts := newTestSenders(t, Options{OutboxSize: 5})
	ts.peers.setFail(func(int, []Event) error { return errors.New("gone") })
	if _, err := ts.publish(msgs(1, 5)...); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.publish("6"); !errors.Is(err, ErrBackPressure) {
		t.Fatalf("got %v, want back-pressure while the peer is in the set", err)
	}
	ts.b.setPeers(t.Context(), []string{"127.0.0.9"})
	if _, err := ts.publish("6"); err != nil {
		t.Fatalf("publish after the peer left: %v", err)
	}
	if got := ts.out.length(); got != 5 {
		t.Errorf("outbox holds %d events, want its bound 5", got)
	}
}

func TestOutboxReadsRanges(t *testing.T) {
	o := newOutbox(100, 1<<20, time.Second)
	evs := make([]Event, 30)
	for i := range evs {
		evs[i] = Event{Stream: "s", Msg: strconv.Itoa(i + 1)}
	}
	if _, err := o.add("me", evs); err != nil {
		t.Fatal(err)
	}
	got, heldFrom, last := o.read(10, 20, 5)
	if len(got) != 5 || got[0].Seq != 11 || got[4].Seq != 15 || heldFrom != 1 || last != 30 {
		t.Errorf("read(10, 20, 5) = %d events from %d, heldFrom %d, last %d", len(got), got[0].Seq, heldFrom, last)
	}
	if got, _, _ := o.read(28, 100, 10); len(got) != 2 || got[1].Seq != 30 {
		t.Errorf("read past the end: %v", got)
	}
}

func staticFinder(t *testing.T, ips ...string) PeerFinder {
	t.Helper()
	pf, err := peerfinder.NewPeerFinderStatic(ips)
	if err != nil {
		t.Fatal(err)
	}
	return pf
}

// Cutting one lagging peer off must not carry another peer past events it
// has not acknowledged: the second gets its own back-pressure period.
func TestCutOffDoesNotSkipAnotherLaggingPeer(t *testing.T) {
	o := newOutbox(4, 1<<20, 10*time.Second)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	o.now = clock.Now
	o.addPeer("a")
	o.addPeer("b")
	add := func(msg string) ([]cutoffNote, error) { return o.add("me", []Event{{Stream: "s", Msg: msg}}) }
	for i := 1; i <= 4; i++ {
		if _, err := add(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := add("5"); !errors.Is(err, ErrBackPressure) {
		t.Fatalf("full outbox: %v, want back-pressure", err)
	}
	clock.Add(11 * time.Second)
	cut, err := add("5")
	if !errors.Is(err, ErrBackPressure) || len(cut) != 1 {
		t.Fatalf("after the cut-off: %v, cut-offs %+v; want one peer cut off and back-pressure for the other", err, cut)
	}
	other := map[string]string{"a": "b", "b": "a"}[cut[0].peer]
	if events, _ := o.next(other, 10); len(events) != 4 || events[0].Seq != 1 {
		t.Fatalf("the peer not cut off would next get %d events from %v, want seqs 1..4: nothing skipped", len(events), events)
	}
	clock.Add(11 * time.Second)
	if _, err := add("5"); err != nil {
		t.Fatalf("after its own cut-off period: %v", err)
	}
}

func TestStreamAcksMoveTheCursor(t *testing.T) {
	ts := newTestSenders(t, Options{PeerBatch: 8}, func(ts *testSenders) { ts.peers.hold = true })
	for i := 1; i <= 7; i++ {
		if _, err := ts.publish(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		// Each event goes out at once, on its own line, unanswered.
		waitUntil(t, "line "+strconv.Itoa(i)+" in flight", func() bool { l, _ := ts.peers.pendingEvents(); return l == i })
	}
	if lag := ts.out.lag("127.0.0.1"); lag != 7 {
		t.Fatalf("lag %d before any answer, want 7", lag)
	}
	if _, _, asks := ts.peers.asked(); asks != 0 {
		t.Errorf("the peer was asked for answers %d times with less than half the window in flight", asks)
	}
	// The eighth event fills half the window: its line asks for answers.
	if _, err := ts.publish("8"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "line 8 in flight", func() bool { l, _ := ts.peers.pendingEvents(); return l == 8 })
	if _, _, asks := ts.peers.asked(); asks != 1 {
		t.Errorf("asked %d times with half the window in flight, want once", asks)
	}
	ts.peers.answer(1)
	waitUntil(t, "the first answer moves the cursor", func() bool { return ts.out.lag("127.0.0.1") == 7 })
	ts.peers.answer(7)
	waitUntil(t, "every answer moves the cursor", func() bool { return ts.out.lag("127.0.0.1") == 0 })
	if got := ts.peers.acceptedMsgs(); !equalStrings(got, msgs(1, 8)) {
		t.Errorf("accepted %v", got)
	}
	if opens, posts, _ := ts.peers.counts(); opens != 1 || posts != 0 {
		t.Errorf("%d streams and %d posts, want one stream", opens, posts)
	}
	if n := testutil.ToFloat64(ts.m.peerEventsSent.WithLabelValues("127.0.0.1")); n != 8 {
		t.Errorf("sser_peer_events_sent_total = %v, want 8", n)
	}
}

func TestStreamThatStopsAnsweringIsReopenedFromTheAckedCursor(t *testing.T) {
	ts := newTestSenders(t, Options{PeerTimeout: 100 * time.Millisecond}, func(ts *testSenders) { ts.peers.hold = true })
	for i := 1; i <= 5; i++ {
		if _, err := ts.publish(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "event "+strconv.Itoa(i)+" in flight", func() bool { _, n := ts.peers.pendingEvents(); return n > 0 })
		if i == 1 {
			ts.peers.answer(1) // then the peer goes silent
		}
	}
	if _, err := ts.publish(msgs(6, 10)...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a late answer makes the sender reopen", func() bool { opens, _, _ := ts.peers.counts(); return opens >= 2 })
	if n := testutil.ToFloat64(ts.m.peerPostErrors.WithLabelValues("127.0.0.1")); n < 1 {
		t.Errorf("the timed-out stream was not counted as failed")
	}
	ts.peers.setHold(false)
	ts.b.wakeAll()
	waitUntil(t, "everything acknowledged", func() bool { return ts.out.lag("127.0.0.1") == 0 })
	// What the silent stream held was sent again from the acknowledged
	// cursor: nothing lost, nothing twice, nothing out of order.
	if got := ts.peers.acceptedMsgs(); !equalStrings(got, msgs(1, 10)) {
		t.Fatalf("peer accepted %v, want 1..10 once each in order", got)
	}
}

func TestStreamWindowBoundsEventsInFlight(t *testing.T) {
	ts := newTestSenders(t, Options{PeerBatch: 4}, func(ts *testSenders) { ts.peers.hold = true })
	if _, err := ts.publish(msgs(1, 20)...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a full window in flight", func() bool { _, n := ts.peers.pendingEvents(); return n == 8 })
	for range 3 {
		ts.peers.answer(1)
		waitUntil(t, "the window refilled", func() bool { _, n := ts.peers.pendingEvents(); return n == 8 })
	}
	ts.peers.setHold(false)
	ts.b.wakeAll()
	waitUntil(t, "everything acknowledged", func() bool { return ts.out.lag("127.0.0.1") == 0 })
	ts.peers.mu.Lock()
	defer ts.peers.mu.Unlock()
	if ts.peers.maxInFlight > 8 {
		t.Errorf("%d events were in flight at once, want at most 2×PeerBatch = 8", ts.peers.maxInFlight)
	}
	for i, n := range ts.peers.attempts {
		if n > 4 {
			t.Errorf("line %d carried %d events, want at most PeerBatch = 4", i, n)
		}
	}
	if got := ts.peers.accepted; len(got) != 20 {
		t.Errorf("accepted %d events, want 20", len(got))
	}
}

func TestStreamKeepaliveWhileIdle(t *testing.T) {
	ts := newTestSenders(t, Options{InternalReadTimeout: 90 * time.Millisecond})
	if _, err := ts.publish("1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "keepalives on the idle stream", func() bool { _, _, k := ts.peers.counts(); return k >= 5 })
	if opens, _, _ := ts.peers.counts(); opens != 1 {
		t.Errorf("%d streams opened, want the first kept open", opens)
	}
}

func TestSenderPostsToAPeerThatRefusesStreams(t *testing.T) {
	ts := newTestSenders(t, Options{PeerBatch: 7}, func(ts *testSenders) {
		ts.b.streamRetry = 200 * time.Millisecond
		ts.peers.openErr = func(int) error { return fmt.Errorf("%w: 415", errStreamUnsupported) }
	})
	for i := 1; i <= 30; i++ {
		if _, err := ts.publish(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every event posted", func() bool { return len(ts.peers.acceptedMsgs()) == 30 })
	if got := ts.peers.acceptedMsgs(); !equalStrings(got, msgs(1, 30)) {
		t.Fatalf("peer got %v", got)
	}
	waitUntil(t, "a stream tried again after streamRetry", func() bool { opens, _, _ := ts.peers.counts(); return opens >= 2 })
	opens, posts, _ := ts.peers.counts()
	if got := testutil.ToFloat64(ts.m.peerRequests.WithLabelValues("127.0.0.1")); got < float64(opens+posts) {
		t.Errorf("sser_peer_requests_total = %v, want the %d streams and %d posts", got, opens, posts)
	}
	// Once the peer streams, the sender streams.
	ts.peers.mu.Lock()
	ts.peers.openErr = nil
	ts.peers.mu.Unlock()
	waitUntil(t, "a stream opened", func() bool {
		ts.peers.mu.Lock()
		defer ts.peers.mu.Unlock()
		return ts.peers.cur != nil
	})
	if _, err := ts.publish("31"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the next event streamed", func() bool { return len(ts.peers.acceptedMsgs()) == 31 })
	if _, posts2, _ := ts.peers.counts(); posts2 != posts {
		t.Errorf("%d more posts after the peer streamed", posts2-posts)
	}
}

// A peer whose deliveries keep failing is down: sser_peer_up 0, one WARN
// line and readiness naming it, not a line per attempt; when a delivery
// succeeds again it is up, with one WARN line more.
func TestPeerDownAndUpAreVisible(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	ts := newTestSenders(t, Options{}, func(ts *testSenders) {
		ts.b.log = logr.FromSlogHandler(slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &logs}, nil))
	})
	up := ts.m.peerUp.WithLabelValues("127.0.0.1")
	if testutil.ToFloat64(up) != 1 {
		t.Fatalf("sser_peer_up = %v for a peer just joined, want 1", testutil.ToFloat64(up))
	}
	var failing atomic.Bool
	failing.Store(true)
	ts.peers.setFail(func(int, []Event) error {
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	})
	if _, err := ts.publish("1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the peer down", func() bool { return testutil.ToFloat64(up) == 0 })
	if got := ts.b.downPeers(); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("down peers %v, want [127.0.0.1]", got)
	}
	waitUntil(t, "several more failed attempts", func() bool {
		return testutil.ToFloat64(ts.m.peerPostErrors.WithLabelValues("127.0.0.1")) >= 6
	})
	failing.Store(false)
	waitUntil(t, "the peer up", func() bool { return testutil.ToFloat64(up) == 1 })
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if n := strings.Count(out, `"level":"WARN","msg":"peer down`); n != 1 {
		t.Errorf("%d peer-down WARN lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, `"level":"WARN","msg":"peer up again`); n != 1 {
		t.Errorf("%d peer-up WARN lines, want 1:\n%s", n, out)
	}
	if len(ts.b.downPeers()) != 0 {
		t.Errorf("down peers %v after it came back", ts.b.downPeers())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A peer that went down while this replica had nothing to send is up
// again as soon as it takes a delivery stream: no event has to be
// published here first.
func TestIdlePeerUpWhenItTakesAStream(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	ts := newTestSenders(t, Options{}, func(ts *testSenders) {
		ts.peers.openErr = func(int) error {
			if refuse.Load() {
				return errors.New("connection refused")
			}
			return nil
		}
	})
	up := ts.m.peerUp.WithLabelValues("127.0.0.1")
	waitUntil(t, "the peer down", func() bool { return testutil.ToFloat64(up) == 0 })
	refuse.Store(false)
	waitUntil(t, "the peer up", func() bool { return testutil.ToFloat64(up) == 1 })
	if got := ts.b.downPeers(); len(got) != 0 {
		t.Errorf("down peers %v", got)
	}
	if len(ts.peers.acceptedMsgs()) != 0 {
		t.Error("events were delivered: nothing was published")
	}
}
