package chart

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// pendingMetrics are series the chart's alerts and dashboard may name
// before sser exports them: each must match nothing, harmlessly, until then.
var pendingMetrics = map[string]bool{}

// exportedMetrics reads the names of the metrics sser exports from the
// library's source (prometheus.*Opts{Name: ...}, NewDesc and
// knownCounterVec), with the _bucket, _sum and _count series of its
// histograms.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(RepoRoot(t), "pkg", "sser", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*|knownCounterVec\(\s*)"(sser_[a-z0-9_]+)"`)
	histogram := regexp.MustCompile(`HistogramOpts\{Name:\s*"(sser_[a-z0-9_]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllSubmatch(src, -1) {
			out[string(m[1])] = true
		}
		for _, m := range histogram.FindAllSubmatch(src, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[string(m[1])+suffix] = true
			}
		}
	}
	// So a change in how the source names metrics cannot make this check vacuous.
	for _, must := range []string{"sser_connections", "sser_events_lost_total", "sser_subscribers_closed_total", "sser_peer_lag", "sser_peer_post_duration_seconds_bucket"} {
		if !out[must] {
			t.Fatalf("found no %s in pkg/sser: the metric name scan is broken (found %v)", must, slices.Sorted(maps.Keys(out)))
		}
	}
	return out
}

var metricRef = regexp.MustCompile(`\bsser_[a-z0-9_]+`)

// checkMetricNames fails for every sser_* series expr names that sser does
// not export (or that is not pending).
func checkMetricNames(t *testing.T, exported map[string]bool, where, expr string) {
	t.Helper()
	for _, m := range metricRef.FindAllString(expr, -1) {
		if !exported[m] && !pendingMetrics[m] {
			t.Errorf("%s uses %s, which sser does not export: %s", where, m, expr)
		}
	}
}

func TestServiceMonitor(t *testing.T) {
	objs := MustTemplate(t, "sser", "sser-test", "--set", "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.interval=15s,metrics.serviceMonitor.scrapeTimeout=5s",
		"--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
		"--set-json", `metrics.serviceMonitor.relabelings=[{"targetLabel":"cluster","replacement":"eu1"}]`,
		"--set-json", `metrics.serviceMonitor.metricRelabelings=[{"action":"drop","sourceLabels":["__name__"],"regex":"go_gc_.*"}]`)
	sm := Find(objs, "ServiceMonitor", "sser")
	if sm == nil {
		t.Fatalf("no ServiceMonitor sser: %v", names(objs))
	}
	if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetNamespace() != "sser-test" || sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor %s in %s with labels %v", sm.GetAPIVersion(), sm.GetNamespace(), sm.GetLabels())
	}
	// It must find the internal Service, and through its port the replicas' /metrics.
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	internal := As[corev1.Service](t, Find(objs, "Service", "sser-internal"))
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(internal.Labels)) {
		t.Errorf("selector %v does not select the internal Service (labels %v)", sel, internal.Labels)
	}
	if ns, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(ns, []string{"sser-test"}) {
		t.Errorf("namespaceSelector %v, want the release namespace", ns)
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(endpoints))
	}
	ep := endpoints[0].(map[string]any)
	if !slices.ContainsFunc(internal.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep["port"] && p.TargetPort.String() == "internal" }) {
		t.Errorf("endpoint port %v is not the internal Service's port to the internal container port", ep["port"])
	}
	wantScrapeEndpoint(t, ep, "15s", "5s", "cluster")
	if mr := fmt.Sprint(ep["metricRelabelings"]); !strings.Contains(mr, "go_gc_") {
		t.Errorf("metricRelabelings %s", mr)
	}
}

func TestPodMonitor(t *testing.T) {
	objs := MustTemplate(t, "sser", "sser-test", "--set", "metrics.podMonitor.enabled=true,internalService.enabled=false,metrics.podMonitor.namespace=monitoring")
	pm := Find(objs, "PodMonitor", "sser")
	if pm == nil {
		t.Fatalf("no PodMonitor sser: %v", names(objs))
	}
	if pm.GetNamespace() != "monitoring" {
		t.Errorf("PodMonitor in %s, want monitoring", pm.GetNamespace())
	}
	d := As[appsv1.Deployment](t, Find(objs, "Deployment", "sser"))
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if !maps.Equal(sel, d.Spec.Selector.MatchLabels) {
		t.Errorf("selector %v, want the Deployment's %v", sel, d.Spec.Selector.MatchLabels)
	}
	// In another namespace it must still look in the release's.
	if ns, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(ns, []string{"sser-test"}) {
		t.Errorf("namespaceSelector %v, want the release namespace", ns)
	}
	endpoints, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(endpoints))
	}
	ep := endpoints[0].(map[string]any)
	if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == ep["port"] }) {
		t.Errorf("endpoint port %v is not a container port", ep["port"])
	}
	wantScrapeEndpoint(t, ep, "30s", "", "")
}

// wantScrapeEndpoint checks a monitor's endpoint: /metrics over http, the
// interval and timeout given, and the chart's job relabeling first, then the
// operator's (whose target label is extra).
func wantScrapeEndpoint(t *testing.T, ep map[string]any, interval, timeout, extra string) {
	t.Helper()
	if ep["path"] != "/metrics" || ep["scheme"] != "http" || ep["port"] != "internal" {
		t.Errorf("endpoint %v, want http /metrics on port internal", ep)
	}
	if got, _ := ep["interval"].(string); got != interval {
		t.Errorf("interval %q, want %q", got, interval)
	}
	if got, _ := ep["scrapeTimeout"].(string); got != timeout {
		t.Errorf("scrapeTimeout %q, want %q", got, timeout)
	}
	relabel, _ := ep["relabelings"].([]any)
	want := 1
	if extra != "" {
		want = 2
	}
	if len(relabel) != want {
		t.Fatalf("relabelings %v, want %d", relabel, want)
	}
	if got := fmt.Sprint(relabel[0]); got != "map[action:replace replacement:sser targetLabel:job]" {
		t.Errorf("first relabeling %s, want job set to the full name", got)
	}
	if extra != "" && relabel[1].(map[string]any)["targetLabel"] != extra {
		t.Errorf("second relabeling %v, want the operator's (%s)", relabel[1], extra)
	}
}

// rule is one alerting rule of the rendered PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Record      string            `json:"record"`
}

func alertRules(t *testing.T, objs []*unstructured.Unstructured, name string) (groupName string, rules []rule) {
	t.Helper()
	pr := Find(objs, "PrometheusRule", name)
	if pr == nil {
		t.Fatalf("no PrometheusRule %s: %v", name, names(objs))
	}
	var spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	data, err := json.Marshal(pr.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatalf("PrometheusRule spec: %v", err)
	}
	if len(spec.Groups) != 1 {
		t.Fatalf("%d rule groups, want 1", len(spec.Groups))
	}
	return spec.Groups[0].Name, spec.Groups[0].Rules
}

func TestPrometheusRule(t *testing.T) {
	exported := exportedMetrics(t)
	wantAlerts := []string{"SserEventsLost", "SserSubscribersOverflowing", "SserPeerPostErrors", "SserPeerLagHigh", "SserPublishBackpressure",
		"SserPeerCutOff", "SserPeerDown", "SserAtCapacity", "SserTargetDown", "SserPodNotReady", "SserUnavailable"}

	t.Run("defaults", func(t *testing.T) {
		objs := MustTemplate(t, "sser", "sser-test", "--set", "metrics.prometheusRule.enabled=true,metrics.prometheusRule.labels.release=kps")
		group, rules := alertRules(t, objs, "sser")
		if group == "" {
			t.Error("rule group without a name")
		}
		if got := Find(objs, "PrometheusRule", "sser").GetLabels()["release"]; got != "kps" {
			t.Errorf("label release=%q, want kps", got)
		}
		var got []string
		for _, r := range rules {
			got = append(got, r.Alert)
			where := "alert " + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("rule %+v is not an alert", r)
				continue
			}
			checkMetricNames(t, exported, where, r.Expr)
			if r.For != "" {
				if d, err := time.ParseDuration(r.For); err != nil || d > 30*time.Minute {
					t.Errorf("%s: for %q, want a duration of at most 30m", where, r.For)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", where, s)
			}
			for _, a := range []string{"summary", "description"} {
				if len(r.Annotations[a]) < 20 {
					t.Errorf("%s: annotation %s %q is missing or says nothing", where, a, r.Annotations[a])
				}
			}
			if want := "https://github.com/sser-dev/sser/blob/main/charts/sser/README.md#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", where, r.Annotations["runbook_url"], want)
			}
			if strings.Contains(r.Expr, "%") && !strings.Contains(r.Expr, "%}") {
				t.Errorf("%s: a placeholder is left in %s", where, r.Expr)
			}
			// Every sser series is this release's: the job the chart's monitors set.
			if strings.Contains(r.Expr, "sser_") || strings.HasPrefix(r.Expr, "up{") {
				if strings.Count(r.Expr, `{namespace="sser-test",job="sser"`) != strings.Count(r.Expr, "{") {
					t.Errorf("%s: a selector is not the release's: %s", where, r.Expr)
				}
			}
			if strings.Contains(r.Expr, "kube_") && !strings.Contains(r.Expr, `namespace="sser-test"`) {
				t.Errorf("%s: kube-state-metrics series of any namespace: %s", where, r.Expr)
			}
		}
		if !slices.Equal(got, wantAlerts) {
			t.Errorf("alerts %q, want %q", got, wantAlerts)
		}
		byName := map[string]rule{}
		for _, r := range rules {
			byName[r.Alert] = r
		}
		// Half the binary's default outbox of 65536.
		if e := byName["SserPeerLagHigh"].Expr; !strings.HasSuffix(e, "> 32768") {
			t.Errorf("SserPeerLagHigh %s, want > 32768", e)
		}
		// A peer that answers nobody, or only some: one alert per peer.
		if e := byName["SserPeerDown"].Expr; e != `min by (namespace, peer) (sser_peer_up{namespace="sser-test",job="sser"}) == 0` {
			t.Errorf("SserPeerDown %s", e)
		}
		if e := byName["SserSubscribersOverflowing"].Expr; !strings.Contains(e, `reason="overflow"`) || !strings.HasSuffix(e, "> 0.1") {
			t.Errorf("SserSubscribersOverflowing %s", e)
		}
		if e := byName["SserPodNotReady"].Expr; !strings.Contains(e, `owner_name=~"sser-[a-z0-9]+"`) {
			t.Errorf("SserPodNotReady does not pick the Deployment's ReplicaSets: %s", e)
		}
		if byName["SserUnavailable"].Labels["severity"] != "critical" {
			t.Error("SserUnavailable is not critical")
		}
	})

	t.Run("tuned", func(t *testing.T) {
		objs := MustTemplate(t, "shop", "sser-test", "--set", "metrics.prometheusRule.enabled=true,sser.outboxSize=4096,metrics.prometheusRule.overflowPerSecond=2.5",
			"--set", `metrics.prometheusRule.selector=job="sser"\,cluster="eu1"`, "--set", "metrics.prometheusRule.alertLabels.team=realtime",
			"--set", "metrics.prometheusRule.runbookURL=https://runbooks.example.com/sser",
			"--set-json", `metrics.prometheusRule.disabled=["SserPodNotReady","SserUnavailable"]`,
			"--set-json", `metrics.prometheusRule.additionalRules=[{"alert":"SserNoSubscribers","expr":"sum(sser_connections) == 0","for":"1h"}]`)
		_, rules := alertRules(t, objs, "shop-sser")
		var got []string
		for _, r := range rules {
			got = append(got, r.Alert)
			if r.Alert == "SserNoSubscribers" {
				continue
			}
			if r.Labels["team"] != "realtime" || r.Labels["severity"] == "" {
				t.Errorf("%s labels %v, want team=realtime beside the severity", r.Alert, r.Labels)
			}
			if !strings.HasPrefix(r.Annotations["runbook_url"], "https://runbooks.example.com/sser#sser") {
				t.Errorf("%s runbook_url %q", r.Alert, r.Annotations["runbook_url"])
			}
			if strings.Contains(r.Expr, "sser_") && !strings.Contains(r.Expr, `{job="sser",cluster="eu1"`) {
				t.Errorf("%s ignores the selector: %s", r.Alert, r.Expr)
			}
			switch r.Alert {
			case "SserPeerLagHigh":
				if !strings.HasSuffix(r.Expr, "> 2048") {
					t.Errorf("SserPeerLagHigh %s, want half of sser.outboxSize 4096", r.Expr)
				}
			case "SserSubscribersOverflowing":
				if !strings.HasSuffix(r.Expr, "> 2.5") {
					t.Errorf("SserSubscribersOverflowing %s, want > 2.5", r.Expr)
				}
			}
		}
		want := append(slices.DeleteFunc(slices.Clone(wantAlerts), func(a string) bool { return a == "SserPodNotReady" || a == "SserUnavailable" }), "SserNoSubscribers")
		if !slices.Equal(got, want) {
			t.Errorf("alerts %q, want %q", got, want)
		}
	})

	t.Run("peer lag from extraArgs and its own threshold", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--set-json", `sser.extraArgs=["--outbox-size=1000"]`}, "> 500"},
			{[]string{"--set", "sser.peerQueue=300"}, "> 150"},
			{[]string{"--set", "sser.outboxSize=4096,metrics.prometheusRule.peerLagThreshold=100"}, "> 100"},
		} {
			objs := MustTemplate(t, "sser", "sser-test", append(tc.args, "--set", "metrics.prometheusRule.enabled=true")...)
			_, rules := alertRules(t, objs, "sser")
			for _, r := range rules {
				if r.Alert == "SserPeerLagHigh" && !strings.HasSuffix(r.Expr, tc.want) {
					t.Errorf("%q: %s, want %s", tc.args, r.Expr, tc.want)
				}
			}
		}
	})
}

func TestDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	objs := MustTemplate(t, "sser", "sser-test", "--set", "metrics.dashboard.enabled=true,metrics.dashboard.namespace=grafana",
		"--set", "metrics.dashboard.annotations.grafana_folder=Realtime")
	cm := As[corev1.ConfigMap](t, Find(objs, "ConfigMap", "sser-dashboard"))
	if cm.Namespace != "grafana" || cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Realtime" {
		t.Errorf("ConfigMap %s/%s labels %v annotations %v, want in grafana with grafana_dashboard=1", cm.Namespace, cm.Name, cm.Labels, cm.Annotations)
	}
	if len(cm.Data) != 1 || cm.Data["sser.json"] == "" {
		t.Fatalf("ConfigMap data keys %v, want sser.json", slices.Sorted(maps.Keys(cm.Data)))
	}
	type target struct {
		Expr string `json:"expr"`
	}
	type panel struct {
		ID      int                      `json:"id"`
		Type    string                   `json:"type"`
		Title   string                   `json:"title"`
		Targets []target                 `json:"targets"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(cm.Data["sser.json"]), &dash); err != nil {
		t.Fatalf("sser.json is not JSON: %v", err)
	}
	if dash.UID != "sser" || dash.Title == "" {
		t.Errorf("uid %q title %q", dash.UID, dash.Title)
	}
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Equal(vars, []string{"datasource", "namespace", "job", "pod"}) {
		t.Errorf("variables %q", vars)
	}
	ids := map[int]bool{}
	taken := map[[2]int]string{} // grid cell -> panel
	var exprs []string
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.X+g.W > 24 || g.W == 0 || g.H == 0 {
			t.Errorf("panel %q grid %+v", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[[2]int{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				taken[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			checkMetricNames(t, exported, "panel "+p.Title, tg.Expr)
			if !strings.Contains(tg.Expr, `namespace="$namespace",job="$job"`) {
				t.Errorf("panel %q does not select the chosen namespace and job: %s", p.Title, tg.Expr)
			}
		}
	}
	// What an operator looks for first.
	all := strings.Join(exprs, "\n")
	for _, want := range []string{"sser_connections{", "sser_events_published_total", "sser_frames_queued_total", "sser_peer_lag", "sser_peer_post_errors_total",
		"sser_events_lost_total", `reason="overflow"`, "sser_history_evicted_total", "sum by (result) (rate(sser_resumes_total"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// TestAlertRules runs Prometheus's own promtool on the rendered rules:
// `promtool check rules` parses every expression and annotation template,
// and `promtool test rules` plays the series in testdata/alerts_test.yaml
// through them, so each alert fires when it should (after its for:), stays
// quiet when it should, and ignores other releases' series.
func TestAlertRules(t *testing.T) {
	promtool := Promtool(t)
	objs := MustTemplate(t, "sser", "sser-test", "--set", "metrics.prometheusRule.enabled=true")
	pr := Find(objs, "PrometheusRule", "sser")
	if pr == nil {
		t.Fatalf("no PrometheusRule: %v", names(objs))
	}
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	dir := t.TempDir()
	write := func(name string, v any) string {
		t.Helper()
		data, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	full := write("full-rules.yaml", map[string]any{"groups": groups})
	if out, err := Run(t, promtool, "check", "rules", full); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// promtool test rules compares annotations exactly; the firing
	// behaviour is what is tested here, so the rules go in without them.
	bare := make([]any, 0, len(groups))
	for _, g := range groups {
		g := g.(map[string]any)
		rules, _ := g["rules"].([]any)
		for _, r := range rules {
			delete(r.(map[string]any), "annotations")
		}
		bare = append(bare, g)
	}
	write("rules.yaml", map[string]any{"groups": bare})
	tests, err := os.ReadFile(filepath.Join(RepoRoot(t), "test", "chart", "testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(testFile, tests, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := Run(t, promtool, "test", "rules", testFile); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// Every alert is tested above.
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			name, _ := r.(map[string]any)["alert"].(string)
			if !strings.Contains(string(tests), "alertname: "+name+"\n") {
				t.Errorf("alert %s has no promtool test in testdata/alerts_test.yaml", name)
			}
		}
	}
}
