#!/usr/bin/env bash
# POP consumption benchmark: a release `apogee namesrv` and broker on 127.0.0.1, a backlog of
# MESSAGES 1 KiB messages produced first (`apogee bench produce --count`), then CONSUMERS simple
# consumers pop (32 at a time) and ack every message (`apogee bench consume --pop --count`).
# Prints both summaries and the broker's CPU per popped+acked message (user + system time from
# /proc/<pid>/stat over the consume run, in microseconds).
#   usage: scripts/bench-pop.sh [MESSAGES] [CONSUMERS]   (default 400000, 8)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-400000}"
CONSUMERS="${2:-8}"
cargo build -q --release -p apogee-cli
B="$PWD/target/release/apogee"
TICK=$(getconf CLK_TCK)
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

read -r ns_port b_port < <(python3 -c '
import socket
s=[socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
ns="127.0.0.1:$ns_port"
RUST_LOG=warn "$B" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 & pids+=($!)
printf '%s\n' brokerClusterName=BenchCluster brokerName=bench-pop "listenPort=$b_port" \
  "storePathRootDir=$dir/store" "namesrvAddr=$ns" brokerIP1=127.0.0.1 fastListenPort=0 \
  haListenPort=0 metricsExporterType=DISABLE >"$dir/b.conf"
RUST_LOG=warn "$B" broker -c "$dir/b.conf" >"$dir/b.log" 2>&1 &
broker=$!
pids+=($broker)
up=""
for _ in $(seq 1 600); do
  if "$B" admin clusterList -n "$ns" 2>/dev/null | grep -q ":$b_port"; then
    up=yes
    break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "the broker did not register within 60 s; its log:" >&2
  cat "$dir/b.log" >&2
  exit 1
fi
"$B" admin updateTopic -n "$ns" -c BenchCluster -t BenchPop -r 8 -w 8 >/dev/null
sleep 1
"$B" bench produce -n "$ns" --topic BenchPop --size 1024 --concurrency 64 --count "$COUNT"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(cpu_ticks "$broker")
"$B" bench consume --pop -n "$ns" --topic BenchPop --concurrency "$CONSUMERS" --count "$COUNT" \
  --group bench_pop
after=$(cpu_ticks "$broker")
python3 -c "print('broker CPU per popped+acked message: %.1f us' % (($after - $before) / $TICK * 1e6 / $COUNT))"
