package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// replica is one running sser process.
type replica struct {
	ip          string
	frontendURL string // http://IP:port
	internalURL string
	logPath     string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited is closed
}

// mesh is the set of replicas of one run.
type mesh struct {
	replicas []*replica
	logDir   string
}

// replicaIPs is n loopback addresses from first on: 127.0.0.2, 127.0.0.3, ...
func replicaIPs(first string, n int) ([]string, error) {
	parts := strings.Split(first, ".")
	if len(parts) != 4 || parts[0] != "127" {
		return nil, fmt.Errorf("--first-ip %q: want a loopback address 127.x.y.z", first)
	}
	last, err := strconv.Atoi(parts[3])
	if err != nil || last < 1 || last+n-1 > 254 {
		return nil, fmt.Errorf("--first-ip %q with %d replicas leaves 127.%s.%s.1-254", first, n, parts[1], parts[2])
	}
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.%s.%s.%d", parts[1], parts[2], last+i)
	}
	return ips, nil
}

// childEnv is this process's environment without the variables sser reads
// (SSER_*, POD_*, KUBECONFIG), so a token or peer finder set in the shell
// does not change what is measured.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SSER_") || strings.HasPrefix(kv, "POD_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startMesh starts one sser process per IP, each with the same ports and a
// static peer list of all of them, as pods behind one Service. Each runs in
// its own process group and gets SIGKILL when this process dies; stop kills
// them all. Their output goes to one log file each under a temporary
// directory.
func startMesh(cfg config, ips []string) (*mesh, error) {
	dir, err := os.MkdirTemp("", "ssemesh-logs-")
	if err != nil {
		return nil, err
	}
	m := &mesh{logDir: dir}
	peers := strings.Join(ips, ",")
	extra := strings.Fields(cfg.sserArgs)
	for i, ip := range ips {
		front := fmt.Sprintf("%s:%d", ip, cfg.frontendPort)
		internal := fmt.Sprintf("%s:%d", ip, cfg.internalPort)
		r := &replica{
			ip:          ip,
			frontendURL: "http://" + front,
			internalURL: "http://" + internal,
			logPath:     filepath.Join(dir, fmt.Sprintf("replica-%02d-%s.log", i, ip)),
			exited:      make(chan struct{}),
		}
		logFile, err := os.Create(r.logPath)
		if err != nil {
			m.stop()
			return nil, err
		}
		args := append([]string{"serve", "--frontend-addr", front, "--internal-addr", internal,
			"--peer-finder", "static", "--peers", peers, "--pod-ip", ip, "--log-format", "text"}, extra...)
		r.cmd = exec.Command(cfg.sserBin, args...)
		r.cmd.Env = childEnv()
		r.cmd.Stdout = logFile
		r.cmd.Stderr = logFile
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err = r.cmd.Start()
		_ = logFile.Close() // the child holds its own descriptor
		if err != nil {
			m.stop()
			return nil, fmt.Errorf("start %s: %w", cfg.sserBin, err)
		}
		go func() {
			r.err = r.cmd.Wait()
			close(r.exited)
		}()
		m.replicas = append(m.replicas, r)
	}
	return m, nil
}

// stop kills every replica's process group and waits (bounded) for each
// process to be reaped.
func (m *mesh) stop() {
	for _, r := range m.replicas {
		select {
		case <-r.exited:
			continue
		default:
		}
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		_ = r.cmd.Process.Kill()
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for _, r := range m.replicas {
		select {
		case <-r.exited:
		case <-t.C:
			fmt.Fprintf(os.Stderr, "ssemesh: replica %s (pid %d) not reaped 10s after SIGKILL\n", r.ip, r.cmd.Process.Pid)
			return
		}
	}
}

// removeLogs deletes the log directory (after a run that went well).
func (m *mesh) removeLogs() { _ = os.RemoveAll(m.logDir) }

// waitReady polls every replica's /readyz until all answer 200, failing as
// soon as one process exits, or when ctx ends.
func (m *mesh) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	pending := make(map[*replica]bool, len(m.replicas))
	for _, r := range m.replicas {
		pending[r] = true
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for r := range pending {
			select {
			case <-r.exited:
				return fmt.Errorf("replica %s exited before it was ready (%v):\n%s", r.ip, r.err, tail(r.logPath, 20))
			default:
			}
			if getStatus(ctx, client, r.internalURL+"/readyz") == http.StatusOK {
				delete(pending, r)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var ips []string
			var one *replica
			for r := range pending {
				ips = append(ips, r.ip)
				one = r
			}
			return fmt.Errorf("%d of %d replicas not ready before the deadline (%s); log of %s:\n%s",
				len(pending), len(m.replicas), strings.Join(ips, " "), one.ip, tail(one.logPath, 20))
		case <-tick.C:
		}
	}
}

// checkAlive reports the first replica that has exited.
func (m *mesh) checkAlive() error {
	for _, r := range m.replicas {
		select {
		case <-r.exited:
			return fmt.Errorf("replica %s exited (%v):\n%s", r.ip, r.err, tail(r.logPath, 20))
		default:
		}
	}
	return nil
}

// pids lists the replica processes.
func (m *mesh) pids() []int {
	out := make([]int, len(m.replicas))
	for i, r := range m.replicas {
		out[i] = r.cmd.Process.Pid
	}
	return out
}

func getStatus(ctx context.Context, client *http.Client, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// peerRequestMetrics are the counters that count requests from one replica
// to its peers, in order of preference: sser_peer_requests_total counts
// every request; binaries without it have the count of the batch-POST
// latency histogram.
var peerRequestMetrics = []string{"sser_peer_requests_total", "sser_peer_post_duration_seconds_count"}

// scrape sums, for each replica's /metrics, the samples of each metric in
// names (over all label sets). A metric a replica does not show is absent
// from its map.
func (m *mesh) scrape(ctx context.Context, names []string) ([]map[string]float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	out := make([]map[string]float64, len(m.replicas))
	errs := make([]error, len(m.replicas))
	var wg sync.WaitGroup
	for i, r := range m.replicas {
		wg.Go(func() {
			out[i], errs[i] = scrapeOne(ctx, client, r.internalURL+"/metrics", names)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func scrapeOne(ctx context.Context, client *http.Client, url string, names []string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body, names)
}

// parseMetrics sums the samples of each metric in names in a Prometheus
// text exposition.
func parseMetrics(r io.Reader, names []string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		end := bytes.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		name := string(line[:end])
		if !slices.Contains(names, name) {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			j := bytes.LastIndexByte(rest, '}')
			if j < 0 {
				return nil, fmt.Errorf("metrics: unterminated labels in %q", line)
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: value in %q: %w", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}
