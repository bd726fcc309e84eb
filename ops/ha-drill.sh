#!/usr/bin/env bash
# HA drills on loopback: three gateway replicas (release build) sharing PostgreSQL and Redis
# behind HAProxy, under load from wrk, with the built-in demo model as the provider.
#
#   1. kill -9 of one replica under load      → at most 0.1% of requests fail
#   2. rolling SIGTERM restart of all three    → no request fails
#   3. one global limit of N requests a minute → the three replicas together admit N ± 2%
#
# Any answer that is not 2xx, and any socket error, is a failure. Prints one RESULT line per
# drill and exits 1 when a drill misses its bound. Usage: ops/ha-drill.sh [seconds-of-load]
# (default 20). Needs haproxy, wrk, PostgreSQL and Redis (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_SECONDS="${1:-20}"
SCRATCH="$(mktemp -d /tmp/portcullis-drill.XXXXXX)"
PG_PORT=25532; REDIS_PORT=26479; HAPROXY_PORT=19400; GATEWAY_PORTS=(19401 19402 19403)
LIMIT=1200
RESULTS="ops/results/ha-drill.txt"
log() { printf '[drill] %s\n' "$*" >&2; }
declare -A GATEWAY_PIDS=()

cleanup() {
  for pid in "${GATEWAY_PIDS[@]}" ${HAPROXY_PID:-}; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -n "${PG_CTL:-}" ]; then "${PG_CTL[@]}" -m fast stop >/dev/null 2>&1 || true; fi
  if [ -f "$SCRATCH/redis.pid" ]; then kill "$(cat "$SCRATCH/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

source ops/lib.sh
install_drill_tools haproxy wrk redis-server postgresql
source scripts/servers.sh
start_postgres
start_redis

drill_binary

write_drill_config "$SCRATCH/gateway.yaml" "$PORTCULLIS_TEST_POSTGRES_URL" "$PORTCULLIS_TEST_REDIS_URL" "$LIMIT" 1

for index in 0 1 2; do start_gateway "$index"; done

write_haproxy_config "$HAPROXY_PORT"
haproxy -f "$SCRATCH/haproxy.cfg" -db >"$SCRATCH/haproxy.log" 2>&1 &
HAPROXY_PID=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$HAPROXY_PORT/health/live" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 1.5   # every server checked up

load() { # seconds connections [lua env] → the RESULT line of bench/chat.lua
  BENCH_KEY=drill-master-key wrk -t2 -c"$2" -d"$1s" --timeout 10s -s bench/chat.lua "http://127.0.0.1:$HAPROXY_PORT/v1/chat/completions" \
    | grep '^RESULT'
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
failed=0
report() { printf '%s\n' "$1" | tee -a "$SCRATCH/results"; }

log "drill 1: kill -9 of one replica halfway through ${LOAD_SECONDS} s of load"
( sleep "$((LOAD_SECONDS / 2))"; kill -9 "${GATEWAY_PIDS[1]}" ) &
killer=$!
result="$(load "$LOAD_SECONDS" 32)"
wait "$killer"
requests="$(field requests "$result")"; errors="$(field errors "$result")"
ratio="$(awk -v e="$errors" -v r="$requests" 'BEGIN { printf "%.4f", (r > 0 ? 100 * e / r : 100) }')"
verdict="$(awk -v p="$ratio" 'BEGIN { print (p <= 0.1 ? "ok" : "FAILED") }')"
[ "$verdict" = ok ] || failed=1
report "RESULT drill=kill9 requests=$requests failed=$errors failed_percent=$ratio bound=0.1 $verdict"
start_gateway 1
sleep 1.5

log "drill 2: rolling SIGTERM restart of all three under load"
(
  sleep 2
  for index in 0 1 2; do
    kill -TERM "${GATEWAY_PIDS[$index]}"
    while kill -0 "${GATEWAY_PIDS[$index]}" 2>/dev/null; do sleep 0.05; done
    start_gateway "$index"
    sleep 1.5   # HAProxy sees it ready (rise 2 at 500 ms) before the next one goes
  done
  echo "${GATEWAY_PIDS[@]}" > "$SCRATCH/restarted.pids"
) &
restarter=$!
result="$(load "$((LOAD_SECONDS > 14 ? LOAD_SECONDS : 14))" 32)"
wait "$restarter"
read -r -a restarted < "$SCRATCH/restarted.pids"
for index in 0 1 2; do GATEWAY_PIDS[$index]="${restarted[$index]}"; done
requests="$(field requests "$result")"; errors="$(field errors "$result")"
verdict="$([ "$errors" = 0 ] && echo ok || echo FAILED)"
[ "$verdict" = ok ] || failed=1
report "RESULT drill=rolling_restart requests=$requests failed=$errors bound=0 $verdict"

log "drill 3: a global limit of $LIMIT requests a minute across the three replicas"
# Inside one minute window: the sliding window's previous minute is empty, so the limit is exact.
now="$(date +%S)"; [ "$((10#$now))" -lt 40 ] || sleep "$((61 - 10#$now))"
sed 's/"model":"bench"/"model":"limited"/' bench/chat.lua > "$SCRATCH/limited.lua"
admitted=0
for _ in $(seq 15); do
  out="$(BENCH_KEY=drill-master-key wrk -t2 -c16 -d1s --timeout 5s -s "$SCRATCH/limited.lua" "http://127.0.0.1:$HAPROXY_PORT/v1/chat/completions" | grep '^RESULT')"
  admitted=$((admitted + $(field requests "$out") - $(field errors "$out")))
done
deviation="$(awk -v a="$admitted" -v l="$LIMIT" 'BEGIN { printf "%.2f", 100 * (a - l) / l }')"
verdict="$(awk -v d="$deviation" 'BEGIN { print ((d <= 2 && d >= -2) ? "ok" : "FAILED") }')"
[ "$verdict" = ok ] || failed=1
report "RESULT drill=global_limit limit=$LIMIT admitted=$admitted deviation_percent=$deviation bound=2 $verdict"

mkdir -p "$(dirname "$RESULTS")"
{ printf '# ops/ha-drill.sh %s — %s, %s\n' "$LOAD_SECONDS" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)"; cat "$SCRATCH/results"; } > "$RESULTS"
exit "$failed"
