#!/usr/bin/env bash
# Measures meshes of real sser processes on loopback with bench/cmd/ssemesh,
# interleaved round by round with a rotating order (the machine is shared
# and noisy), and prints a Markdown table of medians, ranges and ratios to
# sser. With BASE=<git rev> the sser binary built at that revision runs
# too, as "sser-base", interleaved with the current one.
#
# Scenarios (payload 100 bytes, publishes round-robin over every replica):
#   cross N replicas  N = 1 and 3: CROSS_SUBS subscribers (default 100;
#                     1000 events/s to 1000 subscribers would be 1M
#                     deliveries/s, beyond a 2-core box) spread over
#                     them, CROSS_RATE events/s in total (1000) for
#                     CROSS_SECONDS (5): latency p50/p99, and the
#                     difference p99(3) − p99(1) taken round by round
#   mesh N replicas   N in MESH_NS (default "3 10 20 40"): MESH_SUBS
#                     subscribers (200), MESH_RATE events/s (100) for
#                     MESH_SECONDS (8): CPU per published event over all
#                     replicas, peer requests per event per peer, latency
#
# Environment: ROUNDS (default 3), the variables above, BASE, and OUT, a
# directory for runs.jsonl and table.md (default a new temp dir).
#
# "sser" is ./cmd/sser built from this working tree, uncommitted changes
# included (the table's header says when there are some).
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${here}/lib.sh"
rounds="${ROUNDS:-3}"
cross_subs="${CROSS_SUBS:-100}"
cross_rate="${CROSS_RATE:-1000}"
cross_seconds="${CROSS_SECONDS:-5}"
read -r -a mesh_ns <<< "${MESH_NS:-3 10 20 40}"
mesh_subs="${MESH_SUBS:-200}"
mesh_rate="${MESH_RATE:-100}"
mesh_seconds="${MESH_SECONDS:-8}"
payload=100
base="${BASE:-}"
out="${OUT:-$(mktemp -d -t sser-mesh.XXXXXX)}"
mkdir -p "${out}"
runs="${out}/runs.jsonl"
: > "${runs}"

tmp="$(mktemp -d -t sser-mesh-tmp.XXXXXX)"
cleanup() {
  base_cleanup
  rm -rf "${tmp}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin="${out}/bin"
mkdir -p "${bin}"
echo "building ssemesh, benchtable and sser into ${bin}" >&2
(cd "${here}" && go build -o "${bin}/ssemesh" ./cmd/ssemesh && go build -o "${bin}/benchtable" ./cmd/benchtable)
(cd "${bench_root}" && go build -o "${bin}/sser" ./cmd/sser)
engines=(sser)
if [[ -n "${base}" ]]; then
  base_worktree "${base}" "${tmp}/sser-base"
  echo "building sser at ${base} into ${bin}/sser-base" >&2
  (cd "${tmp}/sser-base" && go build -o "${bin}/sser-base" ./cmd/sser)
  engines+=(sser-base)
fi

# one LABEL ENGINE ROUND ARGS... runs one measurement and appends its JSON
# line; on failure it shows what ssemesh said (with the replicas' log tails).
one() {
  local label="$1" engine="$2" round="$3"
  shift 3
  local line err="${tmp}/ssemesh.err"
  if line="$("${bin}/ssemesh" --json --label "${label}" --engine "${engine}" --round "${round}" \
    --sser-bin "${bin}/${engine}" --payload "${payload}" "$@" 2> "${err}")"; then
    echo "${line}" >> "${runs}"
    echo "  ${label} ${engine}: ok" >&2
  else
    sed 's/^/    /' "${err}" >&2
    echo "  ${label} ${engine}: FAILED (above); the table will miss this run" >&2
  fi
}

start=$(date +%s)
for (( r = 0; r < rounds; r++ )); do
  # Rotate the order each round so no binary, and no replica count, always
  # runs first or last.
  order=()
  for (( i = 0; i < ${#engines[@]}; i++ )); do
    order+=("${engines[$(( (i + r) % ${#engines[@]} ))]}")
  done
  cross=(1 3)
  if (( r % 2 == 1 )); then cross=(3 1); fi
  ns=()
  for (( i = 0; i < ${#mesh_ns[@]}; i++ )); do
    ns+=("${mesh_ns[$(( (i + r) % ${#mesh_ns[@]} ))]}")
  done
  echo "round $(( r + 1 ))/${rounds}: ${order[*]}; cross ${cross[*]}; mesh ${ns[*]}" >&2
  for n in "${cross[@]}"; do
    label="cross ${n} replicas"
    if (( n == 1 )); then label="cross 1 replica"; fi
    for e in "${order[@]}"; do
      one "${label}" "${e}" "$(( r + 1 ))" --replicas "${n}" --subs "${cross_subs}" \
        --rate "${cross_rate}" --duration "${cross_seconds}s"
    done
  done
  for n in "${ns[@]}"; do
    for e in "${order[@]}"; do
      one "mesh ${n} replicas" "${e}" "$(( r + 1 ))" --replicas "${n}" --subs "${mesh_subs}" \
        --rate "${mesh_rate}" --duration "${mesh_seconds}s"
    done
  done
done
elapsed=$(( $(date +%s) - start ))

{
  dirty=""
  git -C "${bench_root}" diff --quiet HEAD -- . ':!bench' || dirty=" plus uncommitted changes"
  echo -n "sser = $(git -C "${bench_root}" rev-parse --short HEAD)${dirty}"
  if [[ -n "${base}" ]]; then echo -n ", sser-base = ${base}"; fi
  echo
  echo "cross: ${cross_subs} subscribers, ${cross_rate} events/s for ${cross_seconds}s; mesh: ${mesh_subs} subscribers, ${mesh_rate} events/s for ${mesh_seconds}s; payload ${payload} B"
  echo "${rounds} rounds, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(go version | cut -d' ' -f3), ${elapsed}s"
  echo
  "${bin}/benchtable" -diff "cross 3 replicas;cross 1 replica" < "${runs}"
} | tee "${out}/table.md"
echo "raw runs: ${runs}" >&2
