package wsclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
	"github.com/sser-dev/sser/pkg/wsclient"
)

// Subscribe to two streams on one WebSocket, then change them while
// connected. The client reconnects and resumes by itself.
func ExampleDial() {
	ctx, cancel := context.WithCancel(context.Background()) // your service's context
	defer cancel()

	// A lone sser replica, as `go run ./cmd/sser` runs one.
	pf, _ := peerfinder.NewPeerFinderStatic([]string{"127.0.0.1"})
	srv, _ := sser.NewWithOptions(sser.Options{PeerFinder: pf, InternalAddr: "127.0.0.1:0"})
	_ = srv.Start(ctx)
	front := httptest.NewServer(srv.ClientConnectionHandler(ctx))
	defer front.Close()

	subscribed := make(chan struct{}, 1)
	c, err := wsclient.Dial(ctx, front.URL+"/events", []string{"prices", "news"},
		wsclient.Options{OnConnect: func(string) { subscribed <- struct{}{} }})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	<-subscribed

	_ = srv.Publish(ctx, sser.Event{Stream: "prices", Event: "tick", Msg: `{"px":12.5}`})
	ev := <-c.Events()
	fmt.Println(ev.Stream, ev.Type, ev.Data)

	// One connection, new streams: no reconnect, nothing missed.
	_ = c.Unsubscribe(ctx, "news")
	_ = c.Subscribe(ctx, "alerts")
	_ = srv.Publish(ctx, sser.Event{Stream: "news", Msg: "not wanted"}, sser.Event{Stream: "alerts", Msg: "wanted"})
	ev = <-c.Events()
	fmt.Println(ev.Stream, ev.Data, c.Streams())
	// Output:
	// prices tick {"px":12.5}
	// alerts wanted [alerts prices]
}
