// Command sseload measures one SSE server library on loopback: delivered
// events per second, publish-to-receive latency, and memory and goroutines
// per idle connection.
//
// It starts the chosen engine (sser, r3labs, gosse or floor) in a child process of
// itself ("sseload serve"), so that the server's memory and goroutines are
// counted apart from the subscribers'. It opens --subs subscribers over real
// TCP to 127.0.0.1, waits until each has received a warm-up event, reads
// the server's memory (after a GC), then has the server publish --events
// events at --rate (0: as fast as the engine takes them), each carrying its
// publish time, and counts what arrives, and the CPU time the server
// process used meanwhile. Everything is bounded by --duration; the tool
// exits by itself.
//
// With --reconnect it then closes every subscriber, publishes --missed
// events, and reconnects them all with the Last-Event-ID each last saw (a
// reconnect storm, as after a replica's drain): reconnects per second
// until every one has had the events it missed. With --rss-every it
// samples the server's RSS while publishing (a soak: bench/soak.sh).
//
//	go run ./cmd/sseload --engine sser --subs 1000 --events 5000
//	go run ./cmd/sseload --engine r3labs --subs 10000 --events 0 --json
//	go run ./cmd/sseload --engine sser --subs 10000 --events 0 --reconnect
//	go run ./cmd/sseload --engine sser --subs 15000 --events 600 --rate 10 --rss-every 5s
package main

import (
	"bufio"
	"cmp"
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
	"syscall"
	"time"

	"github.com/sser-dev/sser/bench/internal/sseclient"
)

type config struct {
	engine    string
	transport string
	subs      int
	events    int
	rate      float64
	payload   int
	ticks     bool
	compress  string
	duration  time.Duration
	dialers   int
	sserQueue int
	origins   int
	originsOn string
	reconnect bool
	missed    int
	rssEvery  time.Duration
	json      bool
	profile   string
	heapProf  string
	label     string
	// engineLabel names the engine in the result (default the engine):
	// compare.sh runs sser built against an older revision as "sser-base".
	engineLabel string
}

// result is one run's measurements; --json prints it as one line.
type result struct {
	Label     string  `json:"label,omitempty"`
	Engine    string  `json:"engine"`
	Transport string  `json:"transport,omitempty"`
	Subs      int     `json:"subs"`
	Events    int     `json:"events"`
	Rate      float64 `json:"rate"`
	Payload   int     `json:"payload"`
	// Ticks: the events were JSON price ticks; Compression: gzip or off.
	Ticks       bool   `json:"ticks,omitempty"`
	Compression string `json:"compression,omitempty"`

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
	// ServerP50Ms and ServerP99Ms are the server's own view (sser
	// engines: sser_delivery_latency_seconds, publish to the write of each
	// batch, from its buckets), without the subscribers' reading.
	ServerP50Ms  float64 `json:"serverP50Ms,omitempty"`
	ServerP99Ms  float64 `json:"serverP99Ms,omitempty"`
	MaxMs        float64 `json:"maxMs"`
	Disconnected int     `json:"disconnected"`
	OutOfOrder   int64   `json:"outOfOrder"`
	Complete     bool    `json:"complete"`
	// CPU time (user + system) of the server process from the first
	// publish until every event was delivered, and that per delivery.
	ServerCPUSeconds float64 `json:"serverCPUSeconds"`
	// DriverCPUSeconds is the same for this process, the subscribers
	// (reading, parsing, inflating gzip), on the same machine.
	DriverCPUSeconds float64 `json:"driverCPUSeconds"`
	// Origins is how many other publishers the server had heard of before
	// the subscribers connected (sser engines only), and OriginsOn where
	// they published: "own" (each its own stream) or "bench" (the
	// subscribers' stream).
	Origins   int    `json:"origins,omitempty"`
	OriginsOn string `json:"originsOn,omitempty"`
	// Per delivered event: bytes of its frame and of its id value, and
	// body bytes on the wire (gzip bytes when compressed).
	FrameBytesPerEvent float64 `json:"frameBytesPerEvent"`
	WireBytesPerEvent  float64 `json:"wireBytesPerEvent"`
	IDBytesPerEvent    float64 `json:"idBytesPerEvent"`
	CPUUsPerDelivery   float64 `json:"cpuUsPerDelivery"`

	// The reconnect storm (--reconnect): every subscriber reconnected
	// with its Last-Event-ID and had Missed events replayed.
	Missed           int     `json:"missed,omitempty"`
	ReconnectSeconds float64 `json:"reconnectSeconds,omitempty"`
	ReconnectsPerS   float64 `json:"reconnectsPerS,omitempty"`
	// Subscribers that got exactly the missed events, more (a repeat),
	// or fewer before the time cap.
	ReconnectExact int `json:"reconnectExact,omitempty"`
	ReconnectExtra int `json:"reconnectExtra,omitempty"`
	ReconnectShort int `json:"reconnectShort,omitempty"`
	// Server CPU time per reconnect, replay included.
	CPUUsPerReconnect float64 `json:"cpuUsPerReconnect,omitempty"`

	// The server's memory sampled while publishing (--rss-every), and
	// RSS growth from the sample a third of the way in (after warm-up) to
	// the last one.
	Samples     []memSample `json:"samples,omitempty"`
	RSSGrowth   float64     `json:"rssGrowth,omitempty"`
	RSSGrowthPc float64     `json:"rssGrowthPct,omitempty"`
}

// memSample is the server's memory at Sec seconds into the publish phase.
type memSample struct {
	Sec        float64 `json:"sec"`
	RSS        uint64  `json:"rss"`
	HeapAlloc  uint64  `json:"heapAlloc"`
	Goroutines int     `json:"goroutines"`
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
	flag.StringVar(&cfg.transport, "transport", "sse", "how subscribers connect: sse, or ws (WebSocket; sser engines only)")
	flag.IntVar(&cfg.subs, "subs", 1000, "subscribers to open")
	flag.IntVar(&cfg.events, "events", 2000, "events to publish after the idle measurement (0: measure idle connections only)")
	flag.Float64Var(&cfg.rate, "rate", 0, "events per second to publish (0: as fast as the engine accepts them)")
	flag.IntVar(&cfg.payload, "payload", 64, "bytes of data in each event")
	flag.BoolVar(&cfg.ticks, "ticks", false, "events are JSON price ticks of about 200 bytes (a repetitive workload, as compression sees it) instead of --payload bytes of x")
	flag.StringVar(&cfg.compress, "compression", "off", "gzip: the sser engine compresses and the subscribers ask for gzip (sser only)")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Minute, "cap on the whole run")
	flag.IntVar(&cfg.dialers, "dialers", 32, "connections opened concurrently")
	flag.IntVar(&cfg.sserQueue, "sser-queue", 0, "sser's SubscriberQueue (0: the library default)")
	flag.IntVar(&cfg.origins, "origins", 0, "sser only: before subscribers connect, deliver one event from each of this many other origins (replicas or sidecars that published)")
	flag.StringVar(&cfg.originsOn, "origins-on", "own", "where those origins published: own (each its own stream) or bench (the subscribers' stream)")
	flag.BoolVar(&cfg.reconnect, "reconnect", false, "then close every subscriber, publish --missed events, and reconnect them all with their Last-Event-ID: reconnects/s")
	flag.IntVar(&cfg.missed, "missed", 10, "events published while the subscribers are away (--reconnect)")
	flag.DurationVar(&cfg.rssEvery, "rss-every", 0, "sample the server's RSS this often while publishing (0: not)")
	flag.BoolVar(&cfg.json, "json", false, "print the result as one JSON line")
	flag.StringVar(&cfg.label, "label", "", "scenario name copied into the result, for bench/compare.sh")
	flag.StringVar(&cfg.engineLabel, "engine-label", "", "engine name written in the result (default --engine)")
	flag.StringVar(&cfg.profile, "server-cpuprofile", "", "write the server process's CPU profile (whole run) to this file")
	flag.StringVar(&cfg.heapProf, "server-heapprofile", "", "write the server process's heap profile, every allocation sampled, to this file when the idle connections are measured (slows the server)")
	flag.Parse()
	if cfg.transport != "sse" && (cfg.transport != "ws" || !strings.HasPrefix(cfg.engine, "sser")) {
		fmt.Fprintln(os.Stderr, "sseload: --transport is sse, or ws with an sser engine")
		os.Exit(2)
	}
	if cfg.transport == "ws" && cfg.compress != "off" {
		fmt.Fprintln(os.Stderr, "sseload: --compression is for SSE: sser never compresses a WebSocket")
		os.Exit(2)
	}
	if cfg.subs < 1 || cfg.events < 0 || cfg.payload < 48 || cfg.duration <= 0 || cfg.dialers < 1 || cfg.missed < 1 || cfg.rssEvery < 0 {
		fmt.Fprintln(os.Stderr, "sseload: need --subs >= 1, --events >= 0, --payload >= 48, --duration > 0, --dialers >= 1, --missed >= 1, --rss-every >= 0")
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
	fmt.Printf("engine %s, %d subscribers (%s), payload %d B\n", r.Engine, r.Subs, r.Transport, r.Payload)
	fmt.Printf("  connect        %.2fs\n", r.ConnectSeconds)
	fmt.Printf("  idle conn      %.0f B heap + %.0f B stack = %.0f B, %.0f B RSS, %.2f goroutines\n",
		r.HeapPerConn, r.StackPerConn, r.MemPerConn, r.RSSPerConn, r.GoroutinesPerConn)
	if r.Events > 0 {
		fmt.Printf("  published      %d events in %.2fs (rate %g, 0 = max)\n", r.Published, r.PublishSeconds, r.Rate)
		fmt.Printf("  delivered      %d of %d in %.2fs: %.0f deliveries/s, %.0f events/s\n",
			r.Delivered, r.Expected, r.Seconds, r.DeliveriesPerS, r.EventsPerS)
		fmt.Printf("  latency        p50 %.2fms, p99 %.2fms, max %.2fms (server's own: p50 %.2fms, p99 %.2fms)\n", r.P50Ms, r.P99Ms, r.MaxMs, r.ServerP50Ms, r.ServerP99Ms)
		fmt.Printf("  server CPU     %.3fs, %.2fµs per delivery (driver: %.3fs)\n", r.ServerCPUSeconds, r.CPUUsPerDelivery, r.DriverCPUSeconds)
		fmt.Printf("  on the wire    %.1f B per event (frames %.1f B; compression %s)\n", r.WireBytesPerEvent, r.FrameBytesPerEvent, cmp.Or(r.Compression, "off"))
		fmt.Printf("  disconnected   %d, out of order %d, complete %v\n", r.Disconnected, r.OutOfOrder, r.Complete)
	}
	for _, s := range r.Samples {
		fmt.Printf("  at %5.1fs      RSS %.1f MiB, heap %.1f MiB, %d goroutines\n", s.Sec, float64(s.RSS)/(1<<20), float64(s.HeapAlloc)/(1<<20), s.Goroutines)
	}
	if len(r.Samples) > 1 {
		fmt.Printf("  RSS growth     %+.1f MiB (%+.1f%%) from a third of the way in to the end\n", r.RSSGrowth/(1<<20), r.RSSGrowthPc)
	}
	if r.Missed > 0 {
		fmt.Printf("  reconnect      %d subscribers with Last-Event-ID, %d missed events each: %.2fs, %.0f reconnects/s, %.1fµs server CPU each\n",
			r.Subs, r.Missed, r.ReconnectSeconds, r.ReconnectsPerS, r.CPUUsPerReconnect)
		fmt.Printf("                 exactly the missed events %d, more %d, fewer %d\n", r.ReconnectExact, r.ReconnectExtra, r.ReconnectShort)
	}
}

// child is the server process.
type child struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	sseURL  *url.URL
	ctlURL  string
	httpc   *http.Client
	payload int
	ticks   bool
}

func startChild(ctx context.Context, cfg config) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--engine", cfg.engine,
		fmt.Sprintf("--sser-queue=%d", cfg.sserQueue), fmt.Sprintf("--origins=%d", cfg.origins), "--origins-on=" + cfg.originsOn, "--max-life", (cfg.duration + time.Minute).String(),
		"--compression=" + cfg.compress}
	if cfg.heapProf != "" {
		args = append(args, "--heapprofile", cfg.heapProf)
	}
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
	c := &child{cmd: cmd, stdin: stdin, payload: cfg.payload, ticks: cfg.ticks,
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

// cpu is the CPU time the server process has used so far. It asks the
// process (getrusage: microseconds) rather than reading /proc/<pid>/stat
// (10 ms ticks), which is too coarse for short runs.
func (c *child) cpu(ctx context.Context) (time.Duration, error) {
	var s serverStats
	if err := c.call(ctx, http.MethodGet, "/stats", &s); err != nil {
		return 0, err
	}
	if s.CPUNanos <= 0 {
		return 0, errors.New("the server process reported no CPU time")
	}
	return time.Duration(s.CPUNanos), nil
}

// latency reads the server's delivery latency buckets (sser engines).
func (c *child) latency(ctx context.Context) ([]bucket, error) {
	var b []bucket
	err := c.call(ctx, http.MethodGet, "/latency", &b)
	return b, err
}

func (c *child) publish(ctx context.Context, n, first int, rate float64, limit time.Duration) (publishResult, error) {
	var p publishResult
	path := fmt.Sprintf("/publish?n=%d&first=%d&rate=%g&size=%d&limit=%s&ticks=%t", n, first, rate, c.payload, limit, c.ticks)
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
	name := cfg.engine
	if cfg.engineLabel != "" {
		name = cfg.engineLabel
	}
	res := &result{Label: cfg.label, Engine: name, Transport: cfg.transport, Subs: cfg.subs, Events: cfg.events, Rate: cfg.rate, Payload: cfg.payload, Ticks: cfg.ticks}
	if cfg.compress != "" && cfg.compress != "off" {
		res.Compression = cfg.compress
	}
	if cfg.origins > 0 {
		res.Origins, res.OriginsOn = cfg.origins, cfg.originsOn
	}

	base, err := srv.stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("server stats: %w", err)
	}

	// Open the subscribers.
	var wg sync.WaitGroup
	clients := make([]*sseclient.Client, cfg.subs)
	defer sseclient.CloseAll(clients, &wg)
	connStart := time.Now()
	targets := []*url.URL{srv.sseURL}
	if err := sseclient.DialAll(ctx, targets, clients, cfg.dialers, &wg, sseclient.Options{WebSocket: cfg.transport == "ws", Gzip: cfg.compress == "gzip"}); err != nil {
		return nil, err
	}
	// Every subscriber counts as connected once it has received an event:
	// some engines send nothing, not even headers, before the first event.
	for !sseclient.AllReady(clients) {
		if _, err := srv.publish(ctx, 1, 0, 0, time.Second); err != nil {
			return nil, fmt.Errorf("warm-up publish: %w", err)
		}
		if err := sseclient.PollUntil(ctx, 250*time.Millisecond, func() bool { return sseclient.AllReady(clients) }); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%d of %d subscribers connected before the time cap", sseclient.CountReady(clients), len(clients))
			}
		}
		if dead := sseclient.CountDone(clients); dead > 0 {
			return nil, fmt.Errorf("%d subscribers were closed while connecting: %v", dead, sseclient.FirstErr(clients))
		}
	}
	res.ConnectSeconds = time.Since(connStart).Seconds()

	var idle serverStats
	if cfg.heapProf != "" {
		err = srv.call(ctx, http.MethodGet, "/stats?gc=1&profile=1", &idle)
	} else {
		idle, err = srv.stats(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("server stats: %w", err)
	}
	n := float64(cfg.subs)
	res.HeapPerConn = (float64(idle.HeapAlloc) - float64(base.HeapAlloc)) / n
	res.StackPerConn = (float64(idle.StackInuse) - float64(base.StackInuse)) / n
	res.MemPerConn = res.HeapPerConn + res.StackPerConn
	res.RSSPerConn = (float64(idle.RSS) - float64(base.RSS)) / n
	res.GoroutinesPerConn = float64(idle.Goroutines-base.Goroutines) / n

	if cfg.events == 0 && !cfg.reconnect {
		return res, nil
	}
	if cfg.events > 0 {
		if err := measureDelivery(ctx, cfg, srv, clients, res); err != nil {
			return nil, err
		}
	}
	// Close the connections and let the readers finish before reading their histograms.
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
	if cfg.reconnect {
		if err := measureReconnect(ctx, cfg, srv, targets, clients, res); err != nil {
			return nil, err
		}
	}
	if cfg.events == 0 {
		return res, nil
	}
	var h sseclient.Histogram
	var frameBytes, idBytes int64
	for _, c := range clients {
		h.Merge(&c.Hist)
		res.OutOfOrder += c.OutOfOrder
		frameBytes += c.FrameBytes
		idBytes += c.IDBytes
	}
	if res.Delivered > 0 {
		res.FrameBytesPerEvent = float64(frameBytes) / float64(res.Delivered)
		res.IDBytesPerEvent = float64(idBytes) / float64(res.Delivered)
	}
	res.P50Ms = h.Quantile(0.50)
	res.P99Ms = h.Quantile(0.99)
	res.MaxMs = h.MaxMs()
	return res, nil
}

func measureDelivery(ctx context.Context, cfg config, srv *child, clients []*sseclient.Client, res *result) error {
	res.Expected = int64(cfg.events) * int64(len(clients))
	deadline, _ := ctx.Deadline()
	limit := time.Until(deadline) - time.Second
	if limit <= 0 {
		return errors.New("no time left to publish")
	}
	before, err := srv.cpu(ctx)
	if err != nil {
		return fmt.Errorf("server CPU time: %w", err)
	}
	latBefore, _ := srv.latency(ctx) // nil for engines that do not measure it
	driver0 := cpuNanos()
	var wire0 int64
	for _, c := range clients {
		wire0 += c.WireBytes.Load()
	}
	start := time.Now()
	stopSampling := sampleMemory(ctx, srv, cfg.rssEvery, start, res)
	defer stopSampling()
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
			if c.Got.Load() < want && !c.Done.Load() {
				return false
			}
		}
		return true
	}
	_ = sseclient.PollUntil(ctx, time.Until(deadline), complete)
	stopSampling()
	// The publish phase ends when every event was delivered (or the time
	// cap passed); an engine that queues keeps writing after Publish returns.
	after, err := srv.cpu(ctx)
	if err != nil {
		return fmt.Errorf("server CPU time: %w", err)
	}
	res.ServerCPUSeconds = (after - before).Seconds()
	res.DriverCPUSeconds = time.Duration(cpuNanos() - driver0).Seconds()
	if latBefore != nil {
		if latAfter, err := srv.latency(ctx); err == nil {
			res.ServerP50Ms = bucketQuantile(0.5, latBefore, latAfter)
			res.ServerP99Ms = bucketQuantile(0.99, latBefore, latAfter)
		}
	}
	var last, wire int64
	for _, c := range clients {
		wire += c.WireBytes.Load()
		res.Delivered += c.Got.Load()
		last = max(last, c.LastRecv.Load())
		if c.Done.Load() {
			res.Disconnected++
		}
	}
	res.Complete = res.Delivered == res.Expected
	if last > 0 {
		res.Seconds = time.Unix(0, last).Sub(start).Seconds()
	}
	if res.Delivered > 0 {
		res.CPUUsPerDelivery = res.ServerCPUSeconds * 1e6 / float64(res.Delivered)
		res.WireBytesPerEvent = float64(wire-wire0) / float64(res.Delivered)
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

// sampleMemory reads the server's memory (no GC first) every every from
// start until the returned func is called, into res.Samples, and sets the
// RSS growth after warm-up. every 0 samples nothing.
func sampleMemory(ctx context.Context, srv *child, every time.Duration, start time.Time, res *result) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var s serverStats
			if err := srv.call(ctx, http.MethodGet, "/stats", &s); err == nil {
				res.Samples = append(res.Samples, memSample{Sec: time.Since(start).Seconds(), RSS: s.RSS, HeapAlloc: s.HeapAlloc, Goroutines: s.Goroutines})
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			if n := len(res.Samples); n > 1 {
				warm, last := res.Samples[n/3], res.Samples[n-1]
				res.RSSGrowth = float64(last.RSS) - float64(warm.RSS)
				res.RSSGrowthPc = 100 * res.RSSGrowth / float64(warm.RSS)
			}
		})
	}
}

// measureReconnect is the reconnect storm: the subscribers (closed, their
// readers done) are away while missed events are published, then all
// reconnect at once, dialers at a time, each with the last id it saw. It
// ends when every one has had the missed events (or the time cap).
func measureReconnect(ctx context.Context, cfg config, srv *child, targets []*url.URL, gone []*sseclient.Client, res *result) error {
	ids := make([]string, len(gone))
	for i, c := range gone {
		ids[i] = c.LastID()
	}
	deadline, _ := ctx.Deadline()
	limit := time.Until(deadline) - time.Second
	if limit <= 0 {
		return errors.New("no time left for the reconnect storm")
	}
	if _, err := srv.publish(ctx, cfg.missed, cfg.events+1, 0, limit); err != nil {
		return fmt.Errorf("publishing the missed events: %w", err)
	}
	before, err := srv.cpu(ctx)
	if err != nil {
		return fmt.Errorf("server CPU time: %w", err)
	}
	var wg sync.WaitGroup
	clients := make([]*sseclient.Client, len(gone))
	defer sseclient.CloseAll(clients, &wg)
	want := int64(cfg.missed)
	start := time.Now()
	if err := sseclient.DialAll(ctx, targets, clients, cfg.dialers, &wg, sseclient.Options{LastEventIDs: ids, WebSocket: cfg.transport == "ws", Gzip: cfg.compress == "gzip"}); err != nil {
		return fmt.Errorf("reconnecting: %w", err)
	}
	_ = sseclient.PollUntil(ctx, time.Until(deadline), func() bool {
		for _, c := range clients {
			if c.Got.Load() < want && !c.Done.Load() {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	after, err := srv.cpu(ctx)
	if err != nil {
		return fmt.Errorf("server CPU time: %w", err)
	}
	res.Missed = cfg.missed
	res.ReconnectSeconds = took.Seconds()
	res.ReconnectsPerS = float64(len(clients)) / took.Seconds()
	res.CPUUsPerReconnect = (after - before).Seconds() * 1e6 / float64(len(clients))
	for _, c := range clients {
		switch got := c.Got.Load(); {
		case got == want:
			res.ReconnectExact++
		case got > want:
			res.ReconnectExtra++
		default:
			res.ReconnectShort++
		}
	}
	return nil
}
