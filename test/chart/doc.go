// Package chart tests the Helm chart in charts/sser, the plain manifests in
// manifests/ and the sidecar example in examples/sidecar with the real tools
// they are used with: a real helm renders and lints them, and a real
// kube-apiserver (envtest) validates every object server-side and answers
// SubjectAccessReviews for the chart's ServiceAccount with its real RBAC
// authorizer.
//
// The package also exports the helpers the helm end-to-end test (e2e/helm)
// shares: finding helm, rendering the chart, decoding what it renders, and
// the skip-or-fail rule for missing real parts.
//
// Real parts are found through the environment: SSER_HELM (else helm on
// PATH), KUBEBUILDER_ASSETS (kube-apiserver and etcd, from
// hack/envtest-assets.sh) and kubectl on PATH for kustomize. A test that
// needs a missing part skips, unless SSER_REQUIRE_REAL=1, when it fails.
package chart
