#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy (hack/tools/promtool,
# its go.sum committed) and caches it outside the repository, keyed by
# version, like helm. The chart tests run it to check the chart's alerting
# rules and to unit-test them. Prints the binary's path as the last line of
# stdout; a no-op when it is already there. The first build takes a few
# minutes (promtool links every Prometheus service discovery).
#
#   SSER_TOOLS_DIR cache root (default $HOME/.cache/sser-tools)
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module_dir="${root}/hack/tools/promtool"
version=$(sed -n 's/^[[:space:]]*github.com\/prometheus\/prometheus \(v[^ ]*\).*/\1/p' "${module_dir}/go.mod")
[[ -n ${version} ]] || { echo "no github.com/prometheus/prometheus in ${module_dir}/go.mod" >&2; exit 1; }
TOOLS_DIR="${SSER_TOOLS_DIR:-${HOME}/.cache/sser-tools}"
DEST_DIR="${TOOLS_DIR}/promtool-${version}"
DEST="${DEST_DIR}/promtool"

if [[ -x "${DEST}" ]]; then
  echo "${DEST}"
  exit 0
fi

mkdir -p "${DEST_DIR}"
# Build into a private directory and rename at the end, so a concurrent or
# interrupted run never leaves a half-written binary at ${DEST}.
work="$(mktemp -d "${DEST_DIR}/.build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

echo "building promtool ${version} from the Go module proxy (a few minutes the first time)..." >&2
start=${SECONDS}
# -mod=readonly: every module is verified against the committed go.sum.
(
  cd "${module_dir}"
  CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${version}" \
    -o "${work}/promtool" github.com/prometheus/prometheus/cmd/promtool
) >&2
mv "${work}/promtool" "${DEST}"
echo "built in $((SECONDS - start))s" >&2
"${DEST}" --version 2>&1 | sed -n 1p >&2
echo "${DEST}"
