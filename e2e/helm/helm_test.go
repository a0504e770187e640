package helm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sser-dev/sser/internal/testproc"
	"github.com/sser-dev/sser/pkg/client"
	"github.com/sser-dev/sser/test/chart"
)

const (
	namespace = "sser-e2e"
	release   = "sser"
	image     = "ghcr.io/sser-dev/sser"
)

// env is everything one run of the test shares.
type env struct {
	helm       string
	cluster    *cluster
	kubelet    *kubelet
	frontend   int // container ports, the same on every pod IP
	internal   int
	subscribe  *serviceProxy // the release's Service (frontend)
	publish    *serviceProxy // the release's internal Service
	baseValues []string
}

// podIPs are the loopback addresses the agent hands out, one per pod, in a
// block no other test uses.
func podIPs() []string {
	var ips []string
	for i := 2; i < 80; i++ {
		ips = append(ips, fmt.Sprintf("127.0.77.%d", i))
	}
	return ips
}

func TestHelmInstall(t *testing.T) {
	helmBin := chart.Helm(t)
	c := startCluster(t)
	binary := testproc.Binary(t)
	ips := podIPs()
	frontend, internal := testproc.FreePorts(t, ips...)

	if _, err := c.client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kl := newKubelet(t, c, namespace, binary, image, ips)
	if err := kl.registerNode(t.Context()); err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(t.Context())
	kdone := make(chan struct{})
	go func() {
		defer close(kdone)
		kl.run(kctx)
	}()
	t.Cleanup(func() {
		stop()
		<-kdone
		for _, err := range kl.errors() {
			t.Errorf("node agent: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pods:\n%s", kl.logs())
		}
	})

	e := &env{
		helm: helmBin, cluster: c, kubelet: kl, frontend: frontend, internal: internal,
		baseValues: []string{
			// Every pod shares this host's network namespace, so each binds
			// only its own pod IP (the chart's default binds all interfaces).
			"--set", "sser.bindAddress=$(POD_IP)",
			"--set", fmt.Sprintf("sser.frontendPort=%d,sser.internalPort=%d", frontend, internal),
			// Quicker than production, same shape: probe every second, a
			// 1 s preStop pause, a 3 s drain window.
			"--set", "readinessProbe.periodSeconds=1,livenessProbe.periodSeconds=2",
			"--set", "preStopSleepSeconds=1,sser.drainWindowSeconds=3,sser.shutdownTimeoutSeconds=2,terminationGraceMarginSeconds=2",
			"--set", "sser.retry=500ms,sser.heartbeat=2s,sser.historySize=20000,sser.historyAge=10m",
		},
	}

	begin := time.Now()
	out := e.helmRun(t, "install", append([]string{release, chart.ChartDir(t), "--wait", "--timeout", "3m"}, e.baseValues...)...)
	t.Logf("helm install --wait: %s", time.Since(begin).Round(time.Millisecond))
	// NOTES.txt tells a new user how to reach the release.
	for _, want := range []string{
		"kubectl -n " + namespace + " port-forward svc/" + release + " 8000:8000",
		"sser sub --url http://localhost:8000 --stream demo",
		"curl -N 'http://localhost:8000/events?stream=demo'",
		"http://localhost:7000/api/json/v1/publish",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install NOTES lack %q:\n%s", want, out)
		}
	}
	e.waitPods(t, 3)

	for _, kind := range []string{"Deployment", "Service", "Service/internal", "ServiceAccount", "Role", "RoleBinding", "PodDisruptionBudget"} {
		if !e.exists(t, kind) {
			t.Errorf("%s not installed", kind)
		}
	}
	e.subscribe = startServiceProxy(t, t.Context(), c.client, namespace, release, "http")
	e.publish = startServiceProxy(t, t.Context(), c.client, namespace, release+"-internal", "internal")

	ok := t.Run("fan-out", e.testFanOut) &&
		t.Run("scale", e.testScale) &&
		t.Run("rollout", e.testRollout)
	if !ok {
		t.Fatal("stopping before uninstall")
	}
	t.Run("uninstall", e.testUninstall)
}

func (e *env) helmRun(t *testing.T, verb string, args ...string) string {
	t.Helper()
	args = append(append([]string{verb}, args...), "--namespace", namespace, "--kubeconfig", e.cluster.kubeconfig)
	out, err := chart.Run(t, e.helm, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}

func (e *env) exists(t *testing.T, kind string) bool {
	ctx, cs := t.Context(), e.cluster.client
	var err error
	switch kind {
	case "Deployment":
		_, err = cs.AppsV1().Deployments(namespace).Get(ctx, release, metav1.GetOptions{})
	case "Service":
		_, err = cs.CoreV1().Services(namespace).Get(ctx, release, metav1.GetOptions{})
	case "Service/internal":
		_, err = cs.CoreV1().Services(namespace).Get(ctx, release+"-internal", metav1.GetOptions{})
	case "ServiceAccount":
		_, err = cs.CoreV1().ServiceAccounts(namespace).Get(ctx, release, metav1.GetOptions{})
	case "Role":
		_, err = cs.RbacV1().Roles(namespace).Get(ctx, release, metav1.GetOptions{})
	case "RoleBinding":
		_, err = cs.RbacV1().RoleBindings(namespace).Get(ctx, release, metav1.GetOptions{})
	case "PodDisruptionBudget":
		_, err = cs.PolicyV1().PodDisruptionBudgets(namespace).Get(ctx, release, metav1.GetOptions{})
	default:
		t.Fatalf("unknown kind %s", kind)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// eventually polls cond until it returns "" or the timeout passes, then
// fails with cond's last answer.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	var last string
	testproc.Eventually(t, timeout, what, func() bool { last = cond(); return last == "" }, func() string { return last })
}

// waitPods waits until exactly n pods exist, all Running and Ready, the
// agent runs exactly them, and every replica counts n peers (sser_peers).
func (e *env) waitPods(t *testing.T, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, 90*time.Second, fmt.Sprintf("%d ready pods that see each other", n), func() string {
		list, err := e.cluster.client.CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		pods = list.Items
		if len(pods) != n {
			return fmt.Sprintf("%d pods", len(pods))
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !podReady(&p) {
				return fmt.Sprintf("pod %s phase %s ready %v deleting %v", p.Name, p.Status.Phase, podReady(&p), p.DeletionTimestamp != nil)
			}
		}
		if got := len(e.kubelet.running()); got != n {
			return fmt.Sprintf("agent runs %d processes", got)
		}
		for _, p := range pods {
			peers, err := e.peers(t, p.Status.PodIP)
			if err != nil {
				return err.Error()
			}
			if peers != n {
				return fmt.Sprintf("pod %s counts %d peers", p.Name, peers)
			}
		}
		return ""
	})
	return pods
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// peers reads the sser_peers gauge of the replica at ip.
func (e *env) peers(t *testing.T, ip string) (int, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, strconv.Itoa(e.internal))+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "sser_peers "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("%s: no sser_peers metric", ip)
}

// publish POSTs one event to the internal Service (through its proxy). It
// returns whether the event was accepted, and whether it may have been
// accepted although the answer was lost (a transport error after sending).
func (e *env) publish1(ctx context.Context, hc *http.Client, stream, msg string) (accepted, uncertain bool, why string) {
	return e.publishTo(ctx, hc, e.publish.addr, stream, msg)
}

// publishTo POSTs one event to the publish API at addr (host:port).
func (e *env) publishTo(ctx context.Context, hc *http.Client, addr, stream, msg string) (accepted, uncertain bool, why string) {
	body, _ := json.Marshal(map[string]string{"stream": stream, "msg": msg})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/json/v1/publish", bytes.NewReader(body))
	if err != nil {
		return false, false, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, true, fmt.Sprintf("%v (ready endpoints %v)", err, e.publish.endpoints())
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	return resp.StatusCode/100 == 2, false, fmt.Sprintf("%s: %s", resp.Status, answer)
}

// subscriber records the messages one Go client receives on a stream.
type subscriber struct {
	name     string
	stream   *client.Stream
	mu       sync.Mutex
	got      map[string]int
	other    []string // events of another type than message
	connects int
}

func (e *env) subscribeVia(t *testing.T, ctx context.Context, name, baseURL, stream string) *subscriber {
	t.Helper()
	s := &subscriber{name: name, got: map[string]int{}}
	st, err := client.NewStream(ctx, baseURL+"/events?stream="+stream,
		client.WithHTTPClient(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}),
		client.WithBackoff(100*time.Millisecond, time.Second, 0.5),
		client.WithReadTimeout(10*time.Second),
		client.WithConnectHandler(func(*http.Response) {
			s.mu.Lock()
			s.connects++
			s.mu.Unlock()
		}),
		client.WithErrorHandler(func(context.Context, error) bool { return true }),
		client.WithHandler(func(_ context.Context, ev client.Event) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if ev.Type == client.DefaultEventType {
				s.got[ev.Data]++
			} else {
				s.other = append(s.other, ev.Type+": "+ev.Data)
			}
			return nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	s.stream = st
	t.Cleanup(func() { _ = st.Close() })
	return s
}

func (s *subscriber) has(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[msg] > 0
}

// testFanOut subscribes on every pod directly and publishes on each pod in
// turn: every event, whichever replica took it, reaches every subscriber on
// every replica.
func (e *env) testFanOut(t *testing.T) {
	pods := e.waitPods(t, 3)
	var subs []*subscriber
	for _, p := range pods {
		subs = append(subs, e.subscribeVia(t, t.Context(), p.Name, "http://"+net.JoinHostPort(p.Status.PodIP, strconv.Itoa(e.frontend)), "fanout"))
	}
	waitSubscribed(t, e, subs, "fanout")
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var sent []string
	for i := range 30 {
		p := pods[i%len(pods)]
		msg := fmt.Sprintf("fan-%02d-via-%s", i, p.Name)
		if ok, _, why := e.publishTo(t.Context(), hc, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(e.internal)), "fanout", msg); !ok {
			t.Fatalf("publish %s was not accepted: %s", msg, why)
		}
		sent = append(sent, msg)
	}
	eventually(t, 15*time.Second, "every subscriber has every event", func() string {
		for _, s := range subs {
			for _, m := range sent {
				if !s.has(m) {
					return fmt.Sprintf("subscriber on %s lacks %s", s.name, m)
				}
			}
		}
		return ""
	})
}

// waitSubscribed publishes warm-up events until every subscriber has
// received one, so the test knows their connections are up.
func waitSubscribed(t *testing.T, e *env, subs []*subscriber, stream string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	i := 0
	eventually(t, 30*time.Second, "subscribers connected", func() string {
		i++
		msg := fmt.Sprintf("warmup-%d", i)
		if ok, _, why := e.publish1(t.Context(), hc, stream, msg); !ok {
			return "warm-up publish not accepted: " + why
		}
		// Give the event a moment to arrive before the next poll decides.
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			all := true
			for _, s := range subs {
				s.mu.Lock()
				n := 0
				for m, c := range s.got {
					if strings.HasPrefix(m, "warmup-") {
						n += c
					}
				}
				s.mu.Unlock()
				if n == 0 {
					all = false
				}
			}
			if all {
				return ""
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
		return "a subscriber has no warm-up event yet"
	})
}

// testScale scales up and down with helm upgrade: the peer set of every
// replica follows, and removed pods drain and exit on their own.
func (e *env) testScale(t *testing.T) {
	for _, n := range []int{5, 2, 3} {
		before := len(e.kubelet.records())
		begin := time.Now()
		e.helmRun(t, "upgrade", append([]string{release, chart.ChartDir(t), "--wait", "--timeout", "3m"}, append(slices.Clone(e.baseValues), "--set", fmt.Sprintf("replicaCount=%d", n))...)...)
		e.waitPods(t, n)
		t.Logf("scaled to %d in %s", n, time.Since(begin).Round(time.Millisecond))
		for _, r := range e.kubelet.records()[before:] {
			if r.Killed || r.ExitErr != nil {
				t.Errorf("pod %s did not exit cleanly within its grace period: killed=%v err=%v", r.Name, r.Killed, r.ExitErr)
			}
		}
	}
}

// testRollout changes a value so that helm upgrade rolls every pod, while Go
// clients stay subscribed through the frontend Service and events are
// published through the internal Service all along. No event may be lost.
func (e *env) testRollout(t *testing.T) {
	old := e.waitPods(t, 3)
	const nsubs = 6
	var subs []*subscriber
	for i := range nsubs {
		subs = append(subs, e.subscribeVia(t, t.Context(), fmt.Sprintf("client-%d", i), "http://"+e.subscribe.addr, "rollout"))
	}
	waitSubscribed(t, e, subs, "rollout")

	var (
		mu        sync.Mutex
		accepted  []string
		uncertain = map[string]bool{}
		rejected  int
	)
	pubCtx, stopPub := context.WithCancel(t.Context())
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		// Bounded: at most 5000 events and 3 minutes.
		limit := time.Now().Add(3 * time.Minute)
		for i := 0; i < 5000 && time.Now().Before(limit) && pubCtx.Err() == nil; i++ {
			msg := fmt.Sprintf("r-%05d", i)
			for attempt := 0; attempt < 100 && pubCtx.Err() == nil; attempt++ {
				ok, unsure, _ := e.publish1(pubCtx, hc, "rollout", msg)
				mu.Lock()
				if unsure {
					uncertain[msg] = true
				}
				if ok {
					accepted = append(accepted, msg)
				} else {
					rejected++
				}
				mu.Unlock()
				if ok {
					break
				}
				time.Sleep(20 * time.Millisecond) // retry pacing of the publisher
			}
			time.Sleep(10 * time.Millisecond) // publish rate: about 50-80 events/s
		}
	}()

	begin := time.Now()
	e.helmRun(t, "upgrade", append([]string{release, chart.ChartDir(t), "--wait", "--timeout", "3m"}, append(slices.Clone(e.baseValues), "--set", "sser.heartbeat=3s", "--set", "replicaCount=3")...)...)
	helmDone := time.Since(begin)
	oldNames := map[string]bool{}
	for _, p := range old {
		oldNames[p.Name] = true
	}
	pods := e.waitPods(t, 3)
	for _, p := range pods {
		if oldNames[p.Name] {
			t.Errorf("pod %s survived the rollout", p.Name)
		}
	}
	eventually(t, 60*time.Second, "old pods terminated", func() string {
		for _, r := range e.kubelet.records() {
			delete(oldNames, r.Name)
		}
		if len(oldNames) > 0 {
			return fmt.Sprintf("%d old pods still running", len(oldNames))
		}
		return ""
	})
	rollout := time.Since(begin)
	// Keep publishing for a moment on the new pods, then stop.
	mu.Lock()
	n0 := len(accepted)
	mu.Unlock()
	eventually(t, 30*time.Second, "publishing after the rollout", func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(accepted) < n0+50 {
			return fmt.Sprintf("%d events accepted since the rollout", len(accepted)-n0)
		}
		return ""
	})
	stopPub()
	<-pubDone

	mu.Lock()
	want := slices.Clone(accepted)
	mu.Unlock()
	eventually(t, 30*time.Second, "every subscriber caught up", func() string {
		for _, s := range subs {
			for _, m := range want {
				if !s.has(m) {
					return fmt.Sprintf("%s lacks %s", s.name, m)
				}
			}
		}
		return ""
	})
	acceptedSet := map[string]bool{}
	for _, m := range want {
		acceptedSet[m] = true
	}
	for _, s := range subs {
		s.mu.Lock()
		received, dups := 0, 0
		for m, c := range s.got {
			if !strings.HasPrefix(m, "r-") {
				continue
			}
			received += c
			if !acceptedSet[m] && !uncertain[m] {
				t.Errorf("%s received %s, which was never accepted", s.name, m)
			}
			if c > 1 {
				dups += c - 1
				if !uncertain[m] {
					t.Errorf("%s received %s %d times", s.name, m, c)
				}
			}
		}
		// Every pod it was connected to was replaced, so it must have
		// reconnected; otherwise the rollout proved nothing about resuming.
		if s.connects < 2 {
			t.Errorf("%s connected %d times; every client must reconnect during the rollout", s.name, s.connects)
		}
		if len(s.other) > 0 {
			t.Logf("%s also received: %q", s.name, s.other)
		}
		t.Logf("%s: received %d events (%d duplicates of uncertain publishes), %d connections", s.name, received, dups, s.connects)
		s.mu.Unlock()
	}
	t.Logf("rollout: helm upgrade --wait %s, all old pods gone after %s; published %d events (%d publish attempts refused, %d uncertain)",
		helmDone.Round(time.Millisecond), rollout.Round(time.Millisecond), len(want), rejected, len(uncertain))
	for _, r := range e.kubelet.records() {
		if r.Killed || r.ExitErr != nil {
			t.Errorf("pod %s did not exit cleanly within its grace period: killed=%v err=%v", r.Name, r.Killed, r.ExitErr)
		}
	}
}

// testUninstall removes the release: every object goes, and the garbage
// collector takes the ReplicaSets and pods with the Deployment.
func (e *env) testUninstall(t *testing.T) {
	e.helmRun(t, "uninstall", release, "--wait", "--timeout", "2m")
	cs := e.cluster.client
	eventually(t, 90*time.Second, "everything removed", func() string {
		ctx := t.Context()
		var left []string
		if l, err := cs.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{}); err == nil && len(l.Items) > 0 {
			left = append(left, fmt.Sprintf("%d deployments", len(l.Items)))
		}
		if l, err := cs.AppsV1().ReplicaSets(namespace).List(ctx, metav1.ListOptions{}); err == nil && len(l.Items) > 0 {
			left = append(left, fmt.Sprintf("%d replicasets", len(l.Items)))
		}
		if l, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{}); err == nil && len(l.Items) > 0 {
			left = append(left, fmt.Sprintf("%d pods", len(l.Items)))
		}
		if l, err := cs.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{}); err == nil && len(l.Items) > 0 {
			left = append(left, fmt.Sprintf("%d services", len(l.Items)))
		}
		for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding", "PodDisruptionBudget"} {
			if e.exists(t, kind) {
				left = append(left, kind)
			}
		}
		if n := len(e.kubelet.running()); n > 0 {
			left = append(left, fmt.Sprintf("%d processes", n))
		}
		return strings.Join(left, ", ")
	})
}
