#!/usr/bin/env bash
# Chaos run on loopback: three gateway replicas (release build) sharing PostgreSQL and Redis
# behind HAProxy, routing model `bench` to two mock providers (the project's mock upstream),
# under wrk load for several minutes while, every 30 s:
#
#   +5 s   provider A answers 30% of its requests with 503 for 15 s
#   +10 s  one replica is killed (-9), and started again 5 s later (each in turn)
#   +20 s  Redis is stopped, and started again 3 s later
#   +25 s  provider B answers every request with 502 for 5 s
#
# The faults take turns: the two providers are never down together (that would be an outage of
# the model, not a fault the gateway can mask).
#
# Reports availability — answers that are 2xx over all requests, a socket error or timeout
# counting as a failure — against the brief's SLO of 99.95%, and exits 1 below it.
# Usage: ops/chaos-drill.sh [seconds-of-load] (default 180). Needs haproxy, wrk, PostgreSQL and
# Redis (installed when missing). PORTCULLIS_BIN names a binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_SECONDS="${1:-180}"
SCRATCH="$(mktemp -d /tmp/portcullis-chaos.XXXXXX)"
PG_PORT=25832; REDIS_PORT=26579; HAPROXY_PORT=19600; GATEWAY_PORTS=(19601 19602 19603); MOCK_PORTS=(19611 19612)
SLO=99.95
RESULTS="ops/results/chaos-drill.txt"
log() { printf '[chaos] %s\n' "$*" >&2; }
declare -A GATEWAY_PIDS=()
OTHER_PIDS=()

cleanup() {
  for pid in "${GATEWAY_PIDS[@]}" "${OTHER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pkill -9 -f "$SCRATCH/gateway.yaml" 2>/dev/null || true   # replicas the chaos loop started again
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
for index in 0 1; do
  "$BIN" mock-upstream --port "${MOCK_PORTS[$index]}" >"$SCRATCH/mock-$index.log" 2>&1 &
  OTHER_PIDS+=($!)
done
for port in "${MOCK_PORTS[@]}"; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/_mock/requests" 2>/dev/null && break; sleep 0.05; done
done

cat > "$SCRATCH/gateway.yaml" <<YAML
log_level: warning
server: { shutdown_grace_seconds: 10 }
auth: { master_key: chaos-master-key, key_pepper: "chaos-pepper-0123456789abcdef-0123456789" }
storage: { database: "$PORTCULLIS_TEST_POSTGRES_URL", redis: "$PORTCULLIS_TEST_REDIS_URL", probe_interval_seconds: 0.5 }
limits:
  roles: { admin: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 } }
guardrails: { enabled: false }
audit: { enabled: false }
routing:
  retries: 2
  backoff: { initial_ms: 20, max_ms: 200 }
  circuit_breaker: { failure_threshold: 20, window_seconds: 10, cooldown_seconds: 5 }
  health_check: { interval_seconds: 0 }
models:
  - name: bench
    deployments:
      - { provider: openai_compatible, model: mock-a, api_base: "http://127.0.0.1:${MOCK_PORTS[0]}/v1", api_key: sk-chaos-a }
      - { provider: openai_compatible, model: mock-b, api_base: "http://127.0.0.1:${MOCK_PORTS[1]}/v1", api_key: sk-chaos-b }
YAML

for index in 0 1 2; do start_gateway "$index"; done

write_haproxy_config "$HAPROXY_PORT"
haproxy -f "$SCRATCH/haproxy.cfg" -db >"$SCRATCH/haproxy.log" 2>&1 &
OTHER_PIDS+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$HAPROXY_PORT/health/live" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 1.5   # every server checked up

mock() { curl -fsS -o /dev/null -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:${MOCK_PORTS[$1]}/_mock/config"; }
events="$SCRATCH/events"
event() { printf '%s %s\n' "$(date +%T)" "$*" >> "$events"; }
chaos() {
  local cycle=0
  while true; do
    sleep 5;  event "provider A: 30% 503"; mock 0 '{"error_rate":0.3,"error_status":503}'
    sleep 5;  local victim=$((cycle % 3)); event "replica $victim: kill -9"; kill -9 "${GATEWAY_PIDS[$victim]}"
    sleep 5;  start_gateway "$victim"; event "replica $victim: started"
    sleep 5;  event "provider A: healthy"; mock 0 '{"error_rate":0}'
              event "Redis: stopped"; redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    sleep 3;  start_redis >/dev/null 2>&1; event "Redis: started"
    sleep 2;  event "provider B: every request 502"; mock 1 '{"error_rate":1,"error_status":502}'
    sleep 5;  event "provider B: healthy"; mock 1 '{"error_rate":0}'
    cycle=$((cycle + 1))
  done
}
log "$LOAD_SECONDS s of load through HAProxy with a fault every few seconds"
chaos &
chaos_pid=$!
output="$(BENCH_KEY=chaos-master-key wrk -t2 -c32 -d"${LOAD_SECONDS}s" --timeout 10s -s ops/chaos.lua \
  "http://127.0.0.1:$HAPROXY_PORT/v1/chat/completions")"
result="$(grep '^RESULT' <<<"$output")"; statuses="$(grep '^STATUS' <<<"$output")"
kill "$chaos_pid" 2>/dev/null || true
wait "$chaos_pid" 2>/dev/null || true
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
requests="$(field requests "$result")"; errors="$(field errors "$result")"
availability="$(awk -v e="$errors" -v r="$requests" 'BEGIN { printf "%.4f", (r > 0 ? 100 * (r - e) / r : 0) }')"
verdict="$(awk -v a="$availability" -v s="$SLO" 'BEGIN { print (a >= s ? "ok" : "FAILED") }')"
faults="$(wc -l < "$events")"
if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp "$SCRATCH"/*.log "$events" "$KEEP_LOGS"/; fi
line="RESULT drill=chaos seconds=$LOAD_SECONDS requests=$requests failed=$errors availability_percent=$availability slo=$SLO faults=$faults $verdict"
printf '%s\n%s\n' "$line" "$statuses"
mkdir -p "$(dirname "$RESULTS")"
{
  printf '# ops/chaos-drill.sh %s — %s, %s, %s\n' "$LOAD_SECONDS" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$BIN"
  printf '%s\n' "$line"
  printf '# %s\n' "$statuses"
  sed 's/^/# /' "$events"
} > "$RESULTS"
[ "$verdict" = ok ]
