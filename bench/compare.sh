#!/usr/bin/env bash
# Runs sser, r3labs/sse and tmaxmax/go-sse side by side on loopback with
# bench/cmd/sseload, interleaved round by round (the machine is shared and
# noisy), and prints a Markdown table of medians with ratios to sser.
#
# Environment:
#   ROUNDS    rounds per scenario (default 3)
#   EVENTS    events in the max-rate fan-out scenario (default 1000)
#   SUBS      subscribers in the fan-out and latency scenarios (default 1000)
#   LAT_RATE  events/s in the latency scenario (default 25; go-sse's ceiling
#             with 1000 subscribers here is 60-90)
#   IDLE      idle connection counts to measure (default "100 1000 10000")
#   OUT       directory for runs.jsonl and table.md (default a new temp dir)
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${ROUNDS:-3}"
events="${EVENTS:-1000}"
subs="${SUBS:-1000}"
lat_rate="${LAT_RATE:-25}"
lat_events=$(( lat_rate * 4 ))
idle_counts="${IDLE:-100 1000 10000}"
out="${OUT:-$(mktemp -d -t sser-bench.XXXXXX)}"
mkdir -p "${out}"
runs="${out}/runs.jsonl"
: > "${runs}"

bin="${out}/bin"
mkdir -p "${bin}"
echo "building sseload and benchtable into ${bin}" >&2
(cd "${here}" && go build -o "${bin}/sseload" ./cmd/sseload && go build -o "${bin}/benchtable" ./cmd/benchtable)

engines=(sser r3labs gosse)

# one LABEL ENGINE ARGS... runs one measurement and appends its JSON line.
one() {
  local label="$1" engine="$2"
  shift 2
  local line
  if line="$("${bin}/sseload" --json --label "${label}" --engine "${engine}" "$@")"; then
    echo "${line}" >> "${runs}"
    echo "  ${label} ${engine}: ok" >&2
  else
    echo "  ${label} ${engine}: FAILED (see above); the table will miss this run" >&2
  fi
}

start=$(date +%s)
for (( r = 0; r < rounds; r++ )); do
  # Rotate the order each round so no engine always runs first or last.
  order=()
  for (( i = 0; i < ${#engines[@]}; i++ )); do
    order+=("${engines[$(( (i + r) % ${#engines[@]} ))]}")
  done
  echo "round $(( r + 1 ))/${rounds}: ${order[*]}" >&2
  for e in "${order[@]}"; do
    # sser never blocks the publisher; at full speed its per-subscriber
    # queue must hold everything published ahead of the slowest reader,
    # or that reader is disconnected (by design). The others block Publish.
    one "fanout ${subs} subs, max rate" "${e}" --subs "${subs}" --events "${events}" \
      --sser-queue $(( events * 2 )) --duration 90s
  done
  for e in "${order[@]}"; do
    one "latency ${subs} subs @ ${lat_rate} ev/s" "${e}" --subs "${subs}" --events "${lat_events}" \
      --rate "${lat_rate}" --duration 60s
  done
  for n in ${idle_counts}; do
    for e in "${order[@]}"; do
      one "idle ${n} conns" "${e}" --subs "${n}" --events 0 --duration 60s
    done
  done
done
elapsed=$(( $(date +%s) - start ))

{
  echo "${rounds} rounds, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(go version | cut -d' ' -f3), ${elapsed}s"
  echo
  "${bin}/benchtable" < "${runs}"
} | tee "${out}/table.md"
echo "raw runs: ${runs}" >&2
