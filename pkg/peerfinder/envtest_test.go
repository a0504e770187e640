package peerfinder

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The tests in this file run against a real kube-apiserver and etcd
// (controller-runtime's envtest). KUBEBUILDER_ASSETS names the folder with
// the binaries: `make envtest-assets` builds it.

var (
	sharedOnce sync.Once
	sharedEnv  *envtest.Environment
	sharedCfg  *rest.Config
	sharedErr  error
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if sharedEnv != nil {
		if err := sharedEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

// requireAssets skips the test when no control plane binaries are given,
// or fails it when SSER_REQUIRE_REAL=1 says they must be.
func requireAssets(t *testing.T) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") != "" {
		return
	}
	testproc.RequireReal(t, "KUBEBUILDER_ASSETS is not set: no real kube-apiserver/etcd (run `make envtest-assets`, or `make test-envtest`)")
}

// realAPIServer returns an admin config for the package's shared control
// plane, starting it on first use.
func realAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	requireAssets(t)
	sharedOnce.Do(func() {
		start := time.Now()
		sharedEnv = &envtest.Environment{}
		sharedCfg, sharedErr = sharedEnv.Start()
		t.Logf("envtest control plane started in %s", time.Since(start).Round(time.Millisecond))
	})
	if sharedErr != nil {
		t.Fatalf("starting envtest: %v", sharedErr)
	}
	return sharedCfg
}

func clientFor(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return cs
}

// nsCount makes namespace names unique within the shared control plane, so
// that -count=N runs start clean each time.
var nsCount atomic.Int64

// createNamespaces creates one namespace per base name, each with a unique
// suffix, and returns their names in order.
func createNamespaces(t *testing.T, cs kubernetes.Interface, bases ...string) []string {
	t.Helper()
	names := make([]string, 0, len(bases))
	for _, base := range bases {
		name := fmt.Sprintf("%s-%d", base, nsCount.Add(1))
		names = append(names, name)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", name, err)
		}
	}
	return names
}

// pollUntil calls cond until it returns true, failing the test after waitFor.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testproc.Eventually(t, waitFor, what, cond)
}

func TestKubernetesRealMembership(t *testing.T) {
	cs := clientFor(t, realAPIServer(t))
	ns := createNamespaces(t, cs, "membership", "membership-other")
	// A real delete of a pod with a finalizer sets its deletion timestamp and
	// leaves it (and its Running phase) in place.
	terminate := func(a podAPI, ns, name string) { a.delete(ns, name) }
	runMembership(t, cs, ns[0], ns[1], terminate)
}

// Pod names come with the IPs, and a name that changes on an IP that stays
// is sent too: the server labels a peer's metrics by its pod name.
func TestKubernetesRealNames(t *testing.T) {
	cs := clientFor(t, realAPIServer(t))
	runNames(t, cs, createNamespaces(t, cs, "names")[0])
}

func TestKubernetesRealRBAC(t *testing.T) {
	admin := clientFor(t, realAPIServer(t))
	nss := createNamespaces(t, admin, "rbac-granted", "rbac-none", "rbac-list-only")
	granted, none, listOnly := nss[0], nss[1], nss[2]
	a := podAPI{t: t, cs: admin}
	for _, ns := range nss {
		a.create(ns, "p1", selected)
		a.status(ns, "p1", corev1.PodRunning, "127.0.1.1")
	}
	// The same rules the chart grants, in one namespace only.
	grant(t, admin, granted, "sser-finder", "get", "list", "watch")
	grant(t, admin, listOnly, "sser-finder", "list")

	user, err := sharedEnv.AddUser(envtest.User{Name: "sser-finder"}, nil)
	if err != nil {
		t.Fatalf("add user: %v", err)
	}
	cs := clientFor(t, user.Config())
	// The authorizer learns of new bindings through its own informers.
	for _, ns := range []string{granted, listOnly} {
		pollUntil(t, "RBAC in "+ns+" to take effect", func() bool {
			_, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
			return err == nil
		})
	}

	tests := []struct {
		namespace string
		want      []string
		wantText  string
	}{
		{namespace: granted, want: []string{"127.0.1.1"}},
		{namespace: none, wantText: `sser: peerfinder: forbidden to list pods in namespace "` + none + `" (RBAC needs get, list, watch on pods)`},
		{namespace: listOnly, wantText: `sser: peerfinder: forbidden to watch pods in namespace "` + listOnly + `" (RBAC needs get, list, watch on pods)`},
	}
	for _, tt := range tests {
		t.Run(tt.namespace, func(t *testing.T) {
			start := time.Now()
			initial, _, err := NewPeerFinder(cs, tt.namespace, peerSelector, WithStartTimeout(waitFor)).Start(t.Context())
			elapsed := time.Since(start)
			if tt.wantText == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if !slices.Equal(initial, tt.want) {
					t.Fatalf("initial = %v, want %v", initial, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrForbidden) {
				t.Fatalf("Start error = %v, want ErrForbidden", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name the permission (%q)", err, tt.wantText)
			}
			// Far less than the start timeout: forbidden is not retried.
			if elapsed > 5*time.Second {
				t.Errorf("Start took %s to fail", elapsed)
			}
			t.Logf("failed in %s: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

// grant gives user the verbs on pods in ns through a Role and RoleBinding.
func grant(t *testing.T, cs kubernetes.Interface, ns, user string, verbs ...string) {
	t.Helper()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "sser-peers", Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: verbs}},
	}
	if _, err := cs.RbacV1().Roles(ns).Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sser-peers", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "sser-peers"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// The API server goes away under a running finder and comes back on the same
// address, certificates and etcd: the last set is kept meanwhile (nothing is
// sent), and changes made after the restart are seen.
func TestKubernetesRealAPIServerRestart(t *testing.T) {
	requireAssets(t)
	env := &envtest.Environment{}
	// A fixed cert dir keeps the serving and client CAs across the restart.
	env.ControlPlane.GetAPIServer().CertDir = t.TempDir()
	// Without a watch grace period kube-apiserver waits on the informer's
	// open watch and envtest's 20 s stop timeout kills it instead.
	env.ControlPlane.GetAPIServer().Configure().Set("shutdown-watch-termination-grace-period", "2s")
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Logf("envtest control plane started in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	cs := clientFor(t, cfg)
	ns := createNamespaces(t, cs, "restart")[0]
	a := podAPI{t: t, cs: cs}
	a.create(ns, "a", selected)
	a.status(ns, "a", corev1.PodRunning, "127.0.1.1")

	// The finder's own client counts the requests that failed, so the test
	// knows when the finder has tried and failed to reach the API server.
	var failed atomic.Int64
	finderCfg := rest.CopyConfig(cfg)
	finderCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				failed.Add(1)
			}
			return resp, err
		})
	}
	initial, updates, err := NewPeerFinder(clientFor(t, finderCfg), ns, peerSelector).Start(t.Context())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if want := []string{"127.0.1.1"}; !slices.Equal(initial, want) {
		t.Fatalf("initial = %v, want %v", initial, want)
	}

	apiServer := env.ControlPlane.GetAPIServer()
	stopped := time.Now()
	if err := apiServer.Stop(); err != nil {
		t.Fatalf("stopping kube-apiserver: %v", err)
	}
	before := failed.Load()
	pollUntil(t, "the finder to fail to reach the API server", func() bool {
		return failed.Load() > before
	})
	select {
	case set, ok := <-updates:
		t.Fatalf("finder sent %v (open=%v) while the API server was down; want the last set kept", set, ok)
	default:
	}
	if err := apiServer.Start(); err != nil {
		t.Fatalf("restarting kube-apiserver: %v", err)
	}
	t.Logf("kube-apiserver was down for %s", time.Since(stopped).Round(time.Millisecond))

	// Any update sent while it was down would be read here instead.
	a.create(ns, "b", selected)
	a.status(ns, "b", corev1.PodRunning, "127.0.1.2")
	resumed := time.Now()
	expectNext(t, updates, []string{"127.0.1.1", "127.0.1.2"})
	t.Logf("change after the restart seen in %s", time.Since(resumed).Round(time.Millisecond))
	if _, err := cs.CoreV1().Pods(ns).Get(t.Context(), "a", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Fatal("pod a is gone after the restart; etcd data was not kept")
	}
}
