package lossless

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sser-dev/sser/pkg/client"
)

// The flood: one replica serves well-behaved subscribers while one hostile
// client of each kind tries to take it down, each bounded in count and
// time. Every hostile client has its own loopback source address, so the
// per-address cap names it and not the well-behaved ones.
const (
	floodGood      = 200             // well-behaved subscribers
	floodGoodAddrs = 4               // their source addresses, 50 each
	floodRate      = 50              // events/s published to them
	floodEvents    = 20 * floodRate  // ~20 s of events
	floodMaxConns  = 400             // --max-connections
	floodPerIP     = 100             // --max-connections-per-ip
	floodPubRate   = 200             // --publish-rate, events/s per publisher
	floodHistory   = 100             // streams with history for the replay attack
	floodHistLen   = floodPubRate    // events in each: one batch within the burst
	floodEventSize = 1024            // bytes of each history event
	floodStreams   = 10000           // streams named by one subscription
	floodInvented  = 1000            // invented origins in one Last-Event-ID
	floodReaders   = 20              // subscribers resuming from invented origins
	floodSilent    = 40              // far-back resumes that never read
	floodPubFlood  = 8 * time.Second // how long the publish flood lasts
	floodBatch     = 20              // events in each of its requests
	floodHealthGap = 2 * time.Second // longest a /healthz may take
	// RSS bounds: a -race replica measured ~350 MiB with the subscribers
	// and ~700 MiB at most under the flood (1.6 GiB when each replay was
	// joined into one buffer per connection); ~180 MiB without -race (0.68
	// GiB before).
	floodRSSRace = 1200 << 20
	floodRSS     = 400 << 20
	// p99 bounds of publish-to-receive: measured 60-160 ms under -race on
	// two cores.
	floodP99Race = 500 * time.Millisecond
	floodP99     = 250 * time.Millisecond
)

// Source addresses, all on this package's subnet where no replica listens
// (there is one replica, 127.0.55.2).
const (
	floodAttacker = subnet + "200" // opens subscriptions until refused per address
	floodFiller   = subnet + "201" // then until refused for the whole replica
	floodSockets  = subnet + "202" // then bare sockets until the listener refuses
	floodStreamer = subnet + "203" // 10,000 streams in one subscription
	floodPubber   = subnet + "204" // the publish flood
	floodInventor = subnet + "205" // invented origins in Last-Event-ID
	floodSilence  = subnet + "206" // far-back resumes that never read
	floodGoodBase = 210            // 127.0.55.210... the well-behaved subscribers
	floodSeedBase = 100            // 127.0.55.100... seed the history, one stream each
)

// TestFloodKeepsWellBehavedSubscribersServed: under every kind of hostile
// client at once, the well-behaved subscribers receive every event exactly
// once and in order with a bounded delay, the replica's memory stays
// bounded, /healthz answers throughout, and every refusal is counted.
func TestFloodKeepsWellBehavedSubscribersServed(t *testing.T) {
	skipShort(t)
	race := trustRaceBinary(t)
	rssBound, p99Bound := int64(floodRSS), floodP99
	if race {
		// The race detector multiplies memory and slows every goroutine.
		rssBound, p99Bound = floodRSSRace, floodP99Race
	}
	c := newCluster(t, 1,
		"--max-connections="+strconv.Itoa(floodMaxConns),
		"--max-connections-per-ip="+strconv.Itoa(floodPerIP),
		"--publish-rate="+strconv.Itoa(floodPubRate),
		// The replay attack names 100 streams, past the default 64.
		"--max-streams-per-connection="+strconv.Itoa(floodHistory))
	c.startAll()
	pid, err := trustPID(c.rep(0))
	if err != nil {
		t.Fatal(err)
	}
	origin := floodSeedHistory(t, c)

	// /healthz and RSS, sampled throughout.
	mon := floodMonitor(t, c, pid)

	// The well-behaved subscribers, on the live stream.
	sentAt := make([]atomic.Int64, floodEvents)
	goods := make([]*floodGoodSub, floodGood)
	for i := range goods {
		goods[i] = floodSubscribe(t, c, i, sentAt)
	}
	waitFor(t, deadline, "the well-behaved subscribers to connect", func() bool {
		for _, g := range goods {
			if n, _, _ := g.rec().connections(); n == 0 {
				return false
			}
		}
		return true
	})
	base := mon.maxRSS()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	var res floodResults
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	// (c) resumes: held from the start to the end.
	inventors := floodInventedResumes(ctx, t, c, run)
	silent := floodSilentResumes(t, c, origin)
	// (a), (b) and (d) at once, once the resumes hold their connections
	// (else (a) would fill the replica before them).
	waitFor(t, deadline, "the invented-origin resumes to connect", func() bool {
		for _, r := range inventors {
			if !r.connected.Load() {
				return false
			}
		}
		return true
	})
	run(func() { res.streams = floodManyStreams(ctx, c) })
	run(func() { res.publish = floodPublish(ctx, c) })
	run(func() { res.conns = floodConnections(ctx, c) })

	// The publisher: floodEvents at floodRate through the whole flood.
	pub := newPublisher(c, nil, "good", 0)
	tick := time.NewTicker(time.Second / floodRate)
	for n := range floodEvents {
		sentAt[n].Store(time.Now().UnixNano())
		if err := pub.publishNext(t.Context()); err != nil {
			t.Fatalf("the well-behaved publisher was refused: %v", err)
		}
		<-tick.C
	}
	tick.Stop()
	recs := make([]*recorder, len(goods))
	for i, g := range goods {
		recs[i] = g.rec()
	}
	waitAll(t, deadline, recs, floodEvents, pub)
	cancel()
	wg.Wait()
	for _, s := range silent {
		s.Close()
	}
	mon.stop()

	// Every event exactly once and in order, or the subscriber was told.
	told := 0
	for _, r := range recs {
		tl := check(r.messages(), pub)
		_, _, lost := r.connections()
		if len(lost) > 0 {
			told++
		}
		if tl.dups > 0 || tl.disorder > 0 || (tl.missing > 0 && len(lost) == 0) {
			t.Errorf("%s: %d received, %d duplicates, %d missing, %d out of order, told of loss %q: %q",
				r.name, tl.received, tl.dups, tl.missing, tl.disorder, lost, tl.problems)
		}
	}
	var lat []time.Duration
	for _, g := range goods {
		lat = append(lat, g.latencies()...)
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("well-behaved: %d subscribers x %d events, publish-to-receive p50 %s p99 %s max %s (bound %s), %d told of a loss",
		floodGood, floodEvents, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond), p99Bound, told)
	if p99 > p99Bound {
		t.Errorf("publish-to-receive p99 %s, want under %s", p99, p99Bound)
	}

	maxRSS := mon.maxRSS()
	t.Logf("RSS: %d MiB with the subscribers connected, %d MiB at most during the flood (bound %d MiB)", base>>20, maxRSS>>20, rssBound>>20)
	if maxRSS > rssBound {
		t.Errorf("RSS reached %d MiB, want under %d MiB", maxRSS>>20, rssBound>>20)
	}
	polls, fails, slowest := mon.health()
	t.Logf("/healthz: %d polls, slowest %s", polls, slowest.Round(time.Millisecond))
	if len(fails) > 0 || polls < 20 {
		t.Errorf("/healthz: %d polls, failures %q", polls, fails)
	}

	// What each hostile client was answered.
	a := res.conns
	t.Logf("(a) connections: %d held from one address then %s; %d more from another then %s; bare sockets: %d held, %d answered 503 by the listener",
		a.perIPHeld, a.perIPRefusal, a.fillHeld, a.fillRefusal, a.socketsHeld, a.socketsRefused)
	if a.perIPHeld != floodPerIP || !floodRefusal(a.perIPRefusal, "429") {
		t.Errorf("(a) one address held %d subscriptions then got %q, want %d then 429 with Retry-After", a.perIPHeld, a.perIPRefusal, floodPerIP)
	}
	if !floodRefusal(a.fillRefusal, "503") {
		t.Errorf("(a) filling the replica ended with %q, want 503 with Retry-After", a.fillRefusal)
	}
	if a.socketsRefused == 0 {
		t.Errorf("(a) no bare socket was answered 503 by the listener (%d held)", a.socketsHeld)
	}
	t.Logf("(b) %d subscriptions of %d streams: %d answered 400", res.streams.tried, floodStreams, res.streams.refused)
	if res.streams.refused == 0 {
		t.Errorf("(b) no subscription of %d streams was refused with 400 (%d tried, answers %q)", floodStreams, res.streams.tried, res.streams.other)
	}
	p := res.publish
	t.Logf("(d) publish flood: %d requests of %d events in %s, %d events accepted (%.0f/s), %d requests answered 429", p.tried, floodBatch, floodPubFlood, p.accepted, float64(p.accepted)/floodPubFlood.Seconds(), p.refused)
	// At most the burst (one second's worth) and the rate after it.
	if p.refused == 0 || !p.retryAfter || float64(p.accepted) > floodPubRate*(floodPubFlood.Seconds()+2) {
		t.Errorf("(d) publish flood: %d accepted, %d refused (Retry-After on each: %v), want at most %d events/s", p.accepted, p.refused, p.retryAfter, floodPubRate)
	}
	for _, r := range inventors {
		n, longest := r.got()
		// The replica writes its own position, one origin here: the
		// invented ones never travel back.
		if n == 0 || longest > 64 {
			t.Errorf("(c) a resume from %d invented origins received %d events, longest id %d bytes; want events, ids as short as the replica's own", floodInvented, n, longest)
		}
	}

	for _, limit := range []string{"connections_per_ip", "connections", "frontend_connections", "streams_per_connection", "publish_rate"} {
		n := c.metric(0, "sser_refused_total", `limit="`+limit+`"`)
		t.Logf("sser_refused_total{limit=%q} = %v", limit, n)
		if n == 0 {
			t.Errorf("sser_refused_total{limit=%q} is 0", limit)
		}
	}
}

// floodRefusal reports whether a refusal noted by floodOpenUntilRefused
// has the status, a Retry-After, and closed its connection.
func floodRefusal(got, status string) bool {
	return strings.HasPrefix(got, status+" ") && !strings.Contains(got, `Retry-After ""`) && strings.HasSuffix(got, "close true")
}

// floodClient dials from the loopback address src.
func floodClient(src string, keepAlive bool) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}}
}

// floodSeedHistory fills floodHistory streams with floodHistLen events of
// floodEventSize bytes each, one batch per stream from its own address (the
// publish rate is per address), and returns the replica's origin.
func floodSeedHistory(t *testing.T, c *cluster) string {
	t.Helper()
	pad := strings.Repeat("x", floodEventSize)
	var origin string
	for s := range floodHistory {
		evs := make([]map[string]string, floodHistLen)
		for k := range evs {
			evs[k] = map[string]string{"stream": fmt.Sprintf("flood-h%d", s), "msg": pad}
		}
		body, _ := json.Marshal(evs)
		hc := floodClient(subnet+strconv.Itoa(floodSeedBase+s), false)
		resp, err := hc.Post(c.internalURL(0)+"/api/json/v1/publish", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		var ans struct{ Origin string }
		err = json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("seeding stream %d: %s, %v", s, resp.Status, err)
		}
		origin = ans.Origin
	}
	return origin
}

// floodGoodSub is a well-behaved subscriber: a harness recorder that also
// notes when each event arrived.
type floodGoodSub struct {
	r atomic.Pointer[recorder]

	mu  sync.Mutex
	lat []time.Duration
}

func (g *floodGoodSub) rec() *recorder { return g.r.Load() }

func (g *floodGoodSub) latencies() []time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.lat)
}

// floodSubscribe subscribes the i-th well-behaved subscriber from one of
// floodGoodAddrs addresses. Its handler records as the harness's does, and
// how long after its publish each event arrived.
func floodSubscribe(t *testing.T, c *cluster, i int, sentAt []atomic.Int64) *floodGoodSub {
	t.Helper()
	g := &floodGoodSub{}
	h := func(_ context.Context, ev client.Event) error {
		now := time.Now()
		r := g.rec()
		if r == nil {
			return fmt.Errorf("event %q before the subscriber was set up", ev.Data)
		}
		r.mu.Lock()
		if ev.Type == "sser-lost" {
			r.lost = append(r.lost, ev.Data)
		} else {
			r.msgs = append(r.msgs, ev.Data)
			r.seen[ev.Data]++
		}
		r.mu.Unlock()
		if n, err := strconv.Atoi(strings.TrimPrefix(ev.Data, "good-")); err == nil && n >= 0 && n < len(sentAt) {
			g.mu.Lock()
			g.lat = append(g.lat, now.Sub(time.Unix(0, sentAt[n].Load())))
			g.mu.Unlock()
		}
		return nil
	}
	src := subnet + strconv.Itoa(floodGoodBase+i%floodGoodAddrs)
	g.r.Store(subscribe(t, fmt.Sprintf("good%03d", i), c.eventsURL(0),
		client.WithHTTPClient(floodClient(src, false)), client.WithHandler(h)))
	return g
}

// floodMon samples /healthz and the replica's RSS until stopped.
type floodMon struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	rss     int64
	polls   int
	fails   []string
	slowest time.Duration
}

func floodMonitor(t *testing.T, c *cluster, pid int) *floodMon {
	m := &floodMon{done: make(chan struct{})}
	hc := &http.Client{Timeout: floodHealthGap}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			start := time.Now()
			resp, err := hc.Get(c.internalURL(0) + "/healthz")
			took := time.Since(start)
			fail := ""
			if err != nil {
				fail = err.Error()
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail = resp.Status
				}
			}
			rss, rerr := trustRSS(pid)
			m.mu.Lock()
			m.polls++
			m.slowest = max(m.slowest, took)
			if fail != "" {
				m.fails = append(m.fails, fmt.Sprintf("%s: %s", start.Format("15:04:05.000"), fail))
			}
			if rerr == nil {
				m.rss = max(m.rss, rss)
			}
			m.mu.Unlock()
			select {
			case <-m.done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *floodMon) stop() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	m.wg.Wait()
}

func (m *floodMon) maxRSS() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rss
}

func (m *floodMon) health() (int, []string, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.polls, slices.Clone(m.fails), m.slowest
}

type floodResults struct {
	conns   floodConnResult
	streams floodStreamsResult
	publish floodPublishResult
}

type floodConnResult struct {
	perIPHeld, fillHeld         int
	perIPRefusal, fillRefusal   string // status and Retry-After of the refusal
	socketsHeld, socketsRefused int
}

// floodOpenUntilRefused opens subscriptions from src, holding each, until
// one is refused (at most limit tries). It returns the held responses and
// the refusal as "status Retry-After".
func floodOpenUntilRefused(ctx context.Context, c *cluster, src string, limit int) ([]*http.Response, string) {
	hc := floodClient(src, false)
	var held []*http.Response
	for range limit {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.frontendURL(0)+"/events?stream=flood-a", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return held, "error: " + err.Error()
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return held, fmt.Sprintf("%d Retry-After %q close %v", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
		}
		held = append(held, resp)
	}
	return held, "never refused"
}

// floodConnections is the connection attacker: subscriptions from one
// address until refused (429, per address), then from another until the
// replica is full (503), then bare sockets that send nothing until the
// listener answers 503 itself. Everything is released at the end.
func floodConnections(ctx context.Context, c *cluster) floodConnResult {
	var res floodConnResult
	held, refusal := floodOpenUntilRefused(ctx, c, floodAttacker, 2*floodPerIP)
	res.perIPHeld, res.perIPRefusal = len(held), refusal
	defer func() {
		for _, r := range held {
			r.Body.Close()
		}
	}()
	fill, refusal := floodOpenUntilRefused(ctx, c, floodFiller, floodMaxConns)
	held = append(held, fill...)
	res.fillHeld, res.fillRefusal = len(fill), refusal

	// The listener keeps 64 sockets past the cap; twice that many bare
	// sockets must meet its 503.
	const n = 128
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(floodSockets)}, Timeout: 5 * time.Second}
	addr := strings.TrimPrefix(c.frontendURL(0), "http://")
	var socks []net.Conn
	for range n {
		s, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			break
		}
		socks = append(socks, s)
	}
	var wg sync.WaitGroup
	var refused atomic.Int64
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A held socket gets nothing; a refused one its 503 at once.
			_ = s.SetReadDeadline(time.Now().Add(3 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(s), nil); err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, s := range socks {
		s.Close()
	}
	res.socketsRefused = int(refused.Load())
	res.socketsHeld = len(socks) - res.socketsRefused
	return res
}

type floodStreamsResult struct {
	tried, refused int
	other          []string
}

// floodManyStreams subscribes 20 times with floodStreams streams each.
func floodManyStreams(ctx context.Context, c *cluster) floodStreamsResult {
	var res floodStreamsResult
	q := make(url.Values)
	for s := range floodStreams {
		q.Add("stream", "flood-b"+strconv.Itoa(s))
	}
	u := c.frontendURL(0) + "/events?" + q.Encode()
	hc := floodClient(floodStreamer, false)
	for range 20 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := hc.Do(req)
		if err != nil {
			res.other = append(res.other, err.Error())
			continue
		}
		resp.Body.Close()
		res.tried++
		if resp.StatusCode == http.StatusBadRequest {
			res.refused++
		} else {
			res.other = append(res.other, resp.Status)
		}
	}
	return res
}

type floodPublishResult struct {
	tried, accepted, refused int
	retryAfter               bool // every 429 had a Retry-After
}

// floodPublish publishes batches of floodBatch events as fast as one
// connection allows, for floodPubFlood.
func floodPublish(ctx context.Context, c *cluster) floodPublishResult {
	res := floodPublishResult{retryAfter: true}
	hc := floodClient(floodPubber, true)
	evs := make([]string, floodBatch)
	for k := range evs {
		evs[k] = `{"stream":"flood-d","msg":"` + strconv.Itoa(k) + `"}`
	}
	body := "[" + strings.Join(evs, ",") + "]"
	end := time.Now().Add(floodPubFlood)
	for k := 0; time.Now().Before(end) && k < 100000 && ctx.Err() == nil; k++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.internalURL(0)+"/api/json/v1/publish", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.tried++
		switch resp.StatusCode {
		case http.StatusOK:
			res.accepted += floodBatch
		case http.StatusTooManyRequests:
			res.refused++
			res.retryAfter = res.retryAfter && resp.Header.Get("Retry-After") != ""
		}
	}
	return res
}

// floodReader is a subscriber resuming from an id of invented origins: it
// reads everything and notes the longest event id it is sent.
type floodReader struct {
	connected atomic.Bool
	events    atomic.Int64
	longest   atomic.Int64
}

func (r *floodReader) got() (int64, int64) { return r.events.Load(), r.longest.Load() }

// floodInventedResumes starts floodReaders subscribers on the live stream
// whose Last-Event-ID names floodInvented origins this replica never had.
func floodInventedResumes(ctx context.Context, t *testing.T, c *cluster, run func(func())) []*floodReader {
	ids := make([]string, floodInvented)
	for k := range ids {
		ids[k] = fmt.Sprintf("inv%04d.1", k) // sorted: the format a client must keep
	}
	lastID := strings.Join(ids, "-")
	hc := floodClient(floodInventor, false)
	readers := make([]*floodReader, floodReaders)
	for i := range readers {
		r := &floodReader{}
		readers[i] = r
		run(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.eventsURL(0), nil)
			req.Header.Set("Last-Event-ID", lastID)
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("(c) resume from invented origins: %v", err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("(c) resume from invented origins: %s", resp.Status)
				return
			}
			r.connected.Store(true)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
					r.longest.Store(max(r.longest.Load(), int64(len(id))))
				}
				if strings.HasPrefix(sc.Text(), "data: good-") {
					r.events.Add(1)
				}
			}
		})
	}
	return readers
}

// floodSilentResumes opens floodSilent subscriptions to every history
// stream resuming from the first event, whose replay they never read.
func floodSilentResumes(t *testing.T, c *cluster, origin string) []net.Conn {
	t.Helper()
	q := make(url.Values)
	for s := range floodHistory {
		q.Add("stream", fmt.Sprintf("flood-h%d", s))
	}
	req := "GET /events?" + q.Encode() + " HTTP/1.1\r\nHost: sser\r\nLast-Event-ID: " + origin + ".1\r\n\r\n"
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(floodSilence)}, Timeout: 5 * time.Second}
	addr := strings.TrimPrefix(c.frontendURL(0), "http://")
	var conns []net.Conn
	for range floodSilent {
		s, err := d.DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatalf("(c) far-back resume: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		if _, err := io.WriteString(s, req); err != nil {
			t.Fatalf("(c) far-back resume: %v", err)
		}
		conns = append(conns, s)
	}
	return conns
}
