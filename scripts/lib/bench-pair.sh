# Sourced by the benchmark scripts: a release `apogee namesrv` and `apogee broker` (metrics
# off) on free ports on 127.0.0.1, in a temporary directory removed on exit.
#   start_pair APOGEE CLUSTER BROKER_NAME
# sets `dir` (the temporary directory), `ns` (the NameServer's host:port), `broker` (the
# broker's pid) and `pids` (every process to stop on exit), and returns once the broker is
# registered (at most 60 s; otherwise it prints the broker's log and exits 1).

pids=()
dir=$(mktemp -d)
cleanup_pair() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup_pair EXIT

start_pair() {
  local bin=$1 cluster=$2 name=$3 ns_port b_port
  read -r ns_port b_port < <(python3 -c '
import socket
s=[socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
  ns="127.0.0.1:$ns_port"
  RUST_LOG=warn "$bin" namesrv --listen-port "$ns_port" >"$dir/ns.log" 2>&1 &
  pids+=($!)
  printf '%s\n' "brokerClusterName=$cluster" "brokerName=$name" "listenPort=$b_port" \
    "storePathRootDir=$dir/store" "namesrvAddr=$ns" brokerIP1=127.0.0.1 fastListenPort=0 \
    haListenPort=0 metricsExporterType=DISABLE >"$dir/b.conf"
  RUST_LOG=warn "$bin" broker -c "$dir/b.conf" >"$dir/b.log" 2>&1 &
  broker=$!
  pids+=($broker)
  for _ in $(seq 1 600); do
    if "$bin" admin clusterList -n "$ns" 2>/dev/null | grep -q ":$b_port"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the broker did not register within 60 s; its log:" >&2
  cat "$dir/b.log" >&2
  exit 1
}
