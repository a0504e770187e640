package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	r3sse "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"

	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
)

// benchStream is the one stream every subscriber reads and every event goes to.
const benchStream = "bench"

// historySize is what each engine keeps for resuming clients, where it has a
// bound: sser's default, and the same count for go-sse's FiniteReplayer.
const historySize = 1000

// engine is one SSE server library behind the same two calls: an HTTP
// handler serving GET /events?stream=bench and a publish of one message.
type engine interface {
	handler() http.Handler
	publish(ctx context.Context, msg string) error
	close(ctx context.Context)
}

// sser-nohijack is sser with DisableHijack: every connection keeps its
// handler's goroutine (and a WebSocket a reader goroutine of its own).
var engineNames = []string{"sser", "sser-nohijack", "r3labs", "gosse", "floor"}

func newEngine(ctx context.Context, name string, sserQueue int, compression string) (engine, error) {
	switch name {
	case "sser", "sser-nohijack":
		return newSserEngine(ctx, sserQueue, name == "sser-nohijack", compression)
	case "r3labs":
		return newR3Engine(), nil
	case "gosse":
		return newGoSSEEngine()
	case "floor":
		return newFloorEngine(), nil
	}
	return nil, fmt.Errorf("unknown engine %q (want one of %v)", name, engineNames)
}

// sserEngine is this repository's library as an application embeds it: a
// lone replica (static peer set of itself), its handler mounted on the
// application's server, Send to publish.
type sserEngine struct {
	s      *sser.ServerImpl
	h      http.Handler
	reg    *prometheus.Registry
	cancel context.CancelFunc
}

func newSserEngine(ctx context.Context, queue int, noHijack bool, compression string) (*sserEngine, error) {
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	if err != nil {
		return nil, fmt.Errorf("static peer finder: %w", err)
	}
	reg := prometheus.NewRegistry()
	s, err := sser.NewWithOptions(sser.Options{
		Registry:        reg,
		InternalAddr:    "127.0.0.1:0",
		PeerFinder:      pf,
		SubscriberQueue: queue,
		DisableHijack:   noHijack,
		Compression:     compression,
	})
	if err != nil {
		return nil, fmt.Errorf("new sser server: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := s.Start(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("start sser server: %w", err)
	}
	return &sserEngine{s: s, h: s.ClientConnectionHandler(ctx), reg: reg, cancel: cancel}, nil
}

func (e *sserEngine) handler() http.Handler { return e.h }

// latencyBuckets reads the server's own sser_delivery_latency_seconds:
// the cumulative count at each upper bound, in seconds.
func (e *sserEngine) latencyBuckets() ([]bucket, error) {
	families, err := e.reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, f := range families {
		if f.GetName() != "sser_delivery_latency_seconds" || len(f.GetMetric()) != 1 {
			continue
		}
		var out []bucket
		for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
			out = append(out, bucket{UpperBound: b.GetUpperBound(), Count: b.GetCumulativeCount()})
		}
		return out, nil
	}
	return nil, errors.New("no sser_delivery_latency_seconds")
}

// otherOrigins makes the replica hear of n other publishers, as a peer
// delivery of one event each (seq 1) would: each on its own stream (on
// "own") or all on the subscribers' stream (on "bench"). Origin names are
// 12 characters, like those replicas draw.
func (e *sserEngine) otherOrigins(n int, on string) error {
	if on != "own" && on != benchStream {
		return fmt.Errorf("--origins-on %q: want own or %s", on, benchStream)
	}
	events := make([]sser.Event, n)
	for i := range events {
		stream := benchStream
		if on == "own" {
			stream = fmt.Sprintf("own%d", i)
		}
		events[i] = sser.Event{Stream: stream, Msg: "0 0 earlier", Origin: fmt.Sprintf("p%011d", i), Seq: 1}
	}
	return e.s.Deliver(events...)
}

func (e *sserEngine) publish(ctx context.Context, msg string) error {
	return e.s.Send(ctx, benchStream, msg)
}

func (e *sserEngine) close(ctx context.Context) {
	e.cancel()
	select {
	case <-e.s.Done():
	case <-ctx.Done():
	}
}

// r3Engine is github.com/r3labs/sse/v2 with its defaults (sse.New), the
// engine the original sser was built on. Its default AutoReplay keeps every
// event of the stream for replay, with no bound.
type r3Engine struct {
	s *r3sse.Server
}

func newR3Engine() *r3Engine {
	s := r3sse.New()
	s.CreateStream(benchStream)
	return &r3Engine{s: s}
}

func (e *r3Engine) handler() http.Handler { return e.s }

func (e *r3Engine) publish(_ context.Context, msg string) error {
	e.s.Publish(benchStream, &r3sse.Event{Data: []byte(msg)})
	return nil
}

func (e *r3Engine) close(context.Context) { e.s.Close() }

// goSSEEngine is github.com/tmaxmax/go-sse's Server with its default
// provider (Joe) and a FiniteReplayer of historySize events with automatic
// ids, so that it, like sser, writes an id on every event and keeps a
// bounded history. Subscribers choose their topic with ?stream=.
type goSSEEngine struct {
	s *gosse.Server
}

func newGoSSEEngine() (*goSSEEngine, error) {
	replayer, err := gosse.NewFiniteReplayer(historySize, true)
	if err != nil {
		return nil, fmt.Errorf("go-sse replayer: %w", err)
	}
	s := &gosse.Server{
		Provider: &gosse.Joe{Replayer: replayer},
		OnSession: func(w http.ResponseWriter, r *http.Request) ([]string, bool) {
			topic := r.URL.Query().Get("stream")
			if topic == "" {
				http.Error(w, "stream is required", http.StatusBadRequest)
				return nil, false
			}
			return []string{topic}, true
		},
	}
	return &goSSEEngine{s: s}, nil
}

func (e *goSSEEngine) handler() http.Handler { return e.s }

func (e *goSSEEngine) publish(_ context.Context, msg string) error {
	m := &gosse.Message{}
	m.AppendData(msg)
	return e.s.Publish(m, benchStream)
}

func (e *goSSEEngine) close(ctx context.Context) { _ = e.s.Shutdown(ctx) }
