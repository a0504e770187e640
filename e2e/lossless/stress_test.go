package lossless

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/client"
	"github.com/sser-dev/sser/pkg/sser"
)

// The tests in this file put real replicas under stress — bursts, slow and
// paused peers, kills — and audit every subscriber
// for silent loss: an accepted event it was owed that it neither received
// nor was told about, or that its id claims it has. Publishers keep a
// ledger of what each publish answer accepted and where its origin put it
// (origin and seq); subscribers record what they received, the sser-lost
// events they were sent and their first and final ids.

// stressPlace is where an origin put an event: its seq in that origin's one
// sequence.
type stressPlace struct {
	origin string
	seq    uint64
}

// stressLedger is every publisher's record of what sser accepted.
type stressLedger struct {
	mu    sync.Mutex
	place map[string]stressPlace // accepted token -> its place
	order []string               // accepted tokens, in the order their answers came
	// incarnation is the replica incarnation (cluster.incarnation) that
	// answered with each origin.
	incarnation map[string]string
	// unplaced holds accepted tokens whose answer gave no place, with when
	// their batch was sent: a server from before the publish answer carried
	// origin, first and last. Their place is learnt from the ids subscribers
	// see (stressSub.handle), so the audit can still run against it.
	unplaced map[string]time.Time
	seen     map[string]stressPlace // places learnt from ids before the answer came
	// positioned is set by the first answer with a place: ids need not be
	// read from then on.
	positioned bool

	batches        int // accepted POSTs
	backPressure   int // 503 back-pressure answers (each retried)
	otherRefusals  int // other 503 answers (starting, stopping)
	refused        int // events never accepted: the run ended while they were refused
	unknown        int // events of a POST that failed with no answer: maybe taken
	answerProblems []string
}

func newStressLedger() *stressLedger {
	return &stressLedger{place: make(map[string]stressPlace), incarnation: make(map[string]string),
		unplaced: make(map[string]time.Time), seen: make(map[string]stressPlace)}
}

// stressAnswer is a publish endpoint's 200 answer.
type stressAnswer struct {
	Accepted int    `json:"accepted"`
	Origin   string `json:"origin"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
}

// accept records a 200 answer to tokens: the answer names the first and the
// last seq, given in the order of the batch.
func (l *stressLedger) accept(tokens []string, inc string, sentAt time.Time, a stressAnswer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches++
	if a.Accepted != len(tokens) {
		l.answerProblems = append(l.answerProblems, fmt.Sprintf("%s accepted %d of a batch of %d", inc, a.Accepted, len(tokens)))
	}
	if a.Origin == "" {
		for _, tok := range tokens {
			if p, ok := l.seen[tok]; ok {
				l.place[tok] = p
			} else {
				l.unplaced[tok] = sentAt
			}
			l.order = append(l.order, tok)
		}
		return
	}
	l.positioned = true
	clear(l.seen)
	if a.Last < a.First || a.Last-a.First+1 != uint64(len(tokens)) {
		l.answerProblems = append(l.answerProblems, fmt.Sprintf("%s answered seqs %d..%d to a batch of %d", inc, a.First, a.Last, len(tokens)))
	}
	l.incarnation[a.Origin] = inc
	for k, tok := range tokens {
		l.place[tok] = stressPlace{a.Origin, a.First + uint64(k)}
		l.order = append(l.order, tok)
	}
}

// placeSeen places an unplaced token where a subscriber's id says it went.
func (l *stressLedger) placeSeen(tok string, p stressPlace) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.unplaced[tok]; ok {
		delete(l.unplaced, tok)
		l.place[tok] = p
	} else if !l.positioned {
		l.seen[tok] = p
	}
}

// refusals counts the back-pressure answers so far.
func (l *stressLedger) refusals() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.backPressure
}

func (l *stressLedger) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order)
}

// needIDs reports whether places must still be learnt from ids: no answer
// has given one yet.
func (l *stressLedger) needIDs() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.positioned
}

// stressPublisher publishes batches of tokens "<name>.<n>" to its home
// replica's publish endpoint. A 503 is retried after its Retry-After; a
// refused connection (the replica is restarting) after a short pause; a
// POST that ends with no answer may or may not have been taken, so its
// events are counted unknown and not sent again (that could publish them
// twice).
type stressPublisher struct {
	l        *stressLedger
	c        *cluster
	home     int
	name     string
	batch    int
	interval time.Duration // from one batch's start to the next; 0: back to back
	hc       *http.Client
}

func newStressPublisher(t *testing.T, l *stressLedger, c *cluster, home int, name string, batch int, interval time.Duration) *stressPublisher {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &stressPublisher{l: l, c: c, home: home, name: name, batch: batch, interval: interval,
		// Longer than any pause the tests inflict, so a paused replica's
		// answer still arrives.
		hc: &http.Client{Timeout: 20 * time.Second, Transport: tr}}
}

// run publishes until until, until stop is closed, or until the ledger
// holds maxAccepted events. It returns an error only for an answer that
// shows a bug (a 4xx, a 500).
func (p *stressPublisher) run(ctx context.Context, until time.Time, maxAccepted int, stop <-chan struct{}) error {
	u := p.c.internalURL(p.home) + "/api/json/v1/publish"
	next := time.Now()
	for n := 0; ; {
		if p.interval > 0 {
			if !stressHold(ctx, time.Until(next)) {
				return nil
			}
			// No catching up after a slow answer: the pace is a rate.
			if now := time.Now(); now.Sub(next) > p.interval {
				next = now
			}
			next = next.Add(p.interval)
		}
		select {
		case <-stop:
			return nil
		default:
		}
		if time.Now().After(until) || p.l.accepted() >= maxAccepted || ctx.Err() != nil {
			return nil
		}
		tokens := make([]string, p.batch)
		var body strings.Builder
		body.WriteByte('[')
		for k := range tokens {
			tokens[k] = p.name + "." + strconv.Itoa(n)
			n++
			if k > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"stream":%q,"msg":%q}`, stream, tokens[k])
		}
		body.WriteByte(']')
		if err := p.publish(ctx, u, tokens, body.String(), until); err != nil {
			return err
		}
	}
}

// publish posts one batch until it is accepted, refused for good (the run
// ended while it was refused) or lost in flight.
func (p *stressPublisher) publish(ctx context.Context, u string, tokens []string, body string, until time.Time) error {
	for {
		inc := p.c.incarnation(p.home)
		sentAt := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := p.hc.Do(req)
		var wait time.Duration
		switch {
		case err != nil:
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" {
				p.l.mu.Lock()
				p.l.unknown += len(tokens)
				p.l.mu.Unlock()
				return nil
			}
			wait = 50 * time.Millisecond // not taken: the replica is restarting
		default:
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				var a stressAnswer
				if err := json.Unmarshal(msg, &a); err != nil {
					return fmt.Errorf("publish answer %q: %w", msg, err)
				}
				p.l.accept(tokens, inc, sentAt, a)
				return nil
			case http.StatusServiceUnavailable, http.StatusTooManyRequests:
				p.l.mu.Lock()
				if strings.Contains(string(msg), "back-pressure") {
					p.l.backPressure++
				} else {
					p.l.otherRefusals++
				}
				p.l.mu.Unlock()
				wait = time.Second
				if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
					wait = time.Duration(s) * time.Second
				}
			default:
				return fmt.Errorf("publish on %s: %s: %s", inc, resp.Status, strings.TrimSpace(string(msg)))
			}
		}
		if time.Now().Add(wait).After(until) || !stressHold(ctx, wait) {
			p.l.mu.Lock()
			p.l.refused += len(tokens)
			p.l.mu.Unlock()
			return nil
		}
	}
}

// stressPublishAll runs pubs together until until, maxAccepted events or
// stop (nil: never); the returned channel yields their first error (or nil)
// once all stop.
func stressPublishAll(ctx context.Context, pubs []*stressPublisher, until time.Time, maxAccepted int, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	errs := make(chan error, len(pubs))
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.run(ctx, until, maxAccepted, stop)
		}()
	}
	go func() {
		wg.Wait()
		close(errs)
		var first error
		for err := range errs {
			if first == nil {
				first = err
			}
		}
		done <- first
	}()
	return done
}

// stressHold lets d pass (the length of a fault or a pace the test
// inflicts, not a wait for a condition); false when ctx ended first.
func stressHold(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// stressSlow makes replica r slow, not dead: stopped for stopped, running
// for running, over and over until until. It leaves r running.
func stressSlow(ctx context.Context, r *testproc.Replica, stopped, running time.Duration, until time.Time) (cycles int) {
	defer func() { _ = r.Signal(syscall.SIGCONT) }()
	for time.Now().Before(until) {
		if err := r.Signal(syscall.SIGSTOP); err != nil {
			return cycles
		}
		ok := stressHold(ctx, stopped)
		_ = r.Signal(syscall.SIGCONT)
		if !ok || !stressHold(ctx, running) {
			return cycles
		}
		cycles++
	}
	return cycles
}

// stressGot is what one subscriber received of one token.
type stressGot struct {
	n  int       // times received
	at time.Time // first received
}

// stressSub is one subscriber on the project's Go client, reconnecting by
// itself with Last-Event-ID.
type stressSub struct {
	name string
	pin  int // the replica it always connects to; -1 through the balancer
	l    *stressLedger
	s    *client.Stream

	mu       sync.Mutex
	got      map[string]stressGot
	events   int // events received, sser-lost ones included
	firstID  string
	finalID  string
	lost     []string // data of its sser-lost events
	connects int
	resumes  map[string]int // X-Sser-Resume answers

	dups    int // extra copies received, of any event
	firstAt time.Time

	// The audit's own (stressAudit): which accepted tokens the first id
	// leaves owed, for the first owedUpTo tokens of the ledger's order, and
	// unplaced tokens to judge again.
	owed     []string
	owedUpTo int
	recheck  []string
}

// stressSubscribe starts a subscriber on u, pinned to replica pin (-1: u is
// the balancer). readTimeout restarts a connection that stays silent for
// that long. It is closed on cleanup.
func stressSubscribe(t *testing.T, l *stressLedger, name, u string, pin int, readTimeout time.Duration) *stressSub {
	t.Helper()
	r := &stressSub{name: name, pin: pin, l: l, got: make(map[string]stressGot), resumes: make(map[string]int)}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	s, err := client.NewStream(t.Context(), u+"/events?stream="+stream,
		client.WithHTTPClient(hc),
		client.WithBackoff(100*time.Millisecond, time.Second, 0.5),
		client.WithReadTimeout(readTimeout),
		client.WithHandler(func(_ context.Context, ev client.Event) error {
			r.handle(ev)
			return nil
		}),
		client.WithConnectHandler(func(resp *http.Response) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.connects++
			if h := resp.Header.Get("X-Sser-Resume"); h != "" {
				r.resumes[h]++
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	t.Cleanup(func() { _ = s.Close() })
	return r
}

func (r *stressSub) handle(ev client.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.finalID
	r.events++
	if r.firstID == "" {
		r.firstID, r.firstAt = ev.ID, time.Now()
	}
	r.finalID = ev.ID
	if ev.Type == sser.LostEventType {
		r.lost = append(r.lost, ev.Data)
		return
	}
	g := r.got[ev.Data]
	if g.n == 0 {
		g.at = time.Now()
	}
	g.n++
	if g.n > 1 {
		r.dups++
	}
	r.got[ev.Data] = g
	if g.n == 1 && prev != "" && r.l.needIDs() {
		// The id is the replica's position after this event: the one
		// origin whose seq moved is this event's.
		if p, ok := stressMoved(prev, ev.ID); ok {
			r.l.placeSeen(ev.Data, p)
		}
	}
}

// stressMoved is the one origin whose seq differs between ids a and b, and
// its seq in b; false unless exactly one moved. Only a server from before
// the publish answer carried places needs it.
func stressMoved(a, b string) (stressPlace, bool) {
	seqs := func(id string) map[string]uint64 {
		m := make(map[string]uint64)
		for el := range strings.SplitSeq(id, "-") {
			f := strings.Split(el, ".")
			if len(f) < 2 {
				continue
			}
			if s, err := strconv.ParseUint(f[1], 36, 64); err == nil {
				m[f[0]] = s
			}
		}
		return m
	}
	pa, pb := seqs(a), seqs(b)
	var moved []stressPlace
	for o, s := range pb {
		if pa[o] != s {
			moved = append(moved, stressPlace{o, s})
		}
	}
	if len(moved) != 1 {
		return stressPlace{}, false
	}
	return moved[0], true
}

func (r *stressSub) connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connects
}

func (r *stressSub) progress() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events
}

// stressWaitConnected waits until every subscriber has its first answer.
func stressWaitConnected(t *testing.T, subs []*stressSub) {
	t.Helper()
	waitFor(t, deadline, fmt.Sprintf("%d subscribers to connect", len(subs)), func() bool {
		for _, r := range subs {
			if r.connections() == 0 {
				return false
			}
		}
		return true
	})
}

// stressKill is the moment a replica incarnation was SIGKILLed: what it
// accepted and no other replica received is gone with it.
type stressKill struct {
	incarnation string
	replica     int
	at          time.Time
}

// stressFigures is what the audit found, summed over subscribers.
type stressFigures struct {
	subscribers int
	// accepted events and how the publishers fared.
	accepted, batches, backPressure, otherRefusals, refused, unknown int
	// owed sums, over subscribers, the accepted events each one's first id
	// does not cover.
	owed int
	// received counts owed events received exactly once; duplicates counts
	// every extra copy of any event.
	received, duplicates int
	// told counts owed events missing where the subscriber got sser-lost
	// and its final id does not cover the event: loss, but not silent.
	told int
	// gone counts owed events missing, not covered, accepted by a killed
	// incarnation that no other replica was seen to receive.
	gone int
	// silent counts owed events missing with no sser-lost, or covered by
	// the final id: silent loss.
	silent int
	// unplaced counts accepted events whose place no answer or id gave.
	unplaced   int
	lostEvents int // sser-lost events received
	problems   []string
	perSub     []string
}

// done reports whether nothing is still outstanding: every owed event is
// received or accounted for.
func (f stressFigures) done() bool { return f.silent == 0 }

func (f stressFigures) String() string {
	return fmt.Sprintf("%d subscribers; publishers: accepted %d in %d POSTs, back-pressure answers %d, other 503s %d, refused for good %d, unknown %d; "+
		"audit: owed %d, received once %d, duplicates %d, told-and-uncovered %d, gone with a killed origin %d, silent loss %d, unplaced %d; sser-lost events %d",
		f.subscribers, f.accepted, f.batches, f.backPressure, f.otherRefusals, f.refused, f.unknown,
		f.owed, f.received, f.duplicates, f.told, f.gone, f.silent, f.unplaced, f.lostEvents)
}

// stressAudit checks every subscriber against the ledger: each accepted
// event its first id does not cover is owed to it, and must be received
// exactly once, or be missing with the subscriber told (an sser-lost event)
// and its final id not covering it. killed names incarnations that were
// SIGKILLed: an event one of them accepted that no subscriber saw from
// another replica (pinned elsewhere, or received after the kill) may have
// died with it, so it may be missing untold, but no id may cover it.
// Calls must not overlap: each subscriber's owed cache is the audit's own.
func stressAudit(l *stressLedger, subs []*stressSub, killed ...stressKill) stressFigures {
	l.mu.Lock()
	order := slices.Clone(l.order)
	place := maps.Clone(l.place)
	unplaced := maps.Clone(l.unplaced)
	incOf := maps.Clone(l.incarnation)
	f := stressFigures{subscribers: len(subs), accepted: len(order), batches: l.batches, backPressure: l.backPressure,
		otherRefusals: l.otherRefusals, refused: l.refused, unknown: l.unknown, unplaced: len(unplaced)}
	f.problems = append(f.problems, l.answerProblems...)
	l.mu.Unlock()

	covers := func(id string, p stressPlace) bool {
		ok, err := sser.IDCovers(id, p.origin, p.seq)
		if err != nil {
			if len(f.problems) < 20 {
				f.problems = append(f.problems, fmt.Sprintf("id %q: %v", id, err))
			}
			return false
		}
		return ok
	}

	// Events of killed incarnations that a replica other than their origin
	// was seen to hold.
	dead := make(map[string]stressKill)
	for _, k := range killed {
		dead[k.incarnation] = k
	}
	witnessed := make(map[string]bool)
	if len(dead) > 0 {
		for _, r := range subs {
			r.mu.Lock()
			for tok, g := range r.got {
				p, ok := place[tok]
				if !ok {
					continue
				}
				k, ok := dead[incOf[p.origin]]
				if ok && ((r.pin >= 0 && r.pin != k.replica) || g.at.After(k.at)) {
					witnessed[tok] = true
				}
			}
			r.mu.Unlock()
		}
	}

	for _, r := range subs {
		r.mu.Lock()
		firstID, firstAt := r.firstID, r.firstAt
		r.mu.Unlock()

		// Owed: what the first id does not cover; before the first event,
		// everything. The first id never changes once set, so placed
		// tokens are judged once; unplaced ones (a positionless server)
		// are judged again each time, owed when sent after the first event.
		var owed []string
		if firstID == "" {
			owed = order
		} else {
			pending := append(r.recheck, order[r.owedUpTo:]...)
			r.recheck = nil
			for _, tok := range pending {
				if p, ok := place[tok]; ok {
					if !covers(firstID, p) {
						r.owed = append(r.owed, tok)
					}
				} else {
					r.recheck = append(r.recheck, tok)
				}
			}
			r.owedUpTo = len(order)
			owed = r.owed
			for _, tok := range r.recheck {
				if unplaced[tok].After(firstAt) {
					owed = append(owed, tok)
				}
			}
		}

		r.mu.Lock()
		var missing []string
		for _, tok := range owed {
			if r.got[tok].n == 0 {
				missing = append(missing, tok)
			}
		}
		finalID, lost, dups := r.finalID, slices.Clone(r.lost), r.dups
		connects, resumes := r.connects, maps.Clone(r.resumes)
		r.mu.Unlock()

		told := len(lost) > 0
		var toldN, gone, silent int
		var examples []string
		for _, tok := range missing {
			p, placed := place[tok]
			switch {
			case placed && covers(finalID, p):
			case told:
				toldN++
				continue
			case placed && dead[incOf[p.origin]].incarnation != "" && !witnessed[tok]:
				gone++
				continue
			}
			silent++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%s=%s.%d", tok, p.origin, p.seq))
			}
		}
		f.owed += len(owed)
		f.received += len(owed) - len(missing)
		f.duplicates += dups
		f.told += toldN
		f.gone += gone
		f.silent += silent
		f.lostEvents += len(lost)
		f.perSub = append(f.perSub, fmt.Sprintf("%s: owed %d, received %d, duplicates %d, told %d, gone %d, silent %d; sser-lost %d %.200q; connections %d, resumes %v; first id %.80q, final id %.200q; silent e.g. %q",
			r.name, len(owed), len(owed)-len(missing), dups, toldN, gone, silent, len(lost), lost, connects, resumes, firstID, finalID, examples))
	}
	return f
}

// stressSettle waits until every subscriber has every owed event or was
// told, or until nothing has reached any subscriber for quiet (then what is
// still missing is silent loss, which the audit reports), and returns the
// audit.
func stressSettle(t *testing.T, l *stressLedger, subs []*stressSub, quiet time.Duration, killed ...stressKill) stressFigures {
	t.Helper()
	var (
		f        stressFigures
		lastEval time.Time
		lastSum  = -1
		movedAt  = time.Now()
	)
	waitFor(t, deadline+quiet, "every subscriber to have each owed event or be told", func() bool {
		if time.Since(lastEval) < 250*time.Millisecond {
			return false // the audit is costly: at most four a second
		}
		lastEval = time.Now()
		sum := 0
		for _, r := range subs {
			sum += r.progress()
		}
		if sum != lastSum {
			lastSum, movedAt = sum, time.Now()
		}
		f = stressAudit(l, subs, killed...)
		return f.done() || time.Since(movedAt) > quiet
	}, func() string { return f.String() + "\n" + strings.Join(f.perSub, "\n") })
	return f
}

// stressCheck fails t on silent loss, duplicates or a malformed answer or
// id, and logs the figures either way.
func stressCheck(t *testing.T, f stressFigures) {
	t.Helper()
	t.Logf("%s", f)
	for _, s := range f.perSub {
		t.Logf("  %s", s)
	}
	if f.silent != 0 || f.duplicates != 0 || len(f.problems) > 0 {
		t.Errorf("no-silent-loss audit failed: silent loss %d, duplicates %d, problems %q", f.silent, f.duplicates, f.problems)
	}
	if f.accepted == 0 {
		t.Error("nothing was accepted: the audit proved nothing")
	}
}

// stressSum sums a metric over the replicas given.
func stressSum(c *cluster, name string, replicas []int, labels ...string) float64 {
	s := 0.0
	for _, i := range replicas {
		s += c.metric(i, name, labels...)
	}
	return s
}

// A burst: one replica's publishers as fast as they can, on one stream,
// until the peer sender falls a whole outbox behind. Every event must reach
// the live subscribers of both replicas or, where a bound forces a drop,
// reach them as a loss they are told of. Before the rebuild the peer queue
// overflowed and dropped the oldest events, the receiving replica could
// repair only what the origin's history still held and skipped the rest
// without telling anyone, so its subscriber missed tens of thousands of
// events and ended with the same id as the origin's.
//
// How long that takes depends on the machine: under -race on two cores the
// publishers reach 12-19k events/s and the sender to the peer about half
// that, so the default 65536-event outbox fills after 6-15 s. The burst
// goes on until the sender is a whole outbox behind (back-pressure
// answers, or the old queue's drops) and 2 s more, or 25 s, or 400k events.
func TestBurstIsNeverSilentlyLost(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"subscriber-queue=2000000", []string{"--subscriber-queue=2000000"}},
		{"default subscriber queue", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				longest = 25 * time.Second
				after   = 2 * time.Second
				workers = 8
				batch   = 100
				most    = 400000
			)
			c := newCluster(t, 2, tc.args...)
			c.startAll()
			l := newStressLedger()
			var subs []*stressSub
			// One subscriber a replica: each one more costs the
			// publishers CPU the burst needs.
			for i := range 2 {
				subs = append(subs, stressSubscribe(t, l, fmt.Sprintf("r%d", i), c.frontendURL(i), i, 5*time.Second))
			}
			stressWaitConnected(t, subs)

			var pubs []*stressPublisher
			for w := range workers {
				pubs = append(pubs, newStressPublisher(t, l, c, 0, fmt.Sprintf("b%d", w), batch, 0))
			}
			start := time.Now()
			stop := make(chan struct{})
			done := stressPublishAll(t.Context(), pubs, start.Add(longest), most, stop)
			var (
				behindAt time.Time
				polled   = time.Now()
				pubErr   error
				finished bool
			)
			waitFor(t, longest+deadline, "the burst to end", func() bool {
				select {
				case pubErr = <-done:
					finished = true
					return true
				default:
				}
				if behindAt.IsZero() && time.Since(polled) > 250*time.Millisecond {
					polled = time.Now()
					if l.refusals() > 0 || c.metric(0, "sser_peer_queue_dropped_total") > 0 {
						behindAt = time.Now()
					}
				}
				return !behindAt.IsZero() && time.Since(behindAt) > after
			})
			close(stop)
			if !finished {
				pubErr = <-done
			}
			if pubErr != nil {
				t.Fatal(pubErr)
			}
			took := time.Since(start)
			if behindAt.IsZero() {
				t.Logf("the sender never fell a whole outbox behind: the burst tested less than it should")
			} else {
				t.Logf("the sender was a whole outbox behind after %s", behindAt.Sub(start).Round(time.Millisecond))
			}
			accepted := l.accepted()
			peer := `peer="` + ipOf(1) + `"`
			t.Logf("burst: %d events accepted in %s (%.0f/s); replica 0 to its peer: sser_peer_lag %v, sser_peer_queue_length %v, sser_peer_queue_dropped_total %v",
				accepted, took.Round(time.Millisecond), float64(accepted)/took.Seconds(),
				c.metric(0, "sser_peer_lag", peer), c.metric(0, "sser_peer_queue_length", peer), c.metric(0, "sser_peer_queue_dropped_total", peer))

			f := stressSettle(t, l, subs, 15*time.Second)
			stressCheck(t, f)
			t.Logf("replica 1: sser_events_lost_total %v, sser_gap_repairs_total %v; replica 0: sser_peer_queue_dropped_total %v, sser_peer_cutoffs_total %v, sser_subscribers_closed_total{overflow} %v+%v",
				c.metric(1, "sser_events_lost_total"), c.metric(1, "sser_gap_repairs_total"),
				c.metric(0, "sser_peer_queue_dropped_total"), c.metric(0, "sser_peer_cutoffs_total"),
				c.metric(0, "sser_subscribers_closed_total", `reason="overflow"`), c.metric(1, "sser_subscribers_closed_total", `reason="overflow"`))
		})
	}
}

// A slow peer: replica 2 runs in short spells (stopped 1.5 s, running
// 100 ms) for 20 s while replicas 0 and 1 publish 300 events/s, so POSTs
// to it time out (--peer-timeout=1s; stopped 900 ms, it answered just in
// time) and the senders must shrink their batches and wait longer rather
// than give up on events or retry in a tight loop. Its subscribers must end
// with every event or be told of what they lack; nobody else may lose
// anything.
func TestSlowPeerIsNeverSilentlyLost(t *testing.T) {
	skipShort(t)
	const (
		slowFor = 20 * time.Second
		batch   = 15 // every 100 ms: 150 events/s from each of two replicas
	)
	c := newCluster(t, 3, "--peer-timeout=1s")
	c.startAll()
	l := newStressLedger()
	var subs []*stressSub
	for i := range 3 {
		for k := range 2 {
			subs = append(subs, stressSubscribe(t, l, fmt.Sprintf("r%d.%d", i, k), c.frontendURL(i), i, 5*time.Second))
		}
	}
	stressWaitConnected(t, subs)

	pubs := []*stressPublisher{
		newStressPublisher(t, l, c, 0, "p", batch, 100*time.Millisecond),
		newStressPublisher(t, l, c, 1, "q", batch, 100*time.Millisecond),
	}
	start := time.Now()
	done := stressPublishAll(t.Context(), pubs, start.Add(slowFor+time.Second), 1<<30, nil)
	if !stressHold(t.Context(), 500*time.Millisecond) { // calm traffic first
		t.Fatal(t.Context().Err())
	}
	cycles := stressSlow(t.Context(), c.rep(2), 1500*time.Millisecond, 100*time.Millisecond, time.Now().Add(slowFor))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("replica 2 slowed for %d cycles of 1.5 s stopped, 100 ms running; %d events accepted in %s", cycles, l.accepted(), time.Since(start).Round(time.Millisecond))

	f := stressSettle(t, l, subs, 15*time.Second)
	stressCheck(t, f)
	slow := `peer="` + ipOf(2) + `"`
	timedOut := 0.0
	for _, i := range []int{0, 1} {
		errs := c.metric(i, "sser_peer_post_errors_total", slow)
		timedOut += errs
		t.Logf("replica %d to the slow peer: sser_peer_post_errors_total %v, sser_peer_cutoffs_total %v, sser_peer_queue_dropped_total %v",
			i, errs, c.metric(i, "sser_peer_cutoffs_total", slow), c.metric(i, "sser_peer_queue_dropped_total", slow))
		if errs >= 200 {
			t.Errorf("replica %d failed %v POSTs to the slow peer in %s: a sender that retries in a tight loop, not one that backs off", i, errs, slowFor)
		}
	}
	if timedOut == 0 {
		t.Error("no POST to the slow peer failed: the test never made a peer slow enough to time out")
	}
	t.Logf("slow replica: sser_events_lost_total %v, sser_gap_repairs_total %v", c.metric(2, "sser_events_lost_total"), c.metric(2, "sser_gap_repairs_total"))
}

// A paused replica: replica 2 is stopped (SIGSTOP) for 8 s while replicas 0
// and 1 publish 200 events/s, then runs again. Everything it missed arrives
// at once when it resumes — its peers' retried batches, gap repairs — and
// its subscribers, who did nothing wrong, must keep their one connection
// and receive every event: the 1600 events of the pause fit the peers'
// outboxes and the subscriber queue, so nothing may be lost, told or not,
// and a resume from history is not needed. A replica that took the
// backlog, or the clock jump of the pause, for subscribers falling behind
// would drop every one of them on resume.
func TestPausedReplicaKeepsItsSubscribers(t *testing.T) {
	skipShort(t)
	const pause = 8 * time.Second
	c := newCluster(t, 3)
	c.startAll()
	l := newStressLedger()
	var subs []*stressSub
	for i := range 3 {
		n := 1
		if i == 2 {
			n = 3
		}
		for k := range n {
			// A read timeout longer than the pause: the client itself
			// must not give up on the paused replica.
			subs = append(subs, stressSubscribe(t, l, fmt.Sprintf("r%d.%d", i, k), c.frontendURL(i), i, 3*pause))
		}
	}
	stressWaitConnected(t, subs)

	pubs := []*stressPublisher{
		newStressPublisher(t, l, c, 0, "p", 10, 100*time.Millisecond),
		newStressPublisher(t, l, c, 1, "q", 10, 100*time.Millisecond),
	}
	start := time.Now()
	done := stressPublishAll(t.Context(), pubs, start.Add(2*time.Second+pause+4*time.Second), 1<<30, nil)
	paused := c.rep(2)
	t.Cleanup(func() { _ = paused.Signal(syscall.SIGCONT) })
	if !stressHold(t.Context(), 2*time.Second) {
		t.Fatal(t.Context().Err())
	}
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	held := stressHold(t.Context(), pause)
	if err := paused.Signal(syscall.SIGCONT); err != nil || !held {
		t.Fatalf("SIGCONT: %v (context %v)", err, t.Context().Err())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("replica 2 paused %s; %d events accepted in %s", pause, l.accepted(), time.Since(start).Round(time.Millisecond))

	f := stressSettle(t, l, subs, 15*time.Second)
	stressCheck(t, f)
	if f.told != 0 || f.lostEvents != 0 {
		t.Errorf("%d events told lost (%d sser-lost events): history holds every event of an 8 s pause", f.told, f.lostEvents)
	}
	for _, r := range subs {
		if n := r.connections(); n != 1 {
			t.Errorf("%s connected %d times, want 1: a pause must not cost a subscriber its connection", r.name, n)
		}
	}
	t.Logf("paused replica: sser_subscribers_closed_total %v, sser_gap_repairs_total %v, sser_events_lost_total %v",
		c.metric(2, "sser_subscribers_closed_total"), c.metric(2, "sser_gap_repairs_total"), c.metric(2, "sser_events_lost_total"))
}

// Chaos: three replicas publish faster than their peers absorb while one
// is slowed, one paused and one killed and restarted, with a small outbox
// (2000 events) and a short cut-off (2 s), so back-pressure and cut-offs
// really happen. Subscribers through the balancer and pinned to each
// replica: none may lose an event silently or receive one twice. What the
// killed incarnation accepted and no other replica received may be missing
// untold, but no id may claim it.
func TestChaosNoSilentLoss(t *testing.T) {
	skipShort(t)
	const (
		run      = 40 * time.Second
		batch    = 40 // every 100 ms: 400 events/s from each replica
		balanced = 6
	)
	c := newCluster(t, 3, "--outbox-size=2000", "--peer-cutoff=2s")
	c.startAll()
	b := newBalancer(t, c)
	b.waitReady(t, 0, 1, 2)
	l := newStressLedger()
	var subs []*stressSub
	for k := range balanced {
		subs = append(subs, stressSubscribe(t, l, fmt.Sprintf("lb%d", k), b.URL, -1, 5*time.Second))
	}
	for i := range 3 {
		subs = append(subs, stressSubscribe(t, l, fmt.Sprintf("r%d", i), c.frontendURL(i), i, 5*time.Second))
	}
	stressWaitConnected(t, subs)
	for _, i := range []int{1, 2} {
		t.Cleanup(func() { _ = c.rep(i).Signal(syscall.SIGCONT) })
	}

	var pubs []*stressPublisher
	for i := range 3 {
		pubs = append(pubs, newStressPublisher(t, l, c, i, fmt.Sprintf("c%d", i), batch, 100*time.Millisecond))
	}
	ctx := t.Context()
	start := time.Now()
	done := stressPublishAll(ctx, pubs, start.Add(run), 1<<30, nil)
	at := func(d time.Duration) bool { return stressHold(ctx, time.Until(start.Add(d))) }

	// 3-13 s: replica 1 slow; 11-19 s: replica 2 paused; 22 s: replica 0
	// killed, then started again (it warms up from its peers).
	slowDone := make(chan int, 1)
	go func() {
		if !at(3 * time.Second) {
			slowDone <- 0
			return
		}
		slowDone <- stressSlow(ctx, c.rep(1), 900*time.Millisecond, 100*time.Millisecond, start.Add(13*time.Second))
	}()
	if !at(11 * time.Second) {
		t.Fatal(ctx.Err())
	}
	if err := c.rep(2).Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	held := at(19 * time.Second)
	if err := c.rep(2).Signal(syscall.SIGCONT); err != nil || !held {
		t.Fatalf("SIGCONT replica 2: %v (context %v)", err, ctx.Err())
	}
	cycles := <-slowDone
	if !at(22 * time.Second) {
		t.Fatal(ctx.Err())
	}
	// The killed incarnation's counters die with it: read them first.
	cutoffsBefore := c.metric(0, "sser_peer_cutoffs_total")
	lostBefore := c.metric(0, "sser_events_lost_total")
	kill := stressKill{incarnation: c.incarnation(0), replica: 0}
	if err := c.rep(0).Kill(); err != nil {
		t.Fatal(err)
	}
	kill.at = time.Now()
	wctx, cancel := context.WithTimeout(ctx, deadline)
	_ = c.rep(0).Wait(wctx)
	cancel()
	c.start(0)
	restarted := time.Since(kill.at)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("chaos: replica 1 slowed %d cycles, replica 2 paused 8 s, replica 0 killed and ready again after %s; %d events accepted in %s",
		cycles, restarted.Round(time.Millisecond), l.accepted(), time.Since(start).Round(time.Millisecond))

	f := stressSettle(t, l, subs, 15*time.Second, kill)
	stressCheck(t, f)
	cutoffs := cutoffsBefore + stressSum(c, "sser_peer_cutoffs_total", []int{0, 1, 2})
	lost := lostBefore + stressSum(c, "sser_events_lost_total", []int{0, 1, 2})
	t.Logf("chaos figures: accepted %d, back-pressure answers %d (events refused for good %d, unknown after the kill %d), peer cut-offs %v, sser_events_lost_total %v, sser-lost events received %d, told-and-uncovered %d, gone with the killed origin %d, silent loss %d",
		f.accepted, f.backPressure, f.refused, f.unknown, cutoffs, lost, f.lostEvents, f.told, f.gone, f.silent)
	if f.backPressure == 0 && cutoffs == 0 {
		t.Errorf("neither back-pressure nor a cut-off happened: the chaos never reached the outbox bound it is meant to test")
	}
}
