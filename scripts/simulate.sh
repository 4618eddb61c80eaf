#!/usr/bin/env bash
# Seeded fault simulation (crates/it/tests/simulate.rs): N runs (default 10), each a separate
# test run with its own SIM_SEED (random, or FIRST, FIRST+1, ... when SIM_FIRST_SEED is set).
# Prints each seed's outcome and time, lists the failing seeds, exits non-zero if any failed.
# A failing seed's log is kept in target/simulate/<seed>.log; replay it with
#   SIM_SEED=<seed> cargo test -p apogee-it --test simulate -- --ignored seeded --nocapture
#   usage: scripts/simulate.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:-10}"
mkdir -p target/simulate
root=$(pwd)
# Build once, outside the timed runs; each run executes that binary (cargo runs tests in the
# package's directory, so do the same).
exe=$(cargo test -q -p apogee-it --test simulate --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.executable != null and .target.name == "simulate") | .executable')
[[ -x "$exe" ]] || { echo "build of the simulate test failed"; exit 2; }
failed=()
start=$(date +%s)
for i in $(seq 1 "$n"); do
  if [[ -n "${SIM_FIRST_SEED:-}" ]]; then
    seed=$((SIM_FIRST_SEED + i - 1))
  else
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  fi
  log="$root/target/simulate/$seed.log"
  t0=$(date +%s.%N)
  (cd crates/it && SIM_SEED="$seed" "$exe" --ignored --exact seeded --nocapture) >"$log" 2>&1
  rc=$?
  took=$(echo "$(date +%s.%N) - $t0" | bc)
  if [[ $rc -eq 0 ]]; then
    echo "seed $seed ok ${took}s"
    rm -f "$log"
  else
    echo "seed $seed FAILED ${took}s (log: $log)"
    failed+=("$seed")
  fi
done
echo "$n seeds in $(($(date +%s) - start))s, ${#failed[@]} failed${failed:+: ${failed[*]}}"
[[ ${#failed[@]} -eq 0 ]]
