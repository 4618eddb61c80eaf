#!/usr/bin/env bash
# Send benchmark with metrics recorded (metricsExporterType=PROM, /metrics served and scraped
# once a second), without (DISABLE), and with metrics and ACL on (ACL: aclEnable=true, every
# request signed by the bench and checked by the broker): `apogee bench produce`, 1 KiB, 64 in
# flight, a fixed message count per run, the three modes in turn ROUNDS times (after one
# discarded warm-up run; every other round in reverse order). For each run it
# prints the bench's msg/s and p99, the broker's CPU per message (user + system time from
# /proc/<pid>/stat over the run, in microseconds) and the bench client's (from /usr/bin/time),
# which are steadier than msg/s on a shared machine. MODES=DISABLE is the plain send path.
#   usage: [MODES="PROM DISABLE ACL"] scripts/bench-metrics.sh [MESSAGES] [ROUNDS]
#          (default 400000, 3; MODES picks and orders the modes of each round)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-400000}"
ROUNDS="${2:-3}"
cargo build -q --release -p apogee-cli
B="$PWD/target/release/apogee"
TICK=$(getconf CLK_TCK)

free_ports() {
  python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local mode=$1 dir ns_port b_port m_port
  dir=$(mktemp -d)
  read -r ns_port b_port m_port < <(free_ports)
  local ns="127.0.0.1:$ns_port" pids=()
  RUST_LOG=warn "$B" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 & pids+=($!)
  local metrics=$mode creds=()
  printf '%s\n' brokerClusterName=BenchCluster brokerName=bench-m "listenPort=$b_port" \
    "storePathRootDir=$dir/store" "namesrvAddr=$ns" brokerIP1=127.0.0.1 fastListenPort=0 \
    haListenPort=0 "metricsPromExporterPort=$m_port" >"$dir/b.conf"
  if [ "$mode" = ACL ]; then
    metrics=PROM
    creds=(--access-key benchAdmin --secret-key benchSecret)
    mkdir -p "$dir/home/conf"
    printf '%s\n' 'accounts:' '  - accessKey: benchAdmin' '    secretKey: benchSecret' \
      '    admin: true' >"$dir/home/conf/plain_acl.yml"
    printf '%s\n' aclEnable=true "rocketmqHome=$dir/home" >>"$dir/b.conf"
  fi
  echo "metricsExporterType=$metrics" >>"$dir/b.conf"
  RUST_LOG=warn "$B" broker -c "$dir/b.conf" >"$dir/b.log" 2>&1 &
  local broker=$!
  pids+=($broker)
  local up=""
  for _ in $(seq 1 100); do
    if "$B" admin clusterList -n "$ns" "${creds[@]}" 2>/dev/null | grep -q ":$b_port"; then
      up=yes
      break
    fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "$mode: the broker did not register; its log:" >&2
    tail -n 5 "$dir/b.log" >&2
    kill "${pids[@]}" 2>/dev/null || true
    return 1
  fi
  "$B" admin updateTopic -n "$ns" -c BenchCluster -t BenchMetrics -r 8 -w 8 "${creds[@]}" >/dev/null
  local scraper=""
  if [ "$metrics" = PROM ]; then
    (while true; do curl -s "http://127.0.0.1:$m_port/metrics" >/dev/null || true; sleep 1; done) &
    scraper=$!
  fi
  local before after out
  before=$(cpu_ticks "$broker")
  out=$(/usr/bin/time -f 'client %U %S' -o "$dir/client.cpu" "$B" bench produce -n "$ns" \
    --topic BenchMetrics --size 1024 --concurrency 64 --count "$COUNT" --json "${creds[@]}" \
    2>/dev/null | tail -n 1)
  after=$(cpu_ticks "$broker")
  local client_cpu
  client_cpu=$(awk '/^client/ {print $2 + $3}' "$dir/client.cpu")
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
  python3 -c '
import json, sys
mode, before, after, tick, count, client, out = sys.argv[1:]
s = json.loads(out)
cpu_us = (int(after) - int(before)) / int(tick) * 1e6 / int(count)
client_us = float(client) * 1e6 / int(count)
p99 = s.get("p99_ms")
rate = s["msgs_per_sec"]
print(f"{mode:8} {rate:>10.0f} msg/s  p99 {p99} ms  broker {cpu_us:.1f} us CPU/msg"
      f"  bench client {client_us:.1f} us CPU/msg")
' "$mode" "$before" "$after" "$TICK" "$COUNT" "$client_cpu" "$out"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
}

# A run that fails to start (a port taken meanwhile) is tried again with other ports.
attempt() {
  for _ in 1 2 3; do
    run "$@" && return 0
  done
  return 1
}

# The first run after a build is slower (cold page cache and binary): one warm-up run, not
# printed. Odd rounds take the modes in reverse order, so no mode always runs first.
attempt DISABLE >/dev/null
read -r -a modes <<<"${MODES:-PROM DISABLE ACL}"
for round in $(seq 1 "$ROUNDS"); do
  order=("${modes[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#modes[@]} - 1; i >= 0; i--)); do order+=("${modes[$i]}"); done
  fi
  for mode in "${order[@]}"; do
    attempt "$mode"
  done
done
