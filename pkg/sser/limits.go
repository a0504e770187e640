package sser

import (
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits on what clients can make one replica do. Every refusal is counted
// in sser_refused_total{limit} and answered with a JSON error and a
// jittered Retry-After, so refused clients do not come back in step.

// reservedFDs are file descriptors kept for the internal port, peers,
// probes and files when the connection cap is derived from the file limit.
const reservedFDs = 512

// DefaultMaxConnections is the connection cap derived from the process's
// file limit, with reservedFDs kept for everything else.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 || rl.Cur > math.MaxInt32 {
		return 10000
	}
	return max(int(rl.Cur)-reservedFDs, 64)
}

// tokenBucket allows rate events per second with bursts of burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

// take takes n tokens; when it cannot, it says how long until it could.
func (b *tokenBucket) take(now time.Time, n float64) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= n {
		b.tokens -= n
		return true, 0
	}
	return false, time.Duration((n - b.tokens) / b.rate * float64(time.Second))
}

// keyedBuckets is a token bucket per key (a client IP, a credential), with
// a bounded number of keys: past it, the idlest half is forgotten.
type keyedBuckets struct {
	rate, burst float64
	maxKeys     int

	mu      sync.Mutex
	buckets map[string]*tokenBucket
}

func newKeyedBuckets(rate, burst float64) *keyedBuckets {
	return &keyedBuckets{rate: rate, burst: burst, maxKeys: 100000, buckets: make(map[string]*tokenBucket)}
}

func (k *keyedBuckets) take(key string, now time.Time, n float64) (bool, time.Duration) {
	if k == nil || k.rate <= 0 {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	if b == nil {
		if len(k.buckets) >= k.maxKeys {
			cut := now.Add(-time.Duration(k.burst/k.rate*float64(time.Second)) - time.Second)
			for key, b := range k.buckets {
				if b.last.Before(cut) {
					delete(k.buckets, key)
				}
			}
			if len(k.buckets) >= k.maxKeys {
				clear(k.buckets)
			}
		}
		b = &tokenBucket{rate: k.rate, burst: k.burst}
		k.buckets[key] = b
	}
	return b.take(now, n)
}

// connLimits caps subscriptions: in all, per client IP, and how fast new
// ones may come (a reconnect storm after a drain).
type connLimits struct {
	max, perIP int
	rate       *keyedBuckets // one key: the whole replica
	trusted    []*net.IPNet

	mu    sync.Mutex
	total int
	byIP  map[string]int
}

func newConnLimits(o *Options) *connLimits {
	l := &connLimits{max: o.MaxConnections, perIP: o.MaxConnectionsPerIP, byIP: make(map[string]int)}
	if o.ConnectionRate > 0 {
		l.rate = newKeyedBuckets(o.ConnectionRate, max(o.ConnectionRate, 1))
	}
	for _, c := range o.TrustedProxies {
		if _, n, err := net.ParseCIDR(c); err == nil {
			l.trusted = append(l.trusted, n)
		} else if ip := net.ParseIP(c); ip != nil {
			bits := 8 * len(ip.To16())
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			l.trusted = append(l.trusted, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		}
	}
	return l
}

func (l *connLimits) isTrusted(ip net.IP) bool {
	for _, n := range l.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP is the address a request came from: the socket's, or, when the
// socket's is a trusted proxy, the nearest untrusted address in
// X-Forwarded-For.
func (l *connLimits) clientIP(r *http.Request) string {
	ip := remoteIP(r)
	if len(l.trusted) == 0 {
		return ip
	}
	parsed := net.ParseIP(ip)
	if parsed == nil || !l.isTrusted(parsed) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := net.ParseIP(strings.TrimSpace(hops[i]))
		if hop == nil {
			break
		}
		ip = hop.String()
		if !l.isTrusted(hop) {
			break
		}
	}
	return ip
}

// acquire takes a subscription slot for ip: the release func, or the limit
// that refused it and how long to wait.
func (l *connLimits) acquire(ip string, now time.Time) (func(), string, time.Duration) {
	if ok, wait := l.rate.take("", now, 1); !ok {
		return nil, "connection_rate", wait
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return nil, "connections", time.Second
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return nil, "connections_per_ip", time.Second
	}
	l.total++
	l.byIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.total--
			if l.byIP[ip]--; l.byIP[ip] <= 0 {
				delete(l.byIP, ip)
			}
			l.mu.Unlock()
		})
	}, "", 0
}

// retryAfter is the Retry-After for a wait: at least one second, plus up
// to as much again, so refused clients spread out.
func retryAfter(wait time.Duration) string {
	s := max(1, int(math.Ceil(wait.Seconds())))
	return strconv.Itoa(s + rand.N(s+1))
}

// refuse answers a request a limit refused.
func (s *ServerImpl) refuse(w http.ResponseWriter, r *http.Request, endpoint, limit string, status int, wait time.Duration, msg string) {
	s.m.refused.WithLabelValues(limit).Inc()
	w.Header().Set("Retry-After", retryAfter(wait))
	// A refused client does not keep its connection (a file descriptor).
	w.Header().Set("Connection", "close")
	s.writeError(w, r, endpoint, status, msg, "")
}

// CountRefused counts, in sser_refused_total{limit}, a refusal made in
// front of the server's handlers: the binary's frontend listener answers
// 503 to sockets past its cap before any request is read.
func (s *ServerImpl) CountRefused(limit string) { s.m.refused.WithLabelValues(limit).Inc() }

// memoryGuard sheds load above a heap watermark: new subscriptions and
// publishes are refused with 503 while the live heap is above it.
type memoryGuard struct {
	watermark uint64
	over      atomic.Bool
}

// check reads the heap size; it is cheap (runtime/metrics, no stop).
func (g *memoryGuard) check() {
	if g.watermark == 0 {
		return
	}
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(sample)
	if sample[0].Value.Kind() == rtmetrics.KindUint64 {
		g.over.Store(sample[0].Value.Uint64() > g.watermark)
	}
}

// DefaultMemoryWatermark is 80% of the container's memory limit (cgroup
// v2), or 0 (no shedding) when there is none.
func DefaultMemoryWatermark() uint64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := readSmallFile(f)
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v == 0 || v > 1<<50 {
			continue
		}
		return v / 5 * 4
	}
	return 0
}

func readSmallFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.Read(b)
	if n > 0 {
		return b[:n], nil
	}
	return nil, err
}

// failureThrottle slows credential guessing: an address with more than
// burst wrong credentials, refilled at rate per second, is answered 429
// until it has waited. Wrong credentials are logged at most once a second,
// with how many there were.
type failureThrottle struct {
	buckets *keyedBuckets

	mu      sync.Mutex
	pending int
	lastLog time.Time
}

func newFailureThrottle() *failureThrottle {
	return &failureThrottle{buckets: newKeyedBuckets(1, 20)}
}

// allowed reports whether ip may try a credential now.
func (f *failureThrottle) allowed(ip string, now time.Time) (bool, time.Duration) {
	f.buckets.mu.Lock()
	b := f.buckets.buckets[ip]
	f.buckets.mu.Unlock()
	if b == nil {
		return true, 0
	}
	f.buckets.mu.Lock()
	defer f.buckets.mu.Unlock()
	tokens := min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	if tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - tokens) / b.rate * float64(time.Second))
}

// fail records a wrong credential from ip; it returns how many to log now
// (0: not yet).
func (f *failureThrottle) fail(ip string, now time.Time) int {
	f.buckets.take(ip, now, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending++
	if now.Sub(f.lastLog) < time.Second {
		return 0
	}
	n := f.pending
	f.pending, f.lastLog = 0, now
	return n
}
