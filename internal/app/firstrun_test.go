package app

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"
)

// unreachableKubeconfig writes a kubeconfig whose API server refuses
// connections (a port that was free a moment ago, on loopback).
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	addr := freePort(t)
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://` + addr + `
    insecure-skip-tls-verify: true
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
users:
- name: u
  user: {token: x}
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A laptop's KUBECONFIG in the environment does not make a replica watch a
// cluster: without --kubeconfig and outside a pod it runs alone, at once.
func TestKubeconfigInTheEnvironmentRunsAlone(t *testing.T) {
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	front, internal := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var logs bytes.Buffer
	logw := &syncWriter{w: &logs}
	go func() {
		done <- runServe(ctx, []string{"--frontend-addr=" + front, "--internal-addr=" + internal,
			"--drain-window=0", "--demo-page=false"}, io.Discard, logw)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	testproc.Eventually(t, 10*time.Second, "the replica ready", func() bool {
		resp, err := hc.Get("http://" + internal + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	logw.mu.Lock()
	said := strings.Contains(logs.String(), "running alone")
	logw.mu.Unlock()
	if !said {
		t.Errorf("the log does not say why it runs alone: %s", logs.String())
	}
}

// Asked to watch peers through an API server it cannot reach, a replica
// says so plainly and at once, instead of retrying behind a rate limiter.
func TestUnreachableAPIServerFailsFast(t *testing.T) {
	kc := unreachableKubeconfig(t)
	var out bytes.Buffer
	start := time.Now()
	code := Main(t.Context(), []string{"serve", "--peer-finder=kubernetes", "--kubeconfig=" + kc,
		"--frontend-addr=127.0.0.1:0", "--internal-addr=127.0.0.1:0"}, strings.NewReader(""), io.Discard, &out)
	if code != 1 || !strings.Contains(out.String(), "cannot reach the Kubernetes API server") || !strings.Contains(out.String(), "--peer-finder=local") {
		t.Fatalf("exit %d, stderr %q; want 1 and a plain message naming the fix", code, out.String())
	}
	if took := time.Since(start); took > apiCheckTimeout+5*time.Second {
		t.Errorf("took %s to give up", took)
	}
}

// A replica bound to one loopback address with the local finder peers with
// nobody: its peer set is its own address.
func TestLocalFinderOnAnotherAddressPeersWithNobody(t *testing.T) {
	front := freePort(t)
	ln, err := net.Listen("tcp", "127.0.0.7:0")
	if err != nil {
		t.Skipf("127.0.0.7 not available: %v", err)
	}
	internal := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--frontend-addr=" + front, "--internal-addr=" + internal, "--peer-finder=local",
			"--drain-window=0", "--demo-page=false"}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	var body []byte
	testproc.Eventually(t, 10*time.Second, "the replica ready", func() bool {
		resp, err := hc.Get("http://" + internal + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(string(body), `"127.0.0.7"`) || strings.Contains(string(body), "127.0.0.1") {
		t.Errorf("readiness %s: want the peer set to be this replica's own address only", body)
	}
}

// syncWriter serializes writes from the server's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
