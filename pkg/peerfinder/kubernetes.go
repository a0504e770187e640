package peerfinder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// DefaultStartTimeout bounds how long Start of the Kubernetes finder waits for
// the first pod list.
const DefaultStartTimeout = 30 * time.Second

// rbacHint names what the finder's identity needs; it is part of every
// permission error so that an operator knows what to grant.
const rbacHint = "RBAC needs get, list, watch on pods"

// Option configures the Kubernetes PeerFinder.
type Option func(*kubeFinder)

// WithLogger sets the logger. Without it Start uses the logger in its
// context, if any.
func WithLogger(log logr.Logger) Option {
	return func(f *kubeFinder) { f.log = log; f.logSet = true }
}

// WithStartTimeout bounds how long Start waits for the first pod list,
// retrying while the API server cannot be reached (DefaultStartTimeout).
// A forbidden or unauthorized answer fails at once.
func WithStartTimeout(d time.Duration) Option {
	return func(f *kubeFinder) { f.startTimeout = d }
}

// NewPeerFinder returns a PeerFinder that watches the Pods in namespace that
// match labelSelector. A pod is a peer while its status.phase is Running and
// it has a status.podIP; a pod that is terminating (has a deletion timestamp)
// stays a peer until it stops running, since its subscribers still need
// events while it drains.
//
// While the API server cannot be reached the last known set is kept. The
// identity needs get, list and watch on pods in namespace; without them Start
// fails with an error that wraps ErrForbidden and names the permission.
func NewPeerFinder(clientset kubernetes.Interface, namespace, labelSelector string, opts ...Option) PeerFinder {
	f := &kubeFinder{
		clientset:    clientset,
		namespace:    namespace,
		selector:     labelSelector,
		startTimeout: DefaultStartTimeout,
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

type kubeFinder struct {
	clientset    kubernetes.Interface
	namespace    string
	selector     string
	startTimeout time.Duration
	log          logr.Logger
	logSet       bool
}

var _ NamedPeerFinder = (*kubeFinder)(nil)

// Start checks that pods can be listed and watched, loads them, and then
// follows changes until ctx ends.
func (f *kubeFinder) Start(ctx context.Context) ([]string, <-chan []string, error) {
	return follow(ctx, f, peerIPs, slices.Equal[[]string])
}

// StartNamed is Start with each peer's pod name.
func (f *kubeFinder) StartNamed(ctx context.Context) ([]Peer, <-chan []Peer, error) {
	return follow(ctx, f, peerList, slices.Equal[[]Peer])
}

// follow runs the informer and reports set(pods) of the selected pods, first
// as it is and then each time it changes (by equal).
func follow[T any](ctx context.Context, f *kubeFinder, set func([]*corev1.Pod) T, equal func(a, b T) bool) (T, <-chan T, error) {
	var zero T
	if !f.logSet {
		f.log = logr.FromContextOrDiscard(ctx)
	}
	log := f.log.WithName("peerfinder").WithValues("namespace", f.namespace, "selector", f.selector)
	selector, err := labels.Parse(f.selector)
	if err != nil {
		return zero, nil, fmt.Errorf("%w %q: %w", ErrInvalidSelector, f.selector, err)
	}
	if err := f.preflight(ctx); err != nil {
		return zero, nil, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	// Resync 0: the set is rebuilt from the cache on every event, and a
	// periodic resync would only replay the same cached objects and compute
	// the same set again. Watch errors relist on their own.
	factory := informers.NewSharedInformerFactoryWithOptions(f.clientset, 0,
		informers.WithNamespace(f.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = f.selector }),
	)
	informer := factory.Core().V1().Pods().Informer()
	lister := factory.Core().V1().Pods().Lister()
	stop := func() {
		cancel()
		factory.Shutdown()
	}
	// Only the fields that decide membership are kept, so a namespace of
	// large pod specs costs little memory.
	if err := informer.SetTransform(slimPod); err != nil {
		stop()
		return zero, nil, fmt.Errorf("sser: peerfinder: set transform: %w", err)
	}
	if err := informer.SetWatchErrorHandlerWithContext(watchErrorHandler(log, f.namespace)); err != nil {
		stop()
		return zero, nil, fmt.Errorf("sser: peerfinder: set watch error handler: %w", err)
	}
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default: // a recompute is already pending; it will see this change too
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}); err != nil {
		stop()
		return zero, nil, fmt.Errorf("sser: peerfinder: add event handler: %w", err)
	}
	factory.Start(runCtx.Done())

	syncCtx, syncCancel := context.WithTimeout(runCtx, f.startTimeout)
	synced := cache.WaitForCacheSync(syncCtx.Done(), informer.HasSynced)
	syncCancel()
	if !synced {
		stop()
		if err := ctx.Err(); err != nil {
			return zero, nil, fmt.Errorf("sser: peerfinder: waiting for the pod list: %w", err)
		}
		return zero, nil, fmt.Errorf("%w within %s in namespace %q", ErrNotSynced, f.startTimeout, f.namespace)
	}

	current := func() (T, bool) {
		// The API server already filters by the selector; filtering the
		// cache again costs little and keeps the set right if it did not.
		pods, err := lister.Pods(f.namespace).List(selector)
		if err != nil { // the cache lister does not fail; keep the last set if it ever does
			log.Error(err, "Listing cached pods failed")
			return zero, false
		}
		return set(pods), true
	}
	initial, _ := current()
	log.Info("Peer set loaded", "peers", initial)

	out := make(chan T)
	go func() {
		defer close(out)
		defer stop()
		last := initial
		for {
			select {
			case <-runCtx.Done():
				return
			case <-changed:
			}
			set, ok := current()
			if !ok || equal(set, last) {
				continue
			}
			// The informer never waits on this send: its handlers only
			// poke the changed channel. Changes that arrive while the
			// consumer is slow are folded into the next recompute.
			select {
			case out <- set:
				log.V(1).Info("Peer set changed", "peers", set)
				last = set
			case <-runCtx.Done():
				return
			}
		}
	}()
	return initial, out, nil
}

// preflight lists and watches pods once, so that a missing permission is
// reported at once and by name instead of the informer retrying forever.
// Errors other than forbidden and unauthorized (the API server is not up yet)
// are retried until the start timeout.
func (f *kubeFinder) preflight(ctx context.Context) error {
	pods := f.clientset.CoreV1().Pods(f.namespace)
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, f.startTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: f.selector, Limit: 1})
		if err != nil {
			lastErr = f.classify("list", err)
			return false, permanent(lastErr)
		}
		timeout := int64(1)
		w, err := pods.Watch(ctx, metav1.ListOptions{
			LabelSelector:   f.selector,
			ResourceVersion: list.ResourceVersion,
			TimeoutSeconds:  &timeout,
		})
		if err != nil {
			lastErr = f.classify("watch", err)
			return false, permanent(lastErr)
		}
		w.Stop()
		return true, nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(lastErr, ErrForbidden), errors.Is(lastErr, ErrUnauthorized):
		return lastErr
	case lastErr != nil:
		return fmt.Errorf("sser: peerfinder: reaching the API server: %w", lastErr)
	default:
		return fmt.Errorf("sser: peerfinder: reaching the API server: %w", err)
	}
}

// permanent stops the preflight poll for errors that retrying cannot fix.
func permanent(err error) error {
	if errors.Is(err, ErrForbidden) || errors.Is(err, ErrUnauthorized) {
		return err
	}
	return nil
}

func (f *kubeFinder) classify(verb string, err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w to %s pods in namespace %q (%s): %w", ErrForbidden, verb, f.namespace, rbacHint, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w to %s pods in namespace %q (check the token or kubeconfig): %w", ErrUnauthorized, verb, f.namespace, err)
	default:
		return fmt.Errorf("%s pods in namespace %q: %w", verb, f.namespace, err)
	}
}

// watchErrorHandler logs why the watch broke. The informer keeps its cache,
// so the last set stays in force, and relists with backoff on its own.
func watchErrorHandler(log logr.Logger, namespace string) cache.WatchErrorHandlerWithContext {
	var mu sync.Mutex
	lastMsg := ""
	return func(_ context.Context, _ *cache.Reflector, err error) {
		if errors.Is(err, io.EOF) { // the server closed a watch; normal
			return
		}
		msg := "Lost the pod watch; keeping the last peer set and retrying"
		if apierrors.IsForbidden(err) {
			msg = "Forbidden to watch pods; keeping the last peer set (" + rbacHint + ")"
		}
		mu.Lock()
		repeat := msg == lastMsg
		lastMsg = msg
		mu.Unlock()
		if repeat { // the informer retries with backoff; say it once per kind of failure
			log.V(1).Info(msg, "namespace", namespace, "error", err.Error())
			return
		}
		log.Error(err, msg, "namespace", namespace)
	}
}

// isPeer reports whether pod takes part in the broadcast: it is Running and
// has an IP. A deletion timestamp does not end membership: a draining pod
// still serves subscribers until it stops running.
func isPeer(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != ""
}

// peerIPs returns the sorted, de-duplicated IPs of the pods that are peers.
func peerIPs(pods []*corev1.Pod) []string {
	ips := make([]string, 0, len(pods))
	for _, p := range pods {
		if isPeer(p) {
			ips = append(ips, p.Status.PodIP)
		}
	}
	slices.Sort(ips)
	return slices.Compact(ips)
}

// peerList returns the pods that are peers, sorted by IP, one per IP: of
// several pods with one IP (host-network pods), the first name in order.
func peerList(pods []*corev1.Pod) []Peer {
	out := make([]Peer, 0, len(pods))
	for _, p := range pods {
		if isPeer(p) {
			out = append(out, Peer{IP: p.Status.PodIP, Name: p.Name})
		}
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if c := strings.Compare(a.IP, b.IP); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return slices.CompactFunc(out, func(a, b Peer) bool { return a.IP == b.IP })
}

// slimPod keeps only what isPeer and the cache need.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP},
	}, nil
}
