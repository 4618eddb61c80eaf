#!/usr/bin/env bash
# Soak: N kill -9 cycles (default 100) of a broker under continuous sends, once with
# flushDiskType=SYNC_FLUSH (the restarted master must hold every acknowledged message) and once
# with SYNC_MASTER + a slave (the slave must hold them after each kill, the restarted master
# too). Brokers run as child processes with no shutdown path (crates/it/tests/soak.rs).
# A process kill leaves the page cache alone: this checks crash recovery, not power loss.
#   usage: scripts/soak.sh [N]          (the full log goes to target/soak.log)
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
SOAK_CYCLES="${1:-100}" cargo test -q -p apogee-it --test soak -- --ignored --nocapture \
  --test-threads 1 >target/soak.log 2>&1
rc=$?
grep -E '^soak |panicked|test result' target/soak.log
exit $rc
