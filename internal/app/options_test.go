package app

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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

func TestBadEnvIsReported(t *testing.T) {
	t.Setenv("SSER_HEARTBEAT", "soon")
	t.Setenv("SSER_SUBSCRIBER_QUEUE", "many")
	errs := NewOptions().Flags(flag.NewFlagSet("t", flag.ContinueOnError))
	if len(errs) != 2 {
		t.Fatalf("errors = %v, want both bad variables named", errs)
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
		{"static needs peers", func(o *Options) { o.PeerFinder = FinderStatic }, []string{"--peers"}},
		{"bad stream pattern", func(o *Options) { o.AllowedStreams = []string{"news.*", "["} }, []string{"--allowed-streams"}},
		{"bad peer and pod ip", func(o *Options) { o.Peers = []string{"host"}; o.PodIP = "x" }, []string{"--peers", "--pod-ip"}},
		{"several", func(o *Options) { o.Heartbeat = 0; o.SubscriberQueue = -1; o.LogLevel = "trace"; o.HistorySize = -2 },
			[]string{"--heartbeat", "--subscriber-queue", "--log-level", "--history-size"}},
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
		{[]string{"help"}, 0, "sser pub"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"serve", "--peer-finder=dns"}, 1, "--peer-finder"},
		{[]string{"serve", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"serve", "extra"}, 1, "unexpected arguments"},
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

func TestPubSendsTheInternalToken(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"accepted":1}`))
	}))
	defer srv.Close()
	t.Setenv("SSER_INTERNAL_TOKEN", "from-env")
	var out bytes.Buffer
	if code := Main(t.Context(), []string{"pub", "--url", srv.URL, "--stream", "s", "hi"}, strings.NewReader(""), &out, &out); code != 0 {
		t.Fatalf("pub exited %d: %s", code, out.String())
	}
	if got != "Bearer from-env" {
		t.Errorf("Authorization = %q", got)
	}
}
