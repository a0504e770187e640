package helm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"

	"github.com/sser-dev/sser/internal/testproc"
)

// nodeName is the one node the agent plays.
const nodeName = "e2e-node"

// podRecord is what the agent remembers about a pod after it is gone, for
// the test's assertions.
type podRecord struct {
	Name       string
	IP         string
	Started    time.Time
	Terminated time.Time
	ExitErr    error // nil when sser exited 0
	Killed     bool  // SIGKILL was needed at the end of the grace period
	Restarts   int
}

// kubelet is a process-based node agent: it does for each pod of one
// namespace what a kubelet would, with the real sser binary as the only
// container image it can run.
type kubelet struct {
	t         *testing.T
	client    kubernetes.Interface
	apiServer *rest.Config
	namespace string
	binary    string
	image     string // repository of the image the agent can run
	ips       []string
	dir       string

	mu       sync.Mutex
	nextIP   int
	pods     map[types.UID]*podRun
	finished []podRecord
	errs     []error
}

// podRun is one pod the agent is running.
type podRun struct {
	pod         *corev1.Pod
	ip          string
	kubeconfig  string
	args        []string
	env         []string
	logs        *testproc.Buffer
	started     time.Time
	restarts    int
	terminating bool

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc exits
	err  error

	cancel context.CancelFunc // stops the probe and restart loops
}

func newKubelet(t *testing.T, c *cluster, namespace, binary, image string, ips []string) *kubelet {
	return &kubelet{
		t: t, client: c.client, apiServer: c.cfg, namespace: namespace, binary: binary, image: image,
		ips: ips, dir: t.TempDir(), pods: map[types.UID]*podRun{},
	}
}

// registerNode creates the Node object the pods are bound to; the
// EndpointSlice controller skips pods whose node it cannot find.
func (k *kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}}
	created, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now, Reason: "KubeletReady"}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: nodeName}},
	}
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

// run watches the namespace's pods until ctx ends, then stops every process.
func (k *kubelet) run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithNamespace(k.namespace))
	inf := factory.Core().V1().Pods().Informer()
	queue := make(chan struct{}, 1)
	kick := func(any) {
		select {
		case queue <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    kick,
		UpdateFunc: func(_, o any) { kick(o) },
		DeleteFunc: kick,
	}); err != nil {
		k.fail(err)
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)

	// Level-triggered, like the kubelet's sync loop: every change (and a
	// periodic tick, for retries) reconciles every pod.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		present := map[types.UID]bool{}
		for _, o := range inf.GetStore().List() {
			pod := o.(*corev1.Pod)
			present[pod.UID] = true
			k.sync(ctx, pod)
		}
		k.reapOrphans(present)
		select {
		case <-ctx.Done():
			k.stopAll()
			return
		case <-queue:
		case <-tick.C:
		}
	}
}

func (k *kubelet) fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.errs = append(k.errs, err)
}

// errors returns the agent's own failures (not the pods').
func (k *kubelet) errors() []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]error(nil), k.errs...)
}

func (k *kubelet) sync(ctx context.Context, pod *corev1.Pod) {
	switch {
	case pod.Spec.NodeName == "":
		// No scheduler runs: the agent is the only node, so it binds.
		if pod.DeletionTimestamp != nil {
			return
		}
		b := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
		}
		if err := k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			k.fail(fmt.Errorf("bind %s: %w", pod.Name, err))
		}
	case pod.Spec.NodeName != nodeName:
	case pod.DeletionTimestamp != nil:
		k.mu.Lock()
		r := k.pods[pod.UID]
		start := r != nil && !r.terminating
		if start {
			r.terminating = true
		}
		k.mu.Unlock()
		if r == nil {
			// Never started (or already stopped): nothing to drain.
			k.forceDelete(ctx, pod)
			return
		}
		if start {
			go k.terminate(ctx, r, pod)
		}
	default:
		k.mu.Lock()
		_, known := k.pods[pod.UID]
		k.mu.Unlock()
		if !known && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			if err := k.start(ctx, pod); err != nil && ctx.Err() == nil && !k.gone(ctx, pod) {
				k.fail(fmt.Errorf("start %s: %w", pod.Name, err))
			}
		}
	}
}

// gone reports whether pod was deleted (or is being deleted) meanwhile, in
// which case failing to start it is expected.
func (k *kubelet) gone(ctx context.Context, pod *corev1.Pod) bool {
	cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err) || (err == nil && (cur.UID != pod.UID || cur.DeletionTimestamp != nil))
}

// reapOrphans kills the processes of pods that no longer exist in the API
// server (removed without a graceful deletion the agent saw), as the
// kubelet's orphan cleanup does.
func (k *kubelet) reapOrphans(present map[types.UID]bool) {
	k.mu.Lock()
	var orphans []*podRun
	for uid, r := range k.pods {
		if !present[uid] && !r.terminating {
			r.terminating = true
			orphans = append(orphans, r)
			delete(k.pods, uid)
		}
	}
	k.mu.Unlock()
	for _, r := range orphans {
		if r.cancel != nil {
			r.cancel()
		}
		if proc, done := r.current(); proc != nil {
			_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
			<-done
		}
		k.mu.Lock()
		k.finished = append(k.finished, podRecord{Name: r.pod.Name, IP: r.ip, Started: r.started, Terminated: time.Now(), Killed: true, Restarts: r.restartCount()})
		k.mu.Unlock()
	}
}

func (k *kubelet) allocateIP() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	// IPs are not reused within a test, so a stale peer set never points at
	// a newer pod.
	if k.nextIP >= len(k.ips) {
		return "", errors.New("out of pod IPs")
	}
	ip := k.ips[k.nextIP]
	k.nextIP++
	return ip, nil
}

func (k *kubelet) start(ctx context.Context, pod *corev1.Pod) error {
	if len(pod.Spec.Containers) != 1 || pod.Spec.InitContainers != nil {
		return fmt.Errorf("the agent runs pods with exactly one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, k.image+":") && !strings.HasPrefix(c.Image, k.image+"@") {
		return fmt.Errorf("the agent runs only %s images, got %s", k.image, c.Image)
	}
	if len(c.Command) > 0 && c.Command[0] != "/sser" {
		return fmt.Errorf("command %q is not the image's /sser", c.Command)
	}
	ip, err := k.allocateIP()
	if err != nil {
		return err
	}
	kubeconfig, err := k.writeKubeconfig(ctx, pod)
	if err != nil {
		return err
	}
	env, err := resolveEnv(ctx, k.client, pod, c, ip)
	if err != nil {
		return err
	}
	mounts, err := k.writeVolumes(ctx, pod, c)
	if err != nil {
		return err
	}
	// The image's entrypoint is /sser; a command replaces it, args follow.
	args := append([]string(nil), c.Args...)
	if len(c.Command) > 0 {
		args = append(append([]string(nil), c.Command[1:]...), c.Args...)
	}
	args = expandArgs(args, env)
	for i := range args {
		args[i] = mounts.Replace(args[i])
	}
	r := &podRun{pod: pod, ip: ip, kubeconfig: kubeconfig, logs: &testproc.Buffer{}, args: args}
	// The env a container sees: its own variables, and the ServiceAccount
	// credentials a kubelet would mount, as a kubeconfig.
	for _, kv := range env {
		r.env = append(r.env, kv[0]+"="+mounts.Replace(kv[1]))
	}
	r.env = append(r.env, "KUBECONFIG="+kubeconfig, "HOME="+k.dir)

	k.mu.Lock()
	k.pods[pod.UID] = r
	k.mu.Unlock()

	r.started = time.Now()
	if err := r.startProcess(k.binary); err != nil {
		return err
	}
	if err := k.setStatus(ctx, pod, func(p *corev1.Pod) {
		now := metav1.NewTime(r.started)
		p.Status.Phase = corev1.PodRunning
		p.Status.HostIP, p.Status.HostIPs = "127.0.0.1", []corev1.HostIP{{IP: "127.0.0.1"}}
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		p.Status.StartTime = &now
		setCondition(p, corev1.PodScheduled, true, now)
		setCondition(p, corev1.PodInitialized, true, now)
		setCondition(p, corev1.ContainersReady, false, now)
		setCondition(p, corev1.PodReady, false, now)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptr(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}}
	}); err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go k.probeAndRestart(pctx, r, c)
	return nil
}

// writeKubeconfig asks for a token bound to the pod (as the kubelet's
// projected ServiceAccount volume does) and writes a kubeconfig with it.
func (k *kubelet) writeKubeconfig(ctx context.Context, pod *corev1.Pod) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	expiry := int64(3600)
	tr, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &expiry,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for ServiceAccount %s: %w", sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: k.apiServer.Host, CertificateAuthorityData: k.apiServer.CAData}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["pod"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: sa, Namespace: pod.Namespace}
	cfg.CurrentContext = "pod"
	path := filepath.Join(k.dir, pod.Name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	return path, nil
}

// writeVolumes does what the kubelet does for the container's mounts of
// projected volumes of Secret keys: it writes each key to its file under the
// agent's directory. With no mount namespace, the process finds them through
// the returned replacer, which turns each mountPath into that directory
// wherever args and env name it.
func (k *kubelet) writeVolumes(ctx context.Context, pod *corev1.Pod, c corev1.Container) (*strings.Replacer, error) {
	var pairs []string
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || pod.Spec.Volumes[i].Projected == nil {
			return nil, fmt.Errorf("mount %s: only projected volumes are supported by the agent", m.Name)
		}
		dir := filepath.Join(k.dir, string(pod.UID), m.Name)
		for _, src := range pod.Spec.Volumes[i].Projected.Sources {
			if src.Secret == nil || len(src.Secret.Items) == 0 {
				return nil, fmt.Errorf("volume %s: only Secret sources with items are supported by the agent", m.Name)
			}
			sec, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && src.Secret.Optional != nil && *src.Secret.Optional {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("volume %s: secret %s: %w", m.Name, src.Secret.Name, err)
			}
			for _, it := range src.Secret.Items {
				v, ok := sec.Data[it.Key]
				if !ok {
					return nil, fmt.Errorf("volume %s: secret %s has no key %s", m.Name, src.Secret.Name, it.Key)
				}
				path := filepath.Join(dir, it.Path)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					return nil, err
				}
				if err := os.WriteFile(path, v, 0o400); err != nil {
					return nil, err
				}
			}
		}
		pairs = append(pairs, strings.TrimSuffix(m.MountPath, "/")+"/", dir+"/")
	}
	return strings.NewReplacer(pairs...), nil
}

// resolveEnv turns the container's env into name/value pairs, resolving the
// downward API fields and Secret keys the kubelet would, and $(VAR)
// references to earlier ones.
func resolveEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c corev1.Container, ip string) ([][2]string, error) {
	var env [][2]string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, [2]string{e.Name, expand(e.Value, env)})
		case e.ValueFrom.FieldRef != nil:
			var v string
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.podIP":
				v = ip
			case "status.hostIP":
				v = "127.0.0.1"
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "metadata.uid":
				v = string(pod.UID)
			case "spec.nodeName":
				v = nodeName
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			default:
				return nil, fmt.Errorf("env %s: fieldRef %s not supported by the agent", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env = append(env, [2]string{e.Name, v})
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			sec, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %s: %w", e.Name, ref.Name, err)
			}
			v, ok := sec.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env = append(env, [2]string{e.Name, string(v)})
		default:
			return nil, fmt.Errorf("env %s: only values, fieldRefs and secretKeyRefs are supported by the agent", e.Name)
		}
	}
	return env, nil
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand replaces $(VAR) with the variable's value, as Kubernetes does in
// args and env values; unknown references stay as written.
func expand(s string, env [][2]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		for i := len(env) - 1; i >= 0; i-- {
			if env[i][0] == name {
				return env[i][1]
			}
		}
		return m
	})
}

func expandArgs(args []string, env [][2]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(a, env)
	}
	return out
}

func (r *podRun) startProcess(binary string) error {
	cmd := exec.Command(binary, r.args...)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(r.logs, "--- agent: start %s %s\n", filepath.Base(binary), strings.Join(r.args, " "))
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.proc, r.done, r.err = cmd, done, nil
	r.mu.Unlock()
	go func() {
		err := cmd.Wait()
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		fmt.Fprintf(r.logs, "--- agent: exited: %v\n", err)
		close(done)
	}()
	return nil
}

func (r *podRun) restartCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.restarts
}

func (r *podRun) current() (*exec.Cmd, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc, r.done
}

// probeAndRestart runs the readiness and liveness probes on their periods,
// reports readiness in the pod's status, and restarts the container when it
// exits or fails liveness (restartPolicy Always).
func (k *kubelet) probeAndRestart(ctx context.Context, r *podRun, c corev1.Container) {
	ready, readyOK, readyFail := false, 0, 0
	liveFail := 0
	// A container without a probe counts as passing it, on the default period.
	withDefaults := func(p *corev1.Probe) *corev1.Probe {
		if p == nil {
			return &corev1.Probe{PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3}
		}
		p = p.DeepCopy()
		p.PeriodSeconds = max(1, p.PeriodSeconds)
		p.SuccessThreshold = max(1, p.SuccessThreshold)
		p.FailureThreshold = max(1, p.FailureThreshold)
		return p
	}
	rp, lp := withDefaults(c.ReadinessProbe), withDefaults(c.LivenessProbe)
	readyTick := time.NewTicker(time.Duration(rp.PeriodSeconds) * time.Second)
	defer readyTick.Stop()
	liveTick := time.NewTicker(time.Duration(lp.PeriodSeconds) * time.Second)
	defer liveTick.Stop()
	client := &http.Client{}
	setReady := func(v bool) {
		if v == ready {
			return
		}
		ready = v
		now := metav1.Now()
		err := k.setStatus(ctx, r.pod, func(p *corev1.Pod) {
			setCondition(p, corev1.ContainersReady, v, now)
			setCondition(p, corev1.PodReady, v, now)
			if len(p.Status.ContainerStatuses) == 1 {
				p.Status.ContainerStatuses[0].Ready = v
				p.Status.ContainerStatuses[0].RestartCount = int32(r.restartCount())
			}
		})
		if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			k.fail(fmt.Errorf("set %s ready=%v: %w", r.pod.Name, v, err))
		}
	}
	probeNow := func(p *corev1.Probe) bool { return httpProbe(ctx, client, r.ip, c, p) }
	// The first readiness probe runs at once, not a period later.
	if probeNow(rp) {
		readyOK = 1
		setReady(true)
	}
	for {
		_, done := r.current()
		select {
		case <-ctx.Done():
			return
		case <-done:
			k.mu.Lock()
			terminating := r.terminating
			k.mu.Unlock()
			if terminating {
				return
			}
			setReady(false)
			r.mu.Lock()
			r.restarts++
			r.mu.Unlock()
			fmt.Fprintf(r.logs, "--- agent: restarting (restart %d)\n", r.restartCount())
			if err := r.startProcess(k.binary); err != nil {
				k.fail(fmt.Errorf("restart %s: %w", r.pod.Name, err))
				return
			}
		case <-readyTick.C:
			k.mu.Lock()
			terminating := r.terminating
			k.mu.Unlock()
			if probeNow(rp) {
				readyOK, readyFail = readyOK+1, 0
				if readyOK >= int(rp.SuccessThreshold) && !terminating {
					setReady(true)
				}
			} else {
				readyOK, readyFail = 0, readyFail+1
				if readyFail >= int(rp.FailureThreshold) {
					setReady(false)
				}
			}
		case <-liveTick.C:
			k.mu.Lock()
			terminating := r.terminating
			k.mu.Unlock()
			if terminating || probeNow(lp) {
				liveFail = 0
				continue
			}
			liveFail++
			if liveFail >= int(lp.FailureThreshold) {
				liveFail = 0
				fmt.Fprintln(r.logs, "--- agent: liveness failed, killing")
				if proc, _ := r.current(); proc != nil {
					_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
				}
			}
		}
	}
}

func httpProbe(ctx context.Context, client *http.Client, ip string, c corev1.Container, p *corev1.Probe) bool {
	if p.HTTPGet == nil {
		return true
	}
	port := p.HTTPGet.Port.IntValue()
	if p.HTTPGet.Port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	timeout := time.Duration(max(1, p.TimeoutSeconds)) * time.Second
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, "http://"+net.JoinHostPort(ip, strconv.Itoa(port))+p.HTTPGet.Path, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// terminate does what the kubelet does for a deleted pod: the preStop hook,
// then SIGTERM, then SIGKILL if the grace period runs out, then it removes
// the pod from the API server.
func (k *kubelet) terminate(ctx context.Context, r *podRun, pod *corev1.Pod) {
	begin := time.Now()
	grace := int64(30)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	deadline := time.NewTimer(time.Duration(grace) * time.Second)
	defer deadline.Stop()
	c := pod.Spec.Containers[0]
	fmt.Fprintf(r.logs, "--- agent: pod deleted, grace %ds\n", grace)
	if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		// The preStop sleep is the pod's own pause, played out in real time.
		pause := time.NewTimer(time.Duration(l.PreStop.Sleep.Seconds) * time.Second)
		select {
		case <-pause.C:
		case <-deadline.C:
		case <-ctx.Done():
		}
		pause.Stop()
	}
	proc, done := r.current()
	_ = proc.Process.Signal(syscall.SIGTERM)
	killed := false
	select {
	case <-done:
	case <-deadline.C:
		killed = true
		_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
		<-done
	case <-ctx.Done():
		_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Lock()
	exitErr := r.err
	r.mu.Unlock()
	fmt.Fprintf(r.logs, "--- agent: terminated after %s (killed=%v)\n", time.Since(begin).Round(time.Millisecond), killed)

	k.mu.Lock()
	delete(k.pods, pod.UID)
	k.finished = append(k.finished, podRecord{
		Name: pod.Name, IP: r.ip, Started: r.started, Terminated: time.Now(),
		ExitErr: exitErr, Killed: killed, Restarts: r.restartCount(),
	})
	k.mu.Unlock()
	if ctx.Err() == nil {
		k.forceDelete(ctx, pod)
	}
}

func (k *kubelet) forceDelete(ctx context.Context, pod *corev1.Pod) {
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		k.fail(fmt.Errorf("remove pod %s: %w", pod.Name, err))
	}
}

// stopAll kills every process (test end).
func (k *kubelet) stopAll() {
	k.mu.Lock()
	runs := make([]*podRun, 0, len(k.pods))
	for _, r := range k.pods {
		runs = append(runs, r)
	}
	k.mu.Unlock()
	for _, r := range runs {
		if r.cancel != nil {
			r.cancel()
		}
		if proc, done := r.current(); proc != nil {
			_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
}

// running returns the pods the agent runs now, by name.
func (k *kubelet) running() map[string]*podRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]*podRun{}
	for _, r := range k.pods {
		out[r.pod.Name] = r
	}
	return out
}

// records returns the pods that have terminated so far.
func (k *kubelet) records() []podRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]podRecord(nil), k.finished...)
}

// logs returns every pod's output, for a failed test.
func (k *kubelet) logs() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, r := range k.pods {
		fmt.Fprintf(&b, "=== pod %s (%s)\n%s\n", r.pod.Name, r.ip, tail(r.logs.String(), 40))
	}
	return b.String()
}

func (k *kubelet) setStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.Pod)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name)
		}
		mutate(cur)
		_, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

func setCondition(p *corev1.Pod, typ corev1.PodConditionType, status bool, now metav1.Time) {
	s := corev1.ConditionFalse
	if status {
		s = corev1.ConditionTrue
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			if p.Status.Conditions[i].Status != s {
				p.Status.Conditions[i].Status = s
				p.Status.Conditions[i].LastTransitionTime = now
			}
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: typ, Status: s, LastTransitionTime: now})
}

func ptr[T any](v T) *T { return &v }
