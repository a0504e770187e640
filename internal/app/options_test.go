package app

import (
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/sser-dev/sser/pkg/sser"
)

func TestFlagsTakeEnvDefaults(t *testing.T) {
	t.Setenv("SSER_FRONTEND_ADDR", "127.0.0.1:9000")
	t.Setenv("SSER_HEARTBEAT", "2s")
	t.Setenv("SSER_PEERS", "10.0.0.1, 10.0.0.2")
	t.Setenv("POD_IP", "10.0.0.1")
	t.Setenv("SSER_DEMO_PAGE", "false")
	o := NewOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if errs := o.Flags(fs); len(errs) > 0 {
		t.Fatal(errs)
	}
	// A flag beats its environment variable.
	if err := fs.Parse([]string{"--heartbeat=3s", "--peer-finder=static"}); err != nil {
		t.Fatal(err)
	}
	if o.FrontendAddr != "127.0.0.1:9000" || o.Heartbeat != 3*time.Second || o.PodIP != "10.0.0.1" || o.DemoPage {
		t.Errorf("options = %+v", o)
	}
	if strings.Join(o.Peers, "|") != "10.0.0.1|10.0.0.2" {
		t.Errorf("peers = %q", o.Peers)
	}
	if errs := o.Validate(); len(errs) > 0 {
		t.Errorf("valid options rejected: %v", errs)
	}
}

func TestNewFlagsTakeEnvDefaults(t *testing.T) {
	t.Setenv("SSER_PEER_TOKEN", "peer-secret")
	t.Setenv("SSER_PUBLISH_TOKEN", "publish-secret")
	t.Setenv("SSER_OUTBOX_SIZE", "2048")
	t.Setenv("SSER_OUTBOX_BYTES", "1000000")
	t.Setenv("SSER_PEER_CUTOFF", "30s")
	t.Setenv("SSER_MAX_SEQ_GAP", "4096")
	t.Setenv("SSER_MAX_ORIGINS_PER_PEER", "4")
	t.Setenv("SSER_IDEMPOTENCY_WINDOW", "1m")
	t.Setenv("SSER_LIVENESS_STALL", "20s")
	t.Setenv("SSER_INTERNAL_READ_TIMEOUT", "7s")
	o := NewOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if errs := o.Flags(fs); len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := fs.Parse([]string{"--liveness-stall=25s"}); err != nil {
		t.Fatal(err)
	}
	want := Options{
		PeerToken: "peer-secret", PublishToken: "publish-secret",
		OutboxSize: 2048, OutboxBytes: 1000000, PeerCutoff: 30 * time.Second,
		MaxSeqGap: 4096, MaxOriginsPerPeer: 4, IdempotencyWindow: time.Minute,
		LivenessStall: 25 * time.Second, InternalReadTimeout: 7 * time.Second,
	}
	got := Options{
		PeerToken: o.PeerToken, PublishToken: o.PublishToken,
		OutboxSize: o.OutboxSize, OutboxBytes: o.OutboxBytes, PeerCutoff: o.PeerCutoff,
		MaxSeqGap: o.MaxSeqGap, MaxOriginsPerPeer: o.MaxOriginsPerPeer, IdempotencyWindow: o.IdempotencyWindow,
		LivenessStall: o.LivenessStall, InternalReadTimeout: o.InternalReadTimeout,
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("options = %+v\nwant      %+v", got, want)
	}
	if errs := o.Validate(); len(errs) > 0 {
		t.Errorf("valid options rejected: %v", errs)
	}

	// Every new option reaches the library.
	o.PeerFinder = FinderLocal
	so, err := o.ServerOptions(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	lib := fmt.Sprintf("%s %s %d %d %s %d %d %s %s %s", so.PeerToken, so.PublishToken, so.OutboxSize, so.OutboxBytes,
		so.PeerCutoff, so.MaxSeqGap, so.MaxOriginsPerPeer, so.IdempotencyWindow, so.LivenessStall, so.InternalReadTimeout)
	if wantLib := "peer-secret publish-secret 2048 1000000 30s 4096 4 1m0s 25s 7s"; lib != wantLib {
		t.Errorf("library options = %q, want %q", lib, wantLib)
	}
}

func TestDefaultsAreTheLibrarys(t *testing.T) {
	o := NewOptions()
	if errs := o.Flags(flag.NewFlagSet("t", flag.ContinueOnError)); len(errs) > 0 {
		t.Fatal(errs)
	}
	d := sser.DefaultOptions()
	got := fmt.Sprint(o.OutboxSize, o.OutboxBytes, o.PeerCutoff, o.MaxSeqGap, o.MaxOriginsPerPeer, o.IdempotencyWindow, o.LivenessStall, o.InternalReadTimeout)
	want := fmt.Sprint(d.OutboxSize, d.OutboxBytes, d.PeerCutoff, d.MaxSeqGap, d.MaxOriginsPerPeer, d.IdempotencyWindow, d.LivenessStall, d.InternalReadTimeout)
	if got != want {
		t.Errorf("defaults %s, want the library's %s", got, want)
	}
	if o.PeerToken != "" || o.PublishToken != "" {
		t.Errorf("tokens set by default: %q %q", o.PeerToken, o.PublishToken)
	}
}

// TestPeerQueueIsTheOlderNameOfOutboxSize: --peer-queue and SSER_PEER_QUEUE
// still set the outbox size; the newer name wins where both are given.
func TestPeerQueueIsTheOlderNameOfOutboxSize(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want int
	}{
		{name: "default", want: sser.DefaultOutboxSize},
		{name: "older env", env: map[string]string{"SSER_PEER_QUEUE": "10"}, want: 10},
		{name: "older flag", args: []string{"--peer-queue=20"}, want: 20},
		{name: "newer env beats older env", env: map[string]string{"SSER_PEER_QUEUE": "10", "SSER_OUTBOX_SIZE": "30"}, want: 30},
		{name: "older flag beats newer env", env: map[string]string{"SSER_OUTBOX_SIZE": "30"}, args: []string{"--peer-queue=20"}, want: 20},
		{name: "last flag wins", args: []string{"--outbox-size=40", "--peer-queue=20", "--outbox-size=50"}, want: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o := NewOptions()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			if errs := o.Flags(fs); len(errs) > 0 {
				t.Fatal(errs)
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if o.OutboxSize != tt.want {
				t.Fatalf("outbox size = %d, want %d", o.OutboxSize, tt.want)
			}
			o.PeerFinder = FinderLocal
			so, err := o.ServerOptions(logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			if so.OutboxSize != tt.want {
				t.Fatalf("library outbox size = %d, want %d", so.OutboxSize, tt.want)
			}
		})
	}
}

// TestOffMapsToTheLibrarysNegative: 0 turns history and idempotency off in
// the binary, where the library reads 0 as its default.
func TestOffMapsToTheLibrarysNegative(t *testing.T) {
	o := NewOptions()
	o.HistorySize, o.IdempotencyWindow = 0, 0
	o.PeerFinder = FinderLocal
	so, err := o.ServerOptions(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if so.HistorySize >= 0 || so.IdempotencyWindow >= 0 {
		t.Fatalf("history size %d, idempotency window %s: want both negative (off)", so.HistorySize, so.IdempotencyWindow)
	}
}

func TestBadEnvIsReported(t *testing.T) {
	t.Setenv("SSER_HEARTBEAT", "soon")
	t.Setenv("SSER_SUBSCRIBER_QUEUE", "many")
	t.Setenv("SSER_MAX_SEQ_GAP", "-1")
	t.Setenv("SSER_PEER_QUEUE", "lots")
	t.Setenv("SSER_IDEMPOTENCY_WINDOW", "forever")
	errs := NewOptions().Flags(flag.NewFlagSet("t", flag.ContinueOnError))
	if len(errs) != 5 {
		t.Fatalf("errors = %v, want every bad variable named", errs)
	}
	all := fmt.Sprint(errs)
	for _, env := range []string{"SSER_HEARTBEAT", "SSER_SUBSCRIBER_QUEUE", "SSER_MAX_SEQ_GAP", "SSER_PEER_QUEUE", "SSER_IDEMPOTENCY_WINDOW"} {
		if !strings.Contains(all, env) {
			t.Errorf("no error names %s: %s", env, all)
		}
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Options)
		want   []string
	}{
		{"defaults", func(*Options) {}, nil},
		{"bad addr", func(o *Options) { o.FrontendAddr = "8000" }, []string{"--frontend-addr"}},
		{"bad finder", func(o *Options) { o.PeerFinder = "dns" }, []string{"--peer-finder"}},
		{"bad compression", func(o *Options) { o.Compression = "br" }, []string{"--compression"}},
		{"static needs peers", func(o *Options) { o.PeerFinder = FinderStatic }, []string{"--peers"}},
		{"bad stream pattern", func(o *Options) { o.AllowedStreams = []string{"news.*", "["} }, []string{"--allowed-streams"}},
		{"bad peer and pod ip", func(o *Options) { o.Peers = []string{"host"}; o.PodIP = "x" }, []string{"--peers", "--pod-ip"}},
		{"several", func(o *Options) { o.Heartbeat = 0; o.SubscriberQueue = -1; o.LogLevel = "trace"; o.HistorySize = -2 },
			[]string{"--heartbeat", "--subscriber-queue", "--log-level", "--history-size"}},
		{"tokens differ", func(o *Options) { o.PeerToken = "t"; o.PublishToken = "u" }, nil},
		{"one token alone", func(o *Options) { o.PublishToken = "u"; o.InternalToken = "u" }, nil},
		{"same peer and publish token", func(o *Options) { o.PeerToken = "t"; o.PublishToken = "t" }, []string{"--peer-token and --publish-token must differ"}},
		{"same tokens with the older one set too", func(o *Options) { o.PeerToken = "t"; o.PublishToken = "t"; o.InternalToken = "t" },
			[]string{"--peer-token and --publish-token must differ"}},
		{"idempotency off", func(o *Options) { o.IdempotencyWindow = 0 }, nil},
		{"outbox and peers", func(o *Options) {
			o.OutboxSize = 0
			o.OutboxBytes = -1
			o.PeerCutoff = 0
			o.MaxSeqGap = 0
			o.MaxOriginsPerPeer = -3
		}, []string{"--outbox-size", "--outbox-bytes", "--peer-cutoff", "--max-seq-gap", "--max-origins-per-peer"}},
		{"timeouts", func(o *Options) {
			o.IdempotencyWindow = -time.Second
			o.LivenessStall = 0
			o.InternalReadTimeout = -time.Second
		}, []string{"--idempotency-window", "--liveness-stall", "--internal-read-timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			tt.change(o)
			errs := o.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("errors %v, want %d naming %v", errs, len(tt.want), tt.want)
			}
			all := ""
			for _, e := range errs {
				all += e.Error() + "\n"
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("no error names %s: %s", w, all)
				}
			}
		})
	}
}

func TestMainUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"help"}, 0, "pub "},
		{[]string{"--help"}, 0, "sub "},
		{[]string{"-h"}, 0, "version "},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"serve", "--peer-finder=dns"}, 1, "--peer-finder"},
		{[]string{"serve", "--no-such-flag"}, 2, "sser serve: unknown flag --no-such-flag\nRun \"sser serve --help\" for the flags.\n"},
		{[]string{"serve", "--hartbeat=5s"}, 2, "unknown flag --hartbeat (did you mean --heartbeat?)"},
		{[]string{"serve", "--heartbeat", "5"}, 2, `invalid value "5" for --heartbeat: a duration has a unit: 500ms, 5s, 1m or 1h30m (5s for seconds)`},
		{[]string{"serve", "--heartbeat"}, 2, "--heartbeat needs a value"},
		{[]string{"serve", "extra"}, 1, "unexpected arguments"},
		{[]string{"pub", "--stream=s", "--retries=-1", "x"}, 2, "--retries must not be negative"},
		{[]string{"version"}, 0, "sser "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			code := Main(t.Context(), tt.args, strings.NewReader(""), &out, &out)
			if code != tt.code || !strings.Contains(out.String(), tt.out) {
				t.Errorf("code %d, output %q; want %d and %q", code, out.String(), tt.code, tt.out)
			}
		})
	}
}

// TestPubSendsThePublishToken: --token, else SSER_PUBLISH_TOKEN, else the
// older SSER_INTERNAL_TOKEN.
func TestPubSendsThePublishToken(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "none", want: ""},
		{name: "older variable", env: map[string]string{"SSER_INTERNAL_TOKEN": "internal"}, want: "Bearer internal"},
		{name: "publish variable first", env: map[string]string{"SSER_INTERNAL_TOKEN": "internal", "SSER_PUBLISH_TOKEN": "publish"}, want: "Bearer publish"},
		{name: "flag beats both", env: map[string]string{"SSER_INTERNAL_TOKEN": "internal", "SSER_PUBLISH_TOKEN": "publish"}, args: []string{"--token", "flag"}, want: "Bearer flag"},
		{name: "peer token is not a publish token", env: map[string]string{"SSER_PEER_TOKEN": "peer"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"SSER_INTERNAL_TOKEN", "SSER_PUBLISH_TOKEN", "SSER_PEER_TOKEN"} {
				t.Setenv(k, tt.env[k])
			}
			got := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- r.Header.Get("Authorization")
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"accepted":1}`))
			}))
			defer srv.Close()
			var out bytes.Buffer
			args := append(append([]string{"pub", "--url", srv.URL, "--stream", "s"}, tt.args...), "hi")
			if code := Main(t.Context(), args, strings.NewReader(""), &out, &out); code != 0 {
				t.Fatalf("pub exited %d: %s", code, out.String())
			}
			if a := <-got; a != tt.want {
				t.Errorf("Authorization = %q, want %q", a, tt.want)
			}
		})
	}
}
