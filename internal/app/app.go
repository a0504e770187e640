package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

const usage = `sser: a Kubernetes-native, horizontally scaled Server-Sent Events service.

Usage:
  sser [serve] [flags]   run a replica (the default command)
  sser pub [flags] MSG   publish an event through a replica's internal API
  sser sub [flags]       subscribe to streams and print the events
  sser token [flags]     mint a development JWT (HS256) for subscribers or publishers
  sser ticket [flags]    get a ticket for an EventSource URL (from a replica, or minted here)
  sser help              show this help

Run "sser serve -h", "sser pub -h", "sser sub -h", "sser token -h" or
"sser ticket -h" for the flags.
`

// Main runs the command line args and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, args, stdout, stderr)
	case "pub":
		err = RunPub(ctx, args, stdin, stdout, stderr)
	case "sub":
		err = RunSub(ctx, args, stdout, stderr)
	case "token":
		err = RunToken(ctx, args, stdout, stderr)
	case "ticket":
		err = RunTicket(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sser: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "sser %s: %v\n", cmd, err)
	return 1
}

// errUsage marks an error already reported with the usage text.
var errUsage = errors.New("usage")

// newLogger builds the process logger (slog behind logr) and routes klog,
// which client-go logs through, into it.
func newLogger(w io.Writer, level, format string) logr.Logger {
	lvl := slog.LevelInfo
	if level == "debug" {
		lvl = slog.Level(-1) // logr V(1)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	log := logr.FromSlogHandler(h)
	klog.SetLogger(log.WithName("klog"))
	return log
}
