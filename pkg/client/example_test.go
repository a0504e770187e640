package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sser-dev/sser/pkg/client"
)

// newDemoServer stands in for sser's frontend: it sends the connect frames
// sser sends (retry and an id-only frame), then two events.
func newDemoServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stream") == "secret" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"missing token"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 3000\nid: k7f2q9xa:0\n\n")
		fmt.Fprint(w, "id: k7f2q9xa:1\nevent: tick\ndata: 101.5\n\n")
		fmt.Fprint(w, "id: k7f2q9xa:2\ndata: line one\ndata: line two\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
}

// Subscribe and read events from a channel. The Stream reconnects on its own
// and resumes with Last-Event-ID.
func ExampleNewStream() {
	srv := newDemoServer()
	defer srv.Close()
	ctx := context.Background() // your service's context

	s, err := client.NewStream(ctx, srv.URL+"/events?stream=prices",
		client.WithReadTimeout(45*time.Second), // three missed sser heartbeats
		client.WithBackoff(time.Second, 30*time.Second, 0.5),
	)
	if err != nil {
		panic(err)
	}
	defer s.Close()
	for range 2 {
		ev := <-s.Events()
		fmt.Printf("%s %q (id %s)\n", ev.Type, ev.Data, ev.ID)
	}
	// Output:
	// tick "101.5" (id k7f2q9xa:1)
	// message "line one\nline two" (id k7f2q9xa:2)
}

// Handle events with a function instead of a channel; return an error to
// stop.
func ExampleWithHandler() {
	srv := newDemoServer()
	defer srv.Close()
	errEnough := errors.New("enough")

	n := 0
	s, err := client.NewStream(context.Background(), srv.URL+"/events?stream=prices",
		client.WithHandler(func(ctx context.Context, ev client.Event) error {
			n++
			fmt.Println(n, ev.Data)
			if n == 2 {
				return errEnough
			}
			return nil
		}))
	if err != nil {
		panic(err)
	}
	<-s.Done()
	// The event whose handler failed does not count as delivered: resuming
	// from LastEventID would deliver it again.
	fmt.Println(errors.Is(s.Err(), errEnough), s.LastEventID())
	// Output:
	// 1 101.5
	// 2 line one
	// line two
	// true k7f2q9xa:1
}

// Decide which errors end the stream. Here a 401 stops it; everything else
// is retried.
func ExampleWithErrorHandler() {
	srv := newDemoServer()
	defer srv.Close()

	s, err := client.NewStream(context.Background(), srv.URL+"/events?stream=secret",
		client.WithErrorHandler(func(ctx context.Context, err error) bool {
			var se *client.StatusError
			if errors.As(err, &se) && se.Code == http.StatusUnauthorized {
				return false
			}
			return true
		}))
	if err != nil {
		panic(err)
	}
	<-s.Done()
	fmt.Println(s.Err())
	// Output:
	// sser/client: server answered 401 Unauthorized: missing token
}

// A long-running consumer registers a Listener per stream and runs the Mux
// until its context ends.
func ExampleMux() {
	srv := newDemoServer()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())

	m, err := client.NewMux(srv.URL+"/events", client.WithReadTimeout(45*time.Second))
	if err != nil {
		panic(err)
	}
	got := make(chan string)
	_ = m.Handle("prices", client.ListenerFuncs{
		Event: func(ctx context.Context, stream string, ev client.Event) {
			select {
			case got <- stream + " " + ev.Type + " " + ev.Data:
			case <-ctx.Done():
			}
		},
		Error: func(ctx context.Context, stream string, err error) bool {
			return true // keep reconnecting; log err in a real service
		},
	})
	done := make(chan error)
	go func() { done <- m.Start(ctx) }()
	fmt.Println(<-got)
	cancel()
	fmt.Println(<-done)
	// Output:
	// prices tick 101.5
	// <nil>
}

// Parse a recorded event stream.
func ExampleParser() {
	in := "\uFEFF: comment\r\nid: 7\r\nevent: add\r\ndata: a\r\ndata: b\r\n\r\ndata: no blank line, never dispatched"
	p := client.NewParser(strings.NewReader(in), client.ParserConfig{})
	for {
		ev, err := p.Next()
		if err != nil {
			fmt.Println(err, p.LastEventID())
			return
		}
		fmt.Printf("%+v\n", ev)
	}
	// Output:
	// {ID:7 Type:add Data:a
	// b Stream:}
	// EOF 7
}
