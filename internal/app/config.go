package app

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sser-dev/sser/pkg/peerfinder"
	"github.com/sser-dev/sser/pkg/sser"
)

const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// ServerOptions turns the options into the library's, building the peer finder.
func (o *Options) ServerOptions(log logr.Logger) (sser.Options, error) {
	so := sser.Options{
		InternalAddr:      o.InternalAddr,
		PodIP:             o.PodIP,
		PodName:           o.PodName,
		Logger:            log,
		Heartbeat:         o.Heartbeat,
		Retry:             o.Retry,
		NoPreamble:        !o.ConnectPreamble,
		MaxConnectionTime: o.MaxConnectionTime,
		WriteTimeout:      o.WriteTimeout,
		SubscriberQueue:   o.SubscriberQueue,
		CORSOrigins:       o.CORSOrigins,
		DisableWebSocket:  !o.WebSocket,
		Compression:       o.Compression,
		PeerBatch:         o.PeerBatch,
		PeerTimeout:       o.PeerTimeout,
		PeerBackoffMax:    o.PeerBackoffMax,
		MaxBodyBytes:      o.MaxBodyBytes,
		HistorySize:       o.HistorySize,
		HistoryAge:        o.HistoryAge,

		PeerToken:     o.PeerToken,
		PublishToken:  o.PublishToken,
		InternalToken: o.InternalToken,

		OutboxSize:          o.OutboxSize,
		OutboxBytes:         o.OutboxBytes,
		PeerCutoff:          o.PeerCutoff,
		MaxSeqGap:           o.MaxSeqGap,
		MaxOriginsPerPeer:   o.MaxOriginsPerPeer,
		IdempotencyWindow:   o.IdempotencyWindow,
		LivenessStall:       o.LivenessStall,
		InternalReadTimeout: o.InternalReadTimeout,

		MaxConnections:          o.MaxConnections,
		MaxConnectionsPerIP:     o.MaxConnectionsPerIP,
		ConnectionRate:          o.ConnectionRate,
		TrustedProxies:          o.TrustedProxies,
		PublishRate:             o.PublishRate,
		MemoryWatermark:         o.MemoryWatermark,
		MaxStreamsPerConnection: o.MaxStreamsPerConnection,
		MaxReplayEvents:         o.MaxReplayEvents,
		MaxReplayBytes:          o.MaxReplayBytes,
		MaxHistoryStreams:       o.MaxHistoryStreams,
		MaxHistoryBytes:         o.MaxHistoryBytes,
		MaxStreamHistoryBytes:   o.MaxStreamHistoryBytes,
	}
	// The flags say 0 for "off" where the library says negative (its zero
	// means the default).
	if o.HistorySize == 0 {
		so.HistorySize = -1
	}
	if o.IdempotencyWindow == 0 {
		so.IdempotencyWindow = -1
	}
	if patterns := o.AllowedStreams; len(patterns) > 0 {
		so.AllowStream = func(_ *http.Request, stream string) bool {
			for _, p := range patterns {
				if ok, _ := path.Match(p, stream); ok {
					return true
				}
			}
			return false
		}
	}
	kind := o.PeerFinder
	if kind == FinderAuto {
		// In a pod, or told a kubeconfig on the command line: peers are
		// pods. A KUBECONFIG in the environment alone (a laptop's) is not
		// a reason to watch a cluster whose pods this process cannot reach.
		kind = FinderLocal
		if o.kubeconfigFlag || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			kind = FinderKubernetes
		} else if o.Kubeconfig != "" {
			log.Info("running alone (KUBECONFIG is set, but this is not a pod): use --peer-finder=kubernetes to find peers through it")
		}
	}
	switch kind {
	case FinderLocal:
		so.PeerFinder = peerfinder.NewPeerFinderLocalhost()
		if so.PodIP == "" {
			so.PodIP = "127.0.0.1"
		}
	case FinderStatic:
		pf, err := peerfinder.NewPeerFinderStatic(o.Peers)
		if err != nil {
			return so, err
		}
		so.PeerFinder = pf
	case FinderKubernetes:
		cfg, ns, err := o.kubeConfig()
		if err != nil {
			return so, err
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return so, fmt.Errorf("kubernetes client: %w", err)
		}
		if err := reachable(cfg); err != nil {
			return so, err
		}
		so.PeerFinder = peerfinder.NewPeerFinder(cs, ns, o.Selector, peerfinder.WithLogger(log))
		if so.PodIP == "" {
			log.Info("no --pod-ip (POD_IP): this replica will also POST to itself; duplicates are dropped, but set it from the downward API")
		}
		log.Info("watching peers", "namespace", ns, "selector", o.Selector)
	}
	return so, nil
}

// apiCheckTimeout bounds the check that the API server answers at start.
const apiCheckTimeout = 10 * time.Second

// reachable checks that the API server answers, so that a replica that
// cannot watch its peers says so at once, plainly, instead of retrying
// behind a rate limiter.
func reachable(cfg *rest.Config) error {
	c := rest.CopyConfig(cfg)
	c.Timeout = apiCheckTimeout
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return fmt.Errorf("cannot reach the Kubernetes API server at %s: %w (to run without a cluster, use --peer-finder=local)", cfg.Host, err)
	}
	return nil
}

// kubeConfig loads the client config: the kubeconfig when given, else the
// in-cluster one. The namespace is --namespace, else the pod's own, else
// the kubeconfig context's.
func (o *Options) kubeConfig() (*rest.Config, string, error) {
	ns := o.Namespace
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Kubeconfig}, &clientcmd.ConfigOverrides{})
		cfg, err = loader.ClientConfig()
		if err != nil {
			return nil, "", fmt.Errorf("load kubeconfig %s: %w", o.Kubeconfig, err)
		}
		if ns == "" {
			ns, _, _ = loader.Namespace()
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("not in a cluster and no --kubeconfig: %w", err)
		}
		if ns == "" {
			if b, err := os.ReadFile(inClusterNamespaceFile); err == nil {
				ns = strings.TrimSpace(string(b))
			}
		}
	}
	if ns == "" {
		ns = "default"
	}
	cfg.UserAgent = "sser"
	return cfg, ns, nil
}

// hostOf is the host part of addr, or "" for a wildcard address.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" {
		return ""
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return ""
	}
	return h
}
