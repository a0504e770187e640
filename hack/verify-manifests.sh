#!/usr/bin/env bash
# Fails when manifests/ differs from what hack/gen-manifests.sh renders from
# the chart now (run `make manifests` and commit the result).
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT

cp -r "${root}/manifests" "${tmp}/manifests"
"${root}/hack/gen-manifests.sh" "${tmp}/manifests"
if ! diff -ru "${root}/manifests" "${tmp}/manifests"; then
  echo "manifests/ is stale: run 'make manifests' and commit the result" >&2
  exit 1
fi
echo "manifests/ is up to date" >&2
