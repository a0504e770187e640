package client

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

type recordingListener struct {
	events chan string
	errs   chan error
	goOn   func(n int) bool

	mu sync.Mutex
	n  int
}

func newRecordingListener(goOn func(n int) bool) *recordingListener {
	return &recordingListener{events: make(chan string, 100), errs: make(chan error, 100), goOn: goOn}
}

func (l *recordingListener) OnEvent(_ context.Context, stream string, ev Event) {
	l.events <- stream + ":" + ev.Type + ":" + ev.Data
}

func (l *recordingListener) OnError(_ context.Context, _ string, err error) bool {
	l.mu.Lock()
	l.n++
	n := l.n
	l.mu.Unlock()
	l.errs <- err
	return l.goOn(n)
}

func TestMux(t *testing.T) {
	fs := newFakeServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("stream") {
		case "prices":
			// Drops after each event; the listener keeps going.
			sse(w, "id: "+r.Header.Get("Last-Event-ID")+"p\nevent: tick\ndata: 1\n\n")
		case "broken":
			w.WriteHeader(http.StatusForbidden)
		case "late":
			sse(w, "data: hello\n\n")
			<-r.Context().Done()
		}
	})
	m, err := NewMux(fs.URL+"/events", fast())
	if err != nil {
		t.Fatal(err)
	}
	prices := newRecordingListener(func(int) bool { return true })
	broken := newRecordingListener(func(n int) bool { return n < 3 }) // a 403 three times, then give up
	if err := m.Handle("prices", prices); err != nil {
		t.Fatal(err)
	}
	if err := m.Handle("broken", broken); err != nil {
		t.Fatal(err)
	}
	if err := m.Handle("prices", prices); !errors.Is(err, ErrDuplicateStream) {
		t.Fatalf("duplicate Handle: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan error, 1)
	go func() { started <- m.Start(ctx) }()

	for range 3 {
		if got := recv(t, prices.events); got != "prices:tick:1" {
			t.Fatalf("prices got %q", got)
		}
		if err := recv(t, prices.errs); !errors.Is(err, ErrStreamEnded) {
			t.Fatalf("prices error %v", err)
		}
	}
	for range 3 {
		var se *StatusError
		if err := recv(t, broken.errs); !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Fatalf("broken error %v", err)
		}
	}
	late := newRecordingListener(func(int) bool { return true })
	if err := m.Handle("late", late); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, late.events); got != "late:message:hello" {
		t.Fatalf("late got %q", got)
	}
	if id := m.LastEventID("prices"); id == "" {
		t.Fatal("no resume point for prices")
	}
	if err := m.Start(ctx); !errors.Is(err, ErrMuxStarted) {
		t.Fatalf("second Start: %v", err)
	}
	m.Remove("late")
	m.Remove("unknown")
	cancel()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Start did not return")
	}
	select {
	case err := <-broken.errs:
		t.Fatalf("broken listener called after it said stop: %v", err)
	default:
	}
}
