package lossless

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/ssetest"
)

// On SIGTERM a replica fails /readyz at once, closes its subscribers
// at random moments spread over the drain window (not all at once, not all
// early), and exits 0 before the window plus the shutdown timeout.
func TestDrainSpreadsDisconnects(t *testing.T) {
	skipShort(t)
	const (
		subs     = 40
		window   = 3 * time.Second
		shutdown = 2 * time.Second
	)
	c := newCluster(t, 1, "--drain-window="+window.String(), "--shutdown-timeout="+shutdown.String())
	c.startAll()
	r := c.rep(0)

	var mu sync.Mutex
	var ends []time.Time
	var wg sync.WaitGroup
	for i := range subs {
		s, err := ssetest.Connect(t.Context(), c.eventsURL(0), "")
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		t.Cleanup(s.Close)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-s.Done():
				mu.Lock()
				ends = append(ends, time.Now())
				mu.Unlock()
			case <-t.Context().Done():
			}
		}()
	}
	waitFor(t, deadline, "40 connections", func() bool { return c.metric(0, "sser_connections") == subs })

	// Readiness is watched from before the signal to the exit: once it
	// fails it must never answer 200 again.
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	var firstFail time.Time
	var readyAgain []string
	watchCtx, stopWatch := context.WithCancel(t.Context())
	watched := make(chan struct{})
	start := time.Now()
	if err := r.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			req, _ := http.NewRequestWithContext(watchCtx, http.MethodGet, c.internalURL(0)+"/readyz", nil)
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				now := time.Now()
				mu.Lock()
				switch {
				case resp.StatusCode == http.StatusServiceUnavailable && firstFail.IsZero():
					firstFail = now
				case resp.StatusCode == http.StatusOK && !firstFail.IsZero():
					readyAgain = append(readyAgain, now.Sub(start).String())
				case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable:
					readyAgain = append(readyAgain, resp.Status)
				}
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}()

	ctx, cancel := context.WithTimeout(t.Context(), window+shutdown+10*time.Second)
	defer cancel()
	err := r.Wait(ctx)
	exited := time.Since(start)
	stopWatch()
	<-watched
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0", err)
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if firstFail.IsZero() {
		t.Error("/readyz never answered 503 during the drain")
	} else if d := firstFail.Sub(start); d > time.Second {
		t.Errorf("/readyz failed %s after SIGTERM, want at once", d)
	}
	if len(readyAgain) > 0 {
		t.Errorf("/readyz answered other than 503 after it first failed: %v", readyAgain)
	}
	if exited >= window+shutdown {
		t.Errorf("exited %s after SIGTERM, want before window+shutdown timeout = %s", exited, window+shutdown)
	}
	if len(ends) != subs {
		t.Fatalf("%d of %d connections ended", len(ends), subs)
	}
	offsets := make([]time.Duration, len(ends))
	for i, e := range ends {
		offsets[i] = e.Sub(start)
	}
	slices.Sort(offsets)
	quarter, half := 0, 0
	buckets := make([]int, 8) // of window/4 each
	for _, d := range offsets {
		if d < window/4 {
			quarter++
		}
		if d > window/2 {
			half++
		}
		buckets[min(int(d/(window/4)), len(buckets)-1)]++
	}
	var hist []string
	for i, n := range buckets {
		hist = append(hist, fmt.Sprintf("%v-%v:%d", time.Duration(i)*window/4, time.Duration(i+1)*window/4, n))
	}
	t.Logf("drain of %d subscribers over %s: first end %s, last %s, exit %s; per quarter window %s",
		subs, window, offsets[0].Round(time.Millisecond), offsets[len(offsets)-1].Round(time.Millisecond),
		exited.Round(time.Millisecond), strings.Join(hist, " "))
	// Uniform over the window: about 10 in the first quarter and 20 after
	// the half. The bounds fail a herd (all at once) or a skew to the start
	// with a chance below one in a million for a fair spread.
	if quarter > 24 {
		t.Errorf("%d of %d disconnects in the first quarter of the window, want a spread", quarter, subs)
	}
	if half < 5 {
		t.Errorf("only %d of %d disconnects after half the window, want a spread", half, subs)
	}
	if spread := offsets[len(offsets)-1] - offsets[0]; spread < window/2 {
		t.Errorf("disconnects spread over %s, want at least half the window (%s)", spread, window/2)
	}
	if last := offsets[len(offsets)-1]; last > window+time.Second {
		t.Errorf("last disconnect %s after SIGTERM, want within the window (%s)", last, window)
	}
}
