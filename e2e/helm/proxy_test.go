package helm

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// serviceProxy plays kube-proxy for one Service port: every new TCP
// connection goes to a random ready endpoint of the Service. Like
// kube-proxy, it never moves a connection once made; when that pod goes away
// the client must reconnect.
//
// Endpoints are computed from the Service's selector and the pods' Ready
// condition, exactly as the EndpointSlice controller does; the controller
// itself cannot run here because EndpointSlice validation refuses loopback
// addresses, and every pod IP here is one.
type serviceProxy struct {
	ln       net.Listener
	addr     string // 127.0.0.1:port, what clients dial
	portName string
	selector labels.Selector
	lister   cache.Store

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startServiceProxy(t *testing.T, ctx context.Context, client kubernetes.Interface, namespace, service, portName string) *serviceProxy {
	t.Helper()
	svc, err := client.CoreV1().Services(namespace).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	targetPort := ""
	for _, p := range svc.Spec.Ports {
		if p.Name == portName {
			targetPort = p.TargetPort.String()
		}
	}
	if targetPort == "" {
		t.Fatalf("Service %s has no port %s", service, portName)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	inf := factory.Core().V1().Pods().Informer()
	pctx, cancel := context.WithCancel(ctx)
	factory.Start(pctx.Done())
	if !cache.WaitForCacheSync(pctx.Done(), inf.HasSynced) {
		t.Fatal("pod informer did not sync")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &serviceProxy{
		ln: ln, addr: ln.Addr().String(), portName: targetPort, lister: inf.GetStore(),
		selector: labels.SelectorFromSet(svc.Spec.Selector), conns: map[net.Conn]struct{}{},
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
		factory.Shutdown()
	})
	return p
}

// endpoints returns the ready endpoints' addresses (ip:port): pods that
// match the selector, have an IP, are Ready and are not terminating.
func (p *serviceProxy) endpoints() []string {
	var out []string
	for _, o := range p.lister.List() {
		pod := o.(*corev1.Pod)
		if !p.selector.Matches(labels.Set(pod.Labels)) || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil || !podReady(pod) {
			continue
		}
		port := 0
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p.portName || strconv.Itoa(int(cp.ContainerPort)) == p.portName {
					port = int(cp.ContainerPort)
				}
			}
		}
		if port != 0 {
			out = append(out, net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)))
		}
	}
	return out
}

func (p *serviceProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		eps := p.endpoints()
		if len(eps) == 0 {
			_ = c.Close() // no ready endpoint: refuse, as kube-proxy's reject rule does
			continue
		}
		p.wg.Add(1)
		go p.forward(c, eps[rand.IntN(len(eps))])
	}
}

func (p *serviceProxy) forward(c net.Conn, backend string) {
	defer p.wg.Done()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[b] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
	_ = c.Close()
	_ = b.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}
