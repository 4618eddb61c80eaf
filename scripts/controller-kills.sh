#!/usr/bin/env bash
# Controller mode under load, repeated kills (crates/it/tests/controller_load.rs): three
# controllers, b1 with three replicas (allAckInSyncStateSet=true), b2, a producer sending
# continuously and a push consumer failing every 3rd message once; b1's current master is
# SIGKILLed N times (default 20), restarted on its store after each kill. Prints the seed and a
# table: per kill, the time from SIGKILL to the first send b1's new master acknowledged,
# whether (and whom) the controllers elected, how long the restarted replica took from its
# start to rejoining the SyncStateSet, the bytes it cut, the sends that failed in the window,
# the duplicate consumptions; then the median and max failover time. Exits non-zero when a
# kill did not elect or an invariant failed (the whole log is then in target/controller-kills.log).
# Replay a seed with CONTROLLER_KILLS_SEED=<seed>.
#   usage: scripts/controller-kills.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
mkdir -p target
log="$(pwd)/target/controller-kills.log"
exe=$(CARGO_INCREMENTAL=0 cargo test -q -p apogee-it --test controller_load --no-run \
  --message-format=json 2>/dev/null |
  jq -r 'select(.executable != null and .target.name == "controller_load") | .executable')
[[ -x "$exe" ]] || { echo "build of the controller_load test failed"; exit 2; }
# Cargo runs tests in the package's directory; do the same.
(cd crates/it && CONTROLLER_KILLS="$n" "$exe" --exact sigkilled_masters_under_load \
  --nocapture) >"$log" 2>&1
rc=$?
grep -E '^CONTROLLER_KILLS_SEED=' "$log" | tail -n 1
sed -n '/^kill | killed id/,/^$/p' "$log"
if [[ $rc -ne 0 ]]; then
  grep -E "panicked at|^CONTROLLER_KILLS_SEED=.*:" "$log" | head -n 5
  echo "FAILED (rc $rc); log: $log"
fi
exit $rc
