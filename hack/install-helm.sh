#!/usr/bin/env bash
# Builds helm from the Go module proxy (no download service is needed) and caches
# it outside the repository, keyed by version, so every clone on this machine
# reuses it. Prints the binary's path as the last line of stdout. A no-op when
# the binary is already there.
#
#   HELM_VERSION   helm.sh/helm/v3 version to build (default below)
#   SSER_TOOLS_DIR cache root (default $HOME/.cache/sser-tools)
set -o errexit -o nounset -o pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
TOOLS_DIR="${SSER_TOOLS_DIR:-${HOME}/.cache/sser-tools}"
DEST_DIR="${TOOLS_DIR}/helm-${HELM_VERSION}"
DEST="${DEST_DIR}/helm"

if [[ -x "${DEST}" ]]; then
  echo "${DEST}"
  exit 0
fi

mkdir -p "${DEST_DIR}"
# Build into a private directory and rename at the end, so a concurrent or
# interrupted run never leaves a half-written binary at ${DEST}.
work="$(mktemp -d "${DEST_DIR}/.build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

echo "building helm ${HELM_VERSION} from the Go module proxy (a few minutes)..." >&2
# helm's Makefile stamps the Kubernetes version of its client-go into the
# binary; without it `helm template` and `helm lint` assume Kubernetes 1.20.
# (Run outside the repository so its go.mod and go.sum are never touched.)
gomod=$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
k8s_minor=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${gomod}")
[[ -n ${k8s_minor} ]] || { echo "cannot find k8s.io/client-go in ${gomod}" >&2; exit 1; }
# `go install pkg@version` builds with helm's own go.mod and go.sum, so the
# dependency set is exactly the one helm released and is checksum-verified.
# The ldflags are the ones helm's Makefile sets, so `helm version` is truthful.
cd "${work}"
GOBIN="${work}" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor} \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}" \
  "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2

mv "${work}/helm" "${DEST}"
"${DEST}" version --short >&2
echo "${DEST}"
