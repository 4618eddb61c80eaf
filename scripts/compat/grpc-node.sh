#!/usr/bin/env bash
# The official 5.x Node.js client (npm rocketmq-client-nodejs 1.0.8) against Apogee's gRPC
# endpoint: produces N messages (normal, FIFO, timer, transactional) to TOPIC and consumes them
# with two SimpleConsumers, one in a fresh normal group and one in FIFO_GROUP (a fresh group
# made with `apogee admin updateSubGroup -o true`).
#   usage: scripts/compat/grpc-node.sh HOST:PORT TOPIC N FIFO_GROUP
# Installs the client into $COMPAT_DIR/grpc-node (outside the repo) when missing.
set -euo pipefail
ENDPOINT="$1"
TOPIC="$2"
N="${3:-100}"
FIFO_GROUP="$4"
DIR="${COMPAT_DIR:-${TMPDIR:-/tmp}/apogee-compat}/grpc-node"
if [ ! -f "$DIR/node_modules/rocketmq-client-nodejs/package.json" ]; then
  mkdir -p "$DIR"
  (cd "$DIR" && { [ -f package.json ] || echo '{"name":"grpc-node-compat","private":true}' > package.json; } \
    && npm install -s --no-audit --no-fund rocketmq-client-nodejs@1.0.8)
fi
# Wait for the endpoint to accept connections.
node -e '
const net = require("net");
const [host, port] = process.argv[1].split(/:(?=[^:]*$)/);
const deadline = Date.now() + 30000;
(function attempt() {
  const s = net.connect(Number(port), host, () => { s.end(); process.exit(0); });
  s.on("error", () => {
    if (Date.now() > deadline) { console.error(`grpc-node: ${process.argv[1]} does not accept connections`); process.exit(1); }
    setTimeout(attempt, 200);
  });
})();' "$ENDPOINT"
NODE_PATH="$DIR/node_modules" exec timeout 300 node "$(dirname "$0")/grpc-node.js" \
  --endpoint "$ENDPOINT" --topic "$TOPIC" --n "$N" --fifo-group "$FIFO_GROUP" --timeout 150
