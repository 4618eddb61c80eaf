#!/usr/bin/env bash
# 5.x gRPC endpoint benchmark: a release `apogee standalone` on free ports on 127.0.0.1, then
#  1. ROUNDS rounds of 1 KiB sends by 64 senders (64 in flight), SECS seconds each, remoting and gRPC
#     alternating (same process, same topic), summaries side by side;
#  2. a backlog of MESSAGES 1 KiB messages, then CONSUMERS gRPC consumers receive (32 at a
#     time) and ack every one of them through the proxy (`bench consume --protocol grpc`).
#   usage: scripts/bench-grpc.sh [ROUNDS] [SECS] [MESSAGES] [CONSUMERS]   (default 3 10 200000 8)
#   APOGEE=path/to/apogee skips the build; BENCH_TLS=1 runs the gRPC sends over TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-10}"
COUNT="${3:-200000}"
CONSUMERS="${4:-8}"
# shellcheck source=lib/apogee-bin.sh
source scripts/lib/apogee-bin.sh
TLS=()
if [ -n "${BENCH_TLS:-}" ]; then TLS=(--tls-insecure); fi
dir=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

read -r ns_port b_port g_port < <(python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
ns="127.0.0.1:$ns_port"
grpc="127.0.0.1:$g_port"
RUST_LOG=warn "$APOGEE" standalone --data-dir "$dir/data" --namesrv-port "$ns_port" \
  --broker-port "$b_port" --proxy-port "$g_port" --metrics-port 0 --namesrv-metrics-port 0 \
  --console-port 0 >"$dir/standalone.log" 2>&1 &
pid=$!
up=""
for _ in $(seq 1 600); do
  if "$APOGEE" admin clusterList -n "$ns" 2>/dev/null | grep -q ":$b_port"; then
    up=yes
    break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "apogee standalone did not come up within 60 s; its log:" >&2
  cat "$dir/standalone.log" >&2
  exit 1
fi
echo "apogee standalone pid $pid: NameServer $ns, gRPC $grpc"
"$APOGEE" admin updateTopic -n "$ns" -c DefaultCluster -t BenchGrpc -r 8 -w 8 >/dev/null
"$APOGEE" admin updateTopic -n "$ns" -c DefaultCluster -t BenchGrpcBacklog -r 8 -w 8 >/dev/null
sleep 1
for r in $(seq 1 "$ROUNDS"); do
  for proto in remoting grpc; do
    extra=()
    if [ "$proto" = grpc ]; then extra=(--endpoint "$grpc" "${TLS[@]}"); fi
    echo "== round $r: $proto"
    "$APOGEE" bench produce -n "$ns" --protocol "$proto" "${extra[@]}" --topic BenchGrpc \
      --size 1024 --concurrency 64 --duration "$SECS"
  done
done
echo "== backlog: $COUNT messages"
"$APOGEE" bench produce -n "$ns" --topic BenchGrpcBacklog --size 1024 --async --concurrency 64 \
  --count "$COUNT"
echo "== consume --protocol grpc, $CONSUMERS consumers"
"$APOGEE" bench consume -n "$ns" --protocol grpc --endpoint "$grpc" "${TLS[@]}" \
  --topic BenchGrpcBacklog --concurrency "$CONSUMERS" --count "$COUNT" --group bench_grpc
