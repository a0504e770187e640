package wsclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/auth"
	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
	"github.com/sser-dev/sser/pkg/wsclient"
)

// server runs one sser replica on loopback with its events handler
// behind an httptest server; it returns the events URL.
func server(t *testing.T, opts sser.Options) (*sser.ServerImpl, string) {
	t.Helper()
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	opts.PeerFinder, opts.InternalAddr = pf, "127.0.0.1:0"
	s, err := sser.NewWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	front := httptest.NewServer(s.ClientConnectionHandler(ctx))
	t.Cleanup(func() {
		cancel()
		front.CloseClientConnections()
		front.Close()
		<-s.Done()
	})
	return s, front.URL + "/events"
}

func dial(t *testing.T, u string, streams []string, opts wsclient.Options) *wsclient.Client {
	t.Helper()
	c, err := wsclient.Dial(t.Context(), u, streams, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next is the next event, failing after five seconds.
func next(t *testing.T, c *wsclient.Client) wsclient.Event {
	t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatalf("client stopped: %v", c.Err())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return wsclient.Event{}
}

func publish(t *testing.T, s *sser.ServerImpl, events ...sser.Event) {
	t.Helper()
	if err := s.Publish(t.Context(), events...); err != nil {
		t.Fatal(err)
	}
}

// connected waits until the client's connection is subscribed.
func connected(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	testproc.Eventually(t, 5*time.Second, fmt.Sprintf("%d connections", want), func() bool { return n.Load() >= want })
}

func TestSubscribeAndChangeStreams(t *testing.T) {
	s, u := server(t, sser.Options{})
	var conns atomic.Int64
	c := dial(t, u, []string{"a"}, wsclient.Options{OnConnect: func(string) { conns.Add(1) }})
	connected(t, &conns, 1)
	publish(t, s, sser.Event{Stream: "a", Msg: "a1", Event: "tick"})
	if ev := next(t, c); ev.Stream != "a" || ev.Data != "a1" || ev.Type != "tick" || ev.ID == "" {
		t.Fatalf("got %+v", ev)
	}
	if err := c.Subscribe(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	publish(t, s, sser.Event{Stream: "b", Msg: "b1"}, sser.Event{Stream: "a", Msg: "a2"})
	if got := next(t, c).Data + "," + next(t, c).Data; got != "b1,a2" {
		t.Fatalf("got %s, want b1,a2", got)
	}
	if err := c.Unsubscribe(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	publish(t, s, sser.Event{Stream: "a", Msg: "a3"}, sser.Event{Stream: "b", Msg: "b2"})
	if ev := next(t, c); ev.Data != "b2" {
		t.Fatalf("got %+v, want b2", ev)
	}
	if got := c.Streams(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("streams %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections: the changes must not reconnect", n)
	}
}

// The server ends connections (here at its maximum connection time) while
// events are published: the client reconnects by itself and resumes from
// the last id, so every event arrives once, in order.
func TestReconnectResumes(t *testing.T) {
	s, u := server(t, sser.Options{MaxConnectionTime: 300 * time.Millisecond})
	var conns atomic.Int64
	var resumes sync.Map
	c := dial(t, u, []string{"r"}, wsclient.Options{InitialDelay: 50 * time.Millisecond, OnConnect: func(r string) {
		conns.Add(1)
		resumes.Store(r, true)
	}})
	connected(t, &conns, 1)
	const n = 300
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := range n {
			<-tick.C
			if err := s.Send(t.Context(), "r", strconv.Itoa(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range n {
		if ev := next(t, c); ev.Data != strconv.Itoa(i) {
			t.Fatalf("event %d is %q", i, ev.Data)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if conns.Load() < 3 {
		t.Errorf("%d connections in 1.5 s of 300 ms connections", conns.Load())
	}
	if _, ok := resumes.Load("exact"); !ok {
		t.Error("no connection resumed exactly")
	}
}

// A change the server refuses is returned to its caller; the client goes
// on with the streams it had, missing nothing meanwhile.
func TestRefusedChangeKeepsStreams(t *testing.T) {
	tk, err := auth.NewTicketer(time.Hour, []byte("ticket-key-0123456789abcdef0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	s, u := server(t, sser.Options{AuthOptions: sser.AuthOptions{Authenticate: (&auth.Authenticator{Tickets: tk}).Authenticate}})
	var tokens atomic.Int64
	var conns atomic.Int64
	c := dial(t, u, []string{"users/bob/a"}, wsclient.Options{
		InitialDelay: 50 * time.Millisecond,
		TokenFunc: func(context.Context) (string, error) {
			tokens.Add(1)
			ticket, _, err := tk.Mint("bob", []string{"users/bob/*"}, time.Minute)
			return ticket, err
		},
		OnConnect: func(string) { conns.Add(1) },
	})
	connected(t, &conns, 1)
	publish(t, s, sser.Event{Stream: "users/bob/a", Msg: "1"})
	if ev := next(t, c); ev.Data != "1" {
		t.Fatalf("got %+v", ev)
	}
	err = c.Subscribe(t.Context(), "users/alice/a")
	var ce *wsclient.CloseError
	if !errors.As(err, &ce) || ce.Code != wsclient.CloseForbidden || ce.Message == "" {
		t.Fatalf("subscribe to another's stream: %v, want a 4403 close with the server's message", err)
	}
	publish(t, s, sser.Event{Stream: "users/bob/a", Msg: "2"}, sser.Event{Stream: "users/alice/a", Msg: "x"})
	if ev := next(t, c); ev.Data != "2" {
		t.Fatalf("got %+v, want 2", ev)
	}
	if got := c.Streams(); !slices.Equal(got, []string{"users/bob/a"}) {
		t.Errorf("streams %q", got)
	}
	connected(t, &conns, 2)
	if tokens.Load() < 2 {
		t.Errorf("%d tokens asked for: one per connection", tokens.Load())
	}
}

// A handshake refused for good stops the client with the server's reason.
func TestRefusedHandshakeStops(t *testing.T) {
	tk, err := auth.NewTicketer(time.Hour, []byte("ticket-key-0123456789abcdef0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	_, u := server(t, sser.Options{AuthOptions: sser.AuthOptions{Authenticate: (&auth.Authenticator{Tickets: tk}).Authenticate}})
	c := dial(t, u, []string{"a"}, wsclient.Options{})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still running")
	}
	var se *wsclient.StatusError
	if !errors.As(c.Err(), &se) || se.Code != 401 || se.Message == "" {
		t.Fatalf("Err() = %v, want a 401 with the server's message", c.Err())
	}
	if _, ok := <-c.Events(); ok {
		t.Error("events still open")
	}
}

func TestDialRejectsBadURL(t *testing.T) {
	for _, u := range []string{"ftp://x/events", "://x"} {
		if _, err := wsclient.Dial(t.Context(), u, []string{"a"}, wsclient.Options{}); err == nil {
			t.Errorf("Dial(%q) accepted", u)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&wsclient.CloseError{Code: wsclient.CloseGoingAway}, true},
		{&wsclient.CloseError{Code: wsclient.CloseTooMany}, true},
		{&wsclient.CloseError{Code: wsclient.CloseForbidden}, false},
		{&wsclient.CloseError{Code: 1002}, false},
		{&wsclient.StatusError{Code: 503}, true},
		{&wsclient.StatusError{Code: 401}, false},
		{wsclient.ErrReadTimeout, true},
		{wsclient.ErrClosed, false},
	}
	for _, tt := range tests {
		if got := wsclient.Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v", tt.err, got)
		}
	}
}
