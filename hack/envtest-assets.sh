#!/usr/bin/env bash
# Puts the control plane that envtest runs (kube-apiserver, etcd,
# kube-controller-manager) into a cache folder outside the repository and prints
# that folder as the last line on stdout, for KUBEBUILDER_ASSETS:
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh | tail -n1)"
#
# No download service is reachable where sser is tested, so kube-apiserver and
# kube-controller-manager are built from the Go module proxy (hack/tools/kube,
# go.sum committed) and etcd comes from Debian's etcd-server package. When the
# binaries are already there it does nothing. Progress goes to stderr.
set -o errexit -o nounset -o pipefail

KUBE_VERSION=v1.36.3

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${SSER_TOOLS_DIR:-$HOME/.cache/sser-tools}
dest=${tools_dir}/k8s-${KUBE_VERSION}

log() { echo "envtest-assets: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

find_etcd() {
  if [[ -x /usr/bin/etcd ]]; then echo /usr/bin/etcd; return; fi
  command -v etcd || true
}

mkdir -p "${dest}"
# Two runs at once (make test beside make e2e) must not build twice.
exec 9>"${dest}/.lock"
if command -v flock >/dev/null; then flock 9; fi

etcd_bin=$(find_etcd)
if [[ -z ${etcd_bin} ]]; then
  log "installing etcd-server from Debian"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >&2
  etcd_bin=$(find_etcd)
  [[ -n ${etcd_bin} ]] || { log "etcd not found after installing etcd-server"; exit 1; }
fi
ln -sfn "${etcd_bin}" "${dest}/etcd"

built() {
  local bin
  for bin in kube-apiserver kube-controller-manager; do
    [[ -x ${dest}/${bin} ]] || return 1
    [[ $("${dest}/${bin}" --version 2>/dev/null) == "Kubernetes ${KUBE_VERSION}" ]] || return 1
  done
}

if built; then
  log "kube-apiserver and kube-controller-manager ${KUBE_VERSION} already built"
else
  log "building kube-apiserver and kube-controller-manager ${KUBE_VERSION} (about 6-10 minutes on 2 cores the first time)"
  start=${SECONDS}
  # What `--version` and the /version endpoint report; the Kubernetes build
  # sets the same variables.
  minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  version_ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    version_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  tmp=$(mktemp -d "${dest}/.build.XXXXXX")
  trap 'rm -rf "${tmp}"' EXIT
  # -mod=readonly: every module is verified against the committed go.sum; the
  # checksum database is never asked (it does not answer for k8s.io/kubernetes).
  (
    cd "${root}/hack/tools/kube"
    CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" GONOSUMDB=k8s.io \
      go build -trimpath -ldflags="-s -w ${version_ldflags}" -o "${tmp}/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager
  ) >&2
  mv -f "${tmp}/kube-apiserver" "${tmp}/kube-controller-manager" "${dest}/"
  log "built in $((SECONDS - start))s"
fi

"${dest}/kube-apiserver" --version >&2
"${dest}/etcd" --version 2>&1 | sed -n 1p >&2
echo "${dest}"
