#!/usr/bin/env bash
# Installs headless Chromium from Debian (package chromium) for the browser
# EventSource test in e2e/lossless. Prints the binary's path as the last line
# of stdout. A no-op when it is already installed. Needs root (CI runs as root).
#
#   SSER_CHROMIUM  use this binary instead (nothing is installed)
set -o errexit -o nounset -o pipefail

if [[ -n "${SSER_CHROMIUM:-}" ]]; then
  echo "${SSER_CHROMIUM}"
  exit 0
fi
for c in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [[ -x "${c}" ]]; then
    echo "${c}"
    exit 0
  fi
done

if [[ $(id -u) -ne 0 ]]; then
  echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
  exit 1
fi
echo "installing chromium from Debian (apt, about a minute)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y --no-install-recommends chromium fonts-liberation >&2
echo /usr/bin/chromium
