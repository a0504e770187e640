package chart

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sser-dev/sser/internal/testproc"
)

// TestServerSideDryRun applies every object the chart, the plain manifests
// and the sidecar example render to a real kube-apiserver with dry-run, so
// the API server's own validation and admission judge them.
func TestServerSideDryRun(t *testing.T) {
	Helm(t)
	// The optional objects' kinds (ServiceMonitor, PodMonitor,
	// PrometheusRule, HTTPRoute) come from their projects' own CRDs.
	crds := CRDs(t)
	var crdDirs []string
	if crds != "" {
		crdDirs = append(crdDirs, crds)
	}
	cfg := StartAPIServer(t, crdDirs...)
	a := NewApplier(t, cfg)
	needCRDs := func(t *testing.T) {
		t.Helper()
		if crds == "" {
			RequireReal(t, "SSER_TEST_CRDS not set: run hack/test-crds.sh (or make test-chart)")
		}
	}

	chart := func(ns string, args ...string) func(t *testing.T) []*unstructured.Unstructured {
		return func(t *testing.T) []*unstructured.Unstructured {
			return MustTemplate(t, "sser", ns, args...)
		}
	}
	kustomize := func(dir string) func(t *testing.T) []*unstructured.Unstructured {
		return func(t *testing.T) []*unstructured.Unstructured {
			out, err := Run(t, Kubectl(t), "kustomize", filepath.Join(RepoRoot(t), dir))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Decode(out)
			if err != nil {
				t.Fatal(err)
			}
			return objs
		}
	}
	ciValues := func(t *testing.T, name string) string {
		return filepath.Join(ChartDir(t), "ci", name)
	}

	tests := []struct {
		name      string
		objects   func(t *testing.T) []*unstructured.Unstructured
		wantKinds int // distinct kinds expected, so an empty render cannot pass
	}{
		{"chart optional objects", chart("dry-optional", "-f", filepath.Join(RepoRoot(t), "test", "chart", "testdata", "optional-values.yaml")), 14},
		{"chart PodMonitor", chart("dry-podmonitor", "--set", "metrics.podMonitor.enabled=true,metrics.podMonitor.scrapeTimeout=10s,internalService.enabled=false"), 9},
		{"chart defaults", chart("dry-default"), 9},
		{"chart ci/full-values.yaml", func(t *testing.T) []*unstructured.Unstructured {
			return chart("dry-full", "-f", ciValues(t, "full-values.yaml"))(t)
		}, 15},
		{"chart ci/minimal-values.yaml", func(t *testing.T) []*unstructured.Unstructured {
			return chart("dry-minimal", "-f", ciValues(t, "minimal-values.yaml"))(t)
		}, 2},
		{"chart subscriber authentication", chart("dry-auth", "--set", "auth.jwt.hs256Secret.existingSecret=jwt,auth.jwt.publicKey.existingSecret=jwt,auth.jwt.jwks.existingSecret=jwks",
			"--set", "auth.tickets.key.existingSecret=tickets,sser.publishToken.existingSecret=publishers,sser.internalToken.existingSecret=old",
			"--set-json", `auth.jwt.streamTemplates=["users/{sub}/*"]`), 9},
		{"chart NetworkPolicy and HPA", chart("dry-np", "--set", "networkPolicy.internal.namespaces={shop},autoscaling.enabled=true"), 10},
		{"chart sidecar values", func(t *testing.T) []*unstructured.Unstructured {
			return chart("dry-sidecar", "-f", filepath.Join(RepoRoot(t), "examples", "sidecar", "values.yaml"))(t)
		}, 8},
		{"manifests/base", kustomize("manifests/base"), 8},
		{"manifests/overlays/dev", kustomize("manifests/overlays/dev"), 7},
		{"manifests/overlays/production", kustomize("manifests/overlays/production"), 9},
		{"examples/sidecar", kustomize("examples/sidecar"), 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objects(t)
			for _, o := range objs {
				if g := o.GroupVersionKind().Group; g == "monitoring.coreos.com" || g == "gateway.networking.k8s.io" {
					needCRDs(t)
				}
			}
			if got := len(Kinds(objs)); got != tc.wantKinds {
				t.Fatalf("%d kinds rendered (%v), want %d", got, Kinds(objs), tc.wantKinds)
			}
			// Namespaces are created for real: a dry-run namespace does not
			// exist for the dry-run objects inside it.
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					a.EnsureNamespace(t, o.GetName())
				} else if ns := o.GetNamespace(); ns != "" {
					a.EnsureNamespace(t, ns)
				}
			}
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					continue
				}
				if _, err := a.Apply(t, o, true); err != nil {
					t.Error(err)
				}
			}
		})
	}

	// The dry-run must be able to fail: the API server rejects what its
	// validation rejects, even though nothing is stored.
	t.Run("invalid object is rejected", func(t *testing.T) {
		objs := MustTemplate(t, "sser", "dry-default")
		d := Find(objs, "Deployment", "sser").DeepCopy()
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		c := containers[0].(map[string]any)
		if err := unstructured.SetNestedField(c, int64(-1), "lifecycle", "preStop", "sleep", "seconds"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers"); err != nil {
			t.Fatal(err)
		}
		_, err := a.Apply(t, d, true)
		if !apierrors.IsInvalid(err) {
			t.Fatalf("negative preStop sleep: got %v, want Invalid", err)
		}
		d = Find(objs, "Deployment", "sser").DeepCopy()
		if err := unstructured.SetNestedField(d.Object, "x", "spec", "template", "spec", "notAField"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Apply(t, d, true); err == nil || !strings.Contains(err.Error(), "notAField") {
			t.Fatalf("unknown field: got %v, want strict field validation to name notAField", err)
		}
	})

	// The CRDs validate too: the HTTPRoute's own rule refuses a backend
	// timeout longer than the request's.
	t.Run("invalid custom resource is rejected", func(t *testing.T) {
		needCRDs(t)
		a.EnsureNamespace(t, "dry-invalid")
		objs := MustTemplate(t, "sser", "dry-invalid", "--set", "httpRoute.enabled=true,httpRoute.timeouts.request=5s,httpRoute.timeouts.backendRequest=10s",
			"--set-json", `httpRoute.parentRefs=[{"name":"gw"}]`)
		_, err := a.Apply(t, Find(objs, "HTTPRoute", "sser"), true)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "backendRequest") {
			t.Fatalf("backendRequest longer than request: got %v, want Invalid naming backendRequest", err)
		}
	})
}

// TestRBAC installs the chart's ServiceAccount, Role and RoleBinding in a real
// API server and asks its RBAC authorizer what the ServiceAccount may do: get,
// list and watch pods in its namespace, and nothing else.
func TestRBAC(t *testing.T) {
	Helm(t)
	cfg := StartAPIServer(t)
	a := NewApplier(t, cfg)
	const ns, other = "sser-rbac", "elsewhere"
	a.EnsureNamespace(t, ns)
	a.EnsureNamespace(t, other)

	for _, o := range MustTemplate(t, "sser", ns) {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding":
			if _, err := a.Apply(t, o, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	user := "system:serviceaccount:" + ns + ":sser"
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}

	type access struct {
		verb, resource, subresource, namespace string
		group                                  string
	}
	allowed := []access{
		{verb: "get", resource: "pods", namespace: ns},
		{verb: "list", resource: "pods", namespace: ns},
		{verb: "watch", resource: "pods", namespace: ns},
	}
	denied := []access{
		{verb: "list", resource: "pods", namespace: other},
		{verb: "watch", resource: "pods", namespace: other},
		{verb: "list", resource: "pods", namespace: "kube-system"},
		{verb: "list", resource: "pods"}, // all namespaces
		{verb: "get", resource: "secrets", namespace: ns},
		{verb: "list", resource: "secrets", namespace: ns},
		{verb: "list", resource: "configmaps", namespace: ns},
		{verb: "get", resource: "services", namespace: ns},
		{verb: "list", resource: "endpointslices", group: "discovery.k8s.io", namespace: ns},
		{verb: "create", resource: "pods", namespace: ns},
		{verb: "update", resource: "pods", namespace: ns},
		{verb: "patch", resource: "pods", namespace: ns},
		{verb: "delete", resource: "pods", namespace: ns},
		{verb: "deletecollection", resource: "pods", namespace: ns},
		{verb: "get", resource: "pods", subresource: "log", namespace: ns},
		{verb: "create", resource: "pods", subresource: "exec", namespace: ns},
		{verb: "create", resource: "pods", subresource: "eviction", namespace: ns},
		{verb: "patch", resource: "pods", subresource: "status", namespace: ns},
		{verb: "get", resource: "deployments", group: "apps", namespace: ns},
		{verb: "list", resource: "nodes"},
		{verb: "create", resource: "serviceaccounts", subresource: "token", namespace: ns},
		{verb: "escalate", resource: "roles", group: "rbac.authorization.k8s.io", namespace: ns},
	}
	check := func(t *testing.T, user string, groups []string, acc access, want bool) {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: acc.namespace, Verb: acc.verb, Group: acc.group,
				Resource: acc.resource, Subresource: acc.subresource,
			},
		}}
		got, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != want {
			t.Errorf("%s may %s %s/%s in %q: %v, want %v (%s)", user, acc.verb, acc.resource, acc.subresource, acc.namespace, got.Status.Allowed, want, got.Status.Reason)
		}
	}
	name := func(acc access) string {
		ns := acc.namespace
		if ns == "" {
			ns = "cluster"
		}
		r := acc.resource
		if acc.subresource != "" {
			r += "/" + acc.subresource
		}
		return fmt.Sprintf("%s %s in %s", acc.verb, r, ns)
	}
	// The API server's RBAC authorizer learns of the Role and RoleBinding
	// from its own watch, a moment after they are created: wait until the
	// grant is in force before checking every access.
	testproc.Eventually(t, 30*time.Second, "the chart's Role to be in force", func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods"},
		}}
		got, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed
	})
	for _, acc := range allowed {
		t.Run("allowed/"+name(acc), func(t *testing.T) { check(t, user, groups, acc, true) })
	}
	for _, acc := range denied {
		t.Run("denied/"+name(acc), func(t *testing.T) { check(t, user, groups, acc, false) })
	}
	// Without the chart's RBAC the namespace's default account cannot watch
	// pods: the allowances above come from the chart, not the cluster.
	t.Run("default account has no access", func(t *testing.T) {
		check(t, "system:serviceaccount:"+ns+":default", []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}, allowed[1], false)
	})

	// The same through authentication: a TokenRequest token for the chart's
	// ServiceAccount (what a kubelet mounts into the pod) lists pods and is
	// refused secrets.
	t.Run("token", func(t *testing.T) {
		expiry := int64(600)
		tr, err := a.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), "sser",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		saCfg := rest.AnonymousClientConfig(cfg)
		saCfg.BearerToken = tr.Status.Token
		sa, err := kubernetes.NewForConfig(saCfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sa.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{}); err != nil {
			t.Errorf("list pods in %s as the ServiceAccount: %v", ns, err)
		}
		if _, err := sa.CoreV1().Pods(other).List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list pods in %s as the ServiceAccount: %v, want Forbidden", other, err)
		}
		if _, err := sa.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets in %s as the ServiceAccount: %v, want Forbidden", ns, err)
		}
	})
}

// TestPeerTokenKeptAcrossUpgrade installs the chart into a real API server
// and upgrades it: the generated peer token must survive every upgrade (old
// and new pods of a rollout must accept each other), and a Secret the chart
// did not make is used as it is.
func TestPeerTokenKeptAcrossUpgrade(t *testing.T) {
	helm := Helm(t)
	cfg := StartAPIServer(t)
	a := NewApplier(t, cfg)
	kubeconfig := Kubeconfig(t, cfg)
	const ns = "sser-upgrade"
	a.EnsureNamespace(t, ns)

	run := func(verb string, args ...string) {
		t.Helper()
		args = append([]string{verb, "sser", ChartDir(t), "--namespace", ns, "--kubeconfig", kubeconfig}, args...)
		if out, err := Run(t, helm, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	token := func() string {
		t.Helper()
		s, err := a.Client.CoreV1().Secrets(ns).Get(t.Context(), "sser-peer-token", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(s.Data["token"])
	}

	run("install")
	first := token()
	if len(first) < 32 {
		t.Fatalf("installed peer token %q is shorter than 32 characters", first)
	}
	for i, args := range [][]string{
		{"--set", "sser.heartbeat=20s"},
		{"--set", "replicaCount=5", "--reuse-values"},
		{"--reset-values"},
	} {
		run("upgrade", args...)
		if got := token(); got != first {
			t.Fatalf("upgrade %d (%q) replaced the peer token %q with %q", i+1, args, first, got)
		}
	}

	// Named Secrets are the operator's: the chart leaves them alone and
	// stops managing its own.
	run("upgrade", "--set", "sser.peerToken.existingSecret=mine")
	if _, err := a.Client.CoreV1().Secrets(ns).Get(t.Context(), "sser-peer-token", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the chart's Secret after switching to an existing one: %v, want it removed", err)
	}
	d, err := a.Client.AppsV1().Deployments(ns).Get(t.Context(), "sser", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The token is the file the peer-token volume projects from Secret mine.
	c := d.Spec.Template.Spec.Containers[0]
	path := ""
	for _, arg := range c.Args {
		if v, ok := strings.CutPrefix(arg, "--peer-token-file="); ok {
			path = v
		}
	}
	found := false
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path, m.MountPath+"/")
		if !ok || path == "" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Projected == nil {
				continue
			}
			for _, src := range v.Projected.Sources {
				if src.Secret == nil || src.Secret.Name != "mine" {
					continue
				}
				for _, it := range src.Secret.Items {
					found = found || (it.Path == rel && it.Key == "token")
				}
			}
		}
	}
	if !found {
		t.Errorf("installed Deployment does not read --peer-token-file=%q from Secret mine: args %q, mounts %+v, volumes %+v",
			path, c.Args, c.VolumeMounts, d.Spec.Template.Spec.Volumes)
	}
}
