#!/usr/bin/env bash
# A soak of one replica: SUBS subscribers (default 15,000) get RATE events/s
# (default 10) for SOAK_SECONDS (default 60), every event to every subscriber,
# while the server's RSS is sampled every SAMPLE (default 5s). Prints each
# run's samples and a table with the RSS growth from a third of the way in
# (after warm-up) to the end, which should be flat. Each run is bounded
# (sseload --duration) and the script stops by itself.
#
# Environment:
#   ROUNDS   runs per engine (default 1)
#   SUBS     subscribers (default 15000; needs a file limit above SUBS+100
#            for both processes)
#   RATE     events per second (default 10)
#   SOAK_SECONDS  how long events are published (default 60)
#   SAMPLE   RSS sampling interval (default 5s)
#   ENGINES  engines to run (default "sser")
#   BASE     a git revision: also run the sser library as it was there
#   BASE_BIN instead of BASE: an sseload already built against another
#            revision, run as "sser-base"
#   OUT      directory for runs.jsonl and table.md (default a new temp dir)
set -o errexit -o nounset -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${here}/lib.sh"
rounds="${ROUNDS:-1}"
subs="${SUBS:-15000}"
rate="${RATE:-10}"
seconds="${SOAK_SECONDS:-60}"
sample="${SAMPLE:-5s}"
read -r -a engines <<< "${ENGINES:-sser}"
base="${BASE:-}"
base_bin="${BASE_BIN:-}"
out="${OUT:-$(mktemp -d -t sser-soak.XXXXXX)}"
mkdir -p "${out}"
runs="${out}/runs.jsonl"
: > "${runs}"

if (( $(ulimit -n) < subs + 100 )); then
  echo "the file limit ($(ulimit -n)) is too low for ${subs} subscribers; raise it or lower SUBS" >&2
  exit 1
fi

tmp="$(mktemp -d -t sser-soak-tmp.XXXXXX)"
cleanup() {
  base_cleanup
  rm -rf "${tmp}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin="${out}/bin"
mkdir -p "${bin}"
(cd "${here}" && go build -o "${bin}/sseload" ./cmd/sseload && go build -o "${bin}/benchtable" ./cmd/benchtable)
if [[ -n "${base}" ]]; then
  base_worktree "${base}" "${tmp}/sser-base"
  cp -r "${here}/." "${tmp}/bench-base"
  (cd "${tmp}/bench-base" &&
    go mod edit -replace "github.com/sser-dev/sser=${tmp}/sser-base" &&
    go build -mod=mod -o "${bin}/sseload-base" ./cmd/sseload)
  engines+=(sser-base)
elif [[ -n "${base_bin}" ]]; then
  cp "${base_bin}" "${bin}/sseload-base"
  engines+=(sser-base)
fi

label="soak ${subs} subs @ ${rate} ev/s for ${seconds}s"
events=$(( rate * seconds ))
for (( r = 0; r < rounds; r++ )); do
  for e in "${engines[@]}"; do
    cmd=("${bin}/sseload" --engine "${e}")
    if [[ "${e}" == sser-base ]]; then
      cmd=("${bin}/sseload-base" --engine sser --engine-label sser-base)
    fi
    echo "round $(( r + 1 ))/${rounds}: ${e}" >&2
    # The connect phase and the drain of the last events get 3 minutes
    # beyond the publishing.
    if line="$("${cmd[@]}" --json --label "${label}" --subs "${subs}" --events "${events}" --rate "${rate}" \
      --rss-every "${sample}" --duration "$(( seconds + 180 ))s")"; then
      echo "${line}" >> "${runs}"
      echo "${line}" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  complete %s, %d of %d deliveries, p50 %.1f ms, p99 %.1f ms" % (r["complete"], r["delivered"], r["expected"], r["p50Ms"], r["p99Ms"]))
print("  published %d events in %.1f s: %.1f events/s (asked %g; below it, the machine could not keep up)" % (r["published"], r["publishSeconds"], r["published"] / max(r["publishSeconds"], 1e-9), r["rate"]))
for s in r.get("samples", []):
    print("  %6.1fs  RSS %7.1f MiB  heap %7.1f MiB  %6d goroutines" % (s["sec"], s["rss"] / 2**20, s["heapAlloc"] / 2**20, s["goroutines"]))
print("  RSS growth after warm-up: %+.1f MiB (%+.1f%%)" % (r.get("rssGrowth", 0) / 2**20, r.get("rssGrowthPct", 0)))
' >&2 || true
    else
      echo "  ${e}: FAILED (see above)" >&2
    fi
  done
done
"${bin}/benchtable" < "${runs}" | tee "${out}/table.md"
echo "raw runs: ${runs}" >&2
