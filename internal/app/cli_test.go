package app

import (
	"bytes"
	"strings"
	"testing"
)

// Help goes to stdout, the way kubectl and helm do it, so it can be paged
// and grepped; mistakes get a short message on stderr.
func TestHelpOnStdoutErrorsShortOnStderr(t *testing.T) {
	for _, args := range [][]string{{"serve", "--help"}, {"help", "serve"}, {"--help"}, {"pub", "-h"}, {"help", "sub"}} {
		var stdout, stderr bytes.Buffer
		if code := Main(t.Context(), args, strings.NewReader(""), &stdout, &stderr); code != 0 {
			t.Errorf("%q exited %d", args, code)
		}
		if stdout.Len() == 0 || stderr.Len() != 0 {
			t.Errorf("%q: %d bytes on stdout, stderr %q; want the help on stdout only", args, stdout.Len(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := Main(t.Context(), []string{"serve", "--frobnicate"}, strings.NewReader(""), &stdout, &stderr); code != 2 {
		t.Errorf("unknown flag exited %d, want 2", code)
	}
	if lines := strings.Count(stderr.String(), "\n"); lines > 2 || stdout.Len() != 0 {
		t.Errorf("unknown flag printed %d lines to stderr and %d bytes to stdout: %q", lines, stdout.Len(), stderr.String())
	}
}

// --log-level takes warn and error too, and what the library logs at
// V(1) shows as DEBUG, not DEBUG+3.
func TestLogLevels(t *testing.T) {
	for _, lvl := range []string{"debug", "info", "warn", "error"} {
		o := NewOptions()
		o.LogLevel = lvl
		for _, err := range o.Validate() {
			if strings.Contains(err.Error(), "log-level") {
				t.Errorf("--log-level=%s refused: %v", lvl, err)
			}
		}
	}
	var buf bytes.Buffer
	log := newLogger(&buf, "debug", "json")
	log.V(1).Info("detail")
	if !strings.Contains(buf.String(), `"level":"DEBUG"`) {
		t.Errorf("a V(1) line logs as %s, want level DEBUG", buf.String())
	}
	buf.Reset()
	log = newLogger(&buf, "warn", "json")
	log.Info("routine")
	log.V(1).Info("detail")
	if buf.Len() != 0 {
		t.Errorf("--log-level=warn logged %q", buf.String())
	}
	log.Error(nil, "broken")
	if !strings.Contains(buf.String(), `"level":"ERROR"`) {
		t.Errorf("--log-level=warn dropped an error: %q", buf.String())
	}
}

// auto is text on a terminal and JSON elsewhere (a pipe, a file, a pod's log).
func TestLogFormatAutoIsJSONOffATerminal(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, "info", "auto").Info("hello")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Errorf("auto off a terminal wrote %q, want JSON", buf.String())
	}
}
