#!/usr/bin/env bash
# Runs sser, a floor (a minimal net/http SSE writer), r3labs/sse and
# tmaxmax/go-sse side by side on loopback with bench/cmd/sseload, interleaved
# round by round (the machine is shared and noisy), and prints a Markdown
# table of medians with ratios to sser. With BASE=<git rev> the sser library
# as it was at that revision runs too, as the engine "sser-base".
#
# Scenarios: fan-out at max rate; latency at LAT_RATE (4 s of events) and at
# LAT2_RATE (5 s of events, 100-byte payload), each with the server's CPU
# time per delivery; idle connections; a reconnect storm (every subscriber
# reconnects at once with its Last-Event-ID and gets the 10 events it
# missed: reconnects per second).
#
# Environment:
#   ROUNDS     rounds per scenario (default 3)
#   EVENTS     events in the max-rate fan-out scenario (default 1000)
#   SUBS       subscribers in the fan-out and latency scenarios (default 1000)
#   LAT_RATE   events/s in the first latency scenario (default 25; go-sse's
#              ceiling with 1000 subscribers here is 60-90)
#   LAT2_RATE  events/s in the second latency scenario (default 200)
#   ID_ORIGINS other publishers in the id-size scenarios (default "0 10 50")
#   IDLE       idle connection counts to measure (default "1000 10000 15000";
#              15,000 needs a file limit above 15,100 for both processes)
#   STORM      subscribers in the reconnect storm (default 10000; 0: none)
#   ENGINES    engines to run (default "sser floor r3labs gosse")
#   BASE       a git revision: also measure the sser library as it was there
#   BASE_BIN   instead of BASE: an sseload already built against another
#              revision, run as "sser-base"
#   OUT        directory for runs.jsonl and table.md (default a new temp dir)
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${here}/lib.sh"
rounds="${ROUNDS:-3}"
events="${EVENTS:-1000}"
subs="${SUBS:-1000}"
lat_rate="${LAT_RATE:-25}"
lat_events=$(( lat_rate * 4 ))
lat2_rate="${LAT2_RATE:-200}"
lat2_events=$(( lat2_rate * 5 ))
lat2_payload=100
idle_counts="${IDLE:-1000 10000 15000}"
storm="${STORM:-10000}"
id_origins="${ID_ORIGINS:-0 10 50}"
read -r -a engines <<< "${ENGINES:-sser floor r3labs gosse}"
base="${BASE:-}"
base_bin="${BASE_BIN:-}"
out="${OUT:-$(mktemp -d -t sser-bench.XXXXXX)}"
mkdir -p "${out}"
runs="${out}/runs.jsonl"
: > "${runs}"

tmp="$(mktemp -d -t sser-bench-tmp.XXXXXX)"
cleanup() {
  base_cleanup
  rm -rf "${tmp}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin="${out}/bin"
mkdir -p "${bin}"
echo "building sseload and benchtable into ${bin}" >&2
(cd "${here}" && go build -o "${bin}/sseload" ./cmd/sseload && go build -o "${bin}/benchtable" ./cmd/benchtable)

if [[ -n "${base}" ]]; then
  # This bench module, built against the library at BASE: a copy of bench/
  # whose go.mod points at a worktree of that revision.
  base_worktree "${base}" "${tmp}/sser-base"
  cp -r "${here}/." "${tmp}/bench-base"
  echo "building sseload against ${base} into ${bin}/sseload-base" >&2
  (cd "${tmp}/bench-base" &&
    go mod edit -replace "github.com/sser-dev/sser=${tmp}/sser-base" &&
    go build -mod=mod -o "${bin}/sseload-base" ./cmd/sseload)
  engines+=(sser-base)
elif [[ -n "${base_bin}" ]]; then
  cp "${base_bin}" "${bin}/sseload-base"
  engines+=(sser-base)
fi

# one LABEL ENGINE ARGS... runs one measurement and appends its JSON line.
one() {
  local label="$1" engine="$2"
  shift 2
  local line cmd=("${bin}/sseload" --engine "${engine}")
  if [[ "${engine}" == sser-base ]]; then
    cmd=("${bin}/sseload-base" --engine sser --engine-label sser-base)
  fi
  if line="$("${cmd[@]}" --json --label "${label}" "$@")"; then
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
  for e in "${order[@]}"; do
    one "latency ${subs} subs @ ${lat2_rate} ev/s, ${lat2_payload} B" "${e}" --subs "${subs}" --events "${lat2_events}" \
      --rate "${lat2_rate}" --payload "${lat2_payload}" --duration 90s
  done
  for n in ${idle_counts}; do
    for e in "${order[@]}"; do
      one "idle ${n} conns" "${e}" --subs "${n}" --events 0 --duration 90s
    done
  done
  if (( storm > 0 )); then
    for e in "${order[@]}"; do
      [[ "${e}" == floor ]] && continue # it writes no ids: nothing to resume from
      one "reconnect storm ${storm} subs" "${e}" --subs "${storm}" --events 0 --reconnect --missed 10 --duration 120s
    done
  fi
  # Id size: the replica first hears of N other publishers (origins), each
  # on a stream of its own or all on the subscribers' stream; then 100
  # subscribers of one stream get 200 events. sser engines only.
  for o in ${id_origins}; do
    for on in own bench; do
      for e in "${order[@]}"; do
        [[ "${e}" == sser* ]] || continue
        one "ids: ${o} other origins on ${on/own/their own streams}" "${e}" --subs 100 --events 200 \
          --rate 200 --payload "${lat2_payload}" --origins "${o}" --origins-on "${on}" --duration 60s
      done
    done
  done
done
elapsed=$(( $(date +%s) - start ))

{
  if [[ -n "${base}${base_bin}" ]]; then
    echo "sser = $(git -C "${bench_root}" rev-parse --short HEAD)$(git -C "${bench_root}" diff --quiet HEAD -- . ':!bench' || echo ' plus uncommitted changes'), sser-base = ${base:-${base_bin}}"
  fi
  echo "${rounds} rounds, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(go version | cut -d' ' -f3), ${elapsed}s"
  echo
  "${bin}/benchtable" < "${runs}"
} | tee "${out}/table.md"
echo "raw runs: ${runs}" >&2
