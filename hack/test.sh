#!/usr/bin/env bash
# Runs every test against real parts: builds (or reuses) the control plane and
# helm, builds the sser binary once for all process-based tests, and makes any
# test that would skip for want of a real part fail instead.
set -o errexit -o nounset -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(hack/envtest-assets.sh | tail -n1)}
SSER_HELM=${SSER_HELM:-$(hack/install-helm.sh | tail -n1)}
# CRDs of the chart's optional objects, for the chart's server-side dry-run.
SSER_TEST_CRDS=${SSER_TEST_CRDS:-$(hack/test-crds.sh | tail -n1)}
# promtool checks and unit-tests the chart's alerting rules.
SSER_PROMTOOL=${SSER_PROMTOOL:-$(hack/install-promtool.sh | tail -n1)}
# Headless Chromium drives a real browser EventSource in e2e/lossless.
SSER_CHROMIUM=${SSER_CHROMIUM:-$(hack/install-chromium.sh | tail -n1)}
export KUBEBUILDER_ASSETS SSER_HELM SSER_CHROMIUM SSER_TEST_CRDS SSER_PROMTOOL
export SSER_REQUIRE_REAL=${SSER_REQUIRE_REAL:-1}

# One race-enabled binary shared by every package that starts replicas.
mkdir -p .cache
go build -race -o .cache/sser ./cmd/sser
export SSER_BIN=${root}/.cache/sser

echo "test: KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} SSER_HELM=${SSER_HELM} SSER_CHROMIUM=${SSER_CHROMIUM} SSER_TEST_CRDS=${SSER_TEST_CRDS} SSER_PROMTOOL=${SSER_PROMTOOL}" >&2
# -p 2: the process-based suites each start several replicas and a control
# plane; more at once on two cores only makes every one of them slower.
go test -race -count=1 -p 2 -timeout 40m "$@" ./...
# Other projects' SSE clients against sser (a module of its own).
if [[ $# -eq 0 ]]; then
  (cd test/interop && go test -race -count=1 ./...)
fi
