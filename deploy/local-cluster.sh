#!/usr/bin/env bash
# Starts a Parley cluster on this machine for trying it out: a Redis, three meta nodes (Raft),
# three owners and two edges, each a separate `parley run` process.
# Stop it with `deploy/local-cluster.sh stop`.
#
#   deploy/local-cluster.sh            # start; prints the two edges' client URLs
#   deploy/local-cluster.sh stop       # stop everything it started
set -euo pipefail
cd "$(dirname "$0")/.."

state=.parley/local-cluster
app_id=${PARLEY_APP_ID:-0123456789abcdef0123456789abcdef}
redis_port=${REDIS_PORT:-7379}

stop() {
    for pidfile in "$state"/*.pid; do
        [ -e "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    echo "stopped"
}

if [ "${1:-start}" = "stop" ]; then
    stop
    exit 0
fi

# Needs, beyond the Rust toolchain, a C compiler and make (as the README says) and Redis, which
# it installs from Debian's packages when it can.
if ! command -v redis-server >/dev/null; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root=sudo
    if command -v apt-get >/dev/null; then
        $as_root apt-get update -qq
        $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server is needed: install Redis 6 or newer and run this again" >&2
        exit 1
    fi
fi
cargo build --release -p parley
mkdir -p "$state"

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state" --appendonly yes \
    --daemonize yes --pidfile "$PWD/$state/redis.pid" --logfile "$PWD/$state/redis.log"

metas="101=127.0.0.1:7201,102=127.0.0.1:7202,103=127.0.0.1:7203"
# Every node and `parley cluster …` need it (export it to use the CLI against this cluster).
export PARLEY_CLUSTER_SECRET=${PARLEY_CLUSTER_SECRET:-local-cluster-secret-0001}
start() {
    local node=$1 roles=$2 grpc=$3 http=$4
    # Each node's /healthz, /readyz and /metrics: port 9000 + its gRPC port's last three digits.
    setsid nohup ./target/release/parley run --node-id "$node" --roles "$roles" \
        --meta "$metas" --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" \
        --ops-addr "127.0.0.1:$((9000 + grpc % 1000))" \
        --store "redis://127.0.0.1:$redis_port" --data-dir "$state/data-$node" \
        --app-id "$app_id" >"$state/node-$node.log" 2>&1 </dev/null &
    echo $! >"$state/node-$node.pid"
}
start 101 meta 7201 0
start 102 meta 7202 0
start 103 meta 7203 0
start 1 owner 7101 0
start 2 owner 7102 0
start 3 owner 7103 0
start 51 edge 7151 8081
start 52 edge 7152 8082
sleep 2
./target/release/parley cluster status --meta 127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203 || true

echo "app id: $app_id (no certificate: logins need no token)"
echo "edges:  ws://127.0.0.1:8081/v1/ws  ws://127.0.0.1:8082/v1/ws"
echo "try:    ./target/release/parley client --url ws://127.0.0.1:8081/v1/ws --app-id $app_id --uid bob --stay"
echo "status: PARLEY_CLUSTER_SECRET=$PARLEY_CLUSTER_SECRET ./target/release/parley cluster status --meta 127.0.0.1:7201"
echo "drain:  PARLEY_CLUSTER_SECRET=$PARLEY_CLUSTER_SECRET ./target/release/parley cluster drain --meta 127.0.0.1:7201 --node-id 2"
echo "logs:   $state/node-*.log"
