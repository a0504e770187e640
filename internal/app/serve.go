package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/mux"

	"github.com/sser-dev/sser/pkg/sser"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := NewOptions()
	fs := flag.NewFlagSet("sser serve", flag.ContinueOnError)
	errs := o.Flags(fs)
	if err := parseFlags(fs, args, stdout, serveUsage); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	fs.Visit(func(f *flag.Flag) { o.kubeconfigFlag = o.kubeconfigFlag || f.Name == "kubeconfig" })
	errs = append(errs, o.readTokenFiles()...)
	errs = append(errs, o.Validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %w", errors.Join(errs...))
	}
	if o.PodIP == "" {
		o.PodIP = hostOf(o.InternalAddr)
	}
	log := newLogger(stderr, o.LogLevel, o.LogFormat)
	if o.PodName != "" {
		log = log.WithValues("pod", o.PodName)
	}
	so, err := o.ServerOptions(log.WithName("sser"))
	if err != nil {
		return err
	}
	if so.AuthOptions, err = o.Auth.authOptions(ctx, log.WithName("auth")); err != nil {
		return err
	}
	srv, err := sser.NewWithOptions(so)
	if err != nil {
		return err
	}

	// The server outlives the signal: on SIGTERM it drains first, still
	// serving and exchanging events, and only then stops.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	if err := srv.Start(runCtx); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(runCtx, "tcp", o.FrontendAddr)
	if err != nil {
		stop()
		<-srv.Done()
		return fmt.Errorf("listen on frontend address: %w", err)
	}
	// The frontend alone is capped: the internal listener (probes, peers,
	// publish) keeps answering whatever subscribers do.
	if n := frontendCap(o.MaxConnections, sser.DefaultMaxConnections); n > 0 {
		ln = newCapListener(ln, n, func() { srv.CountRefused("frontend_connections") })
	}
	r := mux.NewRouter()
	r.Handle("/events", srv.ClientConnectionHandler(runCtx))
	if o.DemoPage {
		// The page publishes through the frontend: with it on, the
		// frontend takes publishes as the internal port does.
		d := newDemo(srv, o)
		r.Handle("/", d.page())
		r.Handle(DemoPublishPath, d.publish())
	}
	r.NotFoundHandler = http.HandlerFunc(notFound)
	front := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	serveErr := make(chan error, 1)
	go func() { serveErr <- front.Serve(ln) }()
	log.Info("sser serving", "frontend", ln.Addr().String(), "internal", srv.InternalAddr(), "podIP", so.PodIP, "origin", srv.Origin())
	internal := displayAddr(mustAddr(srv.InternalAddr()))
	fmt.Fprintf(stdout, "sser: subscribe at http://%s/events?stream=demo, publish at http://%s%s, status at http://%s%s\n",
		displayAddr(ln.Addr()), internal, sser.PublishURLPath, internal, sser.StatusPagePath)

	select {
	case err := <-serveErr:
		stop()
		<-srv.Done()
		return fmt.Errorf("frontend server: %w", err)
	case <-ctx.Done():
	}

	// From the first signal on, the process ends within the drain window and
	// the shutdown timeout (and a margin), whatever part of it hangs.
	disarm := armShutdownGuard(shutdownLimit(o), log, timeAfterFunc, exitProcess)
	defer disarm()

	// A second signal cuts the drain short.
	hard, hardStop := signal.NotifyContext(context.WithoutCancel(ctx), os.Interrupt, syscall.SIGTERM)
	defer hardStop()
	log.Info("shutting down: draining subscribers", "window", o.DrainWindow.String())
	srv.Drain(hard, o.DrainWindow)
	stop()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	if err := front.Shutdown(sctx); err != nil {
		log.Error(err, "frontend did not close in time")
	}
	select {
	case <-srv.Done():
	case <-sctx.Done():
		log.Info("server did not stop within the shutdown timeout")
	}
	log.Info("stopped")
	return nil
}

// notFound answers a path the frontend does not serve. encoding/json
// writes valid JSON for any bytes in the path (invalid UTF-8 becomes
// U+FFFD), where Go's %q would write \x escapes JSON does not have.
func notFound(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{"no such endpoint: " + req.URL.Path + "; subscribe at /events?stream=NAME"})
}

// shutdownGuardMargin is the time a shutdown gets beyond its drain window
// and shutdown timeout before the guard ends the process.
const shutdownGuardMargin = 2 * time.Second

// shutdownLimit is how long after the first signal the process may still run.
func shutdownLimit(o *Options) time.Duration {
	return o.DrainWindow + o.ShutdownTimeout + shutdownGuardMargin
}

// exitProcess ends the process; a variable so that tests can check the
// shutdown guard without exiting.
var exitProcess = os.Exit

// afterFunc calls f in its own goroutine after d, unless stop is called
// first: time.AfterFunc in the binary, a fake clock in tests.
type afterFunc func(d time.Duration, f func()) (stop func() bool)

func timeAfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

var errShutdownStuck = errors.New("sser: shutdown did not finish in time")

// armShutdownGuard ends the process with status 1 when disarm has not been
// called within limit: a handler that ignores its context or a listener
// that never closes cannot keep a terminating replica alive until the
// kubelet's SIGKILL. Once disarm returns, exit is never called.
func armShutdownGuard(limit time.Duration, log logr.Logger, after afterFunc, exit func(code int)) (disarm func()) {
	var mu sync.Mutex
	disarmed := false
	stop := after(limit, func() {
		mu.Lock()
		defer mu.Unlock()
		if disarmed {
			return
		}
		log.Error(errShutdownStuck, "exiting: the shutdown took longer than the drain window and the shutdown timeout allow", "limit", limit.String())
		exit(1)
	})
	return func() {
		stop()
		mu.Lock()
		disarmed = true
		mu.Unlock()
	}
}

func mustAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}

// displayAddr is addr as a person would type it: localhost for a wildcard.
func displayAddr(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if t.IP == nil || t.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", t.Port)
	}
	return t.String()
}
