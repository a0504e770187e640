package chart

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// rendered is one `helm template` result with the objects every check needs.
type rendered struct {
	objs       []*unstructured.Unstructured
	deploy     *appsv1.Deployment
	sser       corev1.Container
	fullname   string
	appVersion string
}

func render(t *testing.T, release, fullname string, args ...string) rendered {
	t.Helper()
	objs := MustTemplate(t, release, "sser-test", args...)
	d := As[appsv1.Deployment](t, Find(objs, "Deployment", fullname))
	var c corev1.Container
	for _, cc := range d.Spec.Template.Spec.Containers {
		if cc.Name == "sser" {
			c = cc
		}
	}
	if c.Name == "" {
		t.Fatalf("Deployment %s has no container named sser", fullname)
	}
	return rendered{objs: objs, deploy: d, sser: c, fullname: fullname, appVersion: chartAppVersion(t)}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	out, err := Run(t, Helm(t), "show", "chart", ChartDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}

// flag returns the value of --name=value in the sser container's args.
func (r rendered) flag(name string) (string, bool) {
	var val string
	found := false
	for _, a := range r.sser.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			val, found = v, true // the last one wins, as with Go's flag parsing
		}
	}
	return val, found
}

func (r rendered) durationFlag(t *testing.T, name string) time.Duration {
	t.Helper()
	v, ok := r.flag(name)
	if !ok {
		t.Fatalf("sser args %q lack --%s", r.sser.Args, name)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("--%s=%s: %v", name, v, err)
	}
	return d
}

func (r rendered) preStopSeconds() int64 {
	if l := r.sser.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		return l.PreStop.Sleep.Seconds
	}
	return 0
}

func (r rendered) grace(t *testing.T) int64 {
	t.Helper()
	g := r.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds
	if g == nil {
		t.Fatal("terminationGracePeriodSeconds is not set")
	}
	return *g
}

// checkInvariants asserts what must hold for every values combination.
func checkInvariants(t *testing.T, r rendered) {
	t.Helper()
	d := r.deploy
	sel := d.Spec.Selector.MatchLabels
	if len(sel) == 0 {
		t.Fatal("Deployment selector has no matchLabels")
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if !labels.SelectorFromSet(sel).Matches(podLabels) {
		t.Errorf("pod labels %v do not match the Deployment selector %v", podLabels, sel)
	}

	// The peer finder must watch exactly the chart's own pods (auto is the
	// kubernetes finder in a pod).
	if finder, _ := r.flag("peer-finder"); finder == "kubernetes" || finder == "auto" {
		s, ok := r.flag("selector")
		if !ok {
			t.Fatalf("peer finder kubernetes without --selector: %q", r.sser.Args)
		}
		parsed, err := labels.Parse(s)
		if err != nil {
			t.Fatalf("--selector=%s: %v", s, err)
		}
		if parsed.String() != labels.SelectorFromSet(sel).String() {
			t.Errorf("--selector=%s, want the Deployment's selector labels %s", s, labels.SelectorFromSet(sel))
		}
	}

	// Every object that selects pods selects exactly the chart's pods.
	for _, o := range r.objs {
		var got map[string]string
		switch o.GetKind() {
		case "Service":
			got = As[corev1.Service](t, o).Spec.Selector
		case "PodDisruptionBudget":
			got = As[policyv1.PodDisruptionBudget](t, o).Spec.Selector.MatchLabels
		case "NetworkPolicy":
			got = As[networkingv1.NetworkPolicy](t, o).Spec.PodSelector.MatchLabels
		default:
			continue
		}
		if !maps.Equal(got, sel) {
			t.Errorf("%s %s selects %v, want %v", o.GetKind(), o.GetName(), got, sel)
		}
	}

	// Downward API.
	wantEnv := map[string]string{"POD_IP": "status.podIP", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
	for _, e := range r.sser.Env {
		if path, ok := wantEnv[e.Name]; ok {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
				t.Errorf("env %s = %+v, want fieldRef %s", e.Name, e.ValueFrom, path)
			}
			delete(wantEnv, e.Name)
		}
	}
	if len(wantEnv) > 0 {
		t.Errorf("env lacks %v", slices.Sorted(maps.Keys(wantEnv)))
	}

	// Credentials are files of read-only mounted Secrets: no variable reads
	// a Secret, and every --*-file flag names a Secret key's file.
	for _, e := range r.sser.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("env %s reads Secret %s: credentials must be mounted files (env: %v)", e.Name, e.ValueFrom.SecretKeyRef.Name, envNames(r.sser.Env))
		}
	}
	for _, a := range r.sser.Args {
		name, path, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasSuffix(name, "-file") {
			continue
		}
		if _, err := r.secretFile(path); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}

	// Ports are named, match the listen flags, and the probes use the internal one.
	ports := map[string]int32{}
	for _, p := range r.sser.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, flag := range map[string]string{"http": "frontend-addr", "internal": "internal-addr"} {
		addr, ok := r.flag(flag)
		if !ok {
			t.Errorf("no --%s", flag)
			continue
		}
		_, port, _ := strings.Cut(addr, ":")
		if strconv.Itoa(int(ports[name])) != port {
			t.Errorf("--%s=%s but container port %q is %d", flag, addr, name, ports[name])
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", r.sser.LivenessProbe, "/healthz"}, {"readiness", r.sser.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe is not an HTTP GET", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "internal" {
			t.Errorf("%s probe GET %s on port %s, want %s on internal", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// The grace period covers the preStop pause, the drain and the shutdown.
	need := r.preStopSeconds() + int64(r.durationFlag(t, "drain-window")/time.Second) + int64(r.durationFlag(t, "shutdown-timeout")/time.Second)
	if g := r.grace(t); g <= need {
		t.Errorf("terminationGracePeriodSeconds %d leaves no margin over preStop+drain+shutdown = %d", g, need)
	}

	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy %+v, want RollingUpdate with maxUnavailable 0", s)
	}

	checkHardened(t, d.Spec.Template.Spec.SecurityContext, r.sser.SecurityContext)

	// A topology spread constraint with no labelSelector counts no pods.
	for i, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		if c.LabelSelector == nil {
			t.Errorf("topology spread constraint %d (%s) has no labelSelector", i, c.TopologyKey)
		}
	}

	// RBAC binds the pods' own ServiceAccount to a pods-only, read-only Role.
	if rb := Find(r.objs, "RoleBinding", r.fullname); rb != nil {
		binding := As[rbacv1.RoleBinding](t, rb)
		sa := d.Spec.Template.Spec.ServiceAccountName
		if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa || binding.Subjects[0].Namespace != "sser-test" {
			t.Errorf("RoleBinding subjects %+v, want only ServiceAccount sser-test/%s", binding.Subjects, sa)
		}
		role := As[rbacv1.Role](t, Find(r.objs, "Role", binding.RoleRef.Name))
		want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}}
		if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
			t.Errorf("Role rules %+v, want %+v", role.Rules, want)
		}
	}
}

func checkHardened(t *testing.T, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if c == nil {
		t.Fatal("sser container has no securityContext")
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(c.RunAsNonRoot) && (pod == nil || !isTrue(pod.RunAsNonRoot)) {
		t.Error("runAsNonRoot is not set")
	}
	if !isTrue(c.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if c.Capabilities == nil || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and no add", c.Capabilities)
	}
	seccomp := c.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %+v, want RuntimeDefault", seccomp)
	}
	if c.RunAsUser != nil && *c.RunAsUser == 0 {
		t.Error("runAsUser is 0 (root)")
	}
}

func wantKinds(t *testing.T, r rendered, want map[string]int) {
	t.Helper()
	if got := Kinds(r.objs); !maps.Equal(got, want) {
		t.Errorf("rendered kinds %v, want %v", got, want)
	}
}

func TestTemplate(t *testing.T) {
	// The Pod is the `helm test` hook.
	defaultKinds := map[string]int{"Deployment": 1, "Service": 2, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "PodDisruptionBudget": 1, "Secret": 1, "NetworkPolicy": 1, "Pod": 1}
	withKinds := func(changes map[string]int) map[string]int {
		m := maps.Clone(defaultKinds)
		for k, v := range changes {
			if v == 0 {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}

	tests := []struct {
		name     string
		release  string
		fullname string
		args     []string
		check    func(t *testing.T, r rendered)
	}{
		{
			name: "defaults", release: "sser", fullname: "sser",
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, defaultKinds)
				if got := *r.deploy.Spec.Replicas; got != 3 {
					t.Errorf("replicas %d, want 3", got)
				}
				if got, want := r.sser.Image, "ghcr.io/sser-dev/sser:"+r.appVersion; got != want {
					t.Errorf("image %s, want %s", got, want)
				}
				if got := r.grace(t); got != 5+10+5+5 {
					t.Errorf("grace %d, want preStop 5 + drain 10 + shutdown 5 + margin 5 = 25", got)
				}
				if got := r.preStopSeconds(); got != 5 {
					t.Errorf("preStop sleep %d, want 5", got)
				}
				if got, _ := r.flag("selector"); got != "app.kubernetes.io/instance=sser,app.kubernetes.io/name=sser" {
					t.Errorf("--selector=%s", got)
				}
				if got, _ := r.flag("frontend-addr"); got != ":8000" {
					t.Errorf("--frontend-addr=%s, want :8000 (all interfaces, for port-forward and sidecars)", got)
				}
				aff := r.deploy.Spec.Template.Spec.Affinity
				if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
					len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
					t.Fatalf("affinity %+v, want one preferred pod anti-affinity term", aff)
				}
				term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
				if term.TopologyKey != "kubernetes.io/hostname" || !maps.Equal(term.LabelSelector.MatchLabels, r.deploy.Spec.Selector.MatchLabels) {
					t.Errorf("anti-affinity term %+v, want hostname spread of the chart's pods", term)
				}
				pdb := As[policyv1.PodDisruptionBudget](t, Find(r.objs, "PodDisruptionBudget", "sser"))
				if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
					t.Errorf("PDB %+v, want maxUnavailable 1", pdb.Spec)
				}
				if Find(r.objs, "Service", "sser-internal") == nil {
					t.Error("no internal Service sser-internal")
				}

				// The replicas' credential: a generated Secret, mounted as the file --peer-token-file names.
				token := peerToken(t, r, "sser-peer-token", "token")
				if len(token) < 32 || strings.Trim(token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
					t.Errorf("peer token %q, want 32 or more letters and digits", token)
				}
				wantSecretFile(t, r, "peer-token-file", "sser-peer-token", "token")
				wantNoFlag(t, r, "publish-token-file", "internal-token-file")

				// Subscriber authentication is off: no flag, no key mounted.
				wantNoAuth(t, r)

				// The NetworkPolicy is on: the internal port only from the release's
				// own pods and its `helm test` Pod.
				if got, want := internalSources(t, r), []string{"pods:" + labels.SelectorFromSet(r.deploy.Spec.Selector.MatchLabels).String(), testPodSource}; !slices.Equal(got, want) {
					t.Errorf("internal port sources %q, want only the release's pods and its test %q", got, want)
				}

				// Tuning is left to the binary's defaults.
				for _, f := range []string{"outbox-size", "peer-cutoff", "idempotency-window", "liveness-stall", "peer-queue",
					"max-connections", "max-connections-per-ip", "connection-rate", "trusted-proxies", "publish-rate", "memory-watermark",
					"max-streams-per-connection", "max-replay-events", "max-replay-bytes", "max-history-streams", "max-history-bytes", "max-stream-history-bytes",
					"allowed-streams", "write-timeout", "max-body-bytes"} {
					if v, ok := r.flag(f); ok {
						t.Errorf("--%s=%s set by default, want the binary's default", f, v)
					}
				}
			},
		},
		{
			name: "limits", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.maxConnections=400", "--set", "sser.maxConnectionsPerIP=50", "--set", "sser.connectionRate=12.5",
				"--set", "sser.trustedProxies={10.0.0.0/8,192.168.1.1}", "--set", "sser.publishRate=200", "--set", "sser.memoryWatermark=-1",
				"--set", "sser.maxStreamsPerConnection=8", "--set", "sser.maxReplayEvents=500", "--set", "sser.maxReplayBytes=65536",
				"--set", "sser.maxHistoryStreams=1000", "--set-json", "sser.maxHistoryBytes=1073741824", "--set", "sser.maxStreamHistoryBytes=4096"},
			check: func(t *testing.T, r rendered) {
				for f, want := range map[string]string{
					"max-connections": "400", "max-connections-per-ip": "50", "connection-rate": "12.5",
					"trusted-proxies": "10.0.0.0/8,192.168.1.1", "publish-rate": "200", "memory-watermark": "-1",
					"max-streams-per-connection": "8", "max-replay-events": "500", "max-replay-bytes": "65536",
					// A large number, as a values file gives it (a float), still an integer.
					"max-history-streams": "1000", "max-history-bytes": "1073741824", "max-stream-history-bytes": "4096",
				} {
					if got, ok := r.flag(f); !ok || got != want {
						t.Errorf("--%s=%q (set %v), want %q", f, got, ok, want)
					}
				}
			},
		},
		{
			name: "allowed streams, write timeout, body size and log format", release: "sser", fullname: "sser",
			args: []string{"--set-json", `sser.allowedStreams=["public/*","users/*/inbox","[a-c]?"]`, "--set", "sser.writeTimeout=30s",
				"--set-json", "sser.maxBodyBytes=8388608", "--set", "sser.logFormat=text,sser.logLevel=warn"},
			check: func(t *testing.T, r rendered) {
				for f, want := range map[string]string{
					"allowed-streams": "public/*,users/*/inbox,[a-c]?", "write-timeout": "30s", "max-body-bytes": "8388608", "log-format": "text", "log-level": "warn",
				} {
					if got, ok := r.flag(f); !ok || got != want {
						t.Errorf("--%s=%q (set %v), want %q", f, got, ok, want)
					}
				}
			},
		},
		{
			name: "logs are JSON by default", release: "sser", fullname: "sser",
			check: func(t *testing.T, r rendered) {
				if got, _ := r.flag("log-format"); got != "json" {
					t.Errorf("--log-format=%q, want json", got)
				}
			},
		},
		{
			name: "internal token from a Secret", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.internalToken.existingSecret=sser-token", "--set", "sser.internalToken.key=t"},
			check: func(t *testing.T, r rendered) {
				wantSecretFile(t, r, "internal-token-file", "sser-token", "t")
				// The older credential comes beside the peer token, not instead of it.
				wantSecretFile(t, r, "peer-token-file", "sser-peer-token", "token")
			},
		},
		{
			name: "peer token from an existing Secret", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerToken.existingSecret=my-peers,sser.peerToken.key=k"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"Secret": 0}))
				wantSecretFile(t, r, "peer-token-file", "my-peers", "k")
			},
		},
		{
			name: "generated peer token under another key", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerToken.key=peer.token"},
			check: func(t *testing.T, r rendered) {
				if token := peerToken(t, r, "sser-peer-token", "peer.token"); len(token) < 32 {
					t.Errorf("peer token %q is shorter than 32 characters", token)
				}
				wantSecretFile(t, r, "peer-token-file", "sser-peer-token", "peer.token")
			},
		},
		{
			name: "no peer token", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerToken.create=false"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"Secret": 0}))
				wantNoFlag(t, r, "peer-token-file")
			},
		},
		{
			name: "publish token from a Secret", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.publishToken.existingSecret=publishers,sser.publishToken.key=p"},
			check: func(t *testing.T, r rendered) {
				wantSecretFile(t, r, "publish-token-file", "publishers", "p")
				wantSecretFile(t, r, "peer-token-file", "sser-peer-token", "token")
				wantNoFlag(t, r, "internal-token-file")
			},
		},
		{
			name: "JWT from every key source in files", release: "sser", fullname: "sser",
			args: []string{
				"--set", "auth.jwt.hs256Secret.existingSecret=jwt-keys,auth.jwt.hs256Secret.key=hs",
				"--set", "auth.jwt.publicKey.existingSecret=jwt-keys",
				"--set", "auth.jwt.jwks.existingSecret=idp-jwks,auth.jwt.jwksRefresh=1m",
				"--set", "auth.jwt.issuer=https://id.example.com/,auth.jwt.audience=sse,auth.jwt.streamsClaim=channels",
				"--set-json", `auth.jwt.streamTemplates=["users/{sub}/*","teams/{team}/inbox"]`,
				"--set", "auth.cookie=session",
			},
			check: func(t *testing.T, r rendered) {
				wantSecretFile(t, r, "auth-jwt-hs256-secret-file", "jwt-keys", "hs")
				wantSecretFile(t, r, "auth-jwt-public-key-file", "jwt-keys", "public.pem")
				wantSecretFile(t, r, "auth-jwks-file", "idp-jwks", "jwks.json")
				for f, want := range map[string]string{
					"auth-jwks-refresh": "1m", "auth-issuer": "https://id.example.com/", "auth-audience": "sse",
					"auth-streams-claim": "channels", "auth-cookie": "session",
				} {
					if got, ok := r.flag(f); !ok || got != want {
						t.Errorf("--%s=%q (set %v), want %q", f, got, ok, want)
					}
				}
				if got, want := r.flags("auth-stream-template"), []string{"users/{sub}/*", "teams/{team}/inbox"}; !slices.Equal(got, want) {
					t.Errorf("--auth-stream-template %q, want %q in order", got, want)
				}
				wantNoFlag(t, r, "auth-jwks-url", "ticket-key-file", "ticket-max-ttl")
				// The keys beside the tokens, each in its own directory.
				if got := mountPaths(r); !slices.Equal(got, []string{"/etc/sser/tokens", "/etc/sser/auth"}) {
					t.Errorf("mounts %q, want /etc/sser/tokens and /etc/sser/auth", got)
				}
				wantSecretFile(t, r, "peer-token-file", "sser-peer-token", "token")
			},
		},
		{
			name: "JWKS from a URL needs no file", release: "sser", fullname: "sser",
			args: []string{"--set", "auth.jwt.jwksURL=http://idp.auth.svc:8080/jwks.json", "--set-json", `auth.jwt.streamTemplates=["users/{sub}/*"]`},
			check: func(t *testing.T, r rendered) {
				if got, _ := r.flag("auth-jwks-url"); got != "http://idp.auth.svc:8080/jwks.json" {
					t.Errorf("--auth-jwks-url=%q", got)
				}
				if got, _ := r.flag("auth-cookie"); got != "sser_token" {
					t.Errorf("--auth-cookie=%q, want the default sser_token", got)
				}
				wantNoFlag(t, r, "auth-jwt-hs256-secret-file", "auth-jwt-public-key-file", "auth-jwks-file", "auth-jwks-refresh",
					"auth-issuer", "auth-audience", "auth-streams-claim", "ticket-key-file")
				if got := mountPaths(r); !slices.Equal(got, []string{"/etc/sser/tokens"}) {
					t.Errorf("mounts %q, want only the tokens", got)
				}
			},
		},
		{
			name: "tickets alone", release: "sser", fullname: "sser",
			args: []string{"--set", "auth.tickets.key.existingSecret=sser-tickets,auth.tickets.maxTTL=10m,auth.cookie="},
			check: func(t *testing.T, r rendered) {
				wantSecretFile(t, r, "ticket-key-file", "sser-tickets", "key")
				if got, ok := r.flag("ticket-max-ttl"); got != "10m" {
					t.Errorf("--ticket-max-ttl=%q (set %v), want 10m", got, ok)
				}
				// An empty cookie name turns cookies off; it is not the binary's default.
				if got, ok := r.flag("auth-cookie"); !ok || got != "" {
					t.Errorf("--auth-cookie=%q (set %v), want it given and empty", got, ok)
				}
				wantNoFlag(t, r, "auth-jwt-hs256-secret-file", "auth-jwt-public-key-file", "auth-jwks-file", "auth-jwks-url", "auth-stream-template")
			},
		},
		{
			name: "one Secret for the HS256 key and the ticket key", release: "sser", fullname: "sser",
			args: []string{"--set", "auth.jwt.hs256Secret.existingSecret=sser-auth,auth.tickets.key.existingSecret=sser-auth,auth.tickets.key.key=tickets"},
			check: func(t *testing.T, r rendered) {
				wantSecretFile(t, r, "auth-jwt-hs256-secret-file", "sser-auth", "secret")
				wantSecretFile(t, r, "ticket-key-file", "sser-auth", "tickets")
				wantNoFlag(t, r, "ticket-max-ttl")
			},
		},
		{
			name: "a cookie name alone leaves auth off", release: "sser", fullname: "sser",
			args: []string{"--set", "auth.cookie=session"},
			check: func(t *testing.T, r rendered) {
				wantNoAuth(t, r)
			},
		},
		{
			name: "tuning values become flags", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.outboxSize=4096,sser.peerQueue=10,sser.peerCutoff=30s,sser.idempotencyWindow=0s,sser.livenessStall=20s"},
			check: func(t *testing.T, r rendered) {
				for f, want := range map[string]string{"outbox-size": "4096", "peer-cutoff": "30s", "idempotency-window": "0s", "liveness-stall": "20s"} {
					if got, ok := r.flag(f); !ok || got != want {
						t.Errorf("--%s=%q (set %v), want %q", f, got, ok, want)
					}
				}
				if _, ok := r.flag("peer-queue"); ok {
					t.Error("--peer-queue rendered beside --outbox-size")
				}
			},
		},
		{
			name: "compression is off unless set to gzip", release: "sser", fullname: "sser",
			check: func(t *testing.T, r rendered) {
				if v, ok := r.flag("compression"); ok {
					t.Errorf("--compression=%s rendered by default", v)
				}
			},
		},
		{
			name: "sser.compression gzip becomes the flag", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.compression=gzip"},
			check: func(t *testing.T, r rendered) {
				if v, _ := r.flag("compression"); v != "gzip" {
					t.Errorf("--compression=%q, want gzip", v)
				}
			},
		},
		{
			name: "peerQueue is the older name of outboxSize", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerQueue=2048"},
			check: func(t *testing.T, r rendered) {
				if got, _ := r.flag("outbox-size"); got != "2048" {
					t.Errorf("--outbox-size=%q, want 2048 from sser.peerQueue", got)
				}
			},
		},
		{
			name: "NetworkPolicy can be turned off", release: "sser", fullname: "sser",
			args: []string{"--set", "networkPolicy.enabled=false"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"NetworkPolicy": 0}))
			},
		},
		{
			name: "one replica has no PDB", release: "sser", fullname: "sser",
			args: []string{"--set", "replicaCount=1"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"PodDisruptionBudget": 0}))
			},
		},
		{
			name: "PDB can be turned off", release: "sser", fullname: "sser",
			args: []string{"--set", "podDisruptionBudget.enabled=false"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"PodDisruptionBudget": 0}))
			},
		},
		{
			name: "PDB minAvailable wins over maxUnavailable", release: "sser", fullname: "sser",
			args: []string{"--set", "podDisruptionBudget.minAvailable=50%"},
			check: func(t *testing.T, r rendered) {
				pdb := As[policyv1.PodDisruptionBudget](t, Find(r.objs, "PodDisruptionBudget", "sser"))
				if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "50%" || pdb.Spec.MaxUnavailable != nil {
					t.Errorf("PDB %+v, want only minAvailable 50%%", pdb.Spec)
				}
			},
		},
		{
			name: "autoscaling from two replicas gets an HPA and a PDB", release: "sser", fullname: "sser",
			args: []string{"--set", "replicaCount=1,autoscaling.enabled=true,autoscaling.minReplicas=2,autoscaling.maxReplicas=6"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"HorizontalPodAutoscaler": 1}))
				if r.deploy.Spec.Replicas != nil {
					t.Errorf("replicas %d set while the HPA owns them", *r.deploy.Spec.Replicas)
				}
				hpa := As[autoscalingv2.HorizontalPodAutoscaler](t, Find(r.objs, "HorizontalPodAutoscaler", "sser"))
				if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 6 || hpa.Spec.ScaleTargetRef.Name != "sser" || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
					t.Errorf("HPA spec %+v", hpa.Spec)
				}
			},
		},
		{
			name: "autoscaling from one replica has no PDB", release: "sser", fullname: "sser",
			args: []string{"--set", "autoscaling.enabled=true,autoscaling.minReplicas=1"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 0}))
			},
		},
		{
			name: "grace period is preStop + drain + shutdown + margin", release: "sser", fullname: "sser",
			args: []string{"--set", "preStopSleepSeconds=7,sser.drainWindowSeconds=20,sser.shutdownTimeoutSeconds=3,terminationGraceMarginSeconds=4"},
			check: func(t *testing.T, r rendered) {
				if got := r.grace(t); got != 7+20+3+4 {
					t.Errorf("grace %d, want 34", got)
				}
				if got := r.durationFlag(t, "drain-window"); got != 20*time.Second {
					t.Errorf("--drain-window %s, want 20s", got)
				}
				if got := r.durationFlag(t, "shutdown-timeout"); got != 3*time.Second {
					t.Errorf("--shutdown-timeout %s, want 3s", got)
				}
				if got := r.preStopSeconds(); got != 7 {
					t.Errorf("preStop sleep %d, want 7", got)
				}
			},
		},
		{
			name: "grace period follows a drain window and shutdown timeout given in extraArgs", release: "sser", fullname: "sser",
			args: []string{"--set-json", `sser.extraArgs=["--drain-window=1m30s","--shutdown-timeout=2500ms"]`},
			check: func(t *testing.T, r rendered) {
				// The last flag wins in sser, so these are what it runs with.
				if got := r.durationFlag(t, "drain-window"); got != 90*time.Second {
					t.Errorf("--drain-window %s, want 1m30s from extraArgs", got)
				}
				if got := r.grace(t); got != 5+90+3+5 {
					t.Errorf("grace %d, want preStop 5 + drain 90 + shutdown 3 (2.5 rounded up) + margin 5 = 103", got)
				}
			},
		},
		{
			name: "grace period follows a drain window given as two extraArgs", release: "sser", fullname: "sser",
			args: []string{"--set-json", `sser.extraArgs=["--drain-window","45s","-shutdown-timeout=1h"]`},
			check: func(t *testing.T, r rendered) {
				if got := r.grace(t); got != 5+45+3600+5 {
					t.Errorf("grace %d, want preStop 5 + drain 45 + shutdown 3600 + margin 5 = 3655", got)
				}
			},
		},
		{
			name: "terminationGracePeriodSeconds may raise the grace period", release: "sser", fullname: "sser",
			args: []string{"--set", "terminationGracePeriodSeconds=120"},
			check: func(t *testing.T, r rendered) {
				if got := r.grace(t); got != 120 {
					t.Errorf("grace %d, want 120", got)
				}
			},
		},
		{
			name: "no preStop pause", release: "sser", fullname: "sser",
			args: []string{"--set", "preStopSleepSeconds=0"},
			check: func(t *testing.T, r rendered) {
				if r.sser.Lifecycle != nil {
					t.Errorf("lifecycle %+v, want none", r.sser.Lifecycle)
				}
				if got := r.grace(t); got != 10+5+5 {
					t.Errorf("grace %d, want 20", got)
				}
			},
		},
		{
			name: "nameOverride changes the selector labels and the --selector flag", release: "shop", fullname: "shop-events",
			args: []string{"--set", "nameOverride=events"},
			check: func(t *testing.T, r rendered) {
				if got, _ := r.flag("selector"); got != "app.kubernetes.io/instance=shop,app.kubernetes.io/name=events" {
					t.Errorf("--selector=%s", got)
				}
				if Find(r.objs, "Service", "shop-events-internal") == nil || Find(r.objs, "ServiceAccount", "shop-events") == nil {
					t.Errorf("objects not named after shop-events: %v", names(r.objs))
				}
			},
		},
		{
			name: "fullnameOverride names every object", release: "sser", fullname: "rt",
			args: []string{"--set", "fullnameOverride=rt"},
			check: func(t *testing.T, r rendered) {
				for _, o := range r.objs {
					if !slices.Contains([]string{"rt", "rt-internal", "rt-peer-token", "rt-test-delivery"}, o.GetName()) {
						t.Errorf("%s named %s, want rt", o.GetKind(), o.GetName())
					}
				}
				wantSecretFile(t, r, "peer-token-file", "rt-peer-token", "token")
			},
		},
		{
			name: "NetworkPolicy keeps the internal port to peers and named sources", release: "sser", fullname: "sser",
			args: []string{"--set", "networkPolicy.internal.namespaces={shop,monitoring},networkPolicy.internal.podLabels.role=publisher"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, defaultKinds)
				got := internalSources(t, r)
				want := []string{
					"pods:" + labels.SelectorFromSet(r.deploy.Spec.Selector.MatchLabels).String(), testPodSource,
					"ns:shop", "ns:monitoring", "pods:role=publisher",
				}
				if !slices.Equal(got, want) {
					t.Errorf("internal port sources %q, want %q", got, want)
				}
			},
		},
		{
			name: "RBAC and ServiceAccount can be turned off", release: "sser", fullname: "sser",
			args: []string{"--set", "rbac.create=false,serviceAccount.create=false"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"Role": 0, "RoleBinding": 0, "ServiceAccount": 0}))
				if got := r.deploy.Spec.Template.Spec.ServiceAccountName; got != "default" {
					t.Errorf("serviceAccountName %s, want default", got)
				}
			},
		},
		{
			name: "named ServiceAccount is bound", release: "sser", fullname: "sser",
			args: []string{"--set", "serviceAccount.name=watcher"},
			check: func(t *testing.T, r rendered) {
				if Find(r.objs, "ServiceAccount", "watcher") == nil || r.deploy.Spec.Template.Spec.ServiceAccountName != "watcher" {
					t.Errorf("ServiceAccount watcher not created or not used: %v", names(r.objs))
				}
			},
		},
		{
			name: "bind to the pod IP", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.bindAddress=$(POD_IP)"},
			check: func(t *testing.T, r rendered) {
				for flag, want := range map[string]string{"frontend-addr": "$(POD_IP):8000", "internal-addr": "$(POD_IP):7000"} {
					if got, _ := r.flag(flag); got != want {
						t.Errorf("--%s=%s, want %s", flag, got, want)
					}
				}
			},
		},
		{
			name: "static peers", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerFinder=static,sser.peers={10.0.0.1,10.0.0.2}"},
			check: func(t *testing.T, r rendered) {
				if _, ok := r.flag("selector"); ok {
					t.Error("--selector set for the static peer finder")
				}
				if got, _ := r.flag("peers"); got != "10.0.0.1,10.0.0.2" {
					t.Errorf("--peers=%s", got)
				}
			},
		},
		{
			name: "auto peer finder watches the release's pods", release: "sser", fullname: "sser",
			args: []string{"--set", "sser.peerFinder=auto"},
			check: func(t *testing.T, r rendered) {
				// The binary's own default selector (app.kubernetes.io/name=sser)
				// would take in every release of the chart in the namespace.
				if got, _ := r.flag("selector"); got != "app.kubernetes.io/instance=sser,app.kubernetes.io/name=sser" {
					t.Errorf("--selector=%q", got)
				}
			},
		},
		{
			name: "image digest pins the image", release: "sser", fullname: "sser",
			args: []string{"--set", "image.tag=9.9.9,image.digest=sha256:" + strings.Repeat("ab", 32)},
			check: func(t *testing.T, r rendered) {
				if want := "ghcr.io/sser-dev/sser@sha256:" + strings.Repeat("ab", 32); r.sser.Image != want {
					t.Errorf("image %s, want %s", r.sser.Image, want)
				}
			},
		},
		{
			name: "hard anti-affinity", release: "sser", fullname: "sser",
			args: []string{"--set", "podAntiAffinity=hard"},
			check: func(t *testing.T, r rendered) {
				aff := r.deploy.Spec.Template.Spec.Affinity
				if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
					t.Errorf("affinity %+v, want one required anti-affinity term", aff)
				}
			},
		},
		{
			name: "topology spread constraints count the release's pods unless told otherwise", release: "shop", fullname: "shop-sser",
			args: []string{"--set-json", `topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"ScheduleAnyway"},` +
				`{"maxSkew":2,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"tier":"edge"}},"matchLabelKeys":["pod-template-hash"]}]`},
			check: func(t *testing.T, r rendered) {
				tsc := r.deploy.Spec.Template.Spec.TopologySpreadConstraints
				if len(tsc) != 2 {
					t.Fatalf("%d topology spread constraints, want 2", len(tsc))
				}
				if tsc[0].TopologyKey != "topology.kubernetes.io/zone" || tsc[0].LabelSelector == nil ||
					!maps.Equal(tsc[0].LabelSelector.MatchLabels, r.deploy.Spec.Selector.MatchLabels) || len(tsc[0].LabelSelector.MatchExpressions) != 0 {
					t.Errorf("first constraint %+v, want the zone spread of the release's pods %v", tsc[0], r.deploy.Spec.Selector.MatchLabels)
				}
				if tsc[1].LabelSelector == nil || !maps.Equal(tsc[1].LabelSelector.MatchLabels, map[string]string{"tier": "edge"}) ||
					!slices.Equal(tsc[1].MatchLabelKeys, []string{"pod-template-hash"}) || tsc[1].MaxSkew != 2 {
					t.Errorf("second constraint %+v, want it as given", tsc[1])
				}
			},
		},
		{
			name: "Ingress for subscribers with ingress-nginx's SSE settings", release: "sser", fullname: "sser",
			args: []string{"--set", "ingress.enabled=true,ingress.className=nginx", "--set-json", `ingress.hosts=["sse.example.com","*.sse.example.com"]`,
				"--set-json", `ingress.tls=[{"secretName":"sse-tls","hosts":["sse.example.com"]}]`},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"Ingress": 1}))
				ing := As[networkingv1.Ingress](t, Find(r.objs, "Ingress", "sser"))
				for k, want := range map[string]string{
					"nginx.ingress.kubernetes.io/proxy-buffering":    "off",
					"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
					"nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
				} {
					if got := ing.Annotations[k]; got != want {
						t.Errorf("annotation %s=%q, want %q", k, got, want)
					}
				}
				if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
					t.Errorf("ingressClassName %v, want nginx", ing.Spec.IngressClassName)
				}
				if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "sse-tls" {
					t.Errorf("tls %+v", ing.Spec.TLS)
				}
				var hosts []string
				for _, rule := range ing.Spec.Rules {
					hosts = append(hosts, rule.Host)
					wantFrontendBackends(t, r, rule.HTTP)
				}
				if !slices.Equal(hosts, []string{"sse.example.com", "*.sse.example.com"}) {
					t.Errorf("hosts %q", hosts)
				}
			},
		},
		{
			name: "Ingress for any host, annotations of the operator's own win", release: "sser", fullname: "sser",
			args: []string{"--set", "ingress.enabled=true,ingress.timeoutSeconds=600,ingress.annotations.example\\.com/team=rt",
				"--set-string", "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=86400"},
			check: func(t *testing.T, r rendered) {
				ing := As[networkingv1.Ingress](t, Find(r.objs, "Ingress", "sser"))
				for k, want := range map[string]string{
					"nginx.ingress.kubernetes.io/proxy-read-timeout": "86400",
					"nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
					"example.com/team": "rt",
				} {
					if got := ing.Annotations[k]; got != want {
						t.Errorf("annotation %s=%q, want %q", k, got, want)
					}
				}
				if ing.Spec.IngressClassName != nil || len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "" {
					t.Fatalf("Ingress spec %+v, want one rule for any host and the default class", ing.Spec)
				}
				wantFrontendBackends(t, r, ing.Spec.Rules[0].HTTP)
			},
		},
		{
			name: "Ingress without the nginx annotations", release: "sser", fullname: "sser",
			args: []string{"--set", "ingress.enabled=true,ingress.nginxAnnotations=false,ingress.className=traefik"},
			check: func(t *testing.T, r rendered) {
				if a := Find(r.objs, "Ingress", "sser").GetAnnotations(); len(a) != 0 {
					t.Errorf("annotations %v, want none", a)
				}
			},
		},
		{
			name: "HTTPRoute to the subscriber Service with no request timeout", release: "sser", fullname: "sser",
			args: []string{"--set", "httpRoute.enabled=true,service.port=80", "--set-json", `httpRoute.parentRefs=[{"name":"public","namespace":"gateway-system","sectionName":"https"}]`,
				"--set-json", `httpRoute.hostnames=["sse.example.com"]`},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"HTTPRoute": 1}))
				route := Find(r.objs, "HTTPRoute", "sser")
				if route.GetAPIVersion() != "gateway.networking.k8s.io/v1" {
					t.Errorf("apiVersion %s", route.GetAPIVersion())
				}
				parents, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
				if fmt.Sprint(parents) != "[map[name:public namespace:gateway-system sectionName:https]]" {
					t.Errorf("parentRefs %v", parents)
				}
				if h, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames"); !slices.Equal(h, []string{"sse.example.com"}) {
					t.Errorf("hostnames %q", h)
				}
				rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
				if len(rules) != 1 {
					t.Fatalf("%d rules, want 1", len(rules))
				}
				rule := rules[0].(map[string]any)
				if got := fmt.Sprint(rule["backendRefs"]); got != "[map[name:sser port:80]]" {
					t.Errorf("backendRefs %s, want the subscriber Service sser on its port 80", got)
				}
				if got := fmt.Sprint(rule["matches"]); got != "[map[path:map[type:PathPrefix value:/]]]" {
					t.Errorf("matches %s", got)
				}
				if got := fmt.Sprint(rule["timeouts"]); got != "map[backendRequest:0s request:0s]" {
					t.Errorf("timeouts %s, want both off (0s)", got)
				}
			},
		},
		{
			name: "HTTPRoute timeouts left to the implementation", release: "sser", fullname: "sser",
			args: []string{"--set", "httpRoute.enabled=true", "--set-json", `httpRoute.parentRefs=[{"name":"public"}]`, "--set", "httpRoute.timeouts=null"},
			check: func(t *testing.T, r rendered) {
				rules, _, _ := unstructured.NestedSlice(Find(r.objs, "HTTPRoute", "sser").Object, "spec", "rules")
				if _, ok := rules[0].(map[string]any)["timeouts"]; ok {
					t.Errorf("rule %v has timeouts", rules[0])
				}
			},
		},
		{
			name: "no internal Service", release: "sser", fullname: "sser",
			args: []string{"--set", "internalService.enabled=false"},
			check: func(t *testing.T, r rendered) {
				// The test publishes through the internal Service.
				wantKinds(t, r, withKinds(map[string]int{"Service": 1, "Pod": 0}))
			},
		},
		{
			name: "ci full values", release: "sser", fullname: "sser",
			args: []string{"-f", "ci/full-values.yaml"},
			check: func(t *testing.T, r rendered) {
				wantKinds(t, r, withKinds(map[string]int{"HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1, "Ingress": 1, "HTTPRoute": 1}))
				if got := r.grace(t); got != 10+20+3+7 {
					t.Errorf("grace %d, want 40", got)
				}
				wantSecretFile(t, r, "publish-token-file", "sser-publish-token", "token")
				wantSecretFile(t, r, "auth-jwks-file", "sser-jwks", "jwks.json")
				wantSecretFile(t, r, "ticket-key-file", "sser-tickets", "hmac")
				if got, _ := r.flag("outbox-size"); got != "4096" {
					t.Errorf("--outbox-size=%q, want 4096", got)
				}
			},
		},
		{
			name: "sidecar example", release: "ticker", fullname: "ticker-sser",
			args: []string{"-f", filepath.Join("..", "..", "examples", "sidecar", "values.yaml")},
			check: func(t *testing.T, r rendered) {
				cs := r.deploy.Spec.Template.Spec.Containers
				if len(cs) != 2 || cs[1].Name != "app" {
					t.Fatalf("containers %v, want sser and app", containerNames(cs))
				}
				if script := strings.Join(cs[1].Args, " "); !strings.Contains(script, "http://localhost:7000/api/json/v1/publish") {
					t.Errorf("app does not publish to localhost:7000: %s", script)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case is its own helm process
			args := slices.Clone(tc.args)
			// Relative values files are relative to the chart directory.
			for i := range args {
				if i > 0 && args[i-1] == "-f" && !filepath.IsAbs(args[i]) {
					args[i] = filepath.Join(ChartDir(t), args[i])
				}
			}
			r := render(t, tc.release, tc.fullname, args...)
			checkInvariants(t, r)
			tc.check(t, r)
		})
	}
}

// wantFrontendBackends checks that every path of an Ingress rule goes to the
// subscriber Service's port.
func wantFrontendBackends(t *testing.T, r rendered, http *networkingv1.HTTPIngressRuleValue) {
	t.Helper()
	if http == nil || len(http.Paths) == 0 {
		t.Fatal("Ingress rule without paths")
	}
	svc := As[corev1.Service](t, Find(r.objs, "Service", r.fullname))
	for _, p := range http.Paths {
		b := p.Backend.Service
		if b == nil || b.Name != svc.Name || b.Port.Name != svc.Spec.Ports[0].Name {
			t.Errorf("path %s goes to %+v, want Service %s port %s", p.Path, b, svc.Name, svc.Spec.Ports[0].Name)
		}
		if p.Path != "/" || p.PathType == nil || *p.PathType != networkingv1.PathTypePrefix {
			t.Errorf("path %s (%v), want / Prefix", p.Path, p.PathType)
		}
	}
}

// TestPeerTokenIsFreshOnEveryTemplate: with no cluster to look the Secret
// up in, each render makes a new token (the documented `helm template`
// behaviour); the upgrade path is TestPeerTokenKeptAcrossUpgrade.
func TestPeerTokenIsFreshOnEveryTemplate(t *testing.T) {
	a := peerToken(t, render(t, "sser", "sser"), "sser-peer-token", "token")
	b := peerToken(t, render(t, "sser", "sser"), "sser-peer-token", "token")
	if a == b {
		t.Fatalf("two renders gave the same peer token %q: it is not random", a)
	}
}

// peerToken returns the decoded token in the rendered Secret name under key.
func peerToken(t *testing.T, r rendered, name, key string) string {
	t.Helper()
	sec := As[corev1.Secret](t, Find(r.objs, "Secret", name))
	if sec.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret %s type %q, want Opaque", name, sec.Type)
	}
	if len(sec.Data) != 1 || sec.Data[key] == nil {
		t.Fatalf("Secret %s holds keys %v, want only %q", name, slices.Sorted(maps.Keys(sec.Data)), key)
	}
	return string(sec.Data[key])
}

// wantSecretFile checks that the sser container is given --flag=PATH and
// that PATH is the file a read-only mount of a projected volume makes of
// Secret secret, key key (not optional: a missing Secret must keep the pod
// from starting, not start a replica without its credential); and that a
// Secret the chart renders holds that key.
func wantSecretFile(t *testing.T, r rendered, flag, secret, key string) {
	t.Helper()
	path, ok := r.flag(flag)
	if !ok {
		t.Errorf("no --%s in %q", flag, r.sser.Args)
		return
	}
	got, err := r.secretFile(path)
	if err != nil {
		t.Errorf("--%s=%s: %v", flag, path, err)
		return
	}
	if got.secret != secret || got.key != key {
		t.Errorf("--%s=%s is Secret %s key %s, want Secret %s key %s", flag, path, got.secret, got.key, secret, key)
	}
	if o := Find(r.objs, "Secret", secret); o != nil {
		if _, ok := As[corev1.Secret](t, o).Data[key]; !ok {
			t.Errorf("--%s reads key %s, which the rendered Secret %s lacks", flag, key, secret)
		}
	}
}

// secretRef is one Secret key.
type secretRef struct{ secret, key string }

// secretFile finds the Secret key the sser container sees at path: a
// read-only volume mount holding it, of a projected volume whose Secret
// source puts that key there.
func (r rendered) secretFile(path string) (secretRef, error) {
	for _, m := range r.sser.VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		if !m.ReadOnly || m.SubPath != "" {
			return secretRef{}, fmt.Errorf("mount %s is not a whole read-only volume (readOnly %v, subPath %q)", m.MountPath, m.ReadOnly, m.SubPath)
		}
		for _, v := range r.deploy.Spec.Template.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.Projected == nil {
				return secretRef{}, fmt.Errorf("volume %s is not a projected volume of Secrets", v.Name)
			}
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					continue
				}
				for _, it := range src.Secret.Items {
					if it.Path == rel {
						if src.Secret.Optional != nil && *src.Secret.Optional {
							return secretRef{}, fmt.Errorf("Secret %s is optional in volume %s", src.Secret.Name, v.Name)
						}
						return secretRef{src.Secret.Name, it.Key}, nil
					}
				}
			}
			return secretRef{}, fmt.Errorf("volume %s puts no Secret key at %s", v.Name, rel)
		}
		return secretRef{}, fmt.Errorf("mount %s names no volume of the pod", m.Name)
	}
	return secretRef{}, fmt.Errorf("no volume is mounted at it")
}

// flags returns every value of --name=value in the sser container's args,
// for repeatable flags.
func (r rendered) flags(name string) []string {
	var out []string
	for _, a := range r.sser.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// wantNoAuth checks that subscriber authentication is off: no --auth-* or
// --ticket-* flag and no key volume.
func wantNoAuth(t *testing.T, r rendered) {
	t.Helper()
	for _, a := range r.sser.Args {
		if strings.HasPrefix(a, "--auth-") || strings.HasPrefix(a, "--ticket-") {
			t.Errorf("%s given with authentication off", a)
		}
	}
	for _, v := range r.deploy.Spec.Template.Spec.Volumes {
		if v.Name == "sser-auth" {
			t.Errorf("volume %s with authentication off", v.Name)
		}
	}
}

func mountPaths(r rendered) []string {
	var out []string
	for _, m := range r.sser.VolumeMounts {
		out = append(out, m.MountPath)
	}
	return out
}

// wantNoFlag checks that none of the flags is given.
func wantNoFlag(t *testing.T, r rendered, flags ...string) {
	t.Helper()
	for _, f := range flags {
		if v, ok := r.flag(f); ok {
			t.Errorf("--%s=%s set", f, v)
		}
	}
}

func envNames(env []corev1.EnvVar) []string {
	var out []string
	for _, e := range env {
		out = append(out, e.Name)
	}
	return out
}

// internalSources checks the NetworkPolicy's shape (ingress only; the
// frontend port from anywhere; one rule for the internal port) and returns
// who may reach the internal port, as "pods:<selector>" or "ns:<name>".
func internalSources(t *testing.T, r rendered) []string {
	t.Helper()
	np := As[networkingv1.NetworkPolicy](t, Find(r.objs, "NetworkPolicy", r.fullname))
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes %v, want [Ingress] (egress stays open)", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("%d ingress rules, want 2 (frontend, internal)", len(np.Spec.Ingress))
	}
	front, internal := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if len(front.Ports) != 1 || front.Ports[0].Port.String() != "http" || len(front.From) != 0 {
		t.Errorf("frontend rule %+v, want port http from anywhere", front)
	}
	if len(internal.Ports) != 1 || internal.Ports[0].Port.String() != "internal" {
		t.Errorf("internal rule ports %+v, want only internal", internal.Ports)
	}
	if len(internal.From) == 0 {
		t.Fatal("internal rule has no sources: the internal port is open to everyone")
	}
	var got []string
	for _, p := range internal.From {
		switch {
		case p.PodSelector != nil && p.NamespaceSelector == nil:
			got = append(got, "pods:"+labels.SelectorFromSet(p.PodSelector.MatchLabels).String())
		case p.NamespaceSelector != nil && p.PodSelector == nil:
			got = append(got, "ns:"+p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
		default:
			got = append(got, fmt.Sprintf("other:%+v", p))
		}
	}
	return got
}

func names(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
