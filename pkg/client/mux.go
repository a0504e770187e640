package client

import (
	"context"
	"fmt"
	"net/url"
	"sync"
)

// Listener receives the events and errors of one sser stream registered on
// a Mux. Its methods are called on that stream's goroutine, one at a time
// and in order; different streams call their listeners concurrently.
type Listener interface {
	// OnEvent is called for every event of the stream.
	OnEvent(ctx context.Context, stream string, ev Event)
	// OnError is called with every error that ends a connection or a
	// connection attempt. Return true to reconnect (after the backoff) and
	// false to stop listening to this stream.
	OnError(ctx context.Context, stream string, err error) bool
}

// ListenerFuncs adapts two functions to a Listener. A nil Error keeps
// reconnecting on every error.
type ListenerFuncs struct {
	Event func(ctx context.Context, stream string, ev Event)
	Error func(ctx context.Context, stream string, err error) bool
}

// OnEvent calls f.Event.
func (f ListenerFuncs) OnEvent(ctx context.Context, stream string, ev Event) {
	if f.Event != nil {
		f.Event(ctx, stream, ev)
	}
}

// OnError calls f.Error, or returns true when it is nil.
func (f ListenerFuncs) OnError(ctx context.Context, stream string, err error) bool {
	if f.Error == nil {
		return true
	}
	return f.Error(ctx, stream, err)
}

// Mux subscribes to several streams of one sser service, each with its own
// Listener. sser frames carry the event type and data but not the stream
// name, so a connection that subscribes to several streams cannot tell
// them apart: Mux keeps one Stream, and so one connection, per stream name.
// (To read several streams as one, use a single Stream on a URL with
// several stream parameters.)
//
// Each Stream reconnects forever with backoff, resuming with Last-Event-ID;
// only its Listener stops it, by returning false from OnError, and a 204
// answer, which per the SSE spec means stop.
type Mux struct {
	base *url.URL
	opts []Option

	mu        sync.Mutex
	listeners map[string]Listener
	streams   map[string]*Stream
	ctx       context.Context // set by Start
}

// NewMux returns a Mux for the sser events endpoint eventsURL, such as
// http://sser:8000/events; each stream adds its stream query parameter to
// it. opts apply to every Stream; Mux sets the handler and error handler.
func NewMux(eventsURL string, opts ...Option) (*Mux, error) {
	u, err := url.Parse(eventsURL)
	if err != nil {
		return nil, fmt.Errorf("%w: url: %w", ErrInvalidOption, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: url %q: scheme must be http or https", ErrInvalidOption, eventsURL)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Mux{base: u, opts: opts, listeners: map[string]Listener{}, streams: map[string]*Stream{}}, nil
}

// Handle registers l for stream. After Start it subscribes at once.
func (m *Mux) Handle(stream string, l Listener) error {
	if stream == "" {
		return fmt.Errorf("%w: empty stream name", ErrInvalidOption)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.listeners[stream]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateStream, stream)
	}
	m.listeners[stream] = l
	if m.ctx != nil {
		return m.startLocked(stream, l)
	}
	return nil
}

// Remove unsubscribes from stream and waits until its Listener is no longer
// called. It is a no-op for a stream with no listener.
func (m *Mux) Remove(stream string) {
	m.mu.Lock()
	s := m.streams[stream]
	delete(m.streams, stream)
	delete(m.listeners, stream)
	m.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}

// LastEventID is the resume point of stream's subscription ("" when it has
// none yet or is not registered).
func (m *Mux) LastEventID(stream string) string {
	m.mu.Lock()
	s := m.streams[stream]
	m.mu.Unlock()
	if s == nil {
		return ""
	}
	return s.LastEventID()
}

// Start subscribes to every registered stream and blocks until ctx ends,
// then closes them all and returns nil once no Listener is being called.
// Streams whose Listener stopped them stay stopped.
func (m *Mux) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.ctx != nil {
		m.mu.Unlock()
		return ErrMuxStarted
	}
	m.ctx = ctx
	for name, l := range m.listeners {
		if err := m.startLocked(name, l); err != nil {
			m.mu.Unlock()
			m.closeAll()
			return err
		}
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.closeAll()
	return nil
}

func (m *Mux) closeAll() {
	m.mu.Lock()
	streams := make([]*Stream, 0, len(m.streams))
	for _, s := range m.streams {
		streams = append(streams, s)
	}
	m.mu.Unlock()
	for _, s := range streams {
		_ = s.Close()
	}
}

func (m *Mux) startLocked(name string, l Listener) error {
	u := *m.base
	q := u.Query()
	q.Add("stream", name)
	u.RawQuery = q.Encode()
	opts := append(append([]Option(nil), m.opts...),
		WithHandler(func(ctx context.Context, ev Event) error {
			l.OnEvent(ctx, name, ev)
			return nil
		}),
		WithErrorHandler(func(ctx context.Context, err error) bool {
			return l.OnError(ctx, name, err)
		}),
	)
	s, err := NewStream(m.ctx, u.String(), opts...)
	if err != nil {
		return err
	}
	m.streams[name] = s
	return nil
}
