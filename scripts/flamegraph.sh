#!/usr/bin/env bash
# A CPU flame graph of the broker on the send path: a release `apogee namesrv` and `apogee
# broker` (metrics off) on free ports on 127.0.0.1, `apogee bench produce` (1 KiB, 64 in
# flight) against them, and `perf record -e cpu-clock --call-graph dwarf` on the broker process
# for SECS seconds in the middle of the run (this VM has no hardware counters). The SVG is
# drawn by `inferno` (crates.io; `cargo install inferno` when `inferno-flamegraph` is missing).
#   usage: scripts/flamegraph.sh OUT.svg [SECS] [TITLE]   (default 8 s)
#   APOGEE=path/to/apogee profiles that build (e.g. an older commit's) instead of building
#   this tree. docs/perf/ holds the graphs of the send path before and after issue 11's work.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/flamegraph.sh OUT.svg [SECS] [TITLE]}"
SECS="${2:-8}"
TITLE="${3:-apogee broker, 1 KiB sync sends, 64 in flight}"
# shellcheck source=lib/apogee-bin.sh
source scripts/lib/apogee-bin.sh
command -v perf >/dev/null || { echo "flamegraph.sh needs perf (Debian: linux-perf)" >&2; exit 2; }
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install -q inferno
fi
# shellcheck source=lib/bench-pair.sh
source scripts/lib/bench-pair.sh
start_pair "$APOGEE" FlameCluster flame
"$APOGEE" admin updateTopic -n "$ns" -c FlameCluster -t FlameTopic -r 8 -w 8 >/dev/null
"$APOGEE" bench produce -n "$ns" --topic FlameTopic --size 1024 --concurrency 64 \
  --duration $((SECS + 6)) >"$dir/bench.log" 2>&1 &
bench=$!
pids+=($bench)
sleep 3
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$dir/perf.data" -p "$broker" \
  -- sleep "$SECS" >/dev/null 2>&1
wait "$bench" || true
grep -E "throughput|latency" "$dir/bench.log" || true
perf script -i "$dir/perf.data" 2>/dev/null | inferno-collapse-perf >"$dir/folded"
# Frames narrower than a pixel are left out: they are unreadable and make the file large.
inferno-flamegraph --minwidth 1 --title "$TITLE" "$dir/folded" >"$OUT"
echo "wrote $OUT ($(wc -l <"$dir/folded") distinct stacks)"
