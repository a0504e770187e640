package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Version is this build's version: set at build time with
// -ldflags "-X github.com/sser-dev/sser/internal/app.Version=v1.2.3", else
// the module version go install recorded, else "dev".
var Version = ""

// versionInfo describes the build: version, commit, Go version, platform.
func versionInfo() (version, commit string) {
	version = Version
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				if s.Value == "true" && commit != "" {
					commit += "+dirty"
				}
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	return version, commit
}

func printVersion(w io.Writer) {
	v, commit := versionInfo()
	if commit == "" {
		commit = "unknown commit"
	}
	fmt.Fprintf(w, "sser %s (%s, %s, %s/%s)\n", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// usageError is a command line the command cannot run: Main prints it with
// a pointer to the command's help, and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Is makes a usageError an errUsage.
func (e *usageError) Is(target error) bool { return target == errUsage }

// parseFlags parses args into fs. Help (-h, --help) prints the usage text
// and every flag to stdout and returns flag.ErrHelp. A bad command line
// comes back as a one-line usageError instead of the whole flag list.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		return flag.ErrHelp
	}
	return &usageError{msg: flagMessage(fs, err)}
}

var (
	undefinedFlag = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	badValue      = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for flag -+([^:]+): (.*)$`)
	needsValue    = regexp.MustCompile(`^flag needs an argument: -+(.+)$`)
)

// flagMessage rewrites the flag package's errors the way people type
// flags: --name, with a hint where one helps.
func flagMessage(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
		out := "unknown flag --" + m[1]
		if s := closestFlag(fs, m[1]); s != "" {
			out += " (did you mean --" + s + "?)"
		}
		return out
	}
	if m := needsValue.FindStringSubmatch(msg); m != nil {
		return "--" + m[1] + " needs a value"
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		value, name, reason := m[1], m[2], m[3]
		if f := fs.Lookup(name); f != nil {
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isDur := g.Get().(time.Duration); isDur {
					reason = durationHint(value)
				}
			}
		}
		return fmt.Sprintf("invalid value %q for --%s: %s", value, name, reason)
	}
	return msg
}

// durationHint says what a duration looks like.
func durationHint(value string) string {
	h := "a duration has a unit: 500ms, 5s, 1m or 1h30m"
	if _, err := fmt.Sscanf(value, "%d", new(int)); err == nil && !strings.ContainsAny(value, "hmsuµn") {
		h += " (" + value + "s for seconds)"
	}
	return h
}

// closestFlag is the flag name nearest to name, when one is near enough to
// be a typo.
func closestFlag(fs *flag.FlagSet, name string) string {
	best, bestD := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// logLevels are the levels --log-level takes.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
