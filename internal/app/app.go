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
  sser [command] [flags]

Commands:
  serve     run a replica (the default command)
  pub       publish an event through a replica's internal API
  sub       subscribe to streams and print the events
  token     mint a development JWT (HS256) for subscribers or publishers
  ticket    get a ticket for an EventSource URL (from a replica, or minted here)
  version   print the version
  help      show this help, or a command's: sser help pub

Run "sser <command> --help" for a command's flags.
`

const serveUsage = `Usage: sser serve [flags]

Runs one replica: SSE subscribers on --frontend-addr, peers, publishers,
probes, metrics and the live status page (/status) on --internal-addr.
Every flag can also be set by the environment variable named in brackets.
--demo-page also serves a playground at / on the frontend, and with it
publishing there (POST /demo/publish).

Flags:
`

// commands are the subcommands, by name.
var commands = map[string]func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error{
	"serve": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		return runServe(ctx, args, stdout, stderr)
	},
	"pub": RunPub,
	"sub": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		return RunSub(ctx, args, stdout, stderr)
	},
	"token": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		return RunToken(ctx, args, stdout, stderr)
	},
	"ticket": func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		return RunTicket(ctx, args, stdout, stderr)
	},
}

// Main runs the command line args and returns the exit code: 0, 1 when the
// command failed, 2 for a command line it cannot run.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "-h" || a == "-help" || a == "--help" || a == "help" && len(args) == 1:
			fmt.Fprint(stdout, usage)
			return 0
		case a == "help":
			// sser help pub: the command's help.
			cmd, args = args[1], []string{"--help"}
		case a == "version" || a == "--version":
			printVersion(stdout)
			return 0
		case !strings.HasPrefix(a, "-"):
			cmd, args = a, args[1:]
		}
	}
	run, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "sser: unknown command %q\nRun \"sser --help\" for the commands.\n", cmd)
		return 2
	}
	err := run(ctx, args, stdin, stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sser %s: %s\nRun \"sser %s --help\" for the flags.\n", cmd, ue.msg, cmd)
		return 2
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "sser %s: %v\n", cmd, err)
	return 1
}

// errUsage marks an error already reported with the usage text.
var errUsage = errors.New("usage")

// newLogger builds the process logger (slog behind logr) and routes klog,
// which client-go logs through, into it. format "auto" is text on a
// terminal and JSON otherwise.
func newLogger(w io.Writer, level, format string) logr.Logger {
	lvl, ok := logLevels[level]
	if !ok {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	log := logr.FromSlogHandler(debugLevels{h})
	klog.SetLogger(log.WithName("klog"))
	return log
}

// debugLevels shows logr's verbose levels (V(1) and up, which slog calls
// DEBUG+3, DEBUG+2, ...) as DEBUG, the level --log-level=debug turns on.
type debugLevels struct{ slog.Handler }

func (h debugLevels) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, verbose(l))
}

func (h debugLevels) Handle(ctx context.Context, r slog.Record) error {
	r.Level = verbose(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h debugLevels) WithAttrs(as []slog.Attr) slog.Handler {
	return debugLevels{h.Handler.WithAttrs(as)}
}

func (h debugLevels) WithGroup(name string) slog.Handler {
	return debugLevels{h.Handler.WithGroup(name)}
}

func verbose(l slog.Level) slog.Level {
	if l < slog.LevelInfo && l > slog.LevelDebug {
		return slog.LevelDebug
	}
	return l
}
