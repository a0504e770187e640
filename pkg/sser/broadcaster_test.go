package sser

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// fakePeers is a peerClient whose answers the test decides. It records
// every batch a sender tried to deliver and the ones accepted.
type fakePeers struct {
	mu       sync.Mutex
	accepted []Event
	attempts []int    // batch size of every send
	heldFrom []uint64 // heldFrom of every send
	fail     func(attempt int, events []Event) error
	calls    int
}

func (f *fakePeers) send(_ context.Context, _ string, events []Event, heldFrom uint64, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
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

func newTestSenders(t *testing.T, opts Options) *testSenders {
	t.Helper()
	opts.PeerFinder = staticFinder(t, "127.0.0.1", "127.0.0.9")
	opts.setDefaults()
	opts.PeerBackoffMin, opts.PeerBackoffMax = time.Millisecond, 5*time.Millisecond
	ts := &testSenders{peers: &fakePeers{}, m: newMetrics(nil), clock: &fakeClock{now: time.Unix(1e9, 0)}}
	ts.out = newOutbox(opts.OutboxSize, opts.OutboxBytes, opts.PeerCutoff)
	ts.out.now = ts.clock.Now
	ts.b = newBroadcaster(logr.Discard(), ts.m, &opts, "127.0.0.9", ts.peers, ts.out)
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
