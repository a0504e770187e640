package testproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of the sser binary: $SSER_BIN when set, else one
// built once per test process from ./cmd/sser.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SSER_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sser-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sser")
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/sser")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sser: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("testproc: cannot find the module root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FreePorts returns a frontend and an internal port that are free on every
// given IP at once, so all replicas can use the same ports.
func FreePorts(t testing.TB, ips ...string) (frontend, internal int) {
	t.Helper()
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	pick := func(avoid int) int {
		for range 200 {
			ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
			if err != nil {
				t.Fatalf("testproc: listen on %s: %v", ips[0], err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			_ = ln.Close()
			if port == avoid {
				continue
			}
			ok := true
			for _, ip := range ips[1:] {
				l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
				if err != nil {
					ok = false
					break
				}
				_ = l2.Close()
			}
			if ok {
				return port
			}
		}
		t.Fatalf("testproc: no port free on all of %v", ips)
		return 0
	}
	frontend = pick(0)
	internal = pick(frontend)
	return frontend, internal
}

// Config describes one replica.
type Config struct {
	// Name labels the replica in logs; default its IP.
	Name string
	// IP is the loopback address the replica binds, e.g. 127.0.0.2.
	IP           string
	FrontendPort int
	InternalPort int
	// Args are extra flags after "serve --frontend-addr ... --internal-addr ...".
	Args []string
	// Env is added to the test process's environment.
	Env []string
	// NoWait skips waiting for /healthz.
	NoWait bool
}

// Replica is a running sser process.
type Replica struct {
	Config
	FrontendURL string
	InternalURL string

	cmd    *exec.Cmd
	logs   *Buffer
	exited chan struct{}
	err    error
}

// Start starts sser serve for cfg and waits until /healthz answers (unless
// cfg.NoWait). It is killed on test cleanup if still running; its logs are
// printed when the test failed.
func Start(t testing.TB, cfg Config) *Replica {
	t.Helper()
	if cfg.IP == "" {
		cfg.IP = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = cfg.IP
	}
	if cfg.FrontendPort == 0 || cfg.InternalPort == 0 {
		cfg.FrontendPort, cfg.InternalPort = FreePorts(t, cfg.IP)
	}
	front := net.JoinHostPort(cfg.IP, strconv.Itoa(cfg.FrontendPort))
	internal := net.JoinHostPort(cfg.IP, strconv.Itoa(cfg.InternalPort))
	args := append([]string{"serve", "--frontend-addr", front, "--internal-addr", internal, "--log-format", "text"}, cfg.Args...)
	r := &Replica{
		Config:      cfg,
		FrontendURL: "http://" + front,
		InternalURL: "http://" + internal,
		logs:        &Buffer{},
		exited:      make(chan struct{}),
	}
	r.cmd = exec.Command(Binary(t), args...)
	// A -race binary otherwise sleeps a second at exit, which would blur
	// drain and exit timings; races are still reported.
	r.cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), cfg.Env...)
	r.cmd.Stdout = r.logs
	r.cmd.Stderr = r.logs
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("testproc: start %s: %v", cfg.Name, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		_ = r.Kill()
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("logs of replica %s:\n%s", cfg.Name, r.Logs())
		}
	})
	if !cfg.NoWait {
		r.WaitHealthy(t, 30*time.Second)
	}
	return r
}

// WaitHealthy polls /healthz until it answers 200, failing the test after timeout.
func (r *Replica) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	r.waitStatus(t, "/healthz", timeout)
}

// WaitReady polls /readyz until it answers 200, failing the test after timeout.
func (r *Replica) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	r.waitStatus(t, "/readyz", timeout)
}

func (r *Replica) waitStatus(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-r.exited:
			t.Fatalf("testproc: replica %s exited (%v) before %s answered:\n%s", r.Name, r.err, path, r.Logs())
		default:
		}
		resp, err := client.Get(r.InternalURL + path)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testproc: replica %s: %s not OK after %s (last error %v):\n%s", r.Name, path, timeout, err, r.Logs())
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a wait for a condition
	}
}

// Signal sends sig to the replica.
func (r *Replica) Signal(sig os.Signal) error {
	select {
	case <-r.exited:
		return nil
	default:
	}
	return r.cmd.Process.Signal(sig)
}

// Kill kills the replica (SIGKILL) and its process group.
func (r *Replica) Kill() error {
	select {
	case <-r.exited:
		return nil
	default:
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	return r.cmd.Process.Kill()
}

// Wait waits for the replica to exit and returns its exit error.
func (r *Replica) Wait(ctx context.Context) error {
	select {
	case <-r.exited:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exited is closed when the process has exited.
func (r *Replica) Exited() <-chan struct{} { return r.exited }

// Logs returns the replica's combined output so far.
func (r *Replica) Logs() string { return r.logs.String() }

// Buffer is a bytes.Buffer that is safe to read while a process or a
// goroutine writes to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
