#!/usr/bin/env bash
# Collects the CustomResourceDefinitions of the optional chart objects
# (ServiceMonitor, PodMonitor, PrometheusRule from prometheus-operator;
# HTTPRoute from Gateway API) so the chart tests can install them into
# envtest and dry-run the objects against their real schemas. Both projects
# publish their CRD YAML inside their Go modules, so they come from the Go
# module proxy, checksum-verified, like helm. Prints the directory as the
# last line of stdout; a no-op when it is already there.
#
#   PROMETHEUS_OPERATOR_VERSION, GATEWAY_API_VERSION   module versions
#   SSER_TOOLS_DIR   cache root (default $HOME/.cache/sser-tools)
set -o errexit -o nounset -o pipefail

PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
TOOLS_DIR="${SSER_TOOLS_DIR:-${HOME}/.cache/sser-tools}"
DEST="${TOOLS_DIR}/crds-prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}-gateway-api-${GATEWAY_API_VERSION}"

if [[ -f "${DEST}/.complete" ]]; then
  echo "${DEST}"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# module_dir MODULE@VERSION prints where the module's files are. Run outside
# the repository so its go.mod and go.sum are never touched.
module_dir() {
  (cd "${work}" && GOFLAGS=-mod=mod go mod download -json "$1") |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

po=$(module_dir "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}")
gw=$(module_dir "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}")
[[ -n ${po} && -n ${gw} ]] || { echo "go mod download did not give the CRD modules" >&2; exit 1; }

mkdir -p "${work}/crds"
for kind in servicemonitors podmonitors prometheusrules; do
  cp "${po}/example/prometheus-operator-crd/monitoring.coreos.com_${kind}.yaml" "${work}/crds/"
done
cp "${gw}/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" "${work}/crds/"
chmod u+w "${work}/crds"/*

mkdir -p "${TOOLS_DIR}"
rm -rf "${DEST}"
mv "${work}/crds" "${DEST}"
touch "${DEST}/.complete"
echo "${DEST}"
