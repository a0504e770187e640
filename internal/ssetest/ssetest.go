package ssetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Event is one dispatched SSE event.
type Event struct {
	ID     string // the last event ID after this event
	Event  string // type; "message" when none was given
	Data   string
	Stream string // the stream field, sent for subscriptions of several streams
}

// Sub is one SSE connection.
type Sub struct {
	Resp   *http.Response
	Events chan Event

	mu       sync.Mutex
	lastID   string
	comments int
	err      error
	done     chan struct{}
	cancel   context.CancelFunc
}

// Dial subscribes to url (with Last-Event-ID lastID when not empty) and
// fails the test unless the answer is 200 text/event-stream.
func Dial(t testing.TB, url, lastID string) *Sub {
	t.Helper()
	s, err := Connect(t.Context(), url, lastID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Connect is Dial without a test: it returns an error instead.
func Connect(ctx context.Context, url, lastID string) (*Sub, error) {
	return ConnectHeaders(ctx, url, lastID, nil)
}

// ConnectHeaders is Connect with extra request headers.
func ConnectHeaders(ctx context.Context, url, lastID string, hdr map[string]string) (*Sub, error) {
	return ConnectClient(ctx, http.DefaultClient, url, lastID, hdr)
}

// ConnectClient is ConnectHeaders through client (one that trusts a test
// server's certificate, say).
func ConnectClient(ctx context.Context, client *http.Client, url, lastID string, hdr map[string]string) (*Sub, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("ssetest: GET %s: %s (%s)", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &Sub{Resp: resp, Events: make(chan Event, 1<<16), done: make(chan struct{}), cancel: cancel, lastID: lastID}
	go s.read()
	return s, nil
}

func (s *Sub) read() {
	defer close(s.done)
	defer close(s.Events)
	defer s.Resp.Body.Close()
	br := bufio.NewReaderSize(s.Resp.Body, 64<<10)
	var data []string
	var typ, stream string
	hasData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if hasData {
				s.mu.Lock()
				id := s.lastID
				s.mu.Unlock()
				if typ == "" {
					typ = "message"
				}
				s.Events <- Event{ID: id, Event: typ, Data: strings.Join(data, "\n"), Stream: stream}
			}
			data, typ, stream, hasData = nil, "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			s.mu.Lock()
			s.comments++
			s.mu.Unlock()
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data = append(data, value)
			hasData = true
		case "event":
			typ = value
		case "stream":
			stream = value
		case "id":
			s.mu.Lock()
			s.lastID = value
			s.mu.Unlock()
		}
	}
}

// LastID is the last event ID seen (set by id-only frames too, as in a browser).
func (s *Sub) LastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Comments counts the comment lines (heartbeats) seen.
func (s *Sub) Comments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.comments
}

// Err is why the connection ended: io.EOF when the server ended the
// stream cleanly (the terminating chunk of a chunked body), nil while it
// has not ended.
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the connection has ended.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Close ends the connection and waits for the reader.
func (s *Sub) Close() {
	s.cancel()
	<-s.done
}

// Next returns the next event, or fails the test after timeout.
func (s *Sub) Next(t testing.TB, timeout time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events:
		if !ok {
			t.Fatalf("ssetest: connection ended while waiting for an event")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("ssetest: no event within %s", timeout)
	}
	return Event{}
}

// Collect reads events until n have arrived or timeout passes.
func (s *Sub) Collect(n int, timeout time.Duration) []Event {
	var out []Event
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-deadline.C:
			return out
		}
	}
	return out
}

// WaitID polls until the subscriber has seen an id (the connect preamble),
// which means it is registered on the server.
func (s *Sub) WaitID(t testing.TB, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.LastID() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("ssetest: no id within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s.LastID()
}
