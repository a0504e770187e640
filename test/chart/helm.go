package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sser-dev/sser/internal/testproc"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// RequireReal skips t because a real part is missing, or fails it when
// SSER_REQUIRE_REAL=1 says every real part must be there (as in CI).
func RequireReal(t testing.TB, format string, args ...any) {
	t.Helper()
	testproc.RequireReal(t, format, args...)
}

// Helm returns the helm binary: $SSER_HELM, else helm on PATH. It skips (or
// fails, see RequireReal) when there is none.
func Helm(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SSER_HELM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("SSER_HELM=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	RequireReal(t, "helm not found: set SSER_HELM or run hack/install-helm.sh")
	return ""
}

// Kubectl returns kubectl from PATH (used for kustomize), skipping or failing
// when there is none.
func Kubectl(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("kubectl")
	if err != nil {
		RequireReal(t, "kubectl not found on PATH (needed for kubectl kustomize)")
	}
	return p
}

// EnvtestAssets returns $KUBEBUILDER_ASSETS when it holds kube-apiserver and
// etcd, skipping or failing otherwise.
func EnvtestAssets(t testing.TB, binaries ...string) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		RequireReal(t, "KUBEBUILDER_ASSETS not set: run hack/envtest-assets.sh")
	}
	for _, b := range append([]string{"kube-apiserver", "etcd"}, binaries...) {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			RequireReal(t, "KUBEBUILDER_ASSETS=%s has no %s: run hack/envtest-assets.sh", dir, b)
		}
	}
	return dir
}

// Promtool returns Prometheus's promtool: $SSER_PROMTOOL, else promtool on
// PATH. It skips (or fails, see RequireReal) when there is none.
func Promtool(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SSER_PROMTOOL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("SSER_PROMTOOL=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	RequireReal(t, "promtool not found: set SSER_PROMTOOL or run hack/install-promtool.sh")
	return ""
}

// CRDs returns $SSER_TEST_CRDS, the directory hack/test-crds.sh fills with
// the CustomResourceDefinitions of the chart's optional objects
// (ServiceMonitor, PodMonitor, PrometheusRule, HTTPRoute), or "" when it is
// not set; then a test that needs them calls RequireReal.
func CRDs(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SSER_TEST_CRDS")
	if dir == "" {
		return ""
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("SSER_TEST_CRDS=%s: %v", dir, err)
	}
	return dir
}

// RepoRoot is the repository's top directory, found from this file's path.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot find the source file of the chart test helpers")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ChartDir is charts/sser.
func ChartDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "charts", "sser")
}

// Run runs a command and returns its stdout; the error carries stderr.
func Run(t testing.TB, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// Template runs `helm template RELEASE charts/sser --namespace NAMESPACE
// ARGS...` and returns the rendered objects.
func Template(t testing.TB, release, namespace string, args ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	return TemplateChart(t, ChartDir(t), release, namespace, args...)
}

// TemplateChart is Template for the chart in dir (a modified copy of
// charts/sser, for example).
func TemplateChart(t testing.TB, dir, release, namespace string, args ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	out, err := Run(t, Helm(t), append([]string{"template", release, dir, "--namespace", namespace}, args...)...)
	if err != nil {
		return nil, err
	}
	return Decode(out)
}

// MustTemplate is Template that fails the test on error.
func MustTemplate(t testing.TB, release, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Template(t, release, namespace, args...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// Decode splits a multi-document YAML stream into objects, dropping empty
// documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read YAML document: %w", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("decode YAML document: %w\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Find returns the object of the given kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Kinds counts the objects by kind.
func Kinds(objs []*unstructured.Unstructured) map[string]int {
	n := map[string]int{}
	for _, o := range objs {
		n[o.GetKind()]++
	}
	return n
}

// As converts a rendered object into its typed form (for example
// *appsv1.Deployment), failing the test when it does not fit.
func As[T any](t testing.TB, obj *unstructured.Unstructured) *T {
	t.Helper()
	if obj == nil {
		t.Fatalf("want a %T, got no object", new(T))
	}
	out := new(T)
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, out, true); err != nil {
		t.Fatalf("%s %s does not decode strictly into %T: %v", obj.GetKind(), obj.GetName(), out, err)
	}
	return out
}
