#!/usr/bin/env bash
# Smoke test of the Docker image, for machines with Docker (CI here has none, so this is
# not run by `.ci/run`): builds the image, runs `doctor` as the image's non-root user,
# checks that only dumpcap holds capture capabilities, and runs one analysis over MCP's
# CLI path on a fixture mounted read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-pcap-analyzer-mcp-server:smoke}

docker build -t "$image" .

echo "== doctor (as the image's user)"
docker run --rm "$image" doctor

echo "== the user is not root, and dumpcap alone holds the capture capabilities"
[ "$(docker run --rm --entrypoint id "$image" -u)" != 0 ] || { echo "runs as root"; exit 1; }
docker run --rm --entrypoint getcap "$image" /usr/bin/dumpcap | grep -q cap_net_raw \
  || { echo "dumpcap lacks cap_net_raw"; exit 1; }

echo "== one tool on a fixture"
out=$(docker run --rm -v "$PWD/fixtures:/fixtures:ro" -e PCAP_ALLOWED_DIRS=/fixtures "$image" \
  call analyze_pcap_file '{"pcap_file":"/fixtures/zeek-wikipedia.pcap"}')
echo "$out" | grep -q '"status": "complete"' || { echo "$out"; echo "analysis did not complete"; exit 1; }
echo "docker smoke test passed"
