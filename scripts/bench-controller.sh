#!/usr/bin/env bash
# Send throughput of a 3-replica group in controller mode with allAckInSyncStateSet=true (a
# send is answered once all three replicas have it) against the same three brokers in plain
# ASYNC_MASTER (a master and two slaves, answered once stored on the master), with
# `apogee bench produce --size 1024 --concurrency 64`. Everything runs on 127.0.0.1, on ports
# free when the script starts, from a release build. Prints one JSON line per setup and the
# ratio (goal: controller mode >= 0.5 of ASYNC_MASTER).
#   usage: scripts/bench-controller.sh [SECONDS]      (default 10 per setup)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CARGO_INCREMENTAL=0 cargo build -q --release -p apogee-cli
B="$PWD/target/release/apogee"
TOPIC=BenchController

# ns, controller, then listen and HA ports of the three brokers.
free_ports() {
  python3 -c '
import socket
s=[socket.socket() for _ in range(8)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}

# run_setup controller|async: starts the NameServer (and the controller), three brokers,
# creates the topic on the master and prints the bench's JSON line.
run_setup() {
  local mode=$1 dir ns_port ctl_port ports pids=()
  dir=$(mktemp -d)
  read -r ns_port ctl_port p1 h1 p2 h2 p3 h3 < <(free_ports)
  local ns="127.0.0.1:$ns_port" ctl="127.0.0.1:$ctl_port"
  RUST_LOG=warn "$B" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 & pids+=($!)
  if [ "$mode" = controller ]; then
    printf '%s\n' controllerDLegerGroup=bench "controllerDLegerPeers=n0-$ctl" \
      controllerDLegerSelfId=n0 "controllerStorePath=$dir/controller" >"$dir/controller.conf"
    RUST_LOG=warn "$B" controller -c "$dir/controller.conf" >"$dir/controller.log" 2>&1 &
    pids+=($!)
  fi
  local i=0
  for pair in "$p1 $h1" "$p2 $h2" "$p3 $h3"; do
    read -r port ha <<<"$pair"
    local conf="$dir/b$i.conf"
    printf '%s\n' brokerClusterName=BenchCluster brokerName=bench-b1 "listenPort=$port" \
      "haListenPort=$ha" "storePathRootDir=$dir/b$i" "namesrvAddr=$ns" brokerIP1=127.0.0.1 \
      fastListenPort=0 >"$conf"
    if [ "$mode" = controller ]; then
      printf '%s\n' enableControllerMode=true "controllerAddr=$ctl" \
        allAckInSyncStateSet=true >>"$conf"
    elif [ $i = 0 ]; then
      printf '%s\n' brokerId=0 brokerRole=ASYNC_MASTER >>"$conf"
    else
      printf '%s\n' "brokerId=$i" brokerRole=SLAVE >>"$conf"
    fi
    RUST_LOG=warn "$B" broker -c "$conf" >"$dir/b$i.log" 2>&1 & pids+=($!)
    i=$((i + 1))
  done
  # Wait until the three brokers are registered (in controller mode: and all in sync).
  local ready=
  for _ in $(seq 1 300); do
    local list
    list=$("$B" admin clusterList -n "$ns" 2>/dev/null || true)
    if grep -q ":$p1" <<<"$list" && grep -q ":$p2" <<<"$list" && grep -q ":$p3" <<<"$list"; then
      if [ "$mode" != controller ] ||
        "$B" admin getSyncStateSet -a "$ctl" -b bench-b1 2>/dev/null |
        grep -qE '^#SyncStateSetNums\s+3$'; then
        ready=1
        break
      fi
    fi
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "$mode: the group did not come up (logs in $dir)"; exit 1; }
  "$B" admin updateTopic -n "$ns" -c BenchCluster -t "$TOPIC" -r 8 -w 8 >/dev/null
  "$B" bench produce -n "$ns" --topic "$TOPIC" --size 1024 --concurrency 64 \
    --duration "$SECS" --json 2>/dev/null | tail -n 1
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
}

tps() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["msgs_per_sec"])' "$1"; }

ctl=$(run_setup controller)
echo "controller mode, allAckInSyncStateSet=true, 3 replicas: $ctl"
async=$(run_setup async)
echo "ASYNC_MASTER + 2 slaves:                               $async"
python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"ratio {a/b:.2f} ({a:.0f} / {b:.0f} msg/s)")' \
  "$(tps "$ctl")" "$(tps "$async")"
