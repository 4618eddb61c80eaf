#!/usr/bin/env bash
# The C++ client (PyPI `rocketmq` 0.4.4, `set_session_credentials`) and ali-ons 3.12.0
# (`accessKeyId`/`accessKeySecret`) against `apogee standalone --acl-home` (ACL 1.0 on): each
# produces and consumes N messages with a PUB|SUB account, and is refused with a wrong secret
# and on a topic its account may not write.
#   usage: scripts/compat-acl.sh [N]          (N defaults to 20)
# Uses the clients scripts/compat.sh installs (../shared/compat/install.sh, into $COMPAT_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20}"
COMPAT="${COMPAT_SRC:-../shared/compat}"
if [ ! -f "$COMPAT/install.sh" ]; then
  echo "compat-acl: $COMPAT not found; skipping" >&2
  exit 0
fi
bash "$COMPAT/install.sh" >/dev/null
DIR="${COMPAT_DIR:-${TMPDIR:-/tmp}/apogee-compat}"
cargo build -q -p apogee-cli
BIN=target/debug/apogee
WORK="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK" || true
}
trap cleanup EXIT

mkdir -p "$WORK/home/conf"
cat >"$WORK/home/conf/plain_acl.yml" <<'YAML'
accounts:
  - accessKey: compatApp
    secretKey: compatSecret
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - ACL_cpp=PUB|SUB
      - ACL_js=PUB|SUB
  - accessKey: compatAdmin
    secretKey: compatAdminSecret
    admin: true
YAML

read -r NS_PORT BROKER_PORT < <(python3 -c '
import socket
def free(port=0):
    s = socket.socket(); s.bind(("127.0.0.1", port)); return s
while True:
    ns, br = free(), free()
    try:
        ha = free(br.getsockname()[1] + 1); fast = free(br.getsockname()[1] - 2)
    except OSError:
        continue
    print(ns.getsockname()[1], br.getsockname()[1]); break')
NS="127.0.0.1:$NS_PORT"
RUST_LOG=warn "$BIN" standalone --data-dir "$WORK/data" --namesrv-port "$NS_PORT" \
  --broker-port "$BROKER_PORT" --metrics-port 0 --namesrv-metrics-port 0 --console-port 0 \
  --acl-home "$WORK/home" >"$WORK/standalone.log" 2>&1 &
PID=$!
ADMIN=(--access-key compatAdmin --secret-key compatAdminSecret)
for _ in $(seq 1 100); do
  "$BIN" admin clusterList -n "$NS" "${ADMIN[@]}" 2>/dev/null | grep -q ":$BROKER_PORT" && break
  sleep 0.1
done
for t in ACL_cpp ACL_js ACL_denied; do
  "$BIN" admin updateTopic -n "$NS" -c DefaultCluster -t "$t" -r 4 -w 4 "${ADMIN[@]}" >/dev/null
done

rc=0
run() { # expectation, then the client's command line
  local what=$1; shift
  if out=$("$@" 2>>"$WORK/clients.err"); then echo "ok   $what: $out"; else echo "FAIL $what: $out"; rc=1; fi
}
# ACL refusals the broker logged so far whose reason starts with $1.
refusals() {
  sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/standalone.log" | grep -c "request refused by ACL: $1" || true
}
# A refusal case: the client must fail (run) and the broker must have refused it for reason $2
# (the C++ client words every refused send as "No route info of this topic").
refused() {
  local what=$1 reason=$2 before after
  shift 2
  before=$(refusals "$reason")
  run "$what" "$@"
  after=$(refusals "$reason")
  if [ "$after" -le "$before" ]; then
    echo "FAIL $what: the broker logged no \"$reason\" refusal"
    rc=1
  fi
}
PY="$DIR/venv/bin/python"
JS=(env ALI_ONS_NODE_MODULES="$DIR/node_modules" node scripts/compat-acl/js_acl.js)
run "cpp produce+consume" "$PY" scripts/compat-acl/cpp_acl.py --namesrv "$NS" --topic ACL_cpp --ak compatApp --sk compatSecret --n "$N"
refused "cpp wrong secret refused" "Check signature failed" "$PY" scripts/compat-acl/cpp_acl.py --namesrv "$NS" --topic ACL_cpp --ak compatApp --sk wrongSecret --n 3 --expect-refusal
refused "cpp denied topic refused" "No default permission for topic:ACL_denied" "$PY" scripts/compat-acl/cpp_acl.py --namesrv "$NS" --topic ACL_denied --ak compatApp --sk compatSecret --n 3 --expect-refusal
run "ali-ons produce+consume" "${JS[@]}" --namesrv "$NS" --topic ACL_js --ak compatApp --sk compatSecret --n "$N"
refused "ali-ons wrong secret refused" "Check signature failed" "${JS[@]}" --namesrv "$NS" --topic ACL_js --ak compatApp --sk wrongSecret --n 3 --expect-refusal
refused "ali-ons denied topic refused" "No default permission for topic:ACL_denied" "${JS[@]}" --namesrv "$NS" --topic ACL_denied --ak compatApp --sk compatSecret --n 3 --expect-refusal
stored=$("$BIN" admin topicStatus -n "$NS" -t ACL_denied --json "${ADMIN[@]}" | python3 -c 'import json,sys; print(sum(q["max_offset"] for q in json.load(sys.stdin)))')
if [ "$stored" = 0 ]; then echo "ok   nothing stored in the denied topic"; else echo "FAIL $stored messages stored in the denied topic"; rc=1; fi
# The refusals the broker logged, by reason (the C++ client reports a refused send as
# "No route info of this topic"; its log and this count show the AclException behind it).
sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/standalone.log" | grep -o 'request refused by ACL: [^ ]* [^ ]* [^ ]* [^ ]* [^ ]*' \
  | sort | uniq -c || true
if [ "$rc" != 0 ]; then
  echo "--- client stderr"; tail -n 20 "$WORK/clients.err" || true
  echo "--- server log"; grep -i "acl" "$WORK/standalone.log" | tail -n 20 || true
fi
exit $rc
