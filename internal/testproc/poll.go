package testproc

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PollInterval is how often Eventually looks again.
const PollInterval = 10 * time.Millisecond

// Eventually polls cond until it holds, failing the test after timeout with
// what and, when given, the state each status describes. It is the one way
// tests here wait: never a sleep for an outcome.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool, status ...func() string) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			msg := fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			for _, s := range status {
				msg += "\n" + s()
			}
			t.Fatal(msg)
		}
		time.Sleep(PollInterval) // poll interval, not a wait for an outcome
	}
}

// Metric sums the samples of a Prometheus metric served at metricsURL whose
// labels contain every one of labels (written as name="value"). It returns
// false when the metric has no such sample.
func Metric(metricsURL, name string, labels ...string) (float64, bool, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(metricsURL)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		f := strings.Fields(rest)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found, sc.Err()
}
