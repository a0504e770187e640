#!/usr/bin/env bash
# Runs N sser replicas on this machine, no Kubernetes needed: each on its own
# loopback address (127.0.0.2, 127.0.0.3, ...) with the same ports and a
# static peer list, exactly as pods behind a Service. Ctrl-C drains and
# stops them all.
#
#   hack/local-cluster.sh [N]      (default 3; SSER_DRAIN_WINDOW=2s by default)
set -o errexit -o nounset -o pipefail

n=${1:-3}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${root}/bin/sser
(cd "${root}" && go build -o "${bin}" ./cmd/sser)

ips=()
for i in $(seq 2 $((n + 1))); do ips+=("127.0.0.${i}"); done
peers=$(IFS=,; echo "${ips[*]}")

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for ip in "${ips[@]}"; do
  SSER_DRAIN_WINDOW=${SSER_DRAIN_WINDOW:-2s} "${bin}" serve \
    --frontend-addr "${ip}:8000" --internal-addr "${ip}:7000" \
    --peer-finder static --peers "${peers}" --pod-ip "${ip}" --log-format text \
    > >(sed -u "s/^/[${ip}] /") 2>&1 &
  pids+=($!)
done

cat <<MSG
${n} replicas: ${ips[*]} (frontend :8000, internal :7000 on each)
  subscribe on one:  curl -N 'http://${ips[0]}:8000/events?stream=demo'
  publish on another: ${bin} pub --url http://${ips[$((n - 1))]}:7000 --stream demo hello
  demo page:         http://${ips[0]}:8000/
Ctrl-C stops them.
MSG
wait
