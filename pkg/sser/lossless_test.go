package sser

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
)

// startPeer runs an in-process server on ip:port whose static peer set is peers.
func startPeer(t *testing.T, ip string, port int, peers []string, opts Options) *testServer {
	t.Helper()
	pf, err := peerfinder.NewPeerFinderStatic(peers)
	if err != nil {
		t.Fatal(err)
	}
	opts.PeerFinder = pf
	opts.InternalAddr = net.JoinHostPort(ip, strconv.Itoa(port))
	return startServer(t, opts)
}

func postEvents(t *testing.T, ts *testServer, peerIP string, events []Event) {
	t.Helper()
	body, _ := json.Marshal(events)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.internal+PeerEndpointURLPath, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := peerHTTPClient(peerIP).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("send: %s", resp.Status)
	}
}

// peerHTTPClient sends from ip, as the replica with that address would.
func peerHTTPClient(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func datas(evs []ssetest.Event) string {
	var d []string
	for _, e := range evs {
		d = append(d, e.Data)
	}
	return strings.Join(d, ",")
}

func TestGapIsRepairedFromTheOrigin(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	// a does not know b, so b hears of a's events only from the test.
	a := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2"}, Options{})
	b := startPeer(t, "127.0.0.3", port, []string{"127.0.0.2", "127.0.0.3"}, Options{WarmUpTimeout: -1})
	sub := ssetest.Dial(t, b.url("stream=g&stream=h"), "")
	var sent []Event
	for i := 1; i <= 8; i++ {
		stream := "g"
		if i == 5 {
			stream = "h" // a gap spans streams: seq is one sequence per origin
		}
		if err := a.Publish(t.Context(), Event{Stream: stream, Msg: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, Event{Stream: stream, Msg: strconv.Itoa(i), Origin: a.Origin(), Seq: uint64(i)})
	}
	// 4, 5 and 6 were "dropped on the way".
	postEvents(t, b, "127.0.0.2", append(append([]Event{}, sent[:3]...), sent[6:]...))
	got := sub.Collect(8, 10*time.Second)
	if datas(got) != "1,2,3,4,5,6,7,8" {
		t.Fatalf("subscriber got %s, want 1..8 in order", datas(got))
	}
	if testutil.ToFloat64(b.m.repairs.WithLabelValues("repaired")) != 1 || testutil.ToFloat64(b.m.eventsLost) != 0 {
		t.Error("repair not counted, or events counted lost")
	}
	// The same batch again (a retry after a lost answer) delivers nothing twice.
	postEvents(t, b, "127.0.0.2", sent)
	if err := b.Send(t.Context(), "g", "marker"); err != nil {
		t.Fatal(err)
	}
	if got := sub.Next(t, 5*time.Second); got.Data != "marker" {
		t.Errorf("after a duplicate batch got %q, want the marker", got.Data)
	}
	if n := testutil.ToFloat64(b.m.eventsDuplicate); n < 8 {
		t.Errorf("duplicates counted %v, want at least the 8 sent again", n)
	}
}

func TestUnrepairableGapIsCountedAndDeliveryGoesOn(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2")
	b := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2", "127.0.0.9"}, Options{WarmUpTimeout: -1, PeerTimeout: 200 * time.Millisecond})
	sub := ssetest.Dial(t, b.url("stream=g"), "")
	postEvents(t, b, "127.0.0.9", []Event{{Stream: "g", Msg: "1", Origin: "zzz", Seq: 1}, {Stream: "g", Msg: "4", Origin: "zzz", Seq: 4}})
	got := sub.Collect(3, 30*time.Second)
	if datas(got) != `1,{"reason":"gap","origin":"zzz","after":1,"upTo":3},4` || got[1].Event != LostEventType {
		t.Fatalf("got %s, want 1, the sser-lost notice for 2..3, then 4 once the gap is given up", datas(got))
	}
	// The id after the loss does not claim 2 and 3: resuming elsewhere
	// with it would fetch them from a replica that still holds them.
	if covers, err := IDCovers(got[2].ID, "zzz", 2); err != nil || covers {
		t.Errorf("id %q after the loss covers zzz.2 (%v)", got[2].ID, err)
	}
	if testutil.ToFloat64(b.m.eventsLost) != 2 {
		t.Errorf("lost = %v, want 2", testutil.ToFloat64(b.m.eventsLost))
	}
	// A client that resumes from before the loss is told.
	again := ssetest.Dial(t, b.url("stream=g"), "zzz.1")
	if h := again.Resp.Header.Get("X-Sser-Resume"); h != "lost" {
		t.Errorf("X-Sser-Resume = %q, want lost", h)
	}
}

func TestNewReplicaWarmsUpAndResumesClientsOfAnother(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	a := startPeer(t, "127.0.0.2", port, []string{"127.0.0.2"}, Options{})
	subA := ssetest.Dial(t, a.url("stream=w"), "")
	for i := 1; i <= 3; i++ {
		if err := a.Send(t.Context(), "w", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	subA.Collect(3, 5*time.Second)
	id := subA.LastID()
	subA.Close()
	for i := 4; i <= 6; i++ {
		if err := a.Send(t.Context(), "w", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	// b starts after all of it and copies a's history before it is ready.
	b := startPeer(t, "127.0.0.3", port, []string{"127.0.0.2", "127.0.0.3"}, Options{})
	deadline := time.Now().Add(10 * time.Second)
	for !b.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("b never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if testutil.ToFloat64(b.m.warmups.WithLabelValues("copied")) != 1 {
		t.Fatal("b did not warm up from a")
	}
	resumed := ssetest.Dial(t, b.url("stream=w"), id)
	if got := resumed.Collect(3, 5*time.Second); datas(got) != "4,5,6" {
		t.Fatalf("resumed on b got %s, want 4,5,6", datas(got))
	}
	if h := resumed.Resp.Header.Get("X-Sser-Resume"); h != "exact" {
		t.Errorf("X-Sser-Resume = %q", h)
	}
}

func TestAheadClientGetsNoDuplicates(t *testing.T) {
	ts := startServer(t, Options{PeerFinder: staticFinder(t, "127.0.0.1", "127.0.0.9"), WarmUpTimeout: -1})
	// The client comes from a replica that had seen origin "zzz" up to 5;
	// this one has seen it up to 3 and then receives 4..6 live.
	postEvents(t, ts, "127.0.0.9", []Event{{Stream: "s", Msg: "1", Origin: "zzz", Seq: 1}, {Stream: "s", Msg: "2", Origin: "zzz", Seq: 2}, {Stream: "s", Msg: "3", Origin: "zzz", Seq: 3}})
	sub := ssetest.Dial(t, ts.url("stream=s"), "zzz.5")
	postEvents(t, ts, "127.0.0.9", []Event{{Stream: "s", Msg: "4", Origin: "zzz", Seq: 4}, {Stream: "s", Msg: "5", Origin: "zzz", Seq: 5}, {Stream: "s", Msg: "6", Origin: "zzz", Seq: 6}})
	got := sub.Next(t, 5*time.Second)
	if got.Data != "6" || got.ID != "zzz.6" {
		t.Fatalf("got %+v, want only 6 with id zzz.6", got)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	ctx, cancel := context.WithCancel(t.Context())
	var servers []*ServerImpl
	var fronts []*httptest.Server
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		pf, _ := peerfinder.NewPeerFinderStatic([]string{"127.0.0.2", "127.0.0.3", "127.0.0.9"})
		s, err := NewWithOptions(Options{InternalAddr: fmt.Sprintf("%s:%d", ip, port), PeerFinder: pf, Heartbeat: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
		fronts = append(fronts, httptest.NewServer(s.ClientConnectionHandler(ctx)))
	}
	var subs []*ssetest.Sub
	for _, f := range fronts {
		s, err := ssetest.Connect(ctx, f.URL+"/?stream=l", "")
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	for i := range 50 {
		if err := servers[i%2].Send(ctx, "l", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range subs {
		if got := s.Collect(50, 10*time.Second); len(got) != 50 {
			t.Fatalf("got %d events, want 50", len(got))
		}
	}
	cancel()
	for _, s := range servers {
		<-s.Done()
	}
	for _, s := range subs {
		<-s.Done()
	}
	for _, f := range fronts {
		f.Close()
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestInternalTokenGuardsEventEndpoints(t *testing.T) {
	_, port := testproc.FreePorts(t, "127.0.0.2", "127.0.0.3")
	peers := []string{"127.0.0.2", "127.0.0.3"}
	a := startPeer(t, "127.0.0.2", port, peers, Options{InternalToken: "s3cret"})
	b := startPeer(t, "127.0.0.3", port, peers, Options{InternalToken: "s3cret"})
	sub := ssetest.Dial(t, b.url("stream=t"), "")
	for _, tt := range []struct {
		auth   string
		status int
	}{{"", 401}, {"Bearer wrong", 403}, {"Basic czNjcmV0", 403}, {"Bearer s3cret", 200}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.internal+PublishURLPath, strings.NewReader(`{"stream":"t","msg":"`+tt.auth+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("Authorization %q: status %d, want %d", tt.auth, resp.StatusCode, tt.status)
		}
		if tt.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	}
	// Only the authorized publish went out, and a's sender had the token for b.
	if got := sub.Next(t, 10*time.Second); got.Data != "Bearer s3cret" {
		t.Errorf("b's subscriber got %q", got.Data)
	}
	// Probes stay open (ready once a has warmed up).
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(a.internal + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if resp.StatusCode != 503 || time.Now().After(deadline) {
			t.Fatalf("readyz with a token set: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
