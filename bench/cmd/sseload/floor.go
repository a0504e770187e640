package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
)

// floorEngine is the least an SSE server can do with net/http: each event
// is encoded once ("data: ...\n\n", no id, no history), appended to every
// subscriber's queue under one lock, and each subscriber's handler writes
// what is queued with one write and one flush per wake-up. It is the floor
// the other engines are measured against.
type floorEngine struct {
	mu   sync.Mutex
	subs map[*floorSub]struct{}
	done chan struct{}
	once sync.Once
}

type floorSub struct {
	mu    sync.Mutex
	queue []byte
	wake  chan struct{}
}

func newFloorEngine() *floorEngine {
	return &floorEngine{subs: make(map[*floorSub]struct{}), done: make(chan struct{})}
}

func (e *floorEngine) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stream") != benchStream {
			http.Error(w, "stream is required", http.StatusBadRequest)
			return
		}
		f, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", http.StatusInternalServerError)
			return
		}
		sub := &floorSub{wake: make(chan struct{}, 1)}
		e.mu.Lock()
		e.subs[sub] = struct{}{}
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			delete(e.subs, sub)
			e.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		f.Flush()
		var buf []byte
		for {
			select {
			case <-sub.wake:
				sub.mu.Lock()
				buf, sub.queue = sub.queue, buf[:0]
				sub.mu.Unlock()
				if _, err := w.Write(buf); err != nil {
					return
				}
				f.Flush()
			case <-r.Context().Done():
				return
			case <-e.done:
				return
			}
		}
	})
}

func (e *floorEngine) publish(_ context.Context, msg string) error {
	frame := "data: " + strings.ReplaceAll(msg, "\n", "\ndata: ") + "\n\n"
	e.mu.Lock()
	for sub := range e.subs {
		sub.mu.Lock()
		sub.queue = append(sub.queue, frame...)
		sub.mu.Unlock()
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
	e.mu.Unlock()
	return nil
}

func (e *floorEngine) close(context.Context) { e.once.Do(func() { close(e.done) }) }
