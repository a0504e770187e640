// Package e2e proves sser end to end the way it runs in a cluster, with no
// cluster: a real kube-apiserver and etcd (controller-runtime's envtest),
// a ServiceAccount with the chart's RBAC whose token is the replicas'
// kubeconfig, a Pod object per replica, and real sser processes on their own
// loopback addresses (127.0.x.2, 127.0.x.3, ...) that find each other through
// the API server with --peer-finder=kubernetes.
//
// The tests need KUBEBUILDER_ASSETS (`make e2e` sets it from
// hack/envtest-assets.sh); without it they skip, or fail when
// SSER_REQUIRE_REAL=1.
package e2e
