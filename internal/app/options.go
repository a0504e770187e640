package app

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sser-dev/sser/pkg/sser"
)

// Peer finder kinds.
const (
	FinderAuto       = "auto"
	FinderKubernetes = "kubernetes"
	FinderLocal      = "local"
	FinderStatic     = "static"
)

// Options are the serve command's settings, from flags with environment
// variables as their defaults.
type Options struct {
	FrontendAddr string
	InternalAddr string

	PeerFinder string
	Peers      []string
	PodIP      string
	PodName    string
	Namespace  string
	Selector   string
	Kubeconfig string
	// kubeconfigFlag is set when --kubeconfig was given on the command
	// line (not only KUBECONFIG in the environment).
	kubeconfigFlag bool

	Heartbeat         time.Duration
	Retry             time.Duration
	ConnectPreamble   bool
	MaxConnectionTime time.Duration
	WriteTimeout      time.Duration
	SubscriberQueue   int
	PeerBatch         int
	PeerTimeout       time.Duration
	PeerBackoffMax    time.Duration
	MaxBodyBytes      int64
	CORSOrigins       []string
	WebSocket         bool
	AllowedStreams    []string
	Compression       string
	HistorySize       int
	HistoryAge        time.Duration

	// Credentials of the internal port, given or read from their files at
	// start (readTokenFiles).
	PeerToken         string
	PublishToken      string
	InternalToken     string
	PeerTokenFile     string
	PublishTokenFile  string
	InternalTokenFile string

	// Limits on what clients can make one replica do. Zero means what it
	// means to the library: the default, or no cap where the library has
	// none by default.
	MaxConnections          int
	MaxConnectionsPerIP     int
	ConnectionRate          float64
	TrustedProxies          []string
	PublishRate             float64
	MemoryWatermark         int64
	MaxStreamsPerConnection int
	MaxReplayEvents         int
	MaxReplayBytes          int
	MaxHistoryStreams       int
	MaxHistoryBytes         int64
	MaxStreamHistoryBytes   int64

	// OutboxSize is also set by --peer-queue, its older name.
	OutboxSize          int
	OutboxBytes         int64
	PeerCutoff          time.Duration
	MaxSeqGap           uint64
	MaxOriginsPerPeer   int
	IdempotencyWindow   time.Duration
	LivenessStall       time.Duration
	InternalReadTimeout time.Duration

	DrainWindow     time.Duration
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	DemoPage        bool

	// Auth authenticates subscribers (and JWT publishers); off when empty.
	Auth AuthOptions
}

// NewOptions returns the defaults: the library's (sser.DefaultOptions) for
// everything the library defines.
func NewOptions() *Options {
	d := sser.DefaultOptions()
	return &Options{
		FrontendAddr:        ":8000",
		InternalAddr:        ":7000",
		PeerFinder:          FinderAuto,
		Compression:         sser.CompressionOff,
		Selector:            "app.kubernetes.io/name=sser",
		Heartbeat:           d.Heartbeat,
		Retry:               d.Retry,
		ConnectPreamble:     true,
		WriteTimeout:        d.WriteTimeout,
		SubscriberQueue:     d.SubscriberQueue,
		PeerBatch:           d.PeerBatch,
		PeerTimeout:         d.PeerTimeout,
		PeerBackoffMax:      d.PeerBackoffMax,
		MaxBodyBytes:        d.MaxBodyBytes,
		HistorySize:         d.HistorySize,
		HistoryAge:          d.HistoryAge,
		OutboxSize:          d.OutboxSize,
		OutboxBytes:         d.OutboxBytes,
		PeerCutoff:          d.PeerCutoff,
		MaxSeqGap:           d.MaxSeqGap,
		MaxOriginsPerPeer:   d.MaxOriginsPerPeer,
		IdempotencyWindow:   d.IdempotencyWindow,
		LivenessStall:       d.LivenessStall,
		InternalReadTimeout: d.InternalReadTimeout,
		// MaxConnections and MemoryWatermark stay 0: the library derives
		// them from this process's file limit and its container's memory
		// limit, which the flags' usage cannot know.
		MaxStreamsPerConnection: d.MaxStreamsPerConnection,
		MaxReplayEvents:         d.MaxReplayEvents,
		MaxReplayBytes:          d.MaxReplayBytes,
		MaxHistoryStreams:       d.MaxHistoryStreams,
		MaxHistoryBytes:         d.MaxHistoryBytes,
		MaxStreamHistoryBytes:   d.MaxStreamHistoryBytes,
		DrainWindow:             10 * time.Second,
		ShutdownTimeout:         5 * time.Second,
		LogLevel:                "info",
		LogFormat:               "auto",
		DemoPage:                true,
		WebSocket:               true,
		Auth:                    newAuthOptions(),
	}
}

// envFlags remembers, per flag, the environment variable that sets its default.
type envFlags struct {
	fs   *flag.FlagSet
	errs []error
}

func (e *envFlags) lookup(name, env string) (string, bool) {
	if env == "" {
		return "", false
	}
	v, ok := os.LookupEnv(env)
	return v, ok && v != ""
}

func (e *envFlags) usage(u, env string) string {
	if env == "" {
		return u
	}
	return u + " (env " + env + ")"
}

func (e *envFlags) str(p *string, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		*p = v
	}
	e.fs.StringVar(p, name, *p, e.usage(u, env))
}

func (e *envFlags) list(p *[]string, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		*p = splitList(v)
	}
	e.fs.Func(name, e.usage(u+" (comma-separated)", env)+" (default "+strconv.Quote(strings.Join(*p, ","))+")", func(s string) error {
		*p = splitList(s)
		return nil
	})
}

func (e *envFlags) dur(p *time.Duration, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: %s", env, v, durationHint(v)))
		} else {
			*p = d
		}
	}
	e.fs.DurationVar(p, name, *p, e.usage(u, env))
}

func (e *envFlags) integer(p *int, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			*p = n
		}
	}
	e.fs.IntVar(p, name, *p, e.usage(u, env))
}

// integerAlias registers old as an older name of the flag newName on p:
// both set the same option, the one given last on the command line wins,
// and the older variable applies only while the newer one is unset.
func (e *envFlags) integerAlias(p *int, old, oldEnv, newName, newEnv string) {
	if _, set := e.lookup(newName, newEnv); !set {
		if v, ok := e.lookup(old, oldEnv); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", oldEnv, v))
			} else {
				*p = n
			}
		}
	}
	e.fs.IntVar(p, old, *p, e.usage("older name of --"+newName, oldEnv))
}

func (e *envFlags) uint64(p *uint64, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a non-negative integer", env, v))
		} else {
			*p = n
		}
	}
	e.fs.Uint64Var(p, name, *p, e.usage(u, env))
}

func (e *envFlags) int64(p *int64, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			*p = n
		}
	}
	e.fs.Int64Var(p, name, *p, e.usage(u, env))
}

func (e *envFlags) float(p *float64, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a number", env, v))
		} else {
			*p = f
		}
	}
	e.fs.Float64Var(p, name, *p, e.usage(u, env))
}

func (e *envFlags) boolean(p *bool, name, env, u string) {
	if v, ok := e.lookup(name, env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a boolean", env, v))
		} else {
			*p = b
		}
	}
	e.fs.BoolVar(p, name, *p, e.usage(u, env))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Flags registers the options on fs, taking defaults from the environment.
// It returns the errors found in environment values.
func (o *Options) Flags(fs *flag.FlagSet) []error {
	e := &envFlags{fs: fs}
	// Listeners.
	e.str(&o.FrontendAddr, "frontend-addr", "SSER_FRONTEND_ADDR", "address of the SSE listener (subscribers, demo page)")
	e.str(&o.InternalAddr, "internal-addr", "SSER_INTERNAL_ADDR", "address of the internal listener (peers, publish, probes, metrics); peers are reached at <peer IP>:<this port>")
	// Peers.
	e.str(&o.PeerFinder, "peer-finder", "SSER_PEER_FINDER", "how peers are found: auto (kubernetes in a pod or with --kubeconfig, else local), kubernetes, local or static")
	e.list(&o.Peers, "peers", "SSER_PEERS", "peer IPs for --peer-finder=static, this replica's included")
	e.str(&o.PodIP, "pod-ip", "POD_IP", "this replica's own IP in the peer set (delivered to in process); default the host of --internal-addr, or 127.0.0.1 with the local finder")
	e.str(&o.PodName, "pod-name", "POD_NAME", "this replica's pod name, for logs and the status page")
	e.str(&o.Namespace, "namespace", "POD_NAMESPACE", "namespace whose pods are peers; default the in-cluster namespace or the kubeconfig's")
	e.str(&o.Selector, "selector", "SSER_SELECTOR", "label selector of the peer pods")
	e.str(&o.Kubeconfig, "kubeconfig", "KUBECONFIG", "kubeconfig file, for running outside a cluster")
	// Subscribers.
	e.dur(&o.Heartbeat, "heartbeat", "SSER_HEARTBEAT", "interval of heartbeat comments on idle SSE connections and of WebSocket pings")
	e.dur(&o.Retry, "retry", "SSER_RETRY", "reconnection delay sent to SSE clients")
	e.boolean(&o.ConnectPreamble, "connect-preamble", "SSER_CONNECT_PREAMBLE", "send the retry field and an id-only frame on connect, so a client has a resume point before its first event (false for clients that dispatch frames without data as empty events; a subscriber may pass ?preamble=0 or 1)")
	e.dur(&o.MaxConnectionTime, "max-connection-time", "SSER_MAX_CONNECTION_TIME", "end subscriber connections after about this long (jittered), 0 = never")
	e.dur(&o.WriteTimeout, "write-timeout", "SSER_WRITE_TIMEOUT", "limit on one write to a subscriber")
	e.integer(&o.SubscriberQueue, "subscriber-queue", "SSER_SUBSCRIBER_QUEUE", "events queued for one subscriber before it is disconnected")
	e.str(&o.Compression, "compression", "SSER_COMPRESSION", "gzip: compress SSE responses for clients that send Accept-Encoding: gzip (each event is deflated once for all of them); off: never")
	e.list(&o.CORSOrigins, "cors-origins", "SSER_CORS_ORIGINS", "browser origins allowed to subscribe cross-origin; * for any")
	e.boolean(&o.WebSocket, "websocket", "SSER_WEBSOCKET", "serve WebSocket subscriptions on the SSE path (GET /events with Upgrade: websocket)")
	e.list(&o.AllowedStreams, "allowed-streams", "SSER_ALLOWED_STREAMS", "glob patterns (path.Match) of the streams clients may subscribe to; others get 204 No Content (empty allows all)")
	e.integer(&o.HistorySize, "history-size", "SSER_HISTORY_SIZE", "events kept per stream for resuming clients (0 disables)")
	e.dur(&o.HistoryAge, "history-age", "SSER_HISTORY_AGE", "how long events are kept for resuming clients")
	// Credentials of the internal port. Prefer the files (a mounted
	// Secret): a flag's value shows in the process list
	// (/proc/PID/cmdline), a variable's in the process's environment.
	e.str(&o.PeerToken, "peer-token", "SSER_PEER_TOKEN", "when set, the replicas' credential: required as 'Authorization: Bearer <token>' on peer delivery, history and origins, and sent to peers; the same on every replica (prefer --peer-token-file)")
	e.str(&o.PeerTokenFile, "peer-token-file", "SSER_PEER_TOKEN_FILE", "file holding the peer token, read at start (a final newline is trimmed)")
	e.str(&o.PublishToken, "publish-token", "SSER_PUBLISH_TOKEN", "when set, required as 'Authorization: Bearer <token>' on publish; it grants publishing only, so it must differ from --peer-token (prefer --publish-token-file)")
	e.str(&o.PublishTokenFile, "publish-token-file", "SSER_PUBLISH_TOKEN_FILE", "file holding the publish token, read at start (a final newline is trimmed)")
	e.str(&o.InternalToken, "internal-token", "SSER_INTERNAL_TOKEN", "older single credential: while set, accepted as the peer token and as the publish token (wherever those are unset it is used as them) (prefer --internal-token-file)")
	e.str(&o.InternalTokenFile, "internal-token-file", "SSER_INTERNAL_TOKEN_FILE", "file holding the older single credential, read at start (a final newline is trimmed)")
	// Limits: what one client can make this replica hold or do. Every
	// refusal is counted in sser_refused_total{limit}.
	e.integer(&o.MaxConnections, "max-connections", "SSER_MAX_CONNECTIONS", "subscriptions this replica serves; more are refused (503); the frontend listener also answers 503 and closes sockets past this plus 64; 0 = the process's file limit less 512 descriptors kept for the internal port, peers and probes; negative = no cap")
	e.integer(&o.MaxConnectionsPerIP, "max-connections-per-ip", "SSER_MAX_CONNECTIONS_PER_IP", "subscriptions one client address may hold; more are refused (429); 0 = no cap (behind a proxy set --trusted-proxies, or every client shares the proxy's address)")
	e.float(&o.ConnectionRate, "connection-rate", "SSER_CONNECTION_RATE", "new subscriptions per second this replica accepts (bursts of as many); faster ones are refused (429); 0 = no cap")
	e.list(&o.TrustedProxies, "trusted-proxies", "SSER_TRUSTED_PROXIES", "addresses or CIDRs of proxies (an ingress) whose X-Forwarded-For names the client address for --max-connections-per-ip")
	e.float(&o.PublishRate, "publish-rate", "SSER_PUBLISH_RATE", "events per second one publisher (its credential, else its address) may publish; faster is refused (429); 0 = no cap")
	e.int64(&o.MemoryWatermark, "memory-watermark", "SSER_MEMORY_WATERMARK", "live heap bytes above which new subscriptions and publishes are refused (503); 0 = 80% of the container's memory limit (none without one); negative = never")
	e.integer(&o.MaxStreamsPerConnection, "max-streams-per-connection", "SSER_MAX_STREAMS_PER_CONNECTION", "streams one subscription may name; more are refused (400); 0 = the default")
	e.integer(&o.MaxReplayEvents, "max-replay-events", "SSER_MAX_REPLAY_EVENTS", "events one resume replays; a client that missed more gets the oldest and resumes again for the rest; 0 = the default")
	e.integer(&o.MaxReplayBytes, "max-replay-bytes", "SSER_MAX_REPLAY_BYTES", "bytes one resume replays (as --max-replay-events); 0 = the default")
	e.integer(&o.MaxHistoryStreams, "max-history-streams", "SSER_MAX_HISTORY_STREAMS", "streams holding history; past it the oldest events go first (sser_history_evicted_total); 0 = the default")
	e.int64(&o.MaxHistoryBytes, "max-history-bytes", "SSER_MAX_HISTORY_BYTES", "bytes of history held across all streams, oldest evicted first; 0 = the default")
	e.int64(&o.MaxStreamHistoryBytes, "max-stream-history-bytes", "SSER_MAX_STREAM_HISTORY_BYTES", "bytes of history held for one stream, oldest evicted first; 0 = the default")
	// Peers: the outbox, back-pressure and what a peer may send.
	e.integer(&o.OutboxSize, "outbox-size", "SSER_OUTBOX_SIZE", "this replica's own events held for peers that have not acknowledged them and for repairs; a peer lagging by all of them brings publishers back-pressure (503), then is cut off")
	e.integerAlias(&o.OutboxSize, "peer-queue", "SSER_PEER_QUEUE", "outbox-size", "SSER_OUTBOX_SIZE")
	e.int64(&o.OutboxBytes, "outbox-bytes", "SSER_OUTBOX_BYTES", "bound on the message bytes the outbox holds")
	e.dur(&o.PeerCutoff, "peer-cutoff", "SSER_PEER_CUTOFF", "how long one lagging peer may hold publishers back (503 with Retry-After) before it is cut off and told of the loss")
	e.integer(&o.PeerBatch, "peer-batch", "SSER_PEER_BATCH", "most events in one batch to a peer (twice as many at most in flight unacknowledged)")
	e.dur(&o.PeerTimeout, "peer-timeout", "SSER_PEER_TIMEOUT", "limit on a peer's answer for a batch once asked, and on opening a delivery stream (a peer that times out gets up to 4x as long)")
	e.dur(&o.PeerBackoffMax, "peer-backoff-max", "SSER_PEER_BACKOFF_MAX", "longest wait between retries to an unreachable peer")
	e.uint64(&o.MaxSeqGap, "max-seq-gap", "SSER_MAX_SEQ_GAP", "largest jump ahead in an origin's sequence accepted from a peer; a further one is refused (400)")
	e.integer(&o.MaxOriginsPerPeer, "max-origins-per-peer", "SSER_MAX_ORIGINS_PER_PEER", "origins one peer address may announce (each restart of a pod brings a new one); the oldest binding is forgotten")
	// Publishers and the internal listener.
	e.dur(&o.IdempotencyWindow, "idempotency-window", "SSER_IDEMPOTENCY_WINDOW", "how long a publish's Idempotency-Key is remembered, so a retried publish is applied once (0 disables)")
	e.int64(&o.MaxBodyBytes, "max-body-bytes", "SSER_MAX_BODY_BYTES", "largest request body accepted on the internal endpoints, and line of a peer's delivery stream")
	e.dur(&o.InternalReadTimeout, "internal-read-timeout", "SSER_INTERNAL_READ_TIMEOUT", "limit on reading one request (header and body) on the internal listener; on a peer's delivery stream, on each line")
	e.dur(&o.LivenessStall, "liveness-stall", "SSER_LIVENESS_STALL", "/healthz fails when the hub made no progress for this long, so a frozen replica is restarted")
	// Lifecycle and logs.
	e.dur(&o.DrainWindow, "drain-window", "SSER_DRAIN_WINDOW", "on SIGTERM, close subscribers at random moments over this window before exiting")
	e.dur(&o.ShutdownTimeout, "shutdown-timeout", "SSER_SHUTDOWN_TIMEOUT", "after the drain, how long the listeners get to close")
	e.str(&o.LogLevel, "log-level", "SSER_LOG_LEVEL", "debug, info, warn or error")
	e.str(&o.LogFormat, "log-format", "SSER_LOG_FORMAT", "json, text, or auto (text on a terminal, else json)")
	e.boolean(&o.DemoPage, "demo-page", "SSER_DEMO_PAGE", "serve the demo playground at / on the frontend. It also exposes PUBLISHING on the frontend (POST /demo/publish, with the publish token when one is set, else from loopback clients only): for trying sser out, not for a public port")
	// Subscriber authentication (secrets from files or variables).
	o.Auth.flags(e)
	return e.errs
}

// Validate returns every problem with the options.
func (o *Options) Validate() []error {
	var errs []error
	for name, addr := range map[string]string{"--frontend-addr": o.FrontendAddr, "--internal-addr": o.InternalAddr} {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port or :port", name, addr))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s %q: bad port", name, addr))
		}
	}
	switch o.PeerFinder {
	case FinderAuto, FinderKubernetes, FinderLocal:
	case FinderStatic:
		if len(o.Peers) == 0 {
			errs = append(errs, errors.New("--peer-finder=static needs --peers"))
		}
	default:
		errs = append(errs, fmt.Errorf("--peer-finder %q: want auto, kubernetes, local or static", o.PeerFinder))
	}
	switch o.Compression {
	case sser.CompressionOff, sser.CompressionGzip:
	default:
		errs = append(errs, fmt.Errorf("--compression %q: want gzip or off", o.Compression))
	}
	for _, p := range o.Peers {
		if net.ParseIP(p) == nil {
			errs = append(errs, fmt.Errorf("--peers: %q is not an IP address", p))
		}
	}
	for _, pat := range o.AllowedStreams {
		if _, err := path.Match(pat, ""); err != nil {
			errs = append(errs, fmt.Errorf("--allowed-streams: bad pattern %q: %w", pat, err))
		}
	}
	if o.PodIP != "" && net.ParseIP(o.PodIP) == nil {
		errs = append(errs, fmt.Errorf("--pod-ip %q is not an IP address", o.PodIP))
	}
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	nonNeg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", name, d))
		}
	}
	pos("--heartbeat", o.Heartbeat)
	pos("--retry", o.Retry)
	pos("--write-timeout", o.WriteTimeout)
	pos("--shutdown-timeout", o.ShutdownTimeout)
	pos("--peer-timeout", o.PeerTimeout)
	pos("--peer-backoff-max", o.PeerBackoffMax)
	nonNeg("--max-connection-time", o.MaxConnectionTime)
	nonNeg("--drain-window", o.DrainWindow)
	nonNeg("--history-age", o.HistoryAge)
	pos("--peer-cutoff", o.PeerCutoff)
	pos("--liveness-stall", o.LivenessStall)
	pos("--internal-read-timeout", o.InternalReadTimeout)
	nonNeg("--idempotency-window", o.IdempotencyWindow)
	for _, f := range []struct {
		name string
		n    int
	}{
		{"--subscriber-queue", o.SubscriberQueue},
		{"--outbox-size (or --peer-queue)", o.OutboxSize},
		{"--peer-batch", o.PeerBatch},
		{"--max-origins-per-peer", o.MaxOriginsPerPeer},
	} {
		if f.n <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", f.name, f.n))
		}
	}
	if o.HistorySize < 0 {
		errs = append(errs, fmt.Errorf("--history-size must not be negative, got %d", o.HistorySize))
	}
	if o.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-body-bytes must be positive, got %d", o.MaxBodyBytes))
	}
	if o.OutboxBytes <= 0 {
		errs = append(errs, fmt.Errorf("--outbox-bytes must be positive, got %d", o.OutboxBytes))
	}
	if o.MaxSeqGap == 0 {
		errs = append(errs, errors.New("--max-seq-gap must be positive, got 0"))
	}
	for _, f := range []struct {
		name string
		n    int64
	}{
		{"--max-connections-per-ip", int64(o.MaxConnectionsPerIP)},
		{"--max-streams-per-connection", int64(o.MaxStreamsPerConnection)},
		{"--max-replay-events", int64(o.MaxReplayEvents)},
		{"--max-replay-bytes", int64(o.MaxReplayBytes)},
		{"--max-history-streams", int64(o.MaxHistoryStreams)},
		{"--max-history-bytes", o.MaxHistoryBytes},
		{"--max-stream-history-bytes", o.MaxStreamHistoryBytes},
	} {
		if f.n < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 means the default), got %d", f.name, f.n))
		}
	}
	for name, r := range map[string]float64{"--connection-rate": o.ConnectionRate, "--publish-rate": o.PublishRate} {
		if r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
			errs = append(errs, fmt.Errorf("%s must be a non-negative number (0 means no cap), got %v", name, r))
		}
	}
	for _, p := range o.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil && net.ParseIP(p) == nil {
			errs = append(errs, fmt.Errorf("--trusted-proxies: %q is neither an IP address nor a CIDR", p))
		}
	}
	if o.PeerToken != "" && o.PeerToken == o.PublishToken {
		errs = append(errs, errors.New("--peer-token and --publish-token must differ: a publisher must not be able to pose as a peer"))
	}
	if _, ok := logLevels[o.LogLevel]; !ok {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel))
	}
	errs = append(errs, o.Auth.validate()...)
	if o.LogFormat != "json" && o.LogFormat != "text" && o.LogFormat != "auto" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json, text or auto", o.LogFormat))
	}
	return errs
}

// readTokenFiles reads the internal port's credentials from their files
// into the tokens, trimmed of a final newline (a Secret written with echo
// has one). It returns every problem: a file that cannot be read or is
// empty (an empty token would turn the check off), or a token given both
// as a value and as a file.
func (o *Options) readTokenFiles() []error {
	var errs []error
	for _, f := range []struct {
		name string
		tok  *string
		file string
	}{
		{"peer-token", &o.PeerToken, o.PeerTokenFile},
		{"publish-token", &o.PublishToken, o.PublishTokenFile},
		{"internal-token", &o.InternalToken, o.InternalTokenFile},
	} {
		if f.file == "" {
			continue
		}
		if *f.tok != "" {
			errs = append(errs, fmt.Errorf("--%s and --%s-file: give one", f.name, f.name))
			continue
		}
		b, err := os.ReadFile(f.file)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s-file: %w", f.name, err))
			continue
		}
		tok := strings.TrimRight(string(b), "\r\n")
		if tok == "" {
			errs = append(errs, fmt.Errorf("--%s-file %s is empty", f.name, f.file))
			continue
		}
		*f.tok = tok
	}
	return errs
}
