#!/usr/bin/env bash
# The official 5.x Python client (PyPI rocketmq-python-client 5.1.2) against Apogee's gRPC
# endpoint: produces N messages to TOPIC and consumes them with its SimpleConsumer.
#   usage: scripts/compat/grpc-python.sh HOST:PORT TOPIC [N] [--tls]
# --tls: over TLS; the server's certificate (or its CA) must be in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH.
# Installs the client into $COMPAT_DIR/grpc-venv (outside the repo) when missing.
set -euo pipefail
ENDPOINT="$1"
TOPIC="$2"
N="${3:-100}"
TLS=()
if [ "${4:-}" = "--tls" ]; then TLS=(--tls); fi
DIR="${COMPAT_DIR:-${TMPDIR:-/tmp}/apogee-compat}"
VENV="$DIR/grpc-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rocketmq.v5' 2>/dev/null; then
  mkdir -p "$DIR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q rocketmq-python-client==5.1.2
fi
# Wait for the endpoint to accept connections.
"$VENV/bin/python" - "$ENDPOINT" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.time() + 30
while True:
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit(f"grpc-python: {sys.argv[1]} does not accept connections")
        time.sleep(0.2)
PY
exec timeout 300 "$VENV/bin/python" "$(dirname "$0")/grpc-python.py" \
  --endpoint "$ENDPOINT" --topic "$TOPIC" --n "$N" --timeout 120 "${TLS[@]}"
