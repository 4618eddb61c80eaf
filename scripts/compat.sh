#!/usr/bin/env bash
# Runs the two third-party RocketMQ clients in ../shared/compat (the C++ client and the
# JavaScript ali-ons) against `apogee standalone`: each produces N messages, consumes them in a
# fresh group, fails every 10th once so it is sent back, and must report ok. Then the official
# 5.x Python and Node.js clients produce and consume N messages through the standalone's gRPC
# endpoint (scripts/compat/grpc-python.sh, scripts/compat/grpc-node.sh), the Python one also
# over TLS.
#   usage: scripts/compat.sh [N]          (N defaults to 200)
# Needs python3 (with venv) and node/npm; installs the clients into $COMPAT_DIR (outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
COMPAT="${COMPAT_SRC:-../shared/compat}"
if [ ! -f "$COMPAT/run.sh" ]; then
  echo "compat: $COMPAT not found; skipping the third-party client check" >&2
  exit 0
fi

bash "$COMPAT/install.sh"
cargo build -q -p apogee-cli
BIN=target/debug/apogee

WORK="$(mktemp -d)"
PIDFILE="$WORK/pid"
cleanup() {
  if [ -f "$PIDFILE" ]; then
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    # Let the server finish its clean shutdown (it flushes the store) before removing its files.
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$WORK" || true
}
trap cleanup EXIT

# Free loopback ports for the NameServer and the broker (whose HA port is the next one up and
# whose fast port is two below).
free_ports() {
  python3 -c '
import socket
def free(port=0):
    s = socket.socket(); s.bind(("127.0.0.1", port)); return s
while True:
    ns, br, grpc = free(), free(), free()
    try:
        ha = free(br.getsockname()[1] + 1)
        fast = free(br.getsockname()[1] - 2)
    except OSError:
        continue
    print(ns.getsockname()[1], br.getsockname()[1], grpc.getsockname()[1]); break'
}

# A port picked above can be taken by another process before the server binds it: then the
# server exits, and it is started again on other ports.
started=""
for attempt in 1 2 3 4 5; do
  read -r NS_PORT BROKER_PORT GRPC_PORT < <(free_ports)
  NS="127.0.0.1:$NS_PORT"
  RUST_LOG=warn "$BIN" standalone --data-dir "$WORK/data$attempt" --namesrv-port "$NS_PORT" \
    --broker-port "$BROKER_PORT" --proxy-port "$GRPC_PORT" >"$WORK/standalone.log" 2>&1 &
  echo $! >"$PIDFILE"
  # Ready when the cluster list names the broker; give up on this try if the server exits.
  for _ in $(seq 1 100); do
    if "$BIN" admin clusterList -n "$NS" 2>/dev/null | grep -q ":$BROKER_PORT"; then
      started=yes
      break
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$started" ] && break
  echo "compat: standalone did not start (attempt $attempt):" >&2
  tail -n 5 "$WORK/standalone.log" >&2 || true
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  wait "$(cat "$PIDFILE")" 2>/dev/null || true
done
if [ -z "$started" ]; then
  echo "compat: FAILED to start apogee standalone" >&2
  exit 1
fi
for t in COMPAT_cpp COMPAT_js COMPAT_grpc COMPAT_grpc_tls COMPAT_grpc_node; do
  "$BIN" admin updateTopic -n "$NS" -c DefaultCluster -t "$t" -r 4 -w 4 >/dev/null
done
# A fresh FIFO group for the Node.js client; transaction checks every 3 s (from the end of the
# first 60 s wait) so its open transaction is checked back soon.
NODE_FIFO_GROUP="GID_grpc_node_fifo_$$"
"$BIN" admin updateSubGroup -n "$NS" -c DefaultCluster -g "$NODE_FIFO_GROUP" -o true >/dev/null
"$BIN" admin updateBrokerConfig -n "$NS" -c DefaultCluster -k transactionCheckInterval -v 3000 >/dev/null

rc=0
LOGDIR="$WORK/logs" bash "$COMPAT/run.sh" --namesrv "$NS" --n "$N" --timeout 120 || rc=$?
bash scripts/compat/grpc-python.sh "127.0.0.1:$GRPC_PORT" COMPAT_grpc "$N" || rc=$?
# Again over TLS: the gRPC port is permissive (plaintext and TLS) with a certificate for
# `localhost` generated at start; the client trusts it through gRPC's roots file.
python3 - "$GRPC_PORT" >"$WORK/grpc-cert.pem" <<'PY' || rc=$?
import ssl, sys
print(ssl.get_server_certificate(("127.0.0.1", int(sys.argv[1]))))
PY
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="$WORK/grpc-cert.pem" \
  bash scripts/compat/grpc-python.sh "localhost:$GRPC_PORT" COMPAT_grpc_tls "$N" --tls || rc=$?
bash scripts/compat/grpc-node.sh "127.0.0.1:$GRPC_PORT" COMPAT_grpc_node "$N" "$NODE_FIFO_GROUP" || rc=$?
if [ "$rc" != 0 ]; then
  echo "compat: FAILED; standalone log tail:" >&2
  tail -n 50 "$WORK/standalone.log" >&2 || true
  tail -n 30 "$WORK"/logs/*.err >&2 || true
fi
exit "$rc"
