package lossless

// Tests of the internal port against a forger or an abuser: a member of the
// peer set that lies (a far-ahead seq, another replica's origin, thousands of
// invented origins), a caller outside the peer set or with the wrong
// credential, heavy history reads, bodies trickled a byte a second, and
// publishers that use reserved event types or retry. Each attack must get a
// clear refusal or be bounded, and the replica must keep serving
// (invariants 3, 7, 8 and 9 of the design).
//
// A test acts as a peer by sending from trustFake, an address that every
// replica's static peer list names but where nothing listens: the replicas
// trust it as a member of the set, and whatever they ask it is refused.

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

const (
	// trustFake is a member of every trust cluster's peer set where no
	// replica runs: requests sent from it come from "a peer".
	trustFake = subnet + "99"
	// trustOutsider is an address outside every peer set.
	trustOutsider = "127.0.0.1"
	// trustAnswerWithin bounds one request to a replica that is not frozen.
	trustAnswerWithin = 10 * time.Second
	// trustExitMargin is what a replica may take past its drain window and
	// shutdown timeout (2 s each in newCluster) to exit after SIGTERM.
	trustExitMargin = 2 * time.Second
	trustExitWithin = 2*time.Second + 2*time.Second + trustExitMargin
)

// trustCluster is newCluster with trustFake added to every replica's
// static peer list (a later --peers wins).
func trustCluster(t *testing.T, n int, args ...string) *cluster {
	t.Helper()
	ips := make([]string, 0, n+1)
	for i := range n {
		ips = append(ips, ipOf(i))
	}
	peers := "--peers=" + strings.Join(append(ips, trustFake), ",")
	return newCluster(t, n, append([]string{peers}, args...)...)
}

// trustClient returns an HTTP client whose connections come from ip, one
// connection per request, each request bounded by timeout.
func trustClient(ip string, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// trustAnswer is one answer, or the error that took its place.
type trustAnswer struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
	err    error
}

func (a trustAnswer) String() string {
	if a.err != nil {
		return fmt.Sprintf("no answer after %s: %v", a.took.Round(time.Millisecond), a.err)
	}
	b := bytes.TrimSpace(a.body)
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s (after %s)", a.status, b, a.took.Round(time.Millisecond))
}

// trustDo sends one request and reads the whole answer. hdr holds header
// names and values, alternately.
func trustDo(ctx context.Context, hc *http.Client, method, u, body string, hdr ...string) trustAnswer {
	start := time.Now()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return trustAnswer{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return trustAnswer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	return trustAnswer{status: resp.StatusCode, header: resp.Header, body: b, took: time.Since(start), err: err}
}

// trustEvents is a peer-format body: a JSON array of events.
func trustEvents(t *testing.T, events ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func trustEvent(stream, msg, origin string, seq uint64) map[string]any {
	return map[string]any{"stream": stream, "msg": msg, "origin": origin, "seq": seq}
}

// trustPublished is the publish endpoint's answer.
type trustPublished struct {
	Accepted  int    `json:"accepted"`
	Origin    string `json:"origin"`
	First     uint64 `json:"first"`
	Last      uint64 `json:"last"`
	Duplicate bool   `json:"duplicate"`
}

// trustPublish publishes body on replica i from outside the peer set and
// returns the answer; hdr as for trustDo.
func trustPublish(t *testing.T, c *cluster, i int, body string, hdr ...string) trustAnswer {
	t.Helper()
	return trustDo(t.Context(), trustClient(trustOutsider, trustAnswerWithin), http.MethodPost, c.internalURL(i)+"/api/json/v1/publish", body, hdr...)
}

// trustSub is one SSE subscription that records every event it receives.
type trustSub struct {
	name string
	s    *ssetest.Sub

	mu  sync.Mutex
	evs []ssetest.Event
}

// trustSubscribe subscribes to stream on replica i; an error when the
// replica does not answer with 200 text/event-stream within within.
func trustSubscribe(t *testing.T, c *cluster, i int, stream, name string, within time.Duration) (*trustSub, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	timer := time.AfterFunc(within, cancel)
	start := time.Now()
	s, err := ssetest.Connect(ctx, c.frontendURL(i)+"/events?stream="+url.QueryEscape(stream), "")
	if !timer.Stop() && err == nil {
		s.Close()
		err = errors.New("connected just as the time ran out")
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe %s on replica %d: no subscription after %s: %w", name, i, time.Since(start).Round(time.Millisecond), err)
	}
	ts := &trustSub{name: name, s: s}
	go func() {
		for ev := range s.Events {
			ts.mu.Lock()
			ts.evs = append(ts.evs, ev)
			ts.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		cancel()
	})
	return ts, nil
}

func (ts *trustSub) events() []ssetest.Event {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.evs)
}

// msgs is the data of every message received (sser-lost not included).
func (ts *trustSub) msgs() []string {
	var out []string
	for _, ev := range ts.events() {
		if ev.Event == "message" {
			out = append(out, ev.Data)
		}
	}
	return out
}

// lost is the data of every sser-lost event received.
func (ts *trustSub) lost() []string {
	var out []string
	for _, ev := range ts.events() {
		if ev.Event == "sser-lost" {
			out = append(out, ev.Data)
		}
	}
	return out
}

// find returns the first message with data msg.
func (ts *trustSub) find(msg string) (ssetest.Event, bool) {
	for _, ev := range ts.events() {
		if ev.Event == "message" && ev.Data == msg {
			return ev, true
		}
	}
	return ssetest.Event{}, false
}

func (ts *trustSub) has(msg string) bool { _, ok := ts.find(msg); return ok }

// trustWaitMsg waits until every sub has received msg.
func trustWaitMsg(t *testing.T, timeout time.Duration, msg string, subs ...*trustSub) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d subscribers to receive %q", len(subs), msg), func() bool {
		for _, s := range subs {
			if !s.has(msg) {
				return false
			}
		}
		return true
	}, func() string {
		var b strings.Builder
		for _, s := range subs {
			m := s.msgs()
			fmt.Fprintf(&b, "%s: %d messages, last %q, sser-lost %q\n", s.name, len(m), m[max(0, len(m)-5):], s.lost())
		}
		return b.String()
	})
}

// trustElem is one element of an SSE id: its holder has every event of
// origin with a seq up to seq, except those with lo < seq <= hi.
type trustElem struct {
	origin      string
	seq, lo, hi uint64
}

// trustParseID decodes an SSE id: "-"-joined elements "origin.seq" or
// "origin.seq.lo.hi", numbers in base 36.
func trustParseID(id string) ([]trustElem, error) {
	if id == "" {
		return nil, nil
	}
	var out []trustElem
	for _, part := range strings.Split(id, "-") {
		f := strings.Split(part, ".")
		if (len(f) != 2 && len(f) != 4) || f[0] == "" {
			return nil, fmt.Errorf("id %q: malformed element %q", id, part)
		}
		var n [3]uint64
		for k, s := range f[1:] {
			v, err := strconv.ParseUint(s, 36, 64)
			if err != nil {
				return nil, fmt.Errorf("id %q: element %q: %w", id, part, err)
			}
			n[k] = v
		}
		out = append(out, trustElem{origin: f[0], seq: n[0], lo: n[1], hi: n[2]})
	}
	return out, nil
}

// trustCovers reports whether id says its holder has origin's event seq.
func trustCovers(id, origin string, seq uint64) (bool, error) {
	elems, err := trustParseID(id)
	if err != nil {
		return false, err
	}
	for _, e := range elems {
		if e.origin == origin {
			return seq <= e.seq && (seq <= e.lo || seq > e.hi), nil
		}
	}
	return false, nil
}

// trustOrigins lists the origins an id names.
func trustOrigins(t *testing.T, id string) []string {
	t.Helper()
	elems, err := trustParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range elems {
		out = append(out, e.origin)
	}
	return out
}

// trustFreshID subscribes to stream on replica i and returns the id of the
// connect preamble: the replica's position as a new client gets it.
func trustFreshID(t *testing.T, c *cluster, i int, stream string) string {
	t.Helper()
	s, err := trustSubscribe(t, c, i, stream, "fresh", trustAnswerWithin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.s.Close()
	waitFor(t, trustAnswerWithin, fmt.Sprintf("the connect preamble's id on replica %d", i), func() bool { return s.s.LastID() != "" })
	return s.s.LastID()
}

// trustStatus answers GET path on replica i's internal port with its status.
func trustStatus(t *testing.T, c *cluster, i int, path string) trustAnswer {
	t.Helper()
	return trustDo(t.Context(), trustClient(trustOutsider, 2*time.Second), http.MethodGet, c.internalURL(i)+path, "")
}

// trustStopWithin sends SIGTERM to replica i and fails the test unless it
// exits 0 within limit. A replica still running is killed on cleanup.
func trustStopWithin(t *testing.T, c *cluster, i int, limit time.Duration) {
	t.Helper()
	r := c.rep(i)
	start := time.Now()
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", r.Name, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	err := r.Wait(ctx)
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case ctx.Err() != nil:
		t.Errorf("%s still running %s after SIGTERM, want an exit within drain window + shutdown timeout + %s = %s", r.Name, took, trustExitMargin, limit)
	case err != nil:
		t.Errorf("%s after SIGTERM: %v, want exit 0", r.Name, err)
	default:
		t.Logf("%s exited %s after SIGTERM", r.Name, took)
	}
}

// trustPID finds replica r's process by its internal address on its
// command line.
func trustPID(r *testproc.Replica) (int, error) {
	want := []byte("\x00--internal-addr\x00" + net.JoinHostPort(r.IP, strconv.Itoa(r.InternalPort)) + "\x00")
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, want) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process of %s in /proc", r.Name)
}

// trustRSS is the resident set size of process pid, in bytes.
func trustRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// trustRaceBinary reports whether the sser binary under test was built
// with -race.
func trustRaceBinary(t *testing.T) bool {
	t.Helper()
	bi, err := buildinfo.ReadFile(testproc.Binary(t))
	if err != nil {
		t.Fatalf("build info of the sser binary: %v", err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// trustKeepsServing publishes on replica i every few hundred ms for window
// and requires each publish to be answered and received by sub, and
// /healthz to answer 200, each in bounded time. It reports the first
// failure with how long the replica had been unresponsive.
func trustKeepsServing(t *testing.T, c *cluster, i int, sub *trustSub, stream string, window time.Duration) bool {
	t.Helper()
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for k := 0; time.Since(start) < window; k++ {
		msg := fmt.Sprintf("live-%d", k)
		sent := time.Since(start).Round(time.Millisecond)
		a := trustPublish(t, c, i, fmt.Sprintf(`{"stream":%q,"msg":%q}`, stream, msg))
		if a.err != nil || a.status != http.StatusOK {
			t.Errorf("publish %q, sent %s after the attack: %s", msg, sent, a)
			return false
		}
		waitFor(t, trustAnswerWithin, fmt.Sprintf("%q, published %s after the attack, to be received", msg, sent), func() bool { return sub.has(msg) })
		if h := trustStatus(t, c, i, "/healthz"); h.err != nil || h.status != http.StatusOK {
			t.Errorf("/healthz %s after the attack: %s", time.Since(start).Round(time.Millisecond), h)
			return false
		}
		<-tick.C
	}
	return true
}

// TestTrustFarAheadSeqDoesNotFreeze: a peer that announces a seq far past
// what an origin has sent must neither freeze the replica (waiting for, or
// counting off, billions of events) nor make it lie about loss. A jump
// further than --max-seq-gap is refused; a smaller one that no peer can
// fill is given up after the repair budget, and subscribers are told.
func TestTrustFarAheadSeqDoesNotFreeze(t *testing.T) {
	skipShort(t)
	const s = "dos"
	tests := []struct {
		name string
		args []string
		seq  uint64
		want int
		// gap: the event is accepted and leaves 2..seq-1 missing, held by
		// no peer (the origin's address refuses connections).
		gap bool
	}{
		{name: "beyond max-seq-gap is refused", seq: 9000000000000000000, want: http.StatusBadRequest},
		{name: "within max-seq-gap is given up and told", args: []string{"--max-seq-gap=1000"}, seq: 900, want: http.StatusOK, gap: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := trustCluster(t, 2, tc.args...)
			c.startAll()
			sub, err := trustSubscribe(t, c, 0, s, "sub@r0", trustAnswerWithin)
			if err != nil {
				t.Fatal(err)
			}
			fake := trustClient(trustFake, trustAnswerWithin)
			send := c.internalURL(0) + "/api/json/v1/send"
			if a := trustDo(t.Context(), fake, http.MethodPost, send, trustEvents(t, trustEvent(s, "a", "x", 1))); a.status != http.StatusOK {
				t.Fatalf("seq 1 from a peer: %s, want 200", a)
			}
			trustWaitMsg(t, deadline, "a", sub)
			jumped := time.Now()
			a := trustDo(t.Context(), fake, http.MethodPost, send, trustEvents(t, trustEvent(s, "b", "x", tc.seq)))
			if a.status != tc.want {
				t.Errorf("seq %d after seq 1 from a peer: %s, want %d", tc.seq, a, tc.want)
			}
			if !tc.gap {
				n, _, err := testproc.Metric(c.internalURL(0)+"/metrics", "sser_peer_events_refused_total", `reason="seq_jump"`)
				if err != nil || n < 1 {
					t.Errorf(`sser_peer_events_refused_total{reason="seq_jump"} = %v (%v), want >= 1`, n, err)
				}
			}

			// Longer than any repair budget a replica might spend on the
			// jump: a freeze that starts when the repair ends shows here.
			if trustKeepsServing(t, c, 0, sub, s, 6*time.Second) {
				fresh, err := trustSubscribe(t, c, 0, s, "fresh@r0", trustAnswerWithin)
				if err != nil {
					t.Error(err)
				} else if a := trustPublish(t, c, 0, fmt.Sprintf(`{"stream":%q,"msg":"for-fresh"}`, s)); a.status != http.StatusOK {
					t.Errorf("publish after a new subscription: %s", a)
				} else {
					trustWaitMsg(t, trustAnswerWithin, "for-fresh", fresh, sub)
				}
			}

			if tc.gap {
				waitFor(t, deadline, "sser-lost for the gap no peer holds", func() bool { return len(sub.lost()) > 0 },
					func() string { return fmt.Sprintf("received %q", sub.msgs()) })
				t.Logf("sser-lost %s after the jump", time.Since(jumped).Round(100*time.Millisecond))
				var lost struct {
					Reason, Origin string
					After, UpTo    uint64
				}
				if err := json.Unmarshal([]byte(sub.lost()[0]), &lost); err != nil {
					t.Errorf("sser-lost data %q: %v", sub.lost()[0], err)
				} else if lost.Reason != "gap" || lost.Origin != "x" || lost.After != 1 || lost.UpTo != tc.seq-1 {
					t.Errorf("sser-lost data %q, want reason gap, origin x, after 1, upTo %d", sub.lost()[0], tc.seq-1)
				}
				trustWaitMsg(t, deadline, "b", sub)
				ev, _ := sub.find("b")
				if ok, err := trustCovers(ev.ID, "x", tc.seq); !ok || err != nil {
					t.Errorf("id after b %q does not cover x.%d (%v)", ev.ID, tc.seq, err)
				}
				if ok, _ := trustCovers(ev.ID, "x", tc.seq/2); ok {
					t.Errorf("id after b %q covers x.%d, which was lost, not received", ev.ID, tc.seq/2)
				}
				if n, _, err := testproc.Metric(c.internalURL(0)+"/metrics", "sser_events_lost_total"); err != nil || n != float64(tc.seq-2) {
					t.Errorf("sser_events_lost_total = %v (%v), want %d", n, err, tc.seq-2)
				}
			} else if sub.has("b") {
				t.Errorf("the refused event was delivered: %q", sub.msgs())
			}
			if h := trustStatus(t, c, 0, "/healthz"); h.status != http.StatusOK {
				t.Errorf("/healthz: %s", h)
			}
			trustStopWithin(t, c, 0, trustExitWithin)
		})
	}
}

// TestTrustForgedPeerEvents: only peers deliver, only publishers publish,
// and a peer cannot speak for another replica's origin nor inflate every
// replica's ids with invented ones.
func TestTrustForgedPeerEvents(t *testing.T) {
	skipShort(t)
	const s = "forge"

	t.Run("credentials", func(t *testing.T) {
		const peerToken, publishToken = "peer-secret-P", "publish-secret-Q"
		c := trustCluster(t, 1, "--peer-token="+peerToken, "--publish-token="+publishToken)
		c.startAll()
		fake, outsider := trustClient(trustFake, trustAnswerWithin), trustClient(trustOutsider, trustAnswerWithin)
		send, publish := c.internalURL(0)+"/api/json/v1/send", c.internalURL(0)+"/api/json/v1/publish"
		peerEv := trustEvents(t, trustEvent(s, "cred", "cr", 1))
		pubEv := fmt.Sprintf(`{"stream":%q,"msg":"cred-pub"}`, s)
		for _, tc := range []struct {
			name      string
			hc        *http.Client
			u, body   string
			token     string
			want      []int
			challenge bool // 401 must carry WWW-Authenticate
		}{
			{"send without credentials", fake, send, peerEv, "", []int{401}, true},
			{"send with the publish token", fake, send, peerEv, publishToken, []int{403}, false},
			{"send with the peer token from outside the peer set", outsider, send, peerEv, peerToken, []int{403}, false},
			{"send with the peer token from a peer", fake, send, peerEv, peerToken, []int{200}, false},
			{"publish without credentials", outsider, publish, pubEv, "", []int{401}, true},
			{"publish with the peer token", outsider, publish, pubEv, peerToken, []int{401, 403}, false},
			{"publish with the publish token", outsider, publish, pubEv, publishToken, []int{200}, false},
		} {
			var hdr []string
			if tc.token != "" {
				hdr = []string{"Authorization", "Bearer " + tc.token}
			}
			a := trustDo(t.Context(), tc.hc, http.MethodPost, tc.u, tc.body, hdr...)
			if !slices.Contains(tc.want, a.status) {
				t.Errorf("%s: %s, want %v", tc.name, a, tc.want)
				continue
			}
			if tc.challenge && a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
			}
		}
	})

	// One cluster of two replicas with no tokens for the rest, in order:
	// the forgeries first, the origins a peer may bind last.
	const maxOrigins = 4
	c := trustCluster(t, 2, fmt.Sprintf("--max-origins-per-peer=%d", maxOrigins))
	c.startAll()
	var subs []*trustSub
	for i := range 2 {
		for k := range 2 {
			sub, err := trustSubscribe(t, c, i, s, fmt.Sprintf("sub%d@r%d", k, i), trustAnswerWithin)
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, sub)
		}
	}
	// The real origins, one per replica, learned from the ids.
	realOrigins := make([]string, 2)
	for i := range 2 {
		msg := fmt.Sprintf("hello-r%d", i)
		if a := trustPublish(t, c, i, fmt.Sprintf(`{"stream":%q,"msg":%q}`, s, msg)); a.status != http.StatusOK {
			t.Fatalf("publish on replica %d: %s", i, a)
		}
		trustWaitMsg(t, deadline, msg, subs...)
		ev, _ := subs[2*i].find(msg)
		for _, o := range trustOrigins(t, ev.ID) {
			if o != realOrigins[0] {
				realOrigins[i] = o
			}
		}
		if realOrigins[i] == "" {
			t.Fatalf("replica %d's origin not in id %q", i, ev.ID)
		}
	}
	fake := trustClient(trustFake, trustAnswerWithin)
	sendTo := func(i int, body string) trustAnswer {
		return trustDo(t.Context(), fake, http.MethodPost, c.internalURL(i)+"/api/json/v1/send", body)
	}
	forged := func(id string) []string {
		var out []string
		for _, o := range trustOrigins(t, id) {
			if !slices.Contains(realOrigins, o) {
				out = append(out, o)
			}
		}
		return out
	}
	publishFence := trustFencer(c, s, subs...)

	t.Run("another replica's origin", func(t *testing.T) {
		ev, _ := subs[0].find("hello-r0")
		elems, err := trustParseID(ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		var next uint64
		for _, e := range elems {
			if e.origin == realOrigins[0] {
				next = e.seq + 1
			}
		}
		body := trustEvents(t, trustEvent(s, "forged", realOrigins[0], next))
		// Replica 1 has replica 0's origin from replica 0's address: the
		// same origin from another address is refused.
		if a := sendTo(1, body); a.status != http.StatusForbidden {
			t.Errorf("replica 1: event of origin %s (replica 0's) with seq %d from a peer address: %s, want 403", realOrigins[0], next, a)
		}
		// Replica 0 knows the origin as its own. Its own events can come
		// back to it over HTTP from an address it does not know as its
		// own (a peer set that names it twice), so it may acknowledge
		// them, but must apply none: 403, or 200 with nothing accepted.
		a := sendTo(0, body)
		var ack struct {
			Accepted *int `json:"accepted"`
		}
		if a.status != http.StatusForbidden && (a.status != http.StatusOK || json.Unmarshal(a.body, &ack) != nil || ack.Accepted == nil || *ack.Accepted != 0) {
			t.Errorf("replica 0: event of its own origin %s with seq %d from a peer address: %s, want 403 or 200 with accepted 0", realOrigins[0], next, a)
		}
		if a := trustPublish(t, c, 0, fmt.Sprintf(`{"stream":%q,"msg":"real-next"}`, s)); a.status != http.StatusOK {
			t.Fatalf("publish on replica 0: %s", a)
		}
		waitFor(t, 20*time.Second, "every subscriber to receive the real event, not the forged one", func() bool {
			for _, sub := range subs {
				if !sub.has("real-next") {
					return false
				}
			}
			return true
		}, func() string {
			var b strings.Builder
			for _, sub := range subs {
				fmt.Fprintf(&b, "%s: %q\n", sub.name, sub.msgs())
			}
			return b.String()
		})
		publishFence(t)
		for _, sub := range subs {
			if sub.has("forged") {
				t.Errorf("%s received the forged event: %q", sub.name, sub.msgs())
			}
			ev, _ := sub.find("real-next")
			if ok, err := trustCovers(ev.ID, realOrigins[0], next); !ok || err != nil {
				t.Errorf("%s: real event's id %q does not cover %s.%d (%v)", sub.name, ev.ID, realOrigins[0], next, err)
			}
		}
	})

	t.Run("2000 origins in one request", func(t *testing.T) {
		events := make([]map[string]any, 2000)
		for k := range events {
			events[k] = trustEvent(s, fmt.Sprintf("invented-%d", k), fmt.Sprintf("inv%d", k), 1)
		}
		body := trustEvents(t, events...)
		for i := range 2 {
			if a := sendTo(i, body); a.status != http.StatusBadRequest {
				t.Errorf("replica %d: one request with 2000 origins: %s, want 400", i, a)
			}
		}
		publishFence(t)
		for _, sub := range subs {
			if m := sub.msgs(); slices.ContainsFunc(m, func(m string) bool { return strings.HasPrefix(m, "invented-") }) {
				t.Errorf("%s received events of the refused request", sub.name)
			}
		}
		for i := range 2 {
			id := trustFreshID(t, c, i, s)
			if f := forged(id); len(f) > 0 {
				t.Errorf("replica %d: a new subscriber's id (%d bytes) names %d origins besides the real %q", i, len(id), len(f), realOrigins)
			}
		}
	})

	t.Run("new origins from one peer", func(t *testing.T) {
		codes := map[int]int{}
		most := 0
		for k := range 20 {
			body := trustEvents(t, trustEvent(s, fmt.Sprintf("new-%d", k), fmt.Sprintf("nw%d", k), 1))
			for i := range 2 {
				a := sendTo(i, body)
				codes[a.status]++
				if a.err != nil {
					t.Fatalf("replica %d, origin nw%d: %s", i, k, a)
				}
				f := forged(trustFreshID(t, c, i, s))
				most = max(most, len(f))
				if len(f) > maxOrigins {
					t.Fatalf("replica %d after %d new origins from one peer: a new subscriber's id names %d of them (%q...), want at most --max-origins-per-peer=%d",
						i, k+1, len(f), f[:min(len(f), 10)], maxOrigins)
				}
			}
		}
		publishFence(t)
		for _, sub := range subs {
			for _, ev := range sub.events() {
				if f := forged(ev.ID); len(f) > maxOrigins {
					t.Errorf("%s: id %q names %d forged origins, want at most %d", sub.name, ev.ID, len(f), maxOrigins)
					break
				}
			}
		}
		t.Logf("40 announcements of 20 new origins: answers %v; ids named at most %d of them", codes, most)
	})
}

// trustPage is one page of a history snapshot.
type trustPage struct {
	Position string `json:"position"`
	Entries  []struct {
		Stream string `json:"stream"`
		Msg    string `json:"msg"`
		Origin string `json:"origin"`
		Seq    uint64 `json:"seq"`
	} `json:"entries"`
	Next json.RawMessage `json:"next"`
	More *bool           `json:"more"`
}

// trustRange is one page of an origin's seq range.
type trustRange struct {
	Origin string `json:"origin"`
	Last   uint64 `json:"last"`
	Events []struct {
		Msg string `json:"msg"`
		Seq uint64 `json:"seq"`
	} `json:"events"`
}

// TestTrustHeavyReads: the history endpoint pages what it answers, serves
// only a couple of snapshot pages at once, and so bounds the memory that
// readers can make a replica hold.
func TestTrustHeavyReads(t *testing.T) {
	skipShort(t)
	const (
		streams   = 100
		perStream = 200
		total     = streams * perStream
		msgBytes  = 1536 // a page of 5000 is then larger than any socket buffer
	)
	maxGrowth := int64(200 << 20)
	if trustRaceBinary(t) {
		// The race detector's shadow memory grows with the heap: the same
		// reads measured +70 MiB on a plain binary, +250 MiB on a -race one.
		maxGrowth *= 4
	}
	c := trustCluster(t, 1)
	c.startAll()
	pid, err := trustPID(c.rep(0))
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("h", msgBytes)
	for k := range streams {
		events := make([]map[string]any, perStream)
		for n := range events {
			key := fmt.Sprintf("%d/%d:", k, n)
			events[n] = map[string]any{"stream": fmt.Sprintf("heavy%03d", k), "msg": key + pad[len(key):]}
		}
		body, err := json.Marshal(events)
		if err != nil {
			t.Fatal(err)
		}
		if a := trustPublish(t, c, 0, string(body)); a.status != http.StatusOK {
			t.Fatalf("publish %d events on heavy%03d: %s", perStream, k, a)
		}
	}
	base, err := trustRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	peak := base
	sample := func() {
		if n, err := trustRSS(pid); err == nil {
			peak = max(peak, n)
		}
	}
	fake := trustClient(trustFake, 30*time.Second)
	history := c.internalURL(0) + "/api/json/v1/history"
	get := func(q string) trustAnswer {
		defer sample()
		return trustDo(t.Context(), fake, http.MethodGet, history+q, "")
	}

	// Pages: the default is bounded, a limit past 5000 is refused or cut,
	// and paging yields every held entry once.
	var first trustPage
	if a := get(""); a.status != http.StatusOK || json.Unmarshal(a.body, &first) != nil {
		t.Errorf("snapshot with no limit: %s", a)
	} else if len(first.Entries) > 1000 || first.More == nil || !*first.More || len(first.Next) == 0 {
		more := "absent"
		if first.More != nil {
			more = strconv.FormatBool(*first.More)
		}
		t.Errorf("snapshot with no limit: %d entries, more %s, next %s; want at most 1000 (the default page), more true and a next of %d held", len(first.Entries), more, first.Next, total)
	}
	if a := get("?limit=100000"); a.status != http.StatusBadRequest {
		var p trustPage
		if a.status != http.StatusOK || json.Unmarshal(a.body, &p) != nil || len(p.Entries) > 5000 {
			t.Errorf("snapshot with limit=100000: %s (%d entries), want 400 or at most 5000 entries", trustAnswer{status: a.status, took: a.took}, len(p.Entries))
		}
	}
	seen := make(map[string]int, total)
	keys := make(map[string]bool, total)
	after, pages := "", 0
	for ; pages < 100; pages++ {
		q := "?limit=5000"
		if after != "" {
			q += "&after=" + url.QueryEscape(after)
		}
		a := get(q)
		var p trustPage
		if a.status != http.StatusOK || json.Unmarshal(a.body, &p) != nil {
			t.Errorf("snapshot page %d (%s): %s", pages, q, a)
			break
		}
		if len(p.Entries) > 5000 {
			t.Errorf("snapshot page %d (%s): %d entries, want at most 5000", pages, q, len(p.Entries))
		}
		for _, e := range p.Entries {
			seen[fmt.Sprintf("%s.%d", e.Origin, e.Seq)]++
			key, _, _ := strings.Cut(e.Msg, ":")
			keys[e.Stream+" "+key] = true
		}
		if p.More == nil || !*p.More {
			pages++
			break
		}
		after = strings.Trim(string(p.Next), `"`)
		if len(p.Entries) == 0 || after == "" {
			t.Errorf("snapshot page %d (%s): more with %d entries and next %q", pages, q, len(p.Entries), after)
			break
		}
	}
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	if len(seen) != total || len(keys) != total || twice > 0 {
		t.Errorf("paging in %d pages: %d entries by origin and seq (%d more than once), %d distinct events; want each of %d once", pages, len(seen), twice, len(keys), total)
	}

	// Range reads, as a repair makes them, are bounded the same way, and
	// page on by seq.
	if len(first.Entries) > 0 {
		o := first.Entries[0].Origin
		rng := func(q string) (trustRange, trustAnswer) {
			a := get("?origin=" + url.QueryEscape(o) + q)
			var r trustRange
			if a.status == http.StatusOK {
				if err := json.Unmarshal(a.body, &r); err != nil {
					a.err = err
				}
			}
			return r, a
		}
		for _, tc := range []struct {
			q   string
			max int
		}{
			{fmt.Sprintf("&after=0&upTo=%d&limit=100", total), 100},
			{fmt.Sprintf("&after=0&upTo=%d", total), 1000},
			{fmt.Sprintf("&after=0&upTo=%d&limit=100000", total), 5000},
		} {
			r, a := rng(tc.q)
			if a.status == http.StatusBadRequest && strings.Contains(tc.q, "100000") {
				continue
			}
			if a.status != http.StatusOK || a.err != nil || len(r.Events) == 0 || len(r.Events) > tc.max {
				t.Errorf("range read %s: %d events (%s), want 1 to %d", tc.q, len(r.Events), trustAnswer{status: a.status, err: a.err, took: a.took}, tc.max)
			}
		}
		var got uint64
		for k := 0; k < 100 && got < total; k++ {
			r, a := rng(fmt.Sprintf("&after=%d&upTo=%d&limit=5000", got, total))
			if a.status != http.StatusOK || a.err != nil || len(r.Events) == 0 {
				t.Errorf("range page after %d: %s", got, trustAnswer{status: a.status, err: a.err, took: a.took})
				break
			}
			for _, ev := range r.Events {
				if ev.Seq != got+1 {
					t.Errorf("range page after %d: seq %d where %d was due", got, ev.Seq, got+1)
					break
				}
				got = ev.Seq
			}
		}
		if got != total {
			t.Errorf("paging the range of %s reached seq %d of %d", o, got, total)
		}
	}

	// Concurrent snapshot pages: readers that do not read their answers
	// hold their page in the replica; at most two are served at once.
	const readers = 8
	type held struct {
		status     int
		retryAfter string
		body       io.Closer
		err        error
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(trustFake)}, Timeout: 5 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				// A small window: the page stays in the replica.
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}}
	slow := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, ResponseHeaderTimeout: 20 * time.Second}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	results := make(chan held, readers)
	for range readers {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, history+"?limit=5000", nil)
			resp, err := slow.Do(req)
			if err != nil {
				results <- held{err: err}
				return
			}
			results <- held{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: resp.Body}
		}()
	}
	var all []held
	for range readers {
		h := <-results
		all = append(all, h)
		if h.body != nil {
			t.Cleanup(func() { _ = h.body.Close() })
		}
	}
	sample()
	served, refused := 0, 0
	var other []string
	for _, h := range all {
		switch {
		case h.err != nil:
			other = append(other, h.err.Error())
		case h.status == http.StatusOK:
			served++
		case h.status == http.StatusServiceUnavailable && h.retryAfter != "":
			refused++
		default:
			other = append(other, fmt.Sprintf("%d Retry-After %q", h.status, h.retryAfter))
		}
	}
	t.Logf("%d concurrent snapshot pages of 5000: %d served, %d refused with 503 and Retry-After", readers, served, refused)
	if served > 2 || served == 0 || refused != readers-served {
		t.Errorf("%d concurrent snapshot pages: %d served, %d refused with 503 and Retry-After, others %q; want at most 2 served and the rest refused", readers, served, refused, other)
	}
	cancel()
	for _, h := range all {
		if h.body != nil {
			_ = h.body.Close()
		}
	}
	waitFor(t, deadline, "a snapshot page to be served again once the readers are gone", func() bool {
		return trustDo(t.Context(), fake, http.MethodGet, history+"?limit=1", "").status == http.StatusOK
	})
	if h := trustStatus(t, c, 0, "/healthz"); h.status != http.StatusOK {
		t.Errorf("/healthz after the reads: %s", h)
	}
	t.Logf("RSS %d MiB after publishing %d events of %d bytes, at most %d MiB during the reads (bound +%d MiB)", base>>20, total, msgBytes, peak>>20, maxGrowth>>20)
	if peak-base > maxGrowth {
		t.Errorf("RSS grew by %d MiB during the history reads, want at most %d MiB", (peak-base)>>20, maxGrowth>>20)
	}
}

// trustTrickle opens a connection from trustFake to addr, sends the
// headers of a peer delivery whose body never comes in time (one byte a
// second), and returns how long the replica kept it open, or false when
// it was still open after giveUp.
func trustTrickle(ctx context.Context, addr string, giveUp time.Duration) (time.Duration, bool, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(trustFake)}, Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	start := time.Now()
	head := "POST /api/json/v1/send HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		return 0, false, err
	}
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, conn) // until the replica closes it
		closed <- time.Since(start)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(giveUp)
	defer end.Stop()
	for {
		select {
		case took := <-closed:
			return took, true, nil
		case <-end.C:
			return time.Since(start), false, nil
		case <-ctx.Done():
			return time.Since(start), false, ctx.Err()
		case <-tick.C:
			if _, err := conn.Write([]byte{' '}); err != nil {
				return time.Since(start), true, nil
			}
		}
	}
}

// TestTrustSlowBodiesAreCut: clients that trickle request bodies cannot
// hold the internal port's connections past --internal-read-timeout, and
// probes and publishing keep answering meanwhile.
func TestTrustSlowBodiesAreCut(t *testing.T) {
	skipShort(t)
	const (
		conns       = 50
		readTimeout = 2 * time.Second
		margin      = 3 * time.Second
		giveUp      = 10 * time.Second
	)
	c := trustCluster(t, 1, "--internal-read-timeout="+readTimeout.String())
	c.startAll()
	addr := net.JoinHostPort(c.cfgs[0].IP, strconv.Itoa(c.cfgs[0].InternalPort))

	// Probes and a publisher beside the slow clients.
	probeCtx, stopProbes := context.WithCancel(t.Context())
	var probeErrs []string
	rounds := 0
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		hc := trustClient(trustOutsider, 2*time.Second)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			for _, p := range []struct{ method, path, body string }{
				{http.MethodGet, "/healthz", ""},
				{http.MethodGet, "/readyz", ""},
				{http.MethodPost, "/api/json/v1/publish", fmt.Sprintf(`{"stream":"slow","msg":"p-%d"}`, k)},
			} {
				a := trustDo(probeCtx, hc, p.method, c.internalURL(0)+p.path, p.body)
				if probeCtx.Err() != nil {
					return
				}
				if a.err != nil || a.status != http.StatusOK {
					probeErrs = append(probeErrs, fmt.Sprintf("%s %s: %s", p.method, p.path, a))
				}
			}
			rounds++
			select {
			case <-probeCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	type result struct {
		open   time.Duration
		closed bool
		err    error
	}
	results := make([]result, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, closed, err := trustTrickle(t.Context(), addr, giveUp)
			results[i] = result{took, closed, err}
		}()
	}
	wg.Wait()
	stopProbes()
	<-probed

	late, open := 0, 0
	var longest time.Duration
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("slow client %d: %v", i, r.err)
		case !r.closed:
			open++
		case r.open > readTimeout+margin:
			late++
		}
		longest = max(longest, r.open)
	}
	t.Logf("%d slow clients: %d still open after %s, %d closed later than %s, longest %s; probes: %d rounds, %d failures",
		conns, open, giveUp, late, readTimeout+margin, longest.Round(time.Millisecond), rounds, len(probeErrs))
	if open > 0 || late > 0 {
		t.Errorf("%d of %d trickled bodies still open after %s and %d closed after more than %s, want each cut at --internal-read-timeout=%s",
			open, conns, giveUp, late, readTimeout+margin, readTimeout)
	}
	if len(probeErrs) > 0 {
		t.Errorf("probes and publish failed %d times while slow clients held connections: %q", len(probeErrs), probeErrs[:min(len(probeErrs), 5)])
	}
	if rounds < 5 {
		t.Errorf("only %d probe rounds while the slow clients were connected", rounds)
	}
}

// TestTrustPublishRules: the reserved event types cannot be published, and
// a publish retried with the same Idempotency-Key is applied once.
func TestTrustPublishRules(t *testing.T) {
	skipShort(t)
	const s = "rules"
	c := newCluster(t, 1)
	c.startAll()
	sub, err := trustSubscribe(t, c, 0, s, "sub@r0", trustAnswerWithin)
	if err != nil {
		t.Fatal(err)
	}
	publishFence := trustFencer(c, s, sub)

	t.Run("reserved event type", func(t *testing.T) {
		for _, body := range []string{
			fmt.Sprintf(`{"stream":%q,"msg":"{\"reason\":\"gap\"}","event":"sser-lost"}`, s),
			fmt.Sprintf(`[{"stream":%q,"msg":"good-before"},{"stream":%q,"msg":"x","event":"sser-lost"}]`, s, s),
			fmt.Sprintf(`{"stream":%q,"msg":"other","event":"sser-anything"}`, s),
		} {
			if a := trustPublish(t, c, 0, body); a.status != http.StatusBadRequest {
				t.Errorf("publish %s: %s, want 400", body, a)
			}
		}
		publishFence(t)
		if lost := sub.lost(); len(lost) > 0 {
			t.Errorf("the subscriber received sser-lost %q from a publisher", lost)
		}
		for _, ev := range sub.events() {
			if ev.Event != "message" || ev.Data == "good-before" {
				t.Errorf("delivered from a refused publish: event %q data %q", ev.Event, ev.Data)
			}
		}
	})

	t.Run("idempotency key", func(t *testing.T) {
		body := fmt.Sprintf(`{"stream":%q,"msg":"once"}`, s)
		var answers []trustPublished
		for k := range 3 {
			a := trustPublish(t, c, 0, body, "Idempotency-Key", "k")
			var p trustPublished
			if a.status != http.StatusOK || json.Unmarshal(a.body, &p) != nil {
				t.Fatalf("publish %d with Idempotency-Key k: %s, want 200 with an answer", k+1, a)
			}
			answers = append(answers, p)
		}
		one := answers[0]
		if one.Duplicate || one.Accepted != 1 || one.Origin == "" || one.First == 0 || one.Last != one.First {
			t.Errorf("first publish answered %+v, want accepted 1, an origin and first = last > 0, not a duplicate", one)
		}
		for k, p := range answers[1:] {
			if !p.Duplicate || p.Origin != one.Origin || p.First != one.First || p.Last != one.Last {
				t.Errorf("publish %d with the same key answered %+v, want duplicate true with the first answer's origin %q and seqs %d..%d", k+2, p, one.Origin, one.First, one.Last)
			}
		}
		publishFence(t)
		if n := slices.Index(sub.msgs(), "once"); n < 0 || slices.Contains(sub.msgs()[n+1:], "once") {
			t.Errorf("the subscriber received %q, want \"once\" exactly once", sub.msgs())
		}
	})
}

// trustFencer returns a func that publishes one more event on replica 0 of
// stream and waits until every subscriber has it: whatever came before has
// been delivered.
func trustFencer(c *cluster, stream string, subs ...*trustSub) func(t *testing.T) {
	fence := 0
	return func(t *testing.T) {
		t.Helper()
		fence++
		msg := fmt.Sprintf("fence-%d", fence)
		if a := trustPublish(t, c, 0, fmt.Sprintf(`{"stream":%q,"msg":%q}`, stream, msg)); a.status != http.StatusOK {
			t.Fatalf("publish %s: %s", msg, a)
		}
		trustWaitMsg(t, deadline, msg, subs...)
	}
}
