package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sser-dev/sser/test/chart"
)

// cluster is a real control plane: kube-apiserver, etcd and the controllers
// a Deployment needs.
type cluster struct {
	cfg        *rest.Config
	client     kubernetes.Interface
	kubeconfig string // admin kubeconfig file, for helm
}

// kcmControllers are the kube-controller-manager controllers a helm install of
// the chart relies on: Deployments roll ReplicaSets, ReplicaSets create pods,
// the garbage collector removes what helm uninstall orphans and the
// disruption controller keeps the PDB's status. (The EndpointSlice controller
// is left out: EndpointSlice validation refuses the loopback pod IPs used
// here, so the Service proxies compute endpoints from the pods instead.)
var kcmControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"garbage-collector-controller",
	"disruption-controller",
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	assets := chart.EnvtestAssets(t, "kube-controller-manager")
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})

	admin, err := env.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatalf("add admin user: %v", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(admin.Config())
	if err != nil {
		t.Fatal(err)
	}

	startControllerManager(t, filepath.Join(assets, "kube-controller-manager"), kubeconfig, dir)
	return &cluster{cfg: admin.Config(), client: client, kubeconfig: kubeconfig}
}

func startControllerManager(t *testing.T, bin, kubeconfig, dir string) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--controllers="+strings.Join(kcmControllers, ","),
		"--concurrent-deployment-syncs=2",
		"--concurrent-replicaset-syncs=2",
		"--v=1",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kube-controller-manager: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("kube-controller-manager log (tail):\n%s", tail(string(b), 30))
			}
		}
	})
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
