#!/usr/bin/env bash
# Measures send throughput of a master with one slave, as ASYNC_MASTER and as SYNC_MASTER, with
# `apogee bench produce` (1 KiB, 64 in flight). Everything runs on 127.0.0.1 from a release build.
#   usage: scripts/bench-replication.sh [SECONDS]      (default 10 per role)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
cargo build -q --release -p apogee-cli
B="$PWD/target/release/apogee"

free_ports() {
  python3 -c '
import socket
s=[socket.socket() for _ in range(5)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}

run_role() {
  local role=$1 dir ns_port m_port m_ha s_port s_ha
  dir=$(mktemp -d)
  read -r ns_port m_port m_ha s_port s_ha < <(free_ports)
  local ns="127.0.0.1:$ns_port" pids=()
  RUST_LOG=warn "$B" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 & pids+=($!)
  for id in 0 1; do
    local port=$m_port ha=$m_ha r=$role
    if [ "$id" = 1 ]; then port=$s_port; ha=$s_ha; r=SLAVE; fi
    printf '%s\n' brokerClusterName=BenchCluster brokerName=bench-b1 "brokerId=$id" \
      "brokerRole=$r" "listenPort=$port" "haListenPort=$ha" "storePathRootDir=$dir/b$id" \
      "namesrvAddr=$ns" brokerIP1=127.0.0.1 fastListenPort=0 >"$dir/b$id.conf"
    RUST_LOG=warn "$B" broker -c "$dir/b$id.conf" >"$dir/b$id.log" 2>&1 & pids+=($!)
  done
  # Wait until both brokers are registered.
  for _ in $(seq 1 100); do
    local list
    list=$("$B" admin clusterList -n "$ns" 2>/dev/null || true)
    if grep -q ":$m_port" <<<"$list" && grep -q ":$s_port" <<<"$list"; then break; fi
    sleep 0.1
  done
  "$B" admin updateTopic -n "$ns" -c BenchCluster -t BenchReplication -r 8 -w 8 >/dev/null
  printf '%-13s ' "$role"
  "$B" bench produce -n "$ns" --topic BenchReplication --size 1024 --concurrency 64 \
    --duration "$SECS" --json 2>/dev/null | tail -n 1
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
}

run_role ASYNC_MASTER
run_role SYNC_MASTER
