package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sser-dev/sser/internal/testproc"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// testPodSource is how internalSources names the `helm test` Pod of release sser.
const testPodSource = "pods:app.kubernetes.io/component=test,app.kubernetes.io/instance=sser,app.kubernetes.io/name=sser-test"

// testPod renders the chart and returns its `helm test` Pod and the rest.
func testPod(t *testing.T, args ...string) (*corev1.Pod, rendered) {
	t.Helper()
	r := render(t, "sser", "sser", args...)
	o := Find(r.objs, "Pod", "sser-test-delivery")
	if o == nil {
		t.Fatalf("no Pod sser-test-delivery: %v", names(r.objs))
	}
	return As[corev1.Pod](t, o), r
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			m[e.Name] = "<from>"
			continue
		}
		m[e.Name] = e.Value
	}
	return m
}

func TestHelmTestPod(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		pod, r := testPod(t)
		if pod.Annotations["helm.sh/hook"] != "test" || !strings.Contains(pod.Annotations["helm.sh/hook-delete-policy"], "before-hook-creation") {
			t.Errorf("annotations %v, want a test hook replaced on every run", pod.Annotations)
		}
		// Not a replica: nothing that selects the replicas selects it.
		if labels.SelectorFromSet(r.deploy.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
			t.Errorf("test Pod labels %v match the Deployment's selector", pod.Labels)
		}
		if got := "pods:" + labels.SelectorFromSet(map[string]string{
			"app.kubernetes.io/name": pod.Labels["app.kubernetes.io/name"], "app.kubernetes.io/instance": pod.Labels["app.kubernetes.io/instance"],
			"app.kubernetes.io/component": pod.Labels["app.kubernetes.io/component"],
		}).String(); !slices.Contains(internalSources(t, r), got) {
			t.Errorf("the NetworkPolicy does not admit the test Pod (%s) to the internal port: %q", got, internalSources(t, r))
		}
		if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.ActiveDeadlineSeconds == nil || *pod.Spec.ActiveDeadlineSeconds != 90 {
			t.Errorf("restartPolicy %s, activeDeadlineSeconds %v, want Never and 60+30", pod.Spec.RestartPolicy, pod.Spec.ActiveDeadlineSeconds)
		}
		if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Error("the test Pod mounts a ServiceAccount token it does not need")
		}
		if len(pod.Spec.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
		}
		c := pod.Spec.Containers[0]
		checkHardened(t, pod.Spec.SecurityContext, c.SecurityContext)
		if c.Image != "curlimages/curl:8.11.1" {
			t.Errorf("image %s", c.Image)
		}
		svc := As[corev1.Service](t, Find(r.objs, "Service", "sser"))
		internal := As[corev1.Service](t, Find(r.objs, "Service", "sser-internal"))
		want := map[string]string{
			"FRONTEND":  fmt.Sprintf("http://%s.sser-test.svc:%d", svc.Name, svc.Spec.Ports[0].Port),
			"INTERNAL":  fmt.Sprintf("http://%s.sser-test.svc:%d", internal.Name, internal.Spec.Ports[0].Port),
			"STREAM":    "sser-helm-test",
			"TIMEOUT":   "60",
			"SUBSCRIBE": "open",
		}
		env := envOf(c)
		for k, v := range want {
			if env[k] != v {
				t.Errorf("env %s=%q, want %q", k, env[k], v)
			}
		}
		if len(c.Args) != 1 || !strings.Contains(c.Args[0], "/api/json/v1/publish") {
			t.Errorf("args %q, want the test script", c.Args)
		}
		for _, v := range pod.Spec.Volumes {
			if v.Secret != nil {
				t.Errorf("volume %s mounts Secret %s with no publish token set", v.Name, v.Secret.SecretName)
			}
		}
	})

	t.Run("publish token, tickets", func(t *testing.T) {
		pod, _ := testPod(t, "--set", "sser.publishToken.existingSecret=publishers,sser.publishToken.key=p,auth.tickets.key.existingSecret=tickets")
		c := pod.Spec.Containers[0]
		if env := envOf(c); env["SUBSCRIBE"] != "ticket" || env["TOKEN_FILE"] != "/etc/sser-test/publish-token" {
			t.Errorf("env %v, want SUBSCRIBE=ticket and the token file", env)
		}
		var found bool
		for _, v := range pod.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "publishers" && len(v.Secret.Items) == 1 &&
				v.Secret.Items[0].Key == "p" && v.Secret.Items[0].Path == "publish-token" {
				found = slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.Name == v.Name && m.MountPath == "/etc/sser-test" && m.ReadOnly
				})
			}
		}
		if !found {
			t.Errorf("Secret publishers key p is not mounted read-only at /etc/sser-test/publish-token: volumes %+v mounts %+v", pod.Spec.Volumes, c.VolumeMounts)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("env %s reads a Secret", e.Name)
			}
		}
	})

	t.Run("older internal token, JWTs only", func(t *testing.T) {
		pod, _ := testPod(t, "--set", "sser.internalToken.existingSecret=old,auth.jwt.hs256Secret.existingSecret=jwt")
		if env := envOf(pod.Spec.Containers[0]); env["SUBSCRIBE"] != "refused" {
			t.Errorf("SUBSCRIBE=%q, want refused (the test has no JWT)", env["SUBSCRIBE"])
		}
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "old" }) {
			t.Errorf("the older internal token is not mounted: %+v", pod.Spec.Volumes)
		}
	})

	t.Run("frontend limited by the NetworkPolicy", func(t *testing.T) {
		_, r := testPod(t, "--set-json", `networkPolicy.frontend.from=[{"namespaceSelector":{"matchLabels":{"ingress":"true"}}}]`)
		np := Find(r.objs, "NetworkPolicy", "sser")
		if !strings.Contains(fmt.Sprint(np.Object["spec"]), "app.kubernetes.io/name:sser-test") {
			t.Errorf("with the frontend limited, the test Pod is not admitted to it: %v", np.Object["spec"])
		}
	})

	t.Run("turned off", func(t *testing.T) {
		r := render(t, "sser", "sser", "--set", "tests.enabled=false")
		if Find(r.objs, "Pod", "sser-test-delivery") != nil {
			t.Error("test Pod rendered with tests.enabled=false")
		}
		if slices.Contains(internalSources(t, r), testPodSource) {
			t.Error("the NetworkPolicy admits a test Pod that is not rendered")
		}
	})
}

// TestHelmTestScript runs the `helm test` script the chart renders, with
// the environment it renders, against real sser replicas on loopback (as
// pods: 127.0.0.2 and 127.0.0.3, static peers), subscribing at one replica
// and publishing at the other. It passes when the event crosses; it fails,
// in time, when it cannot.
func TestHelmTestScript(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		RequireReal(t, "curl not found on PATH (the test script's client)")
	}
	dir := t.TempDir()
	secret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	publishToken := secret("publish-token", "publish-secret-0123456789")
	ticketKey := secret("ticket-key", "ticket-key-0123456789abcdef0123456789abcdef")
	jwtKey := secret("jwt-key", "jwt-hs256-secret-0123456789abcdef0123456789")

	// pair starts two replicas that find each other (or, alone, do not).
	pair := func(t *testing.T, peered bool, args ...string) (a, b *testproc.Replica) {
		t.Helper()
		ips := []string{"127.0.0.2", "127.0.0.3"}
		frontend, internal := testproc.FreePorts(t, ips...)
		var rs []*testproc.Replica
		for _, ip := range ips {
			finder := []string{"--peer-finder=static", "--peers=" + strings.Join(ips, ",")}
			if !peered {
				finder = []string{"--peer-finder=static", "--peers=" + ip}
			}
			rs = append(rs, testproc.Start(t, testproc.Config{IP: ip, FrontendPort: frontend, InternalPort: internal, Args: append(finder, args...)}))
		}
		for _, r := range rs {
			r.WaitReady(t, 30*time.Second)
		}
		return rs[0], rs[1]
	}

	tests := []struct {
		name    string
		set     []string // chart values, for the rendered environment
		server  []string // sser flags
		peered  bool
		timeout string
		wantOK  bool
		want    string
	}{
		{name: "open", peered: true, wantOK: true, want: "PASS: the event arrived"},
		{name: "publish token and ticket", set: []string{"sser.publishToken.existingSecret=p,auth.tickets.key.existingSecret=t"},
			server: []string{"--publish-token-file=" + publishToken, "--ticket-key-file=" + ticketKey}, peered: true, wantOK: true, want: "PASS: the event arrived"},
		{name: "JWTs only", set: []string{"sser.publishToken.existingSecret=p,auth.jwt.hs256Secret.existingSecret=j"},
			server: []string{"--publish-token-file=" + publishToken, "--auth-jwt-hs256-secret-file=" + jwtKey}, peered: true, wantOK: true, want: "is refused (401)"},
		{name: "replicas that do not find each other", peered: false, timeout: "5", want: "did not arrive within 5s"},
		{name: "stream not allowed", server: []string{"--allowed-streams=public/*"}, peered: true, timeout: "5", want: "allowedStreams"},
		{name: "publish token missing", server: []string{"--publish-token-file=" + publishToken}, peered: true, timeout: "5", want: "got 401"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			pod, _ := testPod(t, args...)
			c := pod.Spec.Containers[0]
			if !slices.Equal(c.Command, []string{"/bin/sh", "-c"}) || len(c.Args) != 1 {
				t.Fatalf("command %q args %d, want /bin/sh -c SCRIPT", c.Command, len(c.Args))
			}
			sub, pub := pair(t, tc.peered, tc.server...)
			env := envOf(c)
			env["FRONTEND"] = sub.FrontendURL
			env["INTERNAL"] = pub.InternalURL
			env["TMPDIR"] = t.TempDir()
			if env["TOKEN_FILE"] != "" && slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil }) {
				env["TOKEN_FILE"] = publishToken // where the Pod mounts the Secret
			} else {
				env["TOKEN_FILE"] = filepath.Join(dir, "none")
			}
			if tc.timeout != "" {
				env["TIMEOUT"] = tc.timeout
			}
			timeout := 90 * time.Second
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", c.Args[0])
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("the script ran past %s, its own TIMEOUT (%s s) did not end it:\n%s", timeout, env["TIMEOUT"], out.String())
			}
			if (err == nil) != tc.wantOK {
				t.Fatalf("script exit %v, want success %v:\n%s", err, tc.wantOK, out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.String())
			}
			t.Logf("%s in %s:\n%s", tc.name, time.Since(start).Round(time.Millisecond), out.String())
		})
	}
}

// TestNoRenderedPodIsAReplica: besides the Deployment's own, no pod the
// chart renders carries labels the replicas' selector matches, so neither
// the Services nor the peer finder ever take it for a replica.
func TestNoRenderedPodIsAReplica(t *testing.T) {
	objs := MustTemplate(t, "sser", "sser-test", "-f", filepath.Join(ChartDir(t), "ci", "full-values.yaml"))
	d := As[appsv1.Deployment](t, Find(objs, "Deployment", "sser"))
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
	pods := 0
	for _, o := range objs {
		if o.GetKind() == "Pod" {
			pods++
			if sel.Matches(labels.Set(o.GetLabels())) {
				t.Errorf("Pod %s labels %v match the replicas' selector %s", o.GetName(), o.GetLabels(), sel)
			}
		}
	}
	if pods == 0 {
		t.Fatal("no Pod rendered: the check above is empty")
	}
}
