package wsclient_test

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/sser"
	"github.com/sser-dev/sser/pkg/wsclient"
)

// Close stops a client in every state (connected, blocked handing over an
// event, waiting out a backoff, waiting for streams) and leaves nothing of
// it running.
func TestNoGoroutineLeftAfterClose(t *testing.T) {
	s, u := server(t, sser.Options{})

	var conns atomic.Int64
	onConnect := func(string) { conns.Add(1) }
	connectedC := dial(t, u, []string{"a"}, wsclient.Options{OnConnect: onConnect})
	blocked := dial(t, u, []string{"a"}, wsclient.Options{BufferSize: 1, OnConnect: onConnect})
	backoff := dial(t, "ws://127.0.0.1:1/events", []string{"a"}, wsclient.Options{InitialDelay: time.Hour, MaxDelay: time.Hour})
	idle := dial(t, u, nil, wsclient.Options{})
	connected(t, &conns, 2)
	for range 3 {
		publish(t, s, sser.Event{Stream: "a", Msg: "x"})
	}
	next(t, connectedC)
	for _, c := range []*wsclient.Client{connectedC, blocked, backoff, idle} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if c.Err() != wsclient.ErrClosed {
			t.Errorf("Err() = %v, want ErrClosed", c.Err())
		}
	}
	// The server's goroutines stay; the clients' must be gone.
	testproc.Eventually(t, 5*time.Second, "the clients' goroutines to end", func() bool { return clientGoroutines() == "" }, clientGoroutines)
}

// clientGoroutines are the stacks of goroutines running this package's code.
func clientGoroutines() string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "sser/pkg/wsclient.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
