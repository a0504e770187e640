package interop

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	ld "github.com/launchdarkly/eventsource"
	r3 "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
)

// dispatched is one event as a foreign client handed it to its
// application.
type dispatched struct{ id, data string }

// foreignClient subscribes to url and sends every event it dispatches on
// out, until ctx ends.
type foreignClient struct {
	name      string
	subscribe func(ctx context.Context, t *testing.T, url string, out chan<- dispatched)
	// emptyOnConnect: the client dispatches the frames without data of
	// sser's connect preamble (retry, id-only) as events with empty data;
	// the SSE spec says to dispatch nothing.
	emptyOnConnect bool
}

var clients = []foreignClient{
	{
		name:           "launchdarkly/eventsource",
		emptyOnConnect: true,
		subscribe: func(ctx context.Context, t *testing.T, url string, out chan<- dispatched) {
			s, err := ld.SubscribeWithURL(url, ld.StreamOptionReadTimeout(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer s.Close()
				for {
					select {
					case ev := <-s.Events:
						out <- dispatched{ev.Id(), ev.Data()}
					case <-ctx.Done():
						return
					}
				}
			}()
		},
	},
	{
		name:           "r3labs/sse",
		emptyOnConnect: true,
		subscribe: func(ctx context.Context, t *testing.T, url string, out chan<- dispatched) {
			c := r3.NewClient(url)
			go func() {
				_ = c.SubscribeRawWithContext(ctx, func(ev *r3.Event) {
					out <- dispatched{string(ev.ID), string(ev.Data)}
				})
			}()
		},
	},
	{
		name:           "tmaxmax/go-sse",
		emptyOnConnect: true,
		subscribe: func(ctx context.Context, t *testing.T, url string, out chan<- dispatched) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			conn := gosse.NewConnection(req)
			conn.SubscribeToAll(func(ev gosse.Event) { out <- dispatched{ev.LastEventID, ev.Data} })
			go func() { _ = conn.Connect() }()
		},
	},
}

// startServer runs one sser replica in process: frontend on an httptest
// server, internal port on loopback.
func startServer(t *testing.T) (front string, metrics string, srv *sser.ServerImpl) {
	t.Helper()
	pf, err := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sser.NewWithOptions(sser.Options{PeerFinder: pf, InternalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.ClientConnectionHandler(ctx))
	t.Cleanup(func() {
		cancel()
		ts.CloseClientConnections()
		ts.Close()
		<-s.Done()
	})
	return ts.URL, "http://" + s.InternalAddr() + "/metrics", s
}

// Each client, subscribed with and without the connect preamble, to one
// stream and to two (frames with a stream field): the first event it hands
// its application. Without the preamble every client gets the published
// event first; with it, the clients marked emptyOnConnect first report
// empty events (README, "Other SSE clients"). The stream field changes
// nothing for them.
func TestConnectPreamble(t *testing.T) {
	front, metrics, srv := startServer(t)
	for _, c := range clients {
		for _, query := range []string{"", "&preamble=0", "&stream=other", "&stream=other&preamble=0"} {
			t.Run(c.name+query, func(t *testing.T) {
				stream := strings.NewReplacer("/", "-", "&", "", "=", "").Replace(c.name + query)
				noPreamble := strings.Contains(query, "preamble=0")
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				before := connections(t, metrics)
				out := make(chan dispatched, 16)
				c.subscribe(ctx, t, front+"/?stream="+stream+query, out)
				testproc.Eventually(t, 10*time.Second, c.name+" to connect", func() bool { return connections(t, metrics) > before })
				if err := srv.Send(ctx, stream, "hello"); err != nil {
					t.Fatal(err)
				}
				var first dispatched
				select {
				case first = <-out:
				case <-time.After(10 * time.Second): // a bound on a failure, not a wait for an outcome
					t.Fatal("no event dispatched within 10s")
				}
				wantEmpty := c.emptyOnConnect && !noPreamble
				switch {
				case wantEmpty && first.data != "":
					t.Errorf("first event %+v; this client was documented to dispatch the preamble as empty events: update the README", first)
				case !wantEmpty && first.data != "hello":
					t.Errorf("first event %+v, want the published one (\"hello\")", first)
				}
				if wantEmpty {
					testproc.Eventually(t, 10*time.Second, "the published event after the empty ones", func() bool {
						select {
						case ev := <-out:
							return ev.data == "hello"
						default:
							return false
						}
					})
				}
			})
		}
	}
}

func connections(t *testing.T, metrics string) float64 {
	v, _, err := testproc.Metric(metrics, "sser_connections")
	if err != nil {
		t.Fatal(err)
	}
	return v
}
