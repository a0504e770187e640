package chart

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestManifestsAreNotHelmObjects: the plain manifests say they are managed
// by kustomize, so they carry nothing of Helm's (no helm.sh/chart label, no
// managed-by Helm, no Helm hooks such as the `helm test` Pod), anywhere in an
// object, the pod template included.
func TestManifestsAreNotHelmObjects(t *testing.T) {
	root := filepath.Join(RepoRoot(t), "manifests")
	var objects int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, err := Decode(data)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		rel, _ := filepath.Rel(RepoRoot(t), path)
		for _, o := range objs {
			objects++
			walkStrings(o.Object, "", func(field, key, value string) {
				if strings.HasPrefix(key, "helm.sh/") || (key == "app.kubernetes.io/managed-by" && value != "kustomize") {
					t.Errorf("%s: %s %s has %s%s: %s", rel, o.GetKind(), o.GetName(), field, key, value)
				}
			})
			if o.GetKind() == "Pod" {
				t.Errorf("%s: a bare Pod %s (the chart's `helm test` hook?)", rel, o.GetName())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if objects == 0 {
		t.Fatalf("no objects under %s", root)
	}
	// Objects not labelled at all would pass the walk above trivially.
	objs := mustReadObjects(t, filepath.Join(root, "base", "deployment.yaml"))
	d := Find(objs, "Deployment", "sser")
	if d == nil {
		t.Fatal("manifests/base/deployment.yaml has no Deployment sser")
	}
	for _, path := range [][]string{{"metadata", "labels"}, {"spec", "template", "metadata", "labels"}} {
		l, _, _ := unstructured.NestedStringMap(d.Object, path...)
		if l["app.kubernetes.io/managed-by"] != "kustomize" {
			t.Errorf("Deployment %s: %v, want app.kubernetes.io/managed-by: kustomize", strings.Join(path, "."), l)
		}
	}
}

// walkStrings calls f for every string value in v whose map key is known,
// with the path of the map holding it.
func walkStrings(v any, field string, f func(field, key, value string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok {
				f(field, k, s)
				continue
			}
			walkStrings(x, field+k+".", f)
		}
	case []any:
		for _, x := range v {
			walkStrings(x, field+"[].", f)
		}
	}
}

func mustReadObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}
