#!/usr/bin/env bash
# Capacity run of a relay cluster on this machine: a private redis-server on a free port,
# NODES relay processes in cluster mode, then loadgen against all of them with
# --shared-rooms. Everything is on loopback and stops by itself.
#
#   cargo build --release -p relay -p loadgen
#   NODES=3 benches/cluster_capacity.sh --clients 50000 --rooms 500 --rate 2000 --duration 10s \
#       --connect-rate 10000 --source-ips 2 --json out.json
#
# Relay flags for a benchmark run go in RELAY_FLAGS (defaults lift the limits that would
# otherwise be the result: an unbounded backplane queue, relaxed heartbeats).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-3}
RELAY_FLAGS=${RELAY_FLAGS:-"--cluster-queue 0 --ping-interval 120s --max-outbound-bytes 16777216"}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
# Relays first (their goodbye needs Redis), then Redis.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    ((i == 0)) || wait "${pids[i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

urls=()
relay_pids=()
for _ in $(seq "$NODES"); do
  port=$(free_port)
  # shellcheck disable=SC2086
  RUST_LOG=${RELAY_LOG_LEVEL:-warn} target/release/relay --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$redis_port" \
    --cluster-name bench $RELAY_FLAGS &
  pids+=($!); relay_pids+=($!)
  urls+=(--url "ws://127.0.0.1:$port/ws")
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05
  done
done
server_pids=$(IFS=,; echo "${relay_pids[*]}")
echo "redis :$redis_port, relays ${urls[*]} (pids $server_pids)" >&2
target/release/loadgen "${urls[@]}" --shared-rooms --server-pid "$server_pids" --no-progress "$@"
