#!/usr/bin/env bash
# Redis Sentinel failover drill on loopback: a Redis master and replica watched by three
# sentinels; two gateway replicas (release build) find the master through the sentinels and
# share PostgreSQL. Under load, the master is killed (-9). Measured: requests that failed
# (bound 0: limits fall back to per-replica while Redis is away), seconds until both gateways
# share limits through the new master again (bound 30), and that a limit of 200 a minute then
# holds across the two gateways exactly (through the promoted replica).
# Usage: ops/sentinel-drill.sh [seconds-of-load] (default 30). Prints RESULT lines; exit 1 on a miss.
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_SECONDS="${1:-30}"
SCRATCH="$(mktemp -d /tmp/portcullis-sentinel.XXXXXX)"
PG_PORT=25632; MASTER_PORT=26581; REPLICA_PORT=26582; SENTINEL_PORTS=(26591 26592 26593); GATEWAY_PORTS=(19501 19502)
LIMIT=200
RESULTS="ops/results/sentinel-drill.txt"
log() { printf '[sentinel-drill] %s\n' "$*" >&2; }
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -n "${PG_CTL:-}" ]; then "${PG_CTL[@]}" -m fast stop >/dev/null 2>&1 || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

missing=()
for tool in wrk redis-server redis-sentinel; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
((${#missing[@]} == 0)) || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
source scripts/servers.sh
source ops/lib.sh
start_postgres

redis_on() { # port extra-arguments…
  local port="$1"; shift
  redis-server --port "$port" --bind 127.0.0.1 --dir "$SCRATCH" --dbfilename "dump-$port.rdb" --save '' --appendonly no "$@" \
    >"$SCRATCH/redis-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "Redis on $port did not start"; exit 1
}
redis_on "$MASTER_PORT"
MASTER_PID="${PIDS[-1]}"
redis_on "$REPLICA_PORT" --replicaof 127.0.0.1 "$MASTER_PORT"
for port in "${SENTINEL_PORTS[@]}"; do
  cat > "$SCRATCH/sentinel-$port.conf" <<CONF
port $port
bind 127.0.0.1
dir $SCRATCH
sentinel monitor drill 127.0.0.1 $MASTER_PORT 2
sentinel down-after-milliseconds drill 1000
sentinel failover-timeout drill 5000
CONF
  redis-sentinel "$SCRATCH/sentinel-$port.conf" >"$SCRATCH/sentinel-$port.log" 2>&1 &
  PIDS+=($!)
done
sleep 2   # the sentinels find each other and the replica

log "building the release binary"
swift build -c release --product portcullis >/dev/null
BIN="$(swift build -c release --show-bin-path)/portcullis"
SENTINELS="$(printf '127.0.0.1:%s,' "${SENTINEL_PORTS[@]}")"
write_drill_config "$SCRATCH/gateway.yaml" "$PORTCULLIS_TEST_POSTGRES_URL" "redis-sentinel://${SENTINELS%,}/drill" "$LIMIT" 0.5
for port in "${GATEWAY_PORTS[@]}"; do
  "$BIN" serve --config "$SCRATCH/gateway.yaml" --port "$port" >>"$SCRATCH/gateway-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break; sleep 0.05; done
done
redis_up() { curl -s -m 2 "http://127.0.0.1:$1/metrics" | sed -n 's/^portcullis_redis_up \([0-9]\).*/\1/p'; }
for port in "${GATEWAY_PORTS[@]}"; do
  for _ in $(seq 100); do [ "$(redis_up "$port")" = 1 ] && break; sleep 0.1; done
  [ "$(redis_up "$port")" = 1 ] || { log "gateway $port does not share state through Redis:"; tail -5 "$SCRATCH/gateway-$port.log" >&2; exit 1; }
done

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
failed=0
report() { printf '%s\n' "$1" | tee -a "$SCRATCH/results"; }

log "killing the master ($MASTER_PORT) $((LOAD_SECONDS / 3)) s into $LOAD_SECONDS s of load on both gateways"
(
  sleep "$((LOAD_SECONDS / 3))"
  kill -9 "$MASTER_PID"
  killed="$(date +%s.%N)"
  # Both gateways back on Redis: the new master, found through the sentinels.
  for _ in $(seq 300); do
    [ "$(redis_up "${GATEWAY_PORTS[0]}")" = 1 ] && [ "$(redis_up "${GATEWAY_PORTS[1]}")" = 1 ] && [ "$(redis_up "${GATEWAY_PORTS[0]}")" = 1 ] \
      && redis-cli -p "$REPLICA_PORT" role 2>/dev/null | head -1 | grep -q master && break
    sleep 0.1
  done
  awk -v a="$(date +%s.%N)" -v b="$killed" 'BEGIN { printf "%.1f\n", a - b }' > "$SCRATCH/recovered"
) &
watcher=$!
loaders=()
for port in "${GATEWAY_PORTS[@]}"; do
  BENCH_KEY=drill-master-key wrk -t1 -c16 -d"${LOAD_SECONDS}s" --timeout 10s -s bench/chat.lua "http://127.0.0.1:$port/v1/chat/completions" \
    | grep '^RESULT' > "$SCRATCH/load-$port" &
  loaders+=($!)
done
wait "$watcher" "${loaders[@]}"
requests=0; errors=0
for port in "${GATEWAY_PORTS[@]}"; do
  line="$(cat "$SCRATCH/load-$port")"
  requests=$((requests + $(field requests "$line"))); errors=$((errors + $(field errors "$line")))
done
recovered="$(cat "$SCRATCH/recovered")"
if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp "$SCRATCH"/*.log "$KEEP_LOGS"/; fi
role="$(redis-cli -p "$REPLICA_PORT" role | head -1)"
verdict="$(awk -v e="$errors" -v r="$recovered" -v role="$role" 'BEGIN { print ((e == 0 && r <= 30 && role == "master") ? "ok" : "FAILED") }')"
[ "$verdict" = ok ] || failed=1
report "RESULT drill=sentinel_failover requests=$requests failed=$errors shared_again_after_seconds=$recovered new_master_role=$role bound_failed=0 bound_seconds=30 $verdict"

log "a limit of $LIMIT a minute across both gateways, through the new master"
now="$(date +%S)"; [ "$((10#$now))" -lt 45 ] || sleep "$((61 - 10#$now))"
admitted=0
for _ in $(seq 150); do
  for port in "${GATEWAY_PORTS[@]}"; do
    status="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer drill-master-key' -H 'Content-Type: application/json' \
      -d '{"model":"limited","messages":[{"role":"user","content":"x"}]}' "http://127.0.0.1:$port/v1/chat/completions")"
    [ "$status" = 200 ] && admitted=$((admitted + 1))
  done
done
verdict="$([ "$admitted" = "$LIMIT" ] && echo ok || echo FAILED)"
[ "$verdict" = ok ] || failed=1
report "RESULT drill=shared_limit_after_failover limit=$LIMIT sent=300 admitted=$admitted $verdict"

mkdir -p "$(dirname "$RESULTS")"
{ printf '# ops/sentinel-drill.sh %s — %s, %s\n' "$LOAD_SECONDS" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)"; cat "$SCRATCH/results"; } > "$RESULTS"
exit "$failed"
