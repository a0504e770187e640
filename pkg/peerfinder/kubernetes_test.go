package peerfinder

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestKubernetesFakeMembership(t *testing.T) {
	cs := fake.NewClientset()
	// The fake clientset ignores finalizers, so a terminating pod is made by
	// setting the deletion timestamp directly.
	terminate := func(a podAPI, ns, name string) {
		a.update(ns, name, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} })
	}
	runMembership(t, cs, "sser", "elsewhere", terminate)
}

func TestPeerIPs(t *testing.T) {
	pod := func(phase corev1.PodPhase, ip string, deleting bool) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		}
		return p
	}
	tests := []struct {
		name string
		pods []*corev1.Pod
		want []string
	}{
		{"none", nil, []string{}},
		{"running with IP", []*corev1.Pod{pod(corev1.PodRunning, "10.0.0.1", false)}, []string{"10.0.0.1"}},
		{"running without IP", []*corev1.Pod{pod(corev1.PodRunning, "", false)}, []string{}},
		{"pending with IP", []*corev1.Pod{pod(corev1.PodPending, "10.0.0.1", false)}, []string{}},
		{"succeeded", []*corev1.Pod{pod(corev1.PodSucceeded, "10.0.0.1", false)}, []string{}},
		{"failed", []*corev1.Pod{pod(corev1.PodFailed, "10.0.0.1", false)}, []string{}},
		{"unknown", []*corev1.Pod{pod(corev1.PodUnknown, "10.0.0.1", false)}, []string{}},
		{"terminating but running", []*corev1.Pod{pod(corev1.PodRunning, "10.0.0.1", true)}, []string{"10.0.0.1"}},
		{"sorted and deduplicated", []*corev1.Pod{
			pod(corev1.PodRunning, "10.0.0.3", false),
			pod(corev1.PodRunning, "10.0.0.1", false),
			pod(corev1.PodRunning, "10.0.0.3", false),
			pod(corev1.PodRunning, "fd00::1", false),
		}, []string{"10.0.0.1", "10.0.0.3", "fd00::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerIPs(tt.pods); !slices.Equal(got, tt.want) {
				t.Errorf("peerIPs = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestKubernetesFakeStartErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	refuse := func(verb string, err error) func(*fake.Clientset) {
		return func(cs *fake.Clientset) {
			if verb == "watch" {
				cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
					return true, nil, err
				})
				return
			}
			cs.PrependReactor(verb, "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, err
			})
		}
	}
	tests := []struct {
		name     string
		selector string
		setup    func(*fake.Clientset)
		wantErr  error
		wantText []string
	}{
		{
			name:     "list forbidden",
			selector: peerSelector,
			setup:    refuse("list", apierrors.NewForbidden(gr, "", errors.New("RBAC: access denied"))),
			wantErr:  ErrForbidden,
			wantText: []string{`forbidden to list pods in namespace "sser"`, "get, list, watch on pods", "access denied"},
		},
		{
			name:     "watch forbidden",
			selector: peerSelector,
			setup:    refuse("watch", apierrors.NewForbidden(gr, "", errors.New("RBAC: access denied"))),
			wantErr:  ErrForbidden,
			wantText: []string{`forbidden to watch pods in namespace "sser"`, "get, list, watch on pods"},
		},
		{
			name:     "unauthorized",
			selector: peerSelector,
			setup:    refuse("list", apierrors.NewUnauthorized("bad token")),
			wantErr:  ErrUnauthorized,
			wantText: []string{"token or kubeconfig"},
		},
		{
			name:     "invalid selector",
			selector: "app in (",
			setup:    func(*fake.Clientset) {},
			wantErr:  ErrInvalidSelector,
		},
		{
			name:     "API server unreachable until the start timeout",
			selector: peerSelector,
			setup:    refuse("list", fmt.Errorf("dial tcp 127.0.0.1:6443: connect: connection refused")),
			wantText: []string{"reaching the API server", "connection refused"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cs := fake.NewClientset()
			tt.setup(cs)
			start := time.Now()
			_, _, err := NewPeerFinder(cs, "sser", tt.selector, WithStartTimeout(time.Second)).Start(t.Context())
			if err == nil {
				t.Fatal("Start succeeded, want an error")
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Start took %s to fail", elapsed)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestKubernetesFakeRetriesUntilReachable(t *testing.T) {
	cs := fake.NewClientset()
	failures := 2
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failures > 0 {
			failures--
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	a := podAPI{t: t, cs: cs}
	a.create("sser", "p1", selected)
	a.status("sser", "p1", corev1.PodRunning, "10.0.0.1")
	initial, _, err := NewPeerFinder(cs, "sser", peerSelector, WithStartTimeout(waitFor)).Start(t.Context())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if want := []string{"10.0.0.1"}; !slices.Equal(initial, want) {
		t.Errorf("initial = %v, want %v", initial, want)
	}
}

// A consumer that does not read must never stall the informer: the changes
// made meanwhile are folded, and the next reads end at the newest set.
func TestKubernetesFakeSlowConsumerGetsNewest(t *testing.T) {
	cs := fake.NewClientset()
	a := podAPI{t: t, cs: cs}
	initial, updates, err := NewPeerFinder(cs, "sser", peerSelector).Start(t.Context())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if len(initial) != 0 {
		t.Fatalf("initial = %v, want empty", initial)
	}
	const n = 50
	want := make([]string, 0, n)
	for i := range n {
		name := fmt.Sprintf("p%02d", i)
		ip := fmt.Sprintf("10.0.1.%d", i+1)
		a.create("sser", name, selected)
		a.status("sser", name, corev1.PodRunning, ip)
		want = append(want, ip)
	}
	slices.Sort(want)
	// At most one stale set is in flight; everything after it is folded.
	got := 0
	for set := next(t, updates); !slices.Equal(set, want); set = next(t, updates) {
		got++
		if got > 2 {
			t.Fatalf("update %d is %v: changes were not folded while the consumer was slow", got, set)
		}
	}
}

func TestKubernetesFakeClosesOnCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(t.Context())
	_, updates, err := NewPeerFinder(fake.NewClientset(), "sser", peerSelector).Start(ctx)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	cancel()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-updates:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("updates channel not closed after cancel")
		}
	}
}

func TestKubernetesFakeNames(t *testing.T) {
	runNames(t, fake.NewClientset(), "sser")
}

func TestPeerList(t *testing.T) {
	pod := func(name string, phase corev1.PodPhase, ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	tests := []struct {
		name string
		pods []*corev1.Pod
		want []Peer
	}{
		{"none", nil, []Peer{}},
		{"peers only, sorted by IP", []*corev1.Pod{
			pod("c", corev1.PodRunning, "10.0.0.3"),
			pod("p", corev1.PodPending, "10.0.0.2"),
			pod("a", corev1.PodRunning, "10.0.0.1"),
			pod("n", corev1.PodRunning, ""),
		}, []Peer{{"10.0.0.1", "a"}, {"10.0.0.3", "c"}}},
		{"one per IP, the first name", []*corev1.Pod{
			pod("web-b", corev1.PodRunning, "10.0.0.1"),
			pod("web-a", corev1.PodRunning, "10.0.0.1"),
		}, []Peer{{"10.0.0.1", "web-a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerList(tt.pods); !slices.Equal(got, tt.want) {
				t.Errorf("peerList = %v, want %v", got, tt.want)
			}
		})
	}
}
