package chart

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLint runs `helm lint --strict` with the default values and with every
// values file the repository ships for the chart.
func TestLint(t *testing.T) {
	ci, err := filepath.Glob(filepath.Join(ChartDir(t), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ci) == 0 {
		t.Fatal("no charts/sser/ci/*-values.yaml files")
	}
	files := append([]string{""}, ci...)
	files = append(files, filepath.Join(RepoRoot(t), "examples", "sidecar", "values.yaml"))
	for _, f := range files {
		name := "defaults"
		if f != "" {
			name, _ = filepath.Rel(RepoRoot(t), f)
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", ChartDir(t)}
			if f != "" {
				args = append(args, "--values", f)
			}
			out, err := Run(t, Helm(t), args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), "0 chart(s) failed") {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
		})
	}
}
