package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// serverStats is what the server process reports about itself.
type serverStats struct {
	HeapAlloc  uint64 `json:"heapAlloc"`
	StackInuse uint64 `json:"stackInuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
	// CPUNanos is the user plus system CPU time the process has used
	// (getrusage), with microsecond resolution.
	CPUNanos int64 `json:"cpuNanos"`
}

// publishResult is the answer to a publish request.
type publishResult struct {
	Published int     `json:"published"`
	Seconds   float64 `json:"seconds"`
	Error     string  `json:"error,omitempty"`
}

// serve is the server process: one engine on loopback, and a control
// listener through which the driver asks it to publish and to report its
// memory. It runs until ctx ends, stdin closes (the driver went away) or
// the --max-life cap passes.
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	engineName := fs.String("engine", "sser", "engine: "+strings.Join(engineNames, ", "))
	sserQueue := fs.Int("sser-queue", 0, "sser SubscriberQueue (0: the library default)")
	compression := fs.String("compression", "off", "sser Options.Compression: gzip or off")
	origins := fs.Int("origins", 0, "sser only: deliver one event from each of this many other origins first")
	originsOn := fs.String("origins-on", "own", "where those events go: own (a stream each) or bench")
	maxLife := fs.Duration("max-life", 10*time.Minute, "exit after this long whatever happens")
	cpuProfile := fs.String("cpuprofile", "", "write the server's CPU profile to this file")
	heapProfile := fs.String("heapprofile", "", "write the server's heap profile (every allocation sampled) to this file when the idle connections are measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *heapProfile != "" {
		runtime.MemProfileRate = 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(ctx, *maxLife)
	defer cancel()
	go func() {
		// The driver holds our stdin; EOF means it is gone.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	if *compression == "off" {
		*compression = ""
	}
	if *compression != "" && *engineName != "sser" {
		return fmt.Errorf("--compression needs the sser engine, not %s", *engineName)
	}
	eng, err := newEngine(ctx, *engineName, *sserQueue, *compression)
	if err != nil {
		return err
	}
	if *origins > 0 {
		se, ok := eng.(*sserEngine)
		if !ok {
			return fmt.Errorf("--origins needs an sser engine, not %s", *engineName)
		}
		if err := se.otherOrigins(*origins, *originsOn); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/events", eng.handler())
	sseLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Engines may log about connections cut at shutdown; only that is dropped.
	var stopping atomic.Bool
	errLog := log.New(writerFunc(func(p []byte) (int, error) {
		if stopping.Load() {
			return len(p), nil
		}
		return os.Stderr.Write(p)
	}), "sseload serve: ", log.LstdFlags)
	sseSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	go func() { _ = sseSrv.Serve(sseLn) }()

	ctlLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctl := http.NewServeMux()
	ctl.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		st := readStats(r.URL.Query().Get("gc") == "1")
		if *heapProfile != "" && r.URL.Query().Get("profile") == "1" {
			if err := writeHeapProfile(*heapProfile); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		writeJSON(w, st)
	})
	ctl.HandleFunc("GET /latency", func(w http.ResponseWriter, r *http.Request) {
		se, ok := eng.(*sserEngine)
		if !ok {
			http.Error(w, "only the sser engine measures its own latency", http.StatusNotFound)
			return
		}
		b, err := se.latencyBuckets()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, b)
	})
	ctl.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
		size, _ := strconv.Atoi(q.Get("size"))
		first, _ := strconv.Atoi(q.Get("first"))
		ticks := q.Get("ticks") == "true"
		limit, _ := time.ParseDuration(q.Get("limit"))
		if limit <= 0 {
			limit = time.Minute
		}
		pctx, pcancel := context.WithTimeout(r.Context(), limit)
		defer pcancel()
		writeJSON(w, publishLoop(pctx, eng, n, first, rate, size, ticks))
	})
	ctlSrv := &http.Server{Handler: ctl, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ctlSrv.Serve(ctlLn) }()

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "READY http://%s/events http://%s\n", sseLn.Addr(), ctlLn.Addr())
	if err := out.Flush(); err != nil {
		return err
	}

	<-ctx.Done()
	stopping.Store(true)
	_ = sseSrv.Close()
	_ = ctlSrv.Close()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	eng.close(sctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errors.New("max-life reached")
	}
	return nil
}

// publishLoop publishes n events numbered from first, at rate events/s (0:
// as fast as the engine takes them), each message "<seq> <unix-nanos> "
// padded with x to size bytes, or with ticks followed by a JSON price tick.
// It stops early when ctx ends.
func publishLoop(ctx context.Context, eng engine, n, first int, rate float64, size int, ticks bool) publishResult {
	start := time.Now()
	var tk tickGen
	buf := make([]byte, 0, max(size, 64))
	res := publishResult{}
	for i := range n {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
			}
		}
		if ctx.Err() != nil {
			res.Error = "stopped early: " + ctx.Err().Error()
			break
		}
		buf = buf[:0]
		buf = strconv.AppendInt(buf, int64(first+i), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, ' ')
		if ticks {
			buf = tk.append(buf)
		}
		for !ticks && len(buf) < size {
			buf = append(buf, 'x')
		}
		if err := eng.publish(ctx, string(buf)); err != nil {
			res.Error = err.Error()
			break
		}
		res.Published++
	}
	res.Seconds = time.Since(start).Seconds()
	return res
}

func readStats(gc bool) serverStats {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return serverStats{HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, RSS: readRSS(), Goroutines: runtime.NumGoroutine(), CPUNanos: cpuNanos()}
}

// cpuNanos is this process's user plus system CPU time so far.
func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// readRSS is this process's resident set size in bytes, from /proc.
func readRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func writeHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tickGen makes JSON price ticks: 20 symbols whose prices walk, with
// volumes and a venue, about 170 bytes each (about 200 with the seq and
// time sseload puts first); repetitive as market data is
// (the same keys, similar numbers), from a fixed seed so runs compare.
type tickGen struct {
	n  int
	px [20]float64
	r  uint64
}

var tickSymbols = [20]string{"ACME", "GLOBX", "INITECH", "UMBRL", "HOOLI", "STARK", "WAYNE", "CYBRD", "OSCP", "TYRL",
	"MSFT", "AAPL", "GOOG", "AMZN", "NFLX", "TSLA", "NVDA", "META", "ORCL", "IBM"}

// next is a small xorshift PRNG: deterministic and allocation free.
func (g *tickGen) next() uint64 {
	if g.r == 0 {
		g.r = 0x9e3779b97f4a7c15
		for i := range g.px {
			g.px[i] = 10 + float64(i*23%500)
		}
	}
	g.r ^= g.r << 13
	g.r ^= g.r >> 7
	g.r ^= g.r << 17
	return g.r
}

func (g *tickGen) append(b []byte) []byte {
	k := int(g.next() % uint64(len(tickSymbols)))
	g.px[k] *= 1 + (float64(g.next()%2001)-1000)/1e6
	g.n++
	px := g.px[k]
	b = append(b, `{"type":"tick","sym":"`...)
	b = append(b, tickSymbols[k]...)
	b = append(b, `","px":`...)
	b = strconv.AppendFloat(b, px, 'f', 2, 64)
	b = append(b, `,"bid":`...)
	b = strconv.AppendFloat(b, px-0.01, 'f', 2, 64)
	b = append(b, `,"ask":`...)
	b = strconv.AppendFloat(b, px+0.01, 'f', 2, 64)
	b = append(b, `,"vol":`...)
	b = strconv.AppendUint(b, 1000+g.next()%90000, 10)
	b = append(b, `,"chg":`...)
	b = strconv.AppendFloat(b, (float64(g.next()%2001)-1000)/1000, 'f', 3, 64)
	b = append(b, `,"venue":"XNAS","cur":"USD","lot":100,"seq":`...)
	b = strconv.AppendInt(b, int64(g.n), 10)
	return append(b, '}')
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	UpperBound float64 `json:"le"`
	Count      uint64  `json:"count"`
}

// bucketQuantile is Prometheus's histogram_quantile over the observations
// between two readings of the same buckets: linear within a bucket, in
// milliseconds; 0 when nothing was observed.
func bucketQuantile(q float64, before, after []bucket) float64 {
	if len(after) == 0 || len(before) != len(after) {
		return 0
	}
	counts := make([]float64, len(after))
	for i := range after {
		counts[i] = float64(after[i].Count - before[i].Count)
	}
	total := counts[len(counts)-1]
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for i, c := range counts {
		if c >= rank {
			if c == prev {
				return after[i].UpperBound * 1000
			}
			return (lower + (after[i].UpperBound-lower)*(rank-prev)/(c-prev)) * 1000
		}
		lower, prev = after[i].UpperBound, c
	}
	return after[len(after)-1].UpperBound * 1000
}
