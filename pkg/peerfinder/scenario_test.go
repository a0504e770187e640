package peerfinder

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	peerLabel    = "app.kubernetes.io/name"
	peerValue    = "sser"
	peerSelector = peerLabel + "=" + peerValue
	// waitFor bounds every wait for an update; reached only when a test fails.
	waitFor = 30 * time.Second
)

// podAPI changes Pod objects through a clientset, the way the kubelet and a
// user would: the spec with Create/Update, phase and IP through the status
// subresource.
type podAPI struct {
	t  *testing.T
	cs kubernetes.Interface
}

func (a podAPI) create(ns, name string, lbls map[string]string, finalizers ...string) {
	a.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls, Finalizers: finalizers},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "sser", Image: "sser:test"}}},
	}
	if _, err := a.cs.CoreV1().Pods(ns).Create(a.t.Context(), pod, metav1.CreateOptions{}); err != nil {
		a.t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
}

func (a podAPI) get(ns, name string) *corev1.Pod {
	a.t.Helper()
	pod, err := a.cs.CoreV1().Pods(ns).Get(a.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		a.t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// status sets phase and, when ip is not empty, the pod IP.
func (a podAPI) status(ns, name string, phase corev1.PodPhase, ip string) {
	a.t.Helper()
	pod := a.get(ns, name)
	pod.Status.Phase = phase
	if ip != "" {
		pod.Status.PodIP = ip
		pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	if _, err := a.cs.CoreV1().Pods(ns).UpdateStatus(a.t.Context(), pod, metav1.UpdateOptions{}); err != nil {
		a.t.Fatalf("update status of pod %s/%s: %v", ns, name, err)
	}
}

func (a podAPI) update(ns, name string, change func(*corev1.Pod)) {
	a.t.Helper()
	pod := a.get(ns, name)
	change(pod)
	if _, err := a.cs.CoreV1().Pods(ns).Update(a.t.Context(), pod, metav1.UpdateOptions{}); err != nil {
		a.t.Fatalf("update pod %s/%s: %v", ns, name, err)
	}
}

func (a podAPI) delete(ns, name string) {
	a.t.Helper()
	if err := a.cs.CoreV1().Pods(ns).Delete(a.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		a.t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
}

// next returns the next set from updates, failing the test if none comes in
// time or the channel closes.
func next(t *testing.T, updates <-chan []string) []string {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case set, ok := <-updates:
		if !ok {
			t.Fatal("updates channel closed early")
		}
		return set
	case <-timer.C:
		t.Fatalf("no peer set update within %s", waitFor)
		return nil
	}
}

// expectNext fails unless the next update is want.
func expectNext(t *testing.T, updates <-chan []string, want []string) {
	t.Helper()
	if got := next(t, updates); !slices.Equal(got, want) {
		t.Fatalf("peer set = %v, want %v", got, want)
	}
}

// scenarioStep is one change to the pods and the set it must produce. A nil
// want means the set must not change (and nothing may be sent).
type scenarioStep struct {
	name string
	do   func(a podAPI, ns, otherNS string)
	want []string
}

var selected = map[string]string{peerLabel: peerValue}

// membershipScenario walks pods through the life cycle of a peer. It starts
// from the pods created by membershipSetup, whose set is {127.0.1.1}.
// terminate puts a deletion timestamp on a Running pod that must linger.
func membershipScenario(terminate func(a podAPI, ns, name string)) []scenarioStep {
	return []scenarioStep{
		{"IP while Pending is not a peer", func(a podAPI, ns, _ string) {
			a.status(ns, "p2", corev1.PodPending, "127.0.1.2")
		}, nil},
		{"Running with IP joins", func(a podAPI, ns, _ string) {
			a.status(ns, "p2", corev1.PodRunning, "")
		}, []string{"127.0.1.1", "127.0.1.2"}},
		{"status update that keeps the set sends nothing", func(a podAPI, ns, _ string) {
			pod := a.get(ns, "p2")
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
			if _, err := a.cs.CoreV1().Pods(ns).UpdateStatus(a.t.Context(), pod, metav1.UpdateOptions{}); err != nil {
				a.t.Fatal(err)
			}
		}, nil},
		{"new pod Running without IP is not a peer", func(a podAPI, ns, _ string) {
			a.create(ns, "p5", selected)
			a.status(ns, "p5", corev1.PodRunning, "")
		}, nil},
		{"then gets its IP and joins", func(a podAPI, ns, _ string) {
			a.status(ns, "p5", corev1.PodRunning, "127.0.1.5")
		}, []string{"127.0.1.1", "127.0.1.2", "127.0.1.5"}},
		{"Succeeded leaves", func(a podAPI, ns, _ string) {
			a.status(ns, "p5", corev1.PodSucceeded, "")
		}, []string{"127.0.1.1", "127.0.1.2"}},
		{"another pod joins", func(a podAPI, ns, _ string) {
			a.create(ns, "p6", selected)
			a.status(ns, "p6", corev1.PodRunning, "127.0.1.6")
		}, []string{"127.0.1.1", "127.0.1.2", "127.0.1.6"}},
		{"Failed leaves", func(a podAPI, ns, _ string) {
			a.status(ns, "p6", corev1.PodFailed, "")
		}, []string{"127.0.1.1", "127.0.1.2"}},
		{"label changed away leaves", func(a podAPI, ns, _ string) {
			a.update(ns, "p1", func(p *corev1.Pod) { p.Labels[peerLabel] = "other" })
		}, []string{"127.0.1.2"}},
		{"label changed back joins", func(a podAPI, ns, _ string) {
			a.update(ns, "p1", func(p *corev1.Pod) { p.Labels[peerLabel] = peerValue })
		}, []string{"127.0.1.1", "127.0.1.2"}},
		{"pods in another namespace are ignored", func(a podAPI, _, other string) {
			a.create(other, "x2", selected)
			a.status(other, "x2", corev1.PodRunning, "127.0.2.2")
		}, nil},
		{"deletion timestamp while Running stays a peer", func(a podAPI, ns, _ string) {
			terminate(a, ns, "p2")
			if a.get(ns, "p2").DeletionTimestamp == nil {
				a.t.Fatal("p2 has no deletion timestamp")
			}
		}, nil},
		{"terminating pod that stops running leaves", func(a podAPI, ns, _ string) {
			a.status(ns, "p2", corev1.PodSucceeded, "")
		}, []string{"127.0.1.1"}},
		{"finalizer removed from a pod that already left sends nothing", func(a podAPI, ns, _ string) {
			a.update(ns, "p2", func(p *corev1.Pod) { p.Finalizers = nil })
		}, nil},
		{"pod that was not selected is relabelled in", func(a podAPI, ns, _ string) {
			a.update(ns, "p4", func(p *corev1.Pod) { p.Labels[peerLabel] = peerValue })
		}, []string{"127.0.1.1", "127.0.1.4"}},
		{"deleted pod leaves", func(a podAPI, ns, _ string) {
			a.delete(ns, "p1")
		}, []string{"127.0.1.4"}},
		{"last pod deleted gives the empty set", func(a podAPI, ns, _ string) {
			a.delete(ns, "p4")
		}, []string{}},
		{"a pod joins the empty set", func(a podAPI, ns, _ string) {
			a.create(ns, "p7", selected)
			a.status(ns, "p7", corev1.PodRunning, "127.0.1.7")
		}, []string{"127.0.1.7"}},
	}
}

// probePod is Running with probeIP but starts unselected; moving it in and out
// of the selector after a step that must not change the set proves that the
// step sent nothing: a stray update would be read instead of the probe's.
const (
	probePod = "probe"
	probeIP  = "127.0.1.99"
)

// probe checks that the set is still current and that nothing was sent.
func probe(t *testing.T, a podAPI, updates <-chan []string, ns string, current []string) {
	t.Helper()
	a.update(ns, probePod, func(p *corev1.Pod) { p.Labels[peerLabel] = peerValue })
	with := append(slices.Clone(current), probeIP)
	slices.Sort(with)
	expectNext(t, updates, with)
	a.update(ns, probePod, func(p *corev1.Pod) { p.Labels[peerLabel] = "probe-out" })
	expectNext(t, updates, current)
}

// membershipSetup creates the starting pods: p1 is a peer, p2 is Pending with
// no IP (and a finalizer, so that it lingers once deleted), p4 is Running but
// not selected, x1 is Running in another namespace.
func membershipSetup(a podAPI, ns, other string) []string {
	a.create(ns, probePod, map[string]string{peerLabel: "probe-out"})
	a.status(ns, probePod, corev1.PodRunning, probeIP)
	a.create(ns, "p1", map[string]string{peerLabel: peerValue})
	a.status(ns, "p1", corev1.PodRunning, "127.0.1.1")
	a.create(ns, "p2", map[string]string{peerLabel: peerValue}, "sser.dev/test-linger")
	a.create(ns, "p4", map[string]string{peerLabel: "not-sser"})
	a.status(ns, "p4", corev1.PodRunning, "127.0.1.4")
	a.create(other, "x1", map[string]string{peerLabel: peerValue})
	a.status(other, "x1", corev1.PodRunning, "127.0.2.1")
	return []string{"127.0.1.1"}
}

// runMembership starts a finder on ns and walks the scenario.
func runMembership(t *testing.T, cs kubernetes.Interface, ns, other string, terminate func(a podAPI, ns, name string)) {
	a := podAPI{t: t, cs: cs}
	wantInitial := membershipSetup(a, ns, other)
	initial, updates, err := NewPeerFinder(cs, ns, peerSelector, WithStartTimeout(waitFor)).Start(t.Context())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !slices.Equal(initial, wantInitial) {
		t.Fatalf("initial set = %v, want %v", initial, wantInitial)
	}
	current := initial
	for _, step := range membershipScenario(terminate) {
		t.Run(step.name, func(t *testing.T) {
			a := podAPI{t: t, cs: cs}
			step.do(a, ns, other)
			if step.want == nil {
				probe(t, a, updates, ns, current)
				return
			}
			expectNext(t, updates, step.want)
			current = step.want
		})
		if t.Failed() {
			return
		}
	}
}

// nextPeers returns the next named set from updates, failing the test if
// none comes in time or the channel closes.
func nextPeers(t *testing.T, updates <-chan []Peer) []Peer {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case set, ok := <-updates:
		if !ok {
			t.Fatal("updates channel closed early")
		}
		return set
	case <-timer.C:
		t.Fatalf("no peer set update within %s", waitFor)
		return nil
	}
}

// runNames starts a named finder on ns and walks pods through changes of
// membership and of names. Each step's update must be the next one sent,
// so a step that sends nothing is proven by the step after it.
func runNames(t *testing.T, cs kubernetes.Interface, ns string) {
	a := podAPI{t: t, cs: cs}
	a.create(ns, "sser-a", selected)
	a.status(ns, "sser-a", corev1.PodRunning, "127.0.1.1")
	a.create(ns, "sser-b", selected)
	pf, ok := NewPeerFinder(cs, ns, peerSelector, WithStartTimeout(waitFor)).(NamedPeerFinder)
	if !ok {
		t.Fatal("the Kubernetes finder is not a NamedPeerFinder")
	}
	initial, updates, err := pf.StartNamed(t.Context())
	if err != nil {
		t.Fatalf("StartNamed: %v", err)
	}
	if want := []Peer{{"127.0.1.1", "sser-a"}}; !slices.Equal(initial, want) {
		t.Fatalf("initial = %v, want %v", initial, want)
	}
	steps := []struct {
		name string
		do   func(a podAPI)
		want []Peer
	}{
		{"a pod joins with its name", func(a podAPI) {
			a.status(ns, "sser-b", corev1.PodRunning, "127.0.1.2")
		}, []Peer{{"127.0.1.1", "sser-a"}, {"127.0.1.2", "sser-b"}}},
		{"a status change that keeps IPs and names sends nothing (the next step's update comes first)", func(a podAPI) {
			pod := a.get(ns, "sser-b")
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
			if _, err := a.cs.CoreV1().Pods(ns).UpdateStatus(a.t.Context(), pod, metav1.UpdateOptions{}); err != nil {
				a.t.Fatal(err)
			}
		}, nil},
		{"another pod on the same IP (host network) takes the IP under the first name in order", func(a podAPI) {
			a.create(ns, "sser-0", selected)
			a.status(ns, "sser-0", corev1.PodRunning, "127.0.1.2")
		}, []Peer{{"127.0.1.1", "sser-a"}, {"127.0.1.2", "sser-0"}}},
		{"it leaves and the IP has its old name again", func(a podAPI) {
			a.delete(ns, "sser-0")
		}, []Peer{{"127.0.1.1", "sser-a"}, {"127.0.1.2", "sser-b"}}},
		{"a pod leaves", func(a podAPI) {
			a.status(ns, "sser-a", corev1.PodSucceeded, "")
		}, []Peer{{"127.0.1.2", "sser-b"}}},
		{"its replacement reuses the IP under a new name", func(a podAPI) {
			a.create(ns, "sser-c", selected)
			a.status(ns, "sser-c", corev1.PodRunning, "127.0.1.1")
		}, []Peer{{"127.0.1.1", "sser-c"}, {"127.0.1.2", "sser-b"}}},
	}
	for _, step := range steps {
		step.do(podAPI{t: t, cs: cs})
		if step.want == nil {
			continue
		}
		if got := nextPeers(t, updates); !slices.Equal(got, step.want) {
			t.Fatalf("%s: set = %v, want %v", step.name, got, step.want)
		}
	}
}
