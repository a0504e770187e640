package sser

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sser-dev/sser/internal/testproc"
)

// Every counter whose label takes a known set of values is exported at 0
// for each value from the start, so rate() and alerts see a series before
// the first occurrence. The values come from the metric definitions.
func TestKnownCountersStartAtZero(t *testing.T) {
	ts := startServer(t, Options{})
	if len(ts.m.known) < 8 {
		t.Fatalf("only %d counters with known label values: %v", len(ts.m.known), ts.m.known)
	}
	url := ts.internal + "/metrics"
	for name, values := range ts.m.known {
		label := labelOf(t, ts.m.registry, name)
		for _, v := range values {
			n, ok, err := testproc.Metric(url, name, label+`="`+v+`"`)
			if err != nil || !ok || n != 0 {
				t.Errorf("%s{%s=%q} = %v (exported %v, %v), want 0 on a fresh server", name, label, v, n, ok, err)
			}
		}
	}
}

// A metric with labels either starts with every series (its values are
// known), or its label's values cannot be known in advance: a peer (its
// series start at 0 when it joins, see the peer label tests), or an HTTP
// status (sser_bad_requests_total: endpoint by status).
func TestNoLabelledMetricStartsEmptyUnlessItsValuesAreOpen(t *testing.T) {
	ts := startServer(t, Options{PeerFinder: staticFinder(t, "127.0.0.1")})
	families, err := ts.m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = len(f.GetMetric()) > 0
	}
	descs := make(chan *prometheus.Desc, 256)
	go func() { ts.m.registry.Describe(descs); close(descs) }()
	for d := range descs {
		name, labels := descParts(d)
		if !strings.HasPrefix(name, "sser_") || len(labels) == 0 || exported[name] {
			continue
		}
		if slices.Contains(labels, "peer") || name == "sser_bad_requests_total" {
			continue
		}
		t.Errorf("%s (labels %v) has no series on a fresh server: give its label's values to knownCounterVec", name, labels)
	}
}

// The label values the code passes as literals are among the values the
// metric definitions export from the start.
func TestLabelValuesInTheCodeAreKnown(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	byField := map[string][]string{
		"subscriberClosed": closeReasonValues, "eventsIn": sourceValues, "peerRefused": peerRefusalValues,
		"authFailures": authEndpointValues, "refused": limitValues, "resumes": resumeResultValues,
		"repairs": repairResultValues, "warmups": warmupResultValues,
	}
	checks := []struct {
		pattern string
		values  []string
	}{
		{`\.applied\("([a-z_]+)"\)`, sourceValues},
		{`\.apply\([^()]*, "([a-z_]+)"\)`, sourceValues},
		{`\.applyFrom\([^,()]+, "([a-z_]+)"`, sourceValues},
		{`\.applyLocked\([^,()]+, "([a-z_]+)"`, sourceValues},
		{`source: "([a-z_]+)"`, sourceValues},
		{`refuse\("([a-z_]+)", http\.`, peerRefusalValues},
		{`\.refuse\(w, r, [^,]+, "([a-z_]+)"`, limitValues},
		{`return nil, "([a-z_]+)", `, limitValues},
		{`(?:peer|pub)\("([a-z_]+)", s\.only`, authEndpointValues},
		{`publisherAuth\(pub\)\("([a-z_]+)"`, authEndpointValues},
	}
	code := src.String()
	found := 0
	for field, values := range byField {
		for _, m := range regexp.MustCompile(`\.`+field+`\.WithLabelValues\("([a-z_]+)"\)`).FindAllStringSubmatch(code, -1) {
			found++
			if !slices.Contains(values, m[1]) {
				t.Errorf("%s gets label value %q, which its definition does not list (%v)", field, m[1], values)
			}
		}
	}
	for _, c := range checks {
		ms := regexp.MustCompile(c.pattern).FindAllStringSubmatch(code, -1)
		if len(ms) == 0 {
			t.Errorf("no match for %s: the scan is stale", c.pattern)
		}
		for _, m := range ms {
			found++
			if !slices.Contains(c.values, m[1]) {
				t.Errorf("%q (%s) is not a known label value (%v)", m[1], c.pattern, c.values)
			}
		}
	}
	for r := reasonOverflow; r <= reasonExpired; r++ {
		if !slices.Contains(closeReasonValues, r.String()) {
			t.Errorf("close reason %q is not a known label value (%v)", r.String(), closeReasonValues)
		}
	}
	if found < 20 {
		t.Errorf("only %d label values found in the code: the scan is broken", found)
	}
}

// labelOf is the one variable label of the metric name.
func labelOf(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	descs := make(chan *prometheus.Desc, 256)
	go func() { reg.Describe(descs); close(descs) }()
	label := ""
	for d := range descs {
		if n, labels := descParts(d); n == name && len(labels) == 1 {
			label = labels[0]
		}
	}
	if label == "" {
		t.Fatalf("%s has no single variable label", name)
	}
	return label
}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// descParts reads a Desc's name and variable labels (client_golang
// exposes them only in its String form).
func descParts(d *prometheus.Desc) (string, []string) {
	m := descRE.FindStringSubmatch(d.String())
	if m == nil {
		return "", nil
	}
	if m[2] == "" {
		return m[1], nil
	}
	return m[1], strings.Split(m[2], ",")
}

// docs/metrics.md has a row for every metric a server exports, and names
// no sser_ metric that does not exist.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(sser_[a-z0-9_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		rows[m[1]] = true
	}
	ts := startServer(t, Options{})
	descs := make(chan *prometheus.Desc, 256)
	go func() { ts.m.registry.Describe(descs); close(descs) }()
	exported := map[string]bool{}
	for d := range descs {
		if name, _ := descParts(d); strings.HasPrefix(name, "sser_") {
			exported[name] = true
			if !rows[name] {
				t.Errorf("docs/metrics.md has no row for %s", name)
			}
		}
	}
	for _, m := range regexp.MustCompile(`\bsser_[a-z0-9_]+`).FindAllString(string(doc), -1) {
		if !exported[m] && !exported[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] {
			t.Errorf("docs/metrics.md names %s, which the server does not export", m)
		}
	}
	if len(exported) < 30 {
		t.Errorf("only %d sser_ metrics found", len(exported))
	}
}
