// Command sseload measures one SSE server library on loopback: delivered
// events per second, publish-to-receive latency, and memory and goroutines
// per idle connection.
//
// It starts the chosen engine (sser, r3labs or gosse) in a child process of
// itself ("sseload serve"), so that the server's memory and goroutines are
// counted apart from the subscribers'. It opens --subs subscribers over real
// TCP to 127.0.0.1, waits until each has received a warm-up event, reads
// the server's memory (after a GC), then has the server publish --events
// events at --rate (0: as fast as the engine takes them), each carrying its
// publish time, and counts what arrives. Everything is bounded by
// --duration; the tool exits by itself.
//
//	go run ./cmd/sseload --engine sser --subs 1000 --events 5000
//	go run ./cmd/sseload --engine r3labs --subs 10000 --events 0 --json
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	engine    string
	subs      int
	events    int
	rate      float64
	payload   int
	duration  time.Duration
	dialers   int
	sserQueue int
	json      bool
	profile   string
	label     string
}

// result is one run's measurements; --json prints it as one line.
type result struct {
	Label   string  `json:"label,omitempty"`
	Engine  string  `json:"engine"`
	Subs    int     `json:"subs"`
	Events  int     `json:"events"`
	Rate    float64 `json:"rate"`
	Payload int     `json:"payload"`

	ConnectSeconds float64 `json:"connectSeconds"`
	// Per idle connection, server process only, after a GC.
	HeapPerConn       float64 `json:"heapPerConn"`
	StackPerConn      float64 `json:"stackPerConn"`
	MemPerConn        float64 `json:"memPerConn"` // heap + stacks
	RSSPerConn        float64 `json:"rssPerConn"`
	GoroutinesPerConn float64 `json:"goroutinesPerConn"`

	Published      int     `json:"published"`
	PublishSeconds float64 `json:"publishSeconds"`
	Delivered      int64   `json:"delivered"`
	Expected       int64   `json:"expected"`
	Seconds        float64 `json:"seconds"`
	DeliveriesPerS float64 `json:"deliveriesPerS"`
	EventsPerS     float64 `json:"eventsPerS"`
	P50Ms          float64 `json:"p50Ms"`
	P99Ms          float64 `json:"p99Ms"`
	MaxMs          float64 `json:"maxMs"`
	Disconnected   int     `json:"disconnected"`
	OutOfOrder     int64   `json:"outOfOrder"`
	Complete       bool    `json:"complete"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "sseload serve:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.StringVar(&cfg.engine, "engine", "sser", "engine: "+strings.Join(engineNames, ", "))
	flag.IntVar(&cfg.subs, "subs", 1000, "subscribers to open")
	flag.IntVar(&cfg.events, "events", 2000, "events to publish after the idle measurement (0: measure idle connections only)")
	flag.Float64Var(&cfg.rate, "rate", 0, "events per second to publish (0: as fast as the engine accepts them)")
	flag.IntVar(&cfg.payload, "payload", 64, "bytes of data in each event")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Minute, "cap on the whole run")
	flag.IntVar(&cfg.dialers, "dialers", 32, "connections opened concurrently")
	flag.IntVar(&cfg.sserQueue, "sser-queue", 0, "sser's SubscriberQueue (0: the library default)")
	flag.BoolVar(&cfg.json, "json", false, "print the result as one JSON line")
	flag.StringVar(&cfg.label, "label", "", "scenario name copied into the result, for bench/compare.sh")
	flag.StringVar(&cfg.profile, "server-cpuprofile", "", "write the server process's CPU profile (whole run) to this file")
	flag.Parse()
	if cfg.subs < 1 || cfg.events < 0 || cfg.payload < 48 || cfg.duration <= 0 || cfg.dialers < 1 {
		fmt.Fprintln(os.Stderr, "sseload: need --subs >= 1, --events >= 0, --payload >= 48, --duration > 0, --dialers >= 1")
		os.Exit(2)
	}
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sseload:", err)
		os.Exit(1)
	}
	if cfg.json {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	printResult(res)
}

func printResult(r *result) {
	fmt.Printf("engine %s, %d subscribers, payload %d B\n", r.Engine, r.Subs, r.Payload)
	fmt.Printf("  connect        %.2fs\n", r.ConnectSeconds)
	fmt.Printf("  idle conn      %.0f B heap + %.0f B stack = %.0f B, %.0f B RSS, %.2f goroutines\n",
		r.HeapPerConn, r.StackPerConn, r.MemPerConn, r.RSSPerConn, r.GoroutinesPerConn)
	if r.Events == 0 {
		return
	}
	fmt.Printf("  published      %d events in %.2fs (rate %g, 0 = max)\n", r.Published, r.PublishSeconds, r.Rate)
	fmt.Printf("  delivered      %d of %d in %.2fs: %.0f deliveries/s, %.0f events/s\n",
		r.Delivered, r.Expected, r.Seconds, r.DeliveriesPerS, r.EventsPerS)
	fmt.Printf("  latency        p50 %.2fms, p99 %.2fms, max %.2fms\n", r.P50Ms, r.P99Ms, r.MaxMs)
	fmt.Printf("  disconnected   %d, out of order %d, complete %v\n", r.Disconnected, r.OutOfOrder, r.Complete)
}

// child is the server process.
type child struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	sseURL  *url.URL
	ctlURL  string
	httpc   *http.Client
	payload int
}

func startChild(ctx context.Context, cfg config) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--engine", cfg.engine,
		fmt.Sprintf("--sser-queue=%d", cfg.sserQueue), "--max-life", (cfg.duration + time.Minute).String()}
	if cfg.profile != "" {
		args = append(args, "--cpuprofile", cfg.profile)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server process: %w", err)
	}
	c := &child{cmd: cmd, stdin: stdin, payload: cfg.payload,
		httpc: &http.Client{Timeout: cfg.duration, Transport: &http.Transport{}}}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case s := <-line:
		f := strings.Fields(s)
		if len(f) != 3 || f[0] != "READY" {
			c.stop()
			return nil, fmt.Errorf("server process said %q, want READY <events-url> <control-url>", s)
		}
		if c.sseURL, err = url.Parse(f[1] + "?stream=" + benchStream); err != nil {
			c.stop()
			return nil, err
		}
		c.ctlURL = f[2]
	case <-t.C:
		c.stop()
		return nil, errors.New("server process not ready within 30s")
	}
	return c, nil
}

func (c *child) stop() {
	_ = c.stdin.Close() // the child exits on EOF
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func (c *child) stats(ctx context.Context) (serverStats, error) {
	var s serverStats
	err := c.call(ctx, http.MethodGet, "/stats?gc=1", &s)
	return s, err
}

func (c *child) publish(ctx context.Context, n, first int, rate float64, limit time.Duration) (publishResult, error) {
	var p publishResult
	path := fmt.Sprintf("/publish?n=%d&first=%d&rate=%g&size=%d&limit=%s", n, first, rate, c.payload, limit)
	err := c.call(ctx, http.MethodPost, path, &p)
	if err == nil && p.Error != "" {
		err = errors.New("publish: " + p.Error)
	}
	return p, err
}

func (c *child) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.ctlURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

func run(ctx context.Context, cfg config) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	srv, err := startChild(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	res := &result{Label: cfg.label, Engine: cfg.engine, Subs: cfg.subs, Events: cfg.events, Rate: cfg.rate, Payload: cfg.payload}

	base, err := srv.stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("server stats: %w", err)
	}

	// Open the subscribers.
	var wg sync.WaitGroup
	clients := make([]*client, cfg.subs)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
		wg.Wait()
	}()
	connStart := time.Now()
	if err := dialAll(ctx, srv.sseURL, clients, cfg.dialers, &wg); err != nil {
		return nil, err
	}
	// Every subscriber counts as connected once it has received an event:
	// some engines send nothing, not even headers, before the first event.
	for !allReady(clients) {
		if _, err := srv.publish(ctx, 1, 0, 0, time.Second); err != nil {
			return nil, fmt.Errorf("warm-up publish: %w", err)
		}
		if err := pollUntil(ctx, 250*time.Millisecond, func() bool { return allReady(clients) }); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%d of %d subscribers connected before the time cap", countReady(clients), len(clients))
			}
		}
		if dead := countDone(clients); dead > 0 {
			return nil, fmt.Errorf("%d subscribers were closed while connecting: %v", dead, firstErr(clients))
		}
	}
	res.ConnectSeconds = time.Since(connStart).Seconds()

	idle, err := srv.stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("server stats: %w", err)
	}
	n := float64(cfg.subs)
	res.HeapPerConn = (float64(idle.HeapAlloc) - float64(base.HeapAlloc)) / n
	res.StackPerConn = (float64(idle.StackInuse) - float64(base.StackInuse)) / n
	res.MemPerConn = res.HeapPerConn + res.StackPerConn
	res.RSSPerConn = (float64(idle.RSS) - float64(base.RSS)) / n
	res.GoroutinesPerConn = float64(idle.Goroutines-base.Goroutines) / n

	if cfg.events == 0 {
		return res, nil
	}
	if err := measureDelivery(ctx, cfg, srv, clients, res); err != nil {
		return nil, err
	}
	// Close the connections and let the readers finish before reading their histograms.
	for _, c := range clients {
		c.close()
	}
	wg.Wait()
	var h histogram
	for _, c := range clients {
		h.merge(&c.hist)
		res.OutOfOrder += c.outOfOrder
	}
	res.P50Ms = h.quantile(0.50)
	res.P99Ms = h.quantile(0.99)
	res.MaxMs = float64(h.max) / float64(time.Millisecond)
	return res, nil
}

func measureDelivery(ctx context.Context, cfg config, srv *child, clients []*client, res *result) error {
	res.Expected = int64(cfg.events) * int64(len(clients))
	deadline, _ := ctx.Deadline()
	limit := time.Until(deadline) - time.Second
	if limit <= 0 {
		return errors.New("no time left to publish")
	}
	start := time.Now()
	type pubAnswer struct {
		p   publishResult
		err error
	}
	pubDone := make(chan pubAnswer, 1)
	go func() {
		p, err := srv.publish(ctx, cfg.events, 1, cfg.rate, limit)
		pubDone <- pubAnswer{p, err}
	}()
	want := int64(cfg.events)
	complete := func() bool {
		for _, c := range clients {
			if c.got.Load() < want && !c.done.Load() {
				return false
			}
		}
		return true
	}
	_ = pollUntil(ctx, time.Until(deadline), complete)
	var last int64
	for _, c := range clients {
		res.Delivered += c.got.Load()
		last = max(last, c.lastRecv.Load())
		if c.done.Load() {
			res.Disconnected++
		}
	}
	res.Complete = res.Delivered == res.Expected
	if last > 0 {
		res.Seconds = time.Unix(0, last).Sub(start).Seconds()
	}
	if res.Seconds > 0 {
		res.DeliveriesPerS = float64(res.Delivered) / res.Seconds
		res.EventsPerS = res.DeliveriesPerS / float64(len(clients))
	}
	select {
	case a := <-pubDone:
		res.Published, res.PublishSeconds = a.p.Published, a.p.Seconds
		if a.err != nil {
			return a.err
		}
	case <-ctx.Done():
		return fmt.Errorf("publish did not finish within the time cap (%d of %d deliveries)", res.Delivered, res.Expected)
	}
	return nil
}

// dialAll opens len(clients) subscriptions, dialers at a time.
func dialAll(ctx context.Context, target *url.URL, clients []*client, dialers int, wg *sync.WaitGroup) error {
	var (
		next    atomic.Int64
		dwg     sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range min(dialers, len(clients)) {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(clients) || ctx.Err() != nil {
					return
				}
				c, err := dial(ctx, target, wg)
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("subscriber %d: %w", i, err) })
					return
				}
				clients[i] = c
			}
		}()
	}
	dwg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// pollUntil checks cond every few milliseconds until it holds, for at most d.
func pollUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func allReady(clients []*client) bool { return countReady(clients) == len(clients) }

func countReady(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c.ready.Load() {
			n++
		}
	}
	return n
}

func countDone(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c.done.Load() {
			n++
		}
	}
	return n
}

func firstErr(clients []*client) error {
	for _, c := range clients {
		if c.done.Load() && c.err != nil {
			return c.err
		}
	}
	return nil
}
