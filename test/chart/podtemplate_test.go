package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/diff"
)

// TestChartVersionBumpKeepsPodTemplate: an upgrade that changes nothing but
// the chart's version must leave the pod template as it is; any change there
// rolls every pod. The other objects do carry the new version
// (helm.sh/chart), which shows the bump took effect.
func TestChartVersionBumpKeepsPodTemplate(t *testing.T) {
	const bumpedVersion = "99.1.2-bump"
	bumped := filepath.Join(t.TempDir(), "sser")
	if err := os.CopyFS(bumped, os.DirFS(ChartDir(t))); err != nil {
		t.Fatal(err)
	}
	chartYAML := filepath.Join(bumped, "Chart.yaml")
	data, err := os.ReadFile(chartYAML)
	if err != nil {
		t.Fatal(err)
	}
	versionLine := regexp.MustCompile(`(?m)^version: .*$`)
	if !versionLine.Match(data) {
		t.Fatal("Chart.yaml has no version line")
	}
	if err := os.WriteFile(chartYAML, versionLine.ReplaceAll(data, []byte("version: "+bumpedVersion)), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"ci full values", []string{"-f", filepath.Join(ChartDir(t), "ci", "full-values.yaml")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := As[appsv1.Deployment](t, Find(MustTemplate(t, "sser", "sser-test", tc.args...), "Deployment", "sser"))
			objs, err := TemplateChart(t, bumped, "sser", "sser-test", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			after := As[appsv1.Deployment](t, Find(objs, "Deployment", "sser"))
			if got := after.Labels["helm.sh/chart"]; got != "sser-"+bumpedVersion {
				t.Fatalf("bumped chart's Deployment has helm.sh/chart=%q, want sser-%s", got, bumpedVersion)
			}
			if !equality.Semantic.DeepEqual(before.Spec.Template, after.Spec.Template) {
				t.Errorf("the pod template changes with the chart version alone:\n%s", diff.Diff(before.Spec.Template, after.Spec.Template))
			}
			if !equality.Semantic.DeepEqual(before.Spec.Selector, after.Spec.Selector) {
				t.Errorf("the selector changes with the chart version: %v vs %v", before.Spec.Selector, after.Spec.Selector)
			}
			meta := after.Spec.Template.ObjectMeta
			for _, m := range []map[string]string{meta.Labels, meta.Annotations} {
				for k, v := range m {
					if strings.HasPrefix(k, "helm.sh/") || strings.Contains(v, bumpedVersion) {
						t.Errorf("pod template carries %s=%s", k, v)
					}
				}
			}
		})
	}
}
