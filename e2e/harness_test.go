package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sser-dev/sser/internal/ssetest"
	"github.com/sser-dev/sser/internal/testproc"
)

const (
	// peerLabels mark a Pod as an sser replica, as the chart does.
	peerLabel = "app.kubernetes.io/name"
	peerValue = "sser"
	// deadline bounds every wait in these tests; it is reached only when
	// something is broken.
	deadline = 60 * time.Second
	// stream is the stream every test publishes and subscribes to.
	stream = "e2e"
)

var (
	nsCount  atomic.Int64
	envOnce  sync.Once
	env      *envtest.Environment
	adminCfg *rest.Config
	envErr   error
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

// controlPlane returns an admin config for the package's kube-apiserver,
// starting it on first use; it skips (or fails, with SSER_REQUIRE_REAL=1)
// when no binaries are given.
func controlPlane(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		testproc.RequireReal(t, "KUBEBUILDER_ASSETS is not set: no real kube-apiserver/etcd for the e2e tests (run `make e2e`)")
	}
	envOnce.Do(func() {
		start := time.Now()
		env = &envtest.Environment{}
		// Let kube-apiserver end open watches at once when it stops.
		env.ControlPlane.GetAPIServer().Configure().Set("shutdown-watch-termination-grace-period", "2s")
		adminCfg, envErr = env.Start()
		t.Logf("envtest control plane started in %s", time.Since(start).Round(time.Millisecond))
	})
	if envErr != nil {
		t.Fatalf("starting envtest: %v", envErr)
	}
	return adminCfg
}

// cluster is one namespace of the API server holding one sser deployment:
// its ServiceAccount, Role and RoleBinding, a kubeconfig with the
// ServiceAccount's token, and the replicas started so far.
type cluster struct {
	t          *testing.T
	admin      kubernetes.Interface
	namespace  string
	kubeconfig string
	// ips are the loopback addresses replicas may use; every one has the
	// same frontend and internal port free.
	ips          []string
	frontendPort int
	internalPort int
	replicas     []*replica
}

// replica is one sser process and its Pod object.
type replica struct {
	*testproc.Replica
	pod string
	ip  string
}

// newCluster prepares namespace with the chart's RBAC and a kubeconfig, and
// reserves ports on maxReplicas loopback addresses 127.0.<subnet>.2 and up.
func newCluster(t *testing.T, namespace string, subnet, maxReplicas int) *cluster {
	t.Helper()
	cfg := controlPlane(t)
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	// Unique per run, so -count=N starts clean in the shared API server.
	namespace = fmt.Sprintf("%s-%d", namespace, nsCount.Add(1))
	c := &cluster{t: t, admin: admin, namespace: namespace}
	for i := range maxReplicas {
		c.ips = append(c.ips, fmt.Sprintf("127.0.%d.%d", subnet, i+2))
	}
	c.frontendPort, c.internalPort = testproc.FreePorts(t, c.ips...)

	ctx := t.Context()
	must(t, "create namespace", func() error {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
		return err
	})
	// The same rules the chart ships: read pods in its own namespace.
	must(t, "create service account", func() error {
		_, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sser"}}, metav1.CreateOptions{})
		return err
	})
	must(t, "create role", func() error {
		_, err := admin.RbacV1().Roles(namespace).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "sser"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
		}, metav1.CreateOptions{})
		return err
	})
	must(t, "create role binding", func() error {
		_, err := admin.RbacV1().RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "sser"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "sser"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "sser", Namespace: namespace}},
		}, metav1.CreateOptions{})
		return err
	})
	var token string
	must(t, "request a service account token", func() error {
		expiry := int64(3600)
		tr, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "sser", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
		}, metav1.CreateOptions{})
		if err == nil {
			token = tr.Status.Token
		}
		return err
	})
	c.kubeconfig = writeKubeconfig(t, cfg, namespace, token)

	// The authorizer sees the new binding through its own informers: wait
	// until the token can list pods, as the replicas will.
	saCfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	sa, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	pollUntil(t, "the service account to be allowed to list pods", func() bool {
		_, err := sa.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		return err == nil
	})
	return c
}

func must(t *testing.T, what string, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// writeKubeconfig writes a kubeconfig that reaches the API server as the
// ServiceAccount, the way a pod's mounted token does.
func writeKubeconfig(t *testing.T, cfg *rest.Config, namespace, token string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["sser"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["sser"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "sser", Namespace: namespace}
	kc.CurrentContext = "sser"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// addReplica creates the Pod object for the i-th address, starts sser on it
// and then marks the pod Running with that podIP, as a kubelet would. It does
// not wait for the others to see it: see waitPeers.
func (c *cluster) addReplica(i int) *replica {
	t := c.t
	t.Helper()
	ip := c.ips[i]
	name := fmt.Sprintf("sser-%d", i)
	ctx := t.Context()
	must(t, "create pod "+name, func() error {
		_, err := c.admin.CoreV1().Pods(c.namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{peerLabel: peerValue}},
			Spec: corev1.PodSpec{
				ServiceAccountName: "sser",
				Containers:         []corev1.Container{{Name: "sser", Image: "sser:e2e"}},
			},
		}, metav1.CreateOptions{})
		return err
	})
	proc := testproc.Start(t, testproc.Config{
		Name:         name,
		IP:           ip,
		FrontendPort: c.frontendPort,
		InternalPort: c.internalPort,
		Args: []string{
			"--peer-finder=kubernetes",
			"--kubeconfig=" + c.kubeconfig,
			"--namespace=" + c.namespace,
			"--pod-ip=" + ip,
			"--pod-name=" + name,
			"--drain-window=1s",
		},
	})
	c.setPodStatus(name, corev1.PodRunning, ip)
	r := &replica{Replica: proc, pod: name, ip: ip}
	c.replicas = append(c.replicas, r)
	return r
}

// setPodStatus sets phase (and podIP when not empty) through the status
// subresource.
func (c *cluster) setPodStatus(name string, phase corev1.PodPhase, ip string) {
	t := c.t
	t.Helper()
	must(t, "update status of pod "+name, func() error {
		pod, err := c.admin.CoreV1().Pods(c.namespace).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Phase = phase
		if ip != "" {
			pod.Status.PodIP = ip
			pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		}
		_, err = c.admin.CoreV1().Pods(c.namespace).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{})
		return err
	})
}

func (c *cluster) deletePod(name string) {
	c.t.Helper()
	must(c.t, "delete pod "+name, func() error {
		return c.admin.CoreV1().Pods(c.namespace).Delete(c.t.Context(), name, metav1.DeleteOptions{})
	})
}

// start brings up n replicas and waits until each is ready and sees all n.
func (c *cluster) start(n int) []*replica {
	c.t.Helper()
	start := time.Now()
	rs := make([]*replica, 0, n)
	for i := range n {
		rs = append(rs, c.addReplica(i))
	}
	waitPeers(c.t, rs, n)
	c.t.Logf("%d replicas up and seeing each other in %s", n, time.Since(start).Round(time.Millisecond))
	return rs
}

// waitPeers waits until every replica in rs is ready and its sser_peers
// gauge is n.
func waitPeers(t *testing.T, rs []*replica, n int) {
	t.Helper()
	for _, r := range rs {
		r.WaitReady(t, deadline)
		pollUntil(t, fmt.Sprintf("%s to report %d peers", r.pod, n), func() bool {
			v, ok := metric(t, r, "sser_peers")
			return ok && v == float64(n)
		})
	}
}

// metrics returns the replica's /metrics text.
func metrics(t *testing.T, r *replica) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(r.InternalURL + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of an unlabelled sample.
func metric(t *testing.T, r *replica, name string) (float64, bool) {
	t.Helper()
	v, ok, err := testproc.Metric(r.InternalURL+"/metrics", name)
	return v, ok && err == nil
}

// pollUntil calls cond until it is true, failing the test after deadline.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testproc.Eventually(t, deadline, what, cond)
}

// message is what the tests publish: the publisher's name and its counter,
// so a subscriber can check per-publisher order, gaps and duplicates.
func message(publisher string, i int) string { return publisher + "/" + strconv.Itoa(i) }

// post sends body to url and returns the status and answer.
func post(t *testing.T, url, contentType string, body []byte) (int, http.Header, []byte, error) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// publish posts count events from publisher, one request each, in order, to
// r's publish endpoint.
func publish(t *testing.T, r *replica, publisher string, count int) error {
	t.Helper()
	for i := range count {
		body, _ := json.Marshal(map[string]string{"stream": stream, "msg": message(publisher, i)})
		status, _, answer, err := post(t, r.InternalURL+"/api/json/v1/publish", "application/json", body)
		if err != nil {
			return fmt.Errorf("publish %s to %s: %w", message(publisher, i), r.pod, err)
		}
		if status/100 != 2 {
			return fmt.Errorf("publish %s to %s: %d %s", message(publisher, i), r.pod, status, answer)
		}
	}
	return nil
}

// publishAll runs one publisher per entry of counts at once, publisher k
// posting to rs[k%len(rs)], and waits for them all.
func publishAll(t *testing.T, rs []*replica, counts map[string]int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(counts))
	k := 0
	for publisher, n := range counts {
		r := rs[k%len(rs)]
		k++
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- publish(t, r, publisher, n)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// subscribe opens one SSE subscriber on each replica.
func subscribe(t *testing.T, rs []*replica) []*ssetest.Sub {
	t.Helper()
	subs := make([]*ssetest.Sub, len(rs))
	for i, r := range rs {
		subs[i] = ssetest.Dial(t, r.FrontendURL+"/events?stream="+stream, "")
	}
	return subs
}

// expectEvents reads from sub until it has every event of counts, failing
// on a duplicate, a gap, an out-of-order event or anything unexpected, or
// when they do not all arrive within deadline.
func expectEvents(t *testing.T, name string, sub *ssetest.Sub, counts map[string]int) {
	t.Helper()
	want := 0
	for _, n := range counts {
		want += n
	}
	nextOf := make(map[string]int, len(counts))
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for got := 0; got < want; got++ {
		select {
		case ev, ok := <-sub.Events:
			if !ok {
				t.Fatalf("%s: stream closed after %d of %d events", name, got, want)
			}
			publisher, seq, found := strings.Cut(ev.Data, "/")
			i, err := strconv.Atoi(seq)
			if _, known := counts[publisher]; !found || err != nil || !known {
				t.Fatalf("%s: unexpected event %q", name, ev.Data)
			}
			if i != nextOf[publisher] {
				t.Fatalf("%s: from %s got #%d, want #%d (order, gap or duplicate)", name, publisher, i, nextOf[publisher])
			}
			nextOf[publisher]++
		case <-timer.C:
			t.Fatalf("%s: %d of %d events within %s (per publisher: %v)", name, got, want, deadline, nextOf)
		}
	}
}

// expectNothingThen proves that sub received nothing before a marker: it
// publishes the marker through r and fails unless it is the first event.
func expectNothingThen(t *testing.T, r *replica, subs []*ssetest.Sub, marker string) {
	t.Helper()
	if err := publish(t, r, marker, 1); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		expectEvents(t, fmt.Sprintf("subscriber %d", i), sub, map[string]int{marker: 1})
	}
}
