// Package helm is the end-to-end test of `helm install`: a real helm installs
// charts/sser into a real kube-apiserver and etcd, the real Deployment,
// ReplicaSet, garbage-collector and EndpointSlice controllers of
// kube-controller-manager create and track the pods, and a small
// process-based node agent plays the kubelet: it binds each pod, runs the
// real sser binary with the pod's args and env on its own loopback IP,
// authenticates it with a TokenRequest token for the pod's ServiceAccount,
// reports Running and Ready from the pod's own probes, and on deletion runs
// the preStop pause, sends SIGTERM and waits up to the grace period.
//
// There is no kube-proxy; a small TCP proxy per Service forwards each new
// connection to a ready endpoint from the Service's EndpointSlices, as
// kube-proxy would.
//
// It needs KUBEBUILDER_ASSETS with kube-apiserver, etcd and
// kube-controller-manager (hack/envtest-assets.sh) and helm (SSER_HELM or
// PATH); without them it skips, unless SSER_REQUIRE_REAL=1.
package helm
