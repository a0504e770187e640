package app

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/sser-dev/sser/internal/testproc"
)

// fakeAfter is a clock for armShutdownGuard: it records what was scheduled
// and fires it only when the test says so.
type fakeAfter struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (c *fakeAfter) after(d time.Duration, f func()) func() bool {
	c.d, c.f = d, f
	return func() bool {
		was := !c.stopped
		c.stopped = true
		return was
	}
}

// exitRecorder stands in for os.Exit.
type exitRecorder struct {
	mu    sync.Mutex
	codes []int
	once  chan struct{}
}

func newExitRecorder() *exitRecorder { return &exitRecorder{once: make(chan struct{})} }

func (e *exitRecorder) exit(code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.codes = append(e.codes, code)
	if len(e.codes) == 1 {
		close(e.once)
	}
}

func (e *exitRecorder) got() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.codes...)
}

func TestShutdownLimit(t *testing.T) {
	o := NewOptions()
	o.DrainWindow, o.ShutdownTimeout = 10*time.Second, 5*time.Second
	if got, want := shutdownLimit(o), 17*time.Second; got != want {
		t.Fatalf("limit = %s, want drain window + shutdown timeout + 2s = %s", got, want)
	}
	o.DrainWindow = 0
	if got, want := shutdownLimit(o), 7*time.Second; got != want {
		t.Fatalf("limit with no drain window = %s, want %s", got, want)
	}
}

func TestShutdownGuard(t *testing.T) {
	tests := []struct {
		name      string
		disarm    bool // disarm before the limit passes
		wantCodes string
	}{
		{name: "stuck shutdown exits 1", wantCodes: "[1]"},
		{name: "finished shutdown never exits", disarm: true, wantCodes: "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testproc.Buffer
			log := funcr.New(func(prefix, args string) { logs.Write([]byte(args + "\n")) }, funcr.Options{})
			clock := &fakeAfter{}
			rec := newExitRecorder()
			disarm := armShutdownGuard(17*time.Second, log, clock.after, rec.exit)
			if clock.d != 17*time.Second || clock.f == nil {
				t.Fatalf("guard scheduled %v after %s, want its exit after 17s", clock.f != nil, clock.d)
			}
			if len(rec.got()) != 0 {
				t.Fatal("the guard exited before its limit")
			}
			if tt.disarm {
				disarm()
				if !clock.stopped {
					t.Error("disarm did not stop the timer")
				}
			}
			clock.f() // the limit passes (a timer stopped too late still fires)
			if got := rec.got(); fmt.Sprint(got) != tt.wantCodes {
				t.Fatalf("exit codes %v, want %s", got, tt.wantCodes)
			}
			stuck := strings.Contains(logs.String(), "shutdown did not finish in time")
			if stuck == tt.disarm {
				t.Fatalf("log %q: want the stuck shutdown logged only when it exits", logs.String())
			}
			disarm() // idempotent
		})
	}
}

// TestShutdownGuardRealTimer checks the guard with the binary's own timer.
func TestShutdownGuardRealTimer(t *testing.T) {
	rec := newExitRecorder()
	disarm := armShutdownGuard(time.Millisecond, funcr.New(func(string, string) {}, funcr.Options{}), timeAfterFunc, rec.exit)
	defer disarm()
	select {
	case <-rec.once:
	case <-time.After(10 * time.Second):
		t.Fatal("the guard did not exit after its limit")
	}
	if got := rec.got(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("exit codes %v, want [1]", got)
	}
}
