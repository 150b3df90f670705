#!/usr/bin/env bash
# Starts a Parley cluster on this machine for trying it out: a Redis, two owners and two edges,
# each a separate `parley run` process, with a static membership (the meta role and its Raft
# come with the cluster issue). Stop it with `deploy/local-cluster.sh stop`.
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

command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)"; exit 1; }
cargo build --release -p parley
mkdir -p "$state"

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state" --appendonly yes \
    --daemonize yes --pidfile "$PWD/$state/redis.pid" --logfile "$PWD/$state/redis.log"

members="1=owner@127.0.0.1:7101,2=owner@127.0.0.1:7102,3=edge@127.0.0.1:7103,4=edge@127.0.0.1:7104"
start() {
    local node=$1 roles=$2 http=$3
    setsid nohup ./target/release/parley run --node-id "$node" --roles "$roles" \
        --members "$members" --store "redis://127.0.0.1:$redis_port" --app-id "$app_id" \
        --http-addr "127.0.0.1:$http" >"$state/node-$node.log" 2>&1 </dev/null &
    echo $! >"$state/node-$node.pid"
}
start 1 owner 0
start 2 owner 0
start 3 edge 8081
start 4 edge 8082
sleep 1

echo "app id: $app_id (no certificate: logins need no token)"
echo "edges:  ws://127.0.0.1:8081/v1/ws  ws://127.0.0.1:8082/v1/ws"
echo "try:    ./target/release/parley client --url ws://127.0.0.1:8081/v1/ws --app-id $app_id --uid bob --stay"
echo "logs:   $state/node-*.log"
