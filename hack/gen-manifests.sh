#!/usr/bin/env bash
# Renders the plain manifests in manifests/ from the Helm chart, so people who
# do not use Helm get exactly what the chart installs:
#
#   manifests/base/                      the chart with default values (release
#                                        "sser", namespace "sser"), one file per
#                                        template, NetworkPolicy included
#   manifests/components/autoscaling/    the chart's HorizontalPodAutoscaler
#
# One difference from the chart: the peer token's Secret is not rendered. A
# committed random token would be the same for everyone; the Deployment reads
# it from the Secret sser-peer-token, which each installation creates.
#
# The overlays under manifests/overlays/ are written by hand and only combine
# these. Usage: hack/gen-manifests.sh [OUTPUT_DIR]   (default: manifests)
# Helm is $SSER_HELM, else the one hack/install-helm.sh builds.
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-${root}/manifests}
helm=${SSER_HELM:-}
if [[ -z ${helm} ]]; then
  helm=$("${root}/hack/install-helm.sh" | tail -n1)
fi

release=sser
namespace=sser
header="# Generated from charts/sser by hack/gen-manifests.sh (make manifests). DO NOT EDIT."

# render VALUES... writes the chart's objects to stdout with helm's
# bookkeeping removed: managed-by says kustomize and there is no helm.sh/chart
# label (these objects are not a Helm release), and no `helm test` Pod (nor
# its NetworkPolicy rule). The "# Source:" comments are consumed by split below.
render() {
  "${helm}" template "${release}" "${root}/charts/sser" --namespace "${namespace}" --set tests.enabled=false "$@" |
    sed -e 's/app.kubernetes.io\/managed-by: Helm/app.kubernetes.io\/managed-by: kustomize/' \
      -e '/^ *helm\.sh\/chart: /d'
}

# split DIR: reads `helm template` output on stdin and writes one file per
# template (named after it) into DIR; prints the file names.
split() {
  awk -v dir="$1" -v header="${header}" '
    /^# Source: / { n = split($3, parts, "/"); file = dir "/" parts[n]
                    if (!(file in seen)) { seen[file] = 1; order[++count] = file; print header > file }
                    else { print "---" >> file }
                    next }
    /^---$/ { next }
    file != "" { print >> file }
    END { for (i = 1; i <= count; i++) { f = order[i]; sub(".*/", "", f); print f } }
  '
}

tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT

# Base: every object of a default install, plus its namespace.
mkdir -p "${tmp}/base"
render --set sser.peerToken.existingSecret=sser-peer-token | split "${tmp}/base" > "${tmp}/base.files"
cat > "${tmp}/base/namespace.yaml" <<YAML
${header}
apiVersion: v1
kind: Namespace
metadata:
  name: ${namespace}
YAML
{
  echo "${header}"
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - namespace.yaml"
  sort "${tmp}/base.files" | sed 's/^/  - /'
} > "${tmp}/base/kustomization.yaml"

# component NAME TEMPLATE VALUES...: the objects TEMPLATE renders when VALUES
# turn it on, as a kustomize Component.
component() {
  local name=$1 template=$2
  shift 2
  mkdir -p "${tmp}/components/${name}"
  render --show-only "templates/${template}" "$@" | split "${tmp}/components/${name}" > /dev/null
  {
    echo "${header}"
    echo "apiVersion: kustomize.config.k8s.io/v1alpha1"
    echo "kind: Component"
    echo "resources:"
    echo "  - ${template}"
  } > "${tmp}/components/${name}/kustomization.yaml"
}
component autoscaling hpa.yaml --set autoscaling.enabled=true
# The HPA owns the replica count; a fixed one in the Deployment would fight it.
cat >> "${tmp}/components/autoscaling/kustomization.yaml" <<'YAML'
patches:
  - target:
      group: apps
      version: v1
      kind: Deployment
      name: sser
    patch: |-
      - op: remove
        path: /spec/replicas
YAML

# (base has the NetworkPolicy: no components/network-policy is kept beside it.)
rm -rf "${out}/base" "${out}/components/network-policy" "${out}/components/autoscaling"
mkdir -p "${out}/components"
cp -r "${tmp}/base" "${out}/base"
cp -r "${tmp}/components/autoscaling" "${out}/components/"
echo "manifests written to ${out}" >&2
