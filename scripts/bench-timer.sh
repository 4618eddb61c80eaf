#!/usr/bin/env bash
# Timer messages: N timer messages (default 1,000,000, 128-byte bodies) due at times spread
# evenly over SPREAD seconds (default 60), the spread starting AFTER seconds (default 30) after
# the producer starts so that all are stored before the first is due. Reports the broker's
# memory before the sends and while they all wait (VmRSS, and RssAnon: the heap, where the
# timer wheel lives; RssFile is the mapped CommitLog), and the delivery lateness a consumer
# sees (consume time minus TIMER_OUT_MS). A separate `apogee namesrv` and `apogee broker`
# (default timerPrecisionMs=1000) on 127.0.0.1, from a release build.
#   usage: scripts/bench-timer.sh [N] [SPREAD] [AFTER]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
SPREAD="${2:-60}"
AFTER="${3:-30}"
cargo build -q --release -p apogee-cli
B="$PWD/target/release/apogee"

read -r ns_port b_port b_ha < <(python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
dir=$(mktemp -d)
ns="127.0.0.1:$ns_port"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

RUST_LOG=warn "$B" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 & pids+=($!)
printf '%s\n' brokerClusterName=BenchCluster brokerName=bench-timer brokerId=0 \
  "listenPort=$b_port" "haListenPort=$b_ha" "storePathRootDir=$dir/store" "namesrvAddr=$ns" \
  brokerIP1=127.0.0.1 fastListenPort=0 metricsPromExporterPort=0 >"$dir/broker.conf"
RUST_LOG=warn "$B" broker -c "$dir/broker.conf" >"$dir/broker.log" 2>&1 & broker=$!
pids+=("$broker")
for _ in $(seq 1 100); do
  if "$B" admin clusterList -n "$ns" 2>/dev/null | grep -q ":$b_port"; then break; fi
  sleep 0.1
done
"$B" admin updateTopic -n "$ns" -c BenchCluster -t BenchTimer -r 8 -w 8 >/dev/null

mem() { # VmRSS RssAnon RssFile of the broker, in MiB
  awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s %.0f MiB  ", $1, $2 / 1024 }' "/proc/$broker/status"
}
echo "broker before sends:     $(mem)"

"$B" bench consume -n "$ns" --topic BenchTimer --group bench_timer --timer --count "$N" \
  --concurrency 8 --json >"$dir/consume.json" 2>/dev/null &
consumer=$!
pids+=("$consumer")
sleep 3 # the consumer's first rebalance

echo "produce: $("$B" bench produce -n "$ns" --topic BenchTimer --size 128 --concurrency 64 \
  --count "$N" --timer-spread-secs "$SPREAD" --timer-after-secs "$AFTER" --json 2>/dev/null | tail -n 1)"
echo "broker with all waiting: $(mem)"
peak=0
while kill -0 "$consumer" 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$broker/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
  sleep 1
done
wait "$consumer" || true
echo "broker peak VmRSS while delivering: $((peak / 1024)) MiB"
echo "lateness (consume time - TIMER_OUT_MS): $(tail -n 1 "$dir/consume.json")"
