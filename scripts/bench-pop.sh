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
# shellcheck source=lib/bench-pair.sh
source scripts/lib/bench-pair.sh
start_pair "$B" BenchCluster bench-pop
"$B" admin updateTopic -n "$ns" -c BenchCluster -t BenchPop -r 8 -w 8 >/dev/null
sleep 1
"$B" bench produce -n "$ns" --topic BenchPop --size 1024 --concurrency 64 --count "$COUNT"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(cpu_ticks "$broker")
"$B" bench consume --pop -n "$ns" --topic BenchPop --concurrency "$CONSUMERS" --count "$COUNT" \
  --group bench_pop
after=$(cpu_ticks "$broker")
python3 -c "print('broker CPU per popped+acked message: %.1f us' % (($after - $before) / $TICK * 1e6 / $COUNT))"
