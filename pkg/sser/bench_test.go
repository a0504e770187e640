package sser

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// benchPayload is a 64-byte message, the size bench/cmd/sseload uses too.
var benchPayload = strings.Repeat("x", 64)

// benchID is a realistic position-vector id: three origins, as with a
// three-replica deployment that all publish.
var benchID = position{
	{origin: "a1b2c3d4e5f6", seq: 1234567},
	{origin: "k7f2q9xa0zz1", seq: 42},
	{origin: "zz0011223344", seq: 99999},
}.String()

func BenchmarkAppendFrame(b *testing.B) {
	cases := []struct {
		name string
		ev   Event
		id   string
	}{
		{name: "single-line", ev: Event{Stream: "s", Msg: benchPayload}, id: benchID},
		{name: "typed", ev: Event{Stream: "s", Msg: benchPayload, Event: "tick"}, id: benchID},
		{name: "multi-line", ev: Event{Stream: "s", Msg: strings.Repeat(benchPayload[:15]+"\n", 4)}, id: benchID},
		{name: "no-id", ev: Event{Stream: "s", Msg: benchPayload}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = appendFrame(buf[:0], tc.id, &tc.ev)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkHubFanout measures the delivery path with no network: events are
// applied to the hub (stamping the position, encoding the frame once,
// keeping history, queueing it to every subscriber) and one consumer
// goroutine per subscriber takes its queue, as the SSE writer does, and
// counts frames. The clock stops when every subscriber has every event.
func BenchmarkHubFanout(b *testing.B) { benchHubFanout(b, false) }

// BenchmarkHubFanoutWebSocket is BenchmarkHubFanout with WebSocket
// subscribers: each event is also encoded as a WebSocket message, once.
func BenchmarkHubFanoutWebSocket(b *testing.B) { benchHubFanout(b, true) }

func benchHubFanout(b *testing.B, ws bool) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			h := newHub(logr.Discard(), newMetrics(nil), DefaultHistorySize, DefaultHistoryAge)
			// Queues deep enough that no consumer is disconnected for
			// falling behind: this measures throughput, not the overflow policy.
			maxQueue := b.N + 16
			var (
				got  atomic.Int64
				wg   sync.WaitGroup
				stop = make(chan struct{})
				all  = make(chan struct{}) // closed when every frame is in
			)
			want := int64(b.N) * int64(subs)
			subscribers := make([]*subscriber, subs)
			for i := range subscribers {
				sub := newSubscriber([]string{"bench"}, maxQueue)
				if ws {
					sub.ws = &wsConn{}
				}
				if _, ok := h.subscribe(sub, nil, false, 3000); !ok {
					b.Fatal("hub refused a subscriber")
				}
				// Throw away the connect preamble (retry and id frames).
				sub.recycle(sub.takeBatch())
				select {
				case <-sub.wake:
				default:
				}
				subscribers[i] = sub
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-sub.wake:
							b := sub.takeBatch()
							if n := len(b.frames); n > 0 && got.Add(int64(n)) == want {
								close(all)
							}
							sub.recycle(b)
						case <-stop:
							return
						}
					}
				}()
			}
			origin := "benchorigin1"
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			ev := make([]Event, 1)
			for i := range b.N {
				ev[0] = Event{Stream: "bench", Msg: benchPayload, Origin: origin, Seq: uint64(i + 1)}
				h.apply(ev, "local")
			}
			select {
			case <-all:
			case <-time.After(time.Minute):
				b.Fatalf("delivered %d of %d frames within a minute", got.Load(), want)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			wg.Wait()
			if n := h.subscriberCount(); n != subs {
				b.Fatalf("%d of %d subscribers left: some overflowed", n, subs)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
			h.shutdown()
		})
	}
}

func BenchmarkDecodeEvents(b *testing.B) {
	one, err := json.Marshal(Event{Stream: "prices", Msg: benchPayload, Event: "tick", Origin: "k7f2q9xa0zz1", Seq: 1042})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]Event, 100)
	for i := range batch {
		batch[i] = Event{Stream: "prices", Msg: benchPayload, Origin: "k7f2q9xa0zz1", Seq: uint64(i + 1)}
	}
	many, err := json.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name   string
		body   []byte
		events int
	}{
		{name: "one", body: one, events: 1},
		{name: "batch=100", body: many, events: 100},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				evs, err := decodeEvents(tc.body, 0)
				if err != nil || len(evs) != tc.events {
					b.Fatalf("decoded %d events, err %v", len(evs), err)
				}
			}
			b.ReportMetric(float64(b.N*tc.events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkObserveDelivery is what the delivery latency costs a writer:
// one clock read and one histogram update per write (not per event).
func BenchmarkObserveDelivery(b *testing.B) {
	m := newMetrics(nil)
	born := time.Now().UnixMicro()
	b.ReportAllocs()
	for b.Loop() {
		m.observeDelivery(born)
	}
}

// BenchmarkGzipEncode is a compressed connection's cost per frame written:
// "shared", in step with its stream (the event's deflate is made once and
// reused, as every subscriber after the first does), and "alone", each
// frame deflated for the connection (what a connection out of step, or a
// subscriber of several streams, pays).
func BenchmarkGzipEncode(b *testing.B) {
	const n = 256
	ents := make([]*histEntry, n)
	var prev []byte
	for i := range ents {
		ev := Event{Stream: "s", Msg: fmt.Sprintf(`%d 1767225600%09d {"type":"tick","sym":"ACME","px":%d.%02d,"bid":12.50,"ask":12.52,"vol":%d,"venue":"XNAS","cur":"USD","lot":100,"seq":%d}`, i, i*7919, 100+i%7, i%100, 1000+i*37, i)}
		frame := encodeFrame(benchID, &ev)
		ents[i] = &histEntry{frame: frame, gz: &gzShared{prev: prev}}
		prev = frame
	}
	for _, e := range ents {
		e.gz.bytes(e.frame) // made once, by the first subscriber
	}
	for _, mode := range []string{"shared", "alone"} {
		b.Run(mode, func(b *testing.B) {
			z := &gzStream{}
			buf := make([]byte, 0, 64<<10)
			raw, out := 0, 0
			i := 0
			for b.Loop() {
				e := ents[i%n]
				if i%n == 0 {
					z.last = nil // the chain starts again
				}
				f := e.frame
				if mode == "alone" {
					f = append([]byte(nil), f...)
				}
				buf = z.encode(buf[:0], [][]byte{f}, []*histEntry{e})
				if mode == "alone" {
					z.last = e.frame // in step with nothing shared, but the same dictionary
				}
				raw += len(f)
				out += len(buf)
				i++
			}
			b.ReportMetric(float64(raw)/float64(i), "frame-B")
			b.ReportMetric(float64(out)/float64(i), "wire-B")
		})
	}
}
