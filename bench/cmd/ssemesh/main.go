// Command ssemesh measures a mesh of real sser processes on loopback:
// publish-to-receive latency across replicas, that every subscriber gets
// every event exactly once, the CPU all replicas spend per published event,
// and how many requests the replicas send each other per event.
//
// It starts --replicas sser processes (--sser-bin) on 127.0.0.2,
// 127.0.0.3, ... with the same ports and a static peer list, as pods behind
// one Service, and waits until every /readyz answers 200. It opens --subs
// subscribers spread evenly over the replicas' frontends
// (GET /events?stream=bench) and waits until each has received a warm-up
// event. Then it publishes --rate events/s in total for --duration (or
// --events events), round-robin over the replicas' publish endpoints, each
// message "<seq> <unix-nanos> xxx…" padded to --payload bytes, and waits
// until every subscriber has every accepted event (at most --drain).
//
// Over that publish phase it measures the CPU time (utime + stime from
// /proc) of every replica process, and the increase of the replicas' peer
// request counter (sser_peer_requests_total, or where a binary does not
// have it, sser_peer_post_duration_seconds_count). Every replica is killed
// when it exits, whatever the reason; every phase has a deadline.
//
//	go build -o /tmp/sser ./cmd/sser
//	cd bench && go run ./cmd/ssemesh --sser-bin /tmp/sser --replicas 3 --subs 300 --rate 200 --duration 5s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sser-dev/sser/bench/internal/proc"
	"github.com/sser-dev/sser/bench/internal/sseclient"
)

// benchStream is the one stream every subscriber reads and every event goes to.
const benchStream = "bench"

type config struct {
	sserBin      string
	sserArgs     string
	replicas     int
	firstIP      string
	frontendPort int
	internalPort int
	subs         int
	rate         float64
	duration     time.Duration
	events       int
	payload      int
	publishers   int
	dialers      int
	startTimeout time.Duration
	drain        time.Duration
	idle         time.Duration
	json         bool
	label        string
	engine       string
	round        int
	keepLogs     bool
}

// result is one run's measurements; --json prints it as one line, which
// bench/cmd/benchtable reads.
type result struct {
	Label    string  `json:"label,omitempty"`
	Engine   string  `json:"engine"`
	Round    int     `json:"round,omitempty"`
	Replicas int     `json:"replicas"`
	Subs     int     `json:"subs"`
	Events   int     `json:"events"` // planned
	Rate     float64 `json:"rate"`
	Payload  int     `json:"payload"`

	ConnectSeconds float64 `json:"connectSeconds"`
	PublishSeconds float64 `json:"publishSeconds"`
	Seconds        float64 `json:"seconds"` // first publish until all delivered
	Published      int     `json:"published"`
	PublishedPerS  float64 `json:"publishedPerS"` // below Rate when the replicas (or the machine) could not keep up
	Retried        int64   `json:"retried"`       // 503/429 answers waited out
	PublishErrors  int64   `json:"publishErrors"` // events given up
	FirstError     string  `json:"firstError,omitempty"`

	Expected     int64 `json:"expected"`  // published × subscribers
	Delivered    int64 `json:"delivered"` // distinct (event, subscriber) pairs received
	Missing      int64 `json:"missing"`
	Duplicates   int64 `json:"duplicates"`
	Unaccepted   int64 `json:"unaccepted"` // deliveries of events whose publish failed
	LostNotices  int64 `json:"lostNotices"`
	Disconnected int   `json:"disconnected"`
	Complete     bool  `json:"complete"`

	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`

	CPUSeconds    float64 `json:"cpuSeconds"`    // all replicas, publish phase
	CPUMsPerEvent float64 `json:"cpuMsPerEvent"` // ÷ events published
	// IdleCores is the replicas' CPU while idle (subscribers connected,
	// nothing published), and CPUMsPerEventAboveIdle the publish phase's
	// CPU less that, per event: the cost of the events themselves.
	IdleCores              float64 `json:"idleCores"`
	CPUMsPerEventAboveIdle float64 `json:"cpuMsPerEventAboveIdle"`
	PeerMetric             string  `json:"peerMetric,omitempty"`
	PeerRequests           float64 `json:"peerRequests"`
	PeerReqPerEventPerPeer float64 `json:"peerReqPerEventPerPeer"` // ÷ (published × (replicas − 1))
}

func main() {
	var cfg config
	flag.StringVar(&cfg.sserBin, "sser-bin", "", "the sser binary to run (go build -o X ./cmd/sser)")
	flag.StringVar(&cfg.sserArgs, "sser-args", "", "extra flags for every replica, space-separated")
	flag.IntVar(&cfg.replicas, "replicas", 3, "sser processes to run")
	flag.StringVar(&cfg.firstIP, "first-ip", "127.0.0.2", "loopback address of the first replica; the others follow")
	flag.IntVar(&cfg.frontendPort, "frontend-port", 18000, "frontend (SSE) port of every replica")
	flag.IntVar(&cfg.internalPort, "internal-port", 17000, "internal (publish, peers, metrics) port of every replica")
	flag.IntVar(&cfg.subs, "subs", 200, "subscribers, spread evenly over the replicas")
	flag.Float64Var(&cfg.rate, "rate", 100, "events per second published in total, round-robin over the replicas")
	flag.DurationVar(&cfg.duration, "duration", 8*time.Second, "how long to publish")
	flag.IntVar(&cfg.events, "events", 0, "events to publish (0: rate × duration)")
	flag.IntVar(&cfg.payload, "payload", 100, "bytes of each message")
	flag.IntVar(&cfg.publishers, "publishers", 8, "concurrent publishing goroutines")
	flag.IntVar(&cfg.dialers, "dialers", 32, "subscriptions opened concurrently")
	flag.DurationVar(&cfg.startTimeout, "start-timeout", time.Minute, "limit on the replicas becoming ready, and on the subscribers connecting")
	flag.DurationVar(&cfg.drain, "drain", 15*time.Second, "limit on delivering the rest after the last publish")
	flag.DurationVar(&cfg.idle, "idle", 3*time.Second, "measure the replicas' idle CPU for this long before publishing (0: skip)")
	flag.BoolVar(&cfg.json, "json", false, "print the result as one JSON line")
	flag.StringVar(&cfg.label, "label", "", "scenario name copied into the result, for bench/mesh.sh")
	flag.StringVar(&cfg.engine, "engine", "sser", "engine name written in the result (sser-base for a binary built at BASE)")
	flag.IntVar(&cfg.round, "round", 0, "round number copied into the result")
	flag.BoolVar(&cfg.keepLogs, "keep-logs", false, "keep the replicas' log files after a run that went well")
	flag.Parse()
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "ssemesh:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	res, err := run(ctx, cfg, os.Stderr)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted; every replica was stopped")
		}
		fmt.Fprintln(os.Stderr, "ssemesh:", err)
		os.Exit(1)
	}
	if cfg.json {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	printResult(res)
}

func (cfg *config) check() error {
	switch {
	case cfg.sserBin == "":
		return errors.New("--sser-bin is required")
	case cfg.replicas < 1 || cfg.subs < 1 || cfg.rate <= 0 || cfg.duration <= 0 || cfg.events < 0:
		return errors.New("need --replicas >= 1, --subs >= 1, --rate > 0, --duration > 0, --events >= 0")
	case cfg.payload < 48:
		return errors.New("--payload must be at least 48 bytes (the seq and time stamp)")
	case cfg.publishers < 1 || cfg.dialers < 1 || cfg.startTimeout <= 0 || cfg.drain <= 0:
		return errors.New("need --publishers >= 1, --dialers >= 1, --start-timeout > 0, --drain > 0")
	}
	if cfg.events == 0 {
		cfg.events = int(math.Round(cfg.rate * cfg.duration.Seconds()))
	}
	if cfg.events < 1 {
		return errors.New("--rate × --duration is less than one event")
	}
	return nil
}

func printResult(r *result) {
	fmt.Printf("%s: %d replicas, %d subscribers, %d events at %g/s, payload %d B\n",
		r.Engine, r.Replicas, r.Subs, r.Events, r.Rate, r.Payload)
	fmt.Printf("  connect      %.2fs\n", r.ConnectSeconds)
	fmt.Printf("  published    %d in %.2fs, %.0f/s (%d answers 503/429 retried, %d given up)\n", r.Published, r.PublishSeconds, r.PublishedPerS, r.Retried, r.PublishErrors)
	if r.FirstError != "" {
		fmt.Printf("  first error  %s\n", r.FirstError)
	}
	fmt.Printf("  delivered    %d of %d in %.2fs: missing %d, duplicates %d, unaccepted %d, sser-lost %d, disconnected %d, complete %v\n",
		r.Delivered, r.Expected, r.Seconds, r.Missing, r.Duplicates, r.Unaccepted, r.LostNotices, r.Disconnected, r.Complete)
	fmt.Printf("  latency      p50 %.2fms, p99 %.2fms, max %.2fms\n", r.P50Ms, r.P99Ms, r.MaxMs)
	fmt.Printf("  CPU          %.2fs over all replicas, %.3f ms per published event\n", r.CPUSeconds, r.CPUMsPerEvent)
	if r.IdleCores > 0 {
		fmt.Printf("  idle         %.3f cores; %.3f ms per published event above idle\n", r.IdleCores, r.CPUMsPerEventAboveIdle)
	}
	if r.Replicas > 1 {
		fmt.Printf("  peer         %.0f requests (%s), %.3f per event per peer\n", r.PeerRequests, r.PeerMetric, r.PeerReqPerEventPerPeer)
	}
}

// run does one measurement; progress goes to logw.
func run(ctx context.Context, cfg config, logw io.Writer) (res *result, err error) {
	ips, err := replicaIPs(cfg.firstIP, cfg.replicas)
	if err != nil {
		return nil, err
	}
	// The whole run is capped: start, connect, publish, drain, and slack.
	total := 2*cfg.startTimeout + time.Duration(float64(cfg.events)/cfg.rate*float64(time.Second)) + cfg.duration + cfg.drain + cfg.idle + 30*time.Second
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()

	logf := func(format string, args ...any) {
		if logw != nil {
			fmt.Fprintf(logw, "ssemesh: "+format+"\n", args...)
		}
	}
	m, err := startMesh(cfg, ips)
	if err != nil {
		return nil, err
	}
	defer func() {
		m.stop()
		if err == nil && !cfg.keepLogs {
			m.removeLogs()
		} else {
			logf("replica logs kept in %s", m.logDir)
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, cfg.startTimeout)
	err = m.waitReady(sctx)
	scancel()
	if err != nil {
		return nil, err
	}
	logf("%d replicas ready (%s … %s)", cfg.replicas, ips[0], ips[len(ips)-1])

	res = &result{Label: cfg.label, Engine: cfg.engine, Round: cfg.round, Replicas: cfg.replicas,
		Subs: cfg.subs, Events: cfg.events, Rate: cfg.rate, Payload: cfg.payload}
	pub := newPublisher(m, cfg.payload, cfg.publishers)
	defer pub.close()

	// Subscribers, spread evenly over the frontends.
	targets := make([]*url.URL, len(m.replicas))
	for i, r := range m.replicas {
		if targets[i], err = url.Parse(r.frontendURL + "/events?stream=" + benchStream); err != nil {
			return nil, err
		}
	}
	var wg sync.WaitGroup
	clients := make([]*sseclient.Client, cfg.subs)
	defer sseclient.CloseAll(clients, &wg)
	connStart := time.Now()
	cctx, ccancel := context.WithTimeout(ctx, cfg.startTimeout)
	defer ccancel()
	if err := sseclient.DialAll(cctx, targets, clients, cfg.dialers, &wg, sseclient.Options{Track: cfg.events}); err != nil {
		return nil, err
	}
	// A subscriber counts as connected once a warm-up event (seq 0) has
	// reached it; the warm-ups are published on each replica in turn, so
	// they also show that the replicas deliver to each other.
	var buf []byte
	for i := 0; !sseclient.AllReady(clients); i++ {
		if err := m.checkAlive(); err != nil {
			return nil, err
		}
		if !pub.publish(cctx, i%len(m.replicas), 0, &buf) && cctx.Err() == nil {
			return nil, fmt.Errorf("warm-up publish failed: %s", pub.firstErr())
		}
		if err := sseclient.PollUntil(cctx, 250*time.Millisecond, func() bool { return sseclient.AllReady(clients) }); err != nil && cctx.Err() != nil {
			return nil, fmt.Errorf("%d of %d subscribers had a warm-up event before the deadline", sseclient.CountReady(clients), len(clients))
		}
		if dead := sseclient.CountDone(clients); dead > 0 {
			return nil, fmt.Errorf("%d subscribers were closed while connecting: %v", dead, sseclient.FirstErr(clients))
		}
	}
	ccancel()
	res.ConnectSeconds = time.Since(connStart).Seconds()
	logf("%d subscribers connected in %.1fs", cfg.subs, res.ConnectSeconds)

	// The idle baseline: what the replicas spend with subscribers connected
	// and nothing published (timers, keepalives, anti-entropy, the Go
	// runtime), so that the cost of the events themselves can be told apart.
	if cfg.idle > 0 {
		idle0, err := cpuTimes(m.pids())
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		select {
		case <-time.After(cfg.idle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		idle1, err := cpuTimes(m.pids())
		if err != nil {
			return nil, err
		}
		res.IdleCores = (idle1 - idle0).Seconds() / time.Since(t0).Seconds()
	}

	// The publish phase: counters and CPU times before and after.
	before, err := m.scrape(ctx, peerRequestMetrics)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	cpu0, err := cpuTimes(m.pids())
	if err != nil {
		return nil, err
	}
	retried0, failed0 := pub.retried.Load(), pub.failed.Load()
	start := time.Now()
	pctx, pcancel := context.WithTimeout(ctx, time.Duration(float64(cfg.events)/cfg.rate*float64(time.Second))+cfg.duration+10*time.Second)
	accepted := pub.run(pctx, cfg.events, cfg.rate, cfg.publishers)
	pcancel()
	res.PublishSeconds = time.Since(start).Seconds()
	for _, ok := range accepted {
		if ok {
			res.Published++
		}
	}
	if res.PublishSeconds > 0 {
		res.PublishedPerS = float64(res.Published) / res.PublishSeconds
	}
	res.Retried, res.PublishErrors, res.FirstError = pub.retried.Load()-retried0, pub.failed.Load()-failed0, pub.firstErr()
	want := int64(res.Published)
	_ = sseclient.PollUntil(ctx, cfg.drain, func() bool {
		for _, c := range clients {
			if c.Got.Load() < want && !c.Done.Load() {
				return false
			}
		}
		return true
	})
	cpu1, err := cpuTimes(m.pids())
	if err != nil {
		return nil, err
	}
	phase := time.Since(start).Seconds()
	after, err := m.scrape(ctx, peerRequestMetrics)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := m.checkAlive(); err != nil {
		return nil, err
	}
	var last int64
	for _, c := range clients {
		last = max(last, c.LastRecv.Load())
		if c.Done.Load() {
			res.Disconnected++
		}
	}
	if last > 0 {
		res.Seconds = time.Unix(0, last).Sub(start).Seconds()
	}

	// Close the subscribers and let their readers finish before reading
	// what they recorded.
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
	tally(res, clients, accepted)

	res.CPUSeconds = (cpu1 - cpu0).Seconds()
	if res.Published > 0 {
		res.CPUMsPerEvent = res.CPUSeconds * 1000 / float64(res.Published)
		if cfg.idle > 0 {
			res.CPUMsPerEventAboveIdle = max(0, res.CPUSeconds-res.IdleCores*phase) * 1000 / float64(res.Published)
		}
	}
	res.PeerMetric, res.PeerRequests = peerRequests(before, after)
	if cfg.replicas > 1 && res.Published > 0 {
		res.PeerReqPerEventPerPeer = res.PeerRequests / (float64(res.Published) * float64(cfg.replicas-1))
	}
	return res, nil
}

// tally counts, for every accepted event and subscriber, whether it arrived
// once, never or more than once, and merges the latency histograms.
func tally(res *result, clients []*sseclient.Client, accepted []bool) {
	var h sseclient.Histogram
	for _, c := range clients {
		h.Merge(&c.Hist)
		res.LostNotices += c.Typed
		res.Unaccepted += c.Beyond
		for seq := 1; seq < len(accepted); seq++ {
			n := int64(c.Seen(seq))
			switch {
			case !accepted[seq]:
				res.Unaccepted += n
			case n == 0:
				res.Missing++
			default:
				res.Delivered++
				res.Duplicates += n - 1
			}
		}
	}
	res.Expected = int64(res.Published) * int64(len(clients))
	res.Complete = res.Published == res.Events && res.Missing == 0 && res.Duplicates == 0 && res.Disconnected == 0
	res.P50Ms = h.Quantile(0.50)
	res.P99Ms = h.Quantile(0.99)
	res.MaxMs = h.MaxMs()
}

// peerRequests is the increase, summed over the replicas, of the first of
// peerRequestMetrics that any replica shows after the run.
func peerRequests(before, after []map[string]float64) (string, float64) {
	for _, name := range peerRequestMetrics {
		found := false
		for _, a := range after {
			if _, ok := a[name]; ok {
				found = true
			}
		}
		if !found {
			continue
		}
		var sum float64
		for i := range after {
			sum += after[i][name] - before[i][name]
		}
		return name, sum
	}
	return "", 0
}

// cpuTimes sums the CPU time of the processes.
func cpuTimes(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		t, err := proc.CPUTime(pid)
		if err != nil {
			return 0, fmt.Errorf("CPU time of replica pid %d: %w", pid, err)
		}
		sum += t
	}
	return sum, nil
}
