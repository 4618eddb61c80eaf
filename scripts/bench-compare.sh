#!/usr/bin/env bash
# The send-path benchmark of the README's table, pointed at any RocketMQ NameServer: Apogee's,
# or upstream's (Java 4.x/5.x) or another implementation's, so the same load measures each.
# It speaks only the RocketMQ remoting protocol (`apogee admin` and `apogee bench`).
#
#   usage: scripts/bench-compare.sh NAMESRV [CLUSTER] [SECS] [BACKLOG]
#     NAMESRV  host:port of the NameServer (required)
#     CLUSTER  the cluster to create the topic in (default DefaultCluster)
#     SECS     seconds per timed run (default 10)
#     BACKLOG  messages produced and then consumed from the start (default 1000000)
#   APOGEE=path/to/apogee skips the build; TOPIC (default bench_compare_<time>) names the
#   topic, created with 8 read and write queues on every broker of the cluster.
#
# Runs, in order, each printed as it ends and then as one table:
#   1. 1 KiB sync sends, 64 in flight                    (msg/s, p99)
#   2. the same at half of run 1's rate (--rate)         (p99 at half load)
#   3. batches of 32 x 1 KiB, 16 senders                 (MB/s)
#   4. a backlog of BACKLOG 1 KiB messages, then 8 consumers read it from the first offset
#      in a fresh group                                  (msg/s)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '5,12p' "$0" >&2
  exit 2
fi
NS="$1"
CLUSTER="${2:-DefaultCluster}"
SECS="${3:-10}"
BACKLOG="${4:-1000000}"
TOPIC="${TOPIC:-bench_compare_$(date +%s)}"
# shellcheck source=lib/apogee-bin.sh
source scripts/lib/apogee-bin.sh
command -v jq >/dev/null || { echo "bench-compare.sh needs jq" >&2; exit 2; }

"$APOGEE" admin updateTopic -n "$NS" -c "$CLUSTER" -t "$TOPIC" -r 8 -w 8 >/dev/null
# Let producers see the new route (a NameServer answers it once a broker registered it).
for _ in $(seq 1 100); do
  if "$APOGEE" admin topicRoute -n "$NS" -t "$TOPIC" >/dev/null 2>&1; then break; fi
  sleep 0.2
done

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# run LABEL ARGS...: one `apogee bench` with --json; appends "LABEL<TAB>json" to the table.
run() {
  local label="$1"
  shift
  echo "== $label: apogee bench $*" >&2
  local json
  json=$("$APOGEE" bench "$@" -n "$NS" --topic "$TOPIC" --size 1024 --json 2>/dev/null | tail -1)
  if ! jq -e . >/dev/null 2>&1 <<<"$json"; then
    echo "   no result (the bench failed)" >&2
    json='{}'
  fi
  printf '%s\t%s\n' "$label" "$json" >>"$out"
  jq -r '"   \(.msgs_per_sec // 0 | floor) msg/s, \(.mb_per_sec // 0) MB/s, p50 \(.p50_ms // "-") ms, p99 \(.p99_ms // "-") ms, errors \(.errors // "-")"' <<<"$json" >&2
}

run "1 KiB, 64 in flight" produce --concurrency 64 --duration "$SECS"
max=$(tail -1 "$out" | cut -f2 | jq -r '.msgs_per_sec // 0 | floor')
half=$((max / 2))
if [ "$half" -gt 0 ]; then
  run "1 KiB at half that rate ($half msg/s)" produce --concurrency 64 --rate "$half" --duration "$SECS"
fi
run "batches of 32 x 1 KiB, 16 senders" produce --concurrency 16 --batch 32 --duration "$SECS"
run "backlog of $BACKLOG (async sends)" produce --async --concurrency 64 --count "$BACKLOG"
run "consume the backlog, 8 consumers" consume --from first --group "bench_compare_$(date +%s%N)" \
  --count "$BACKLOG" --concurrency 8

echo
echo "NameServer $NS, cluster $CLUSTER, topic $TOPIC, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| run | msg/s | MB/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
while IFS=$'\t' read -r label json; do
  jq -r --arg l "$label" \
    '"| \($l) | \(.msgs_per_sec // 0 | floor) | \(.mb_per_sec // "-") | \(.p50_ms // "-") | \(.p99_ms // "-") | \(.errors // "-") |"' \
    <<<"$json"
done <"$out"
