#!/usr/bin/env bash
# PostgreSQL promotion drill on loopback: a primary and a streaming standby (pg_basebackup), one
# gateway (release build) whose database URL names both hosts with target_session_attrs=read-write,
# under load from wrk with an API key, with the built-in demo model as the provider.
#
#   a third of the way into the load the primary is stopped (immediate: a crash) and the standby
#   promoted → the gateway follows it (statements go to the first host that is not in recovery)
#   and the usage of every request answered meanwhile reaches the new primary: none lost.
#
# "lost" counts answered requests whose usage row is missing (the usage table can hold up to the
# connection count more than wrk counted: requests in flight when wrk stops are answered but not
# counted). Prints RESULT lines and exits 1 when a bound is missed.
# Usage: ops/pg-failover-drill.sh [seconds-of-load] (default 20). Needs wrk and PostgreSQL
# (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD_SECONDS="${1:-20}"
SCRATCH="$(mktemp -d /tmp/portcullis-pg-drill.XXXXXX)"
PRIMARY_PORT=25732; STANDBY_PORT=25733; GATEWAY_PORT=19501; CONNECTIONS=16
MASTER=drill-master-key
RESULTS="ops/results/pg-failover-drill.txt"
log() { printf '[drill] %s\n' "$*" >&2; }
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for data in primary standby; do
    [ -d "$SCRATCH/$data" ] && "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$SCRATCH/$data" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

source ops/lib.sh
install_drill_tools wrk postgresql
PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
AS_POSTGRES=()
if [ "$(id -u)" = 0 ]; then AS_POSTGRES=(runuser -u postgres --); fi
chmod 755 "$SCRATCH"
chown postgres:postgres "$SCRATCH" 2>/dev/null || true

start_cluster() { # data-folder port
  if ! "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$SCRATCH/$1" -l "$SCRATCH/$1.log" -w \
      -o "-p $2 -k $SCRATCH -c listen_addresses=127.0.0.1" start >/dev/null; then
    log "PostgreSQL ($1) did not start:"; cat "$SCRATCH/$1.log" >&2; exit 1
  fi
}
log "a primary on $PRIMARY_PORT and a streaming standby on $STANDBY_PORT"
"${AS_POSTGRES[@]}" "$PG_BIN/initdb" -D "$SCRATCH/primary" -U postgres -A trust >/dev/null
printf 'wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n' >> "$SCRATCH/primary/postgresql.conf"
start_cluster primary "$PRIMARY_PORT"
"${AS_POSTGRES[@]}" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$SCRATCH/standby" -R -X stream >/dev/null
start_cluster standby "$STANDBY_PORT"
in_recovery() { "${AS_POSTGRES[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -Atqc "SELECT pg_is_in_recovery()" 2>/dev/null || echo down; }
[ "$(in_recovery "$STANDBY_PORT")" = t ] || { log "the standby is not in recovery"; exit 1; }

drill_binary
# The standby first in the URL: the gateway must find the writable host, not take the first.
cat > "$SCRATCH/gateway.yaml" <<YAML
log_level: notice
auth: { master_key: $MASTER, key_pepper: "drill-pepper-0123456789abcdef-0123456789" }
storage:
  database: "postgres://postgres@127.0.0.1:$STANDBY_PORT,127.0.0.1:$PRIMARY_PORT/postgres?target_session_attrs=read-write"
  flush_interval_seconds: 0.5
  probe_interval_seconds: 0.5
limits:
  roles: { user: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 } }
guardrails: { enabled: false }
audit: { enabled: false }
routing: { health_check: { interval_seconds: 0 } }
models:
  - name: bench
    deployments: [{ provider: demo }]
YAML
"$BIN" serve --config "$SCRATCH/gateway.yaml" --port "$GATEWAY_PORT" >>"$SCRATCH/gateway.log" 2>&1 &
PIDS+=($!)
BASE="http://127.0.0.1:$GATEWAY_PORT"
for _ in $(seq 300); do curl -fsS "$BASE/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$BASE/health/ready" >/dev/null || { log "the gateway did not become ready:"; tail -20 "$SCRATCH/gateway.log" >&2; exit 1; }
created="$(curl -fsS -H "Authorization: Bearer $MASTER" -H 'Content-Type: application/json' -d '{"name":"drill"}' "$BASE/admin/keys")"
KEY="$(sed -n 's/.*"key":"\([^"]*\)".*/\1/p' <<<"$created")"
KEY_ID="$(sed -n 's/.*"key_id":"\([^"]*\)".*/\1/p' <<<"$created")"
[ -n "$KEY" ] || { log "no key created: $created"; exit 1; }
# The key is validated (and cached) before the primary goes away, as a running fleet's keys are.
curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"model":"bench","messages":[{"role":"user","content":"warm"}]}' "$BASE/v1/chat/completions"
database_up() { curl -s -m 2 "$BASE/metrics" | sed -n 's/^portcullis_database_up \([0-9]\).*/\1/p'; }

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
log "stopping the primary $((LOAD_SECONDS / 3)) s into $LOAD_SECONDS s of load, then promoting the standby"
(
  sleep "$((LOAD_SECONDS / 3))"
  "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$SCRATCH/primary" -m immediate stop >/dev/null
  stopped="$(date +%s.%N)"
  "${AS_POSTGRES[@]}" "$PG_BIN/pg_ctl" -D "$SCRATCH/standby" -w promote >/dev/null
  # Back when the gateway writes again: its health probe sees the database and a flush lands.
  for _ in $(seq 600); do
    [ "$(database_up)" = 1 ] && curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $MASTER" "$BASE/admin/usage/flush" 2>/dev/null && break
    sleep 0.05
  done
  awk -v a="$(date +%s.%N)" -v b="$stopped" 'BEGIN { printf "%.1f\n", a - b }' > "$SCRATCH/recovered"
) &
watcher=$!
BENCH_KEY="$KEY" wrk -t1 -c"$CONNECTIONS" -d"${LOAD_SECONDS}s" --timeout 10s -s bench/chat.lua "$BASE/v1/chat/completions" \
  | grep '^RESULT' > "$SCRATCH/load"
wait "$watcher"
line="$(cat "$SCRATCH/load")"
requests="$(field requests "$line")"; errors="$(field errors "$line")"
answered=$((requests - errors))
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $MASTER" "$BASE/admin/usage/flush"
usage="$(curl -fsS -H "Authorization: Bearer $MASTER" "$BASE/admin/usage?group_by=key_id&key_id=$KEY_ID")"
recorded="$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$usage" | head -1)"
recorded=$((${recorded:-0} - 1))   # less the warm-up request
lost=$(( answered > recorded ? answered - recorded : 0 ))
recovered="$(cat "$SCRATCH/recovered")"
if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp "$SCRATCH"/*.log "$KEEP_LOGS"/; fi
followed="$(grep -c 'statements go to 127.0.0.1:'"$STANDBY_PORT" "$SCRATCH/gateway.log" || true)"
verdict="$(awk -v l="$lost" -v x="$((recorded - answered))" -v c="$CONNECTIONS" -v r="$recovered" -v f="$followed" \
  'BEGIN { print ((l == 0 && x <= c && r <= 30 && f >= 1) ? "ok" : "FAILED") }')"
result="RESULT drill=pg_promotion requests=$requests failed=$errors answered=$answered usage_recorded=$recorded lost=$lost writes_again_after_seconds=$recovered bound_lost=0 bound_seconds=30 $verdict"
printf '%s\n' "$result"
mkdir -p "$(dirname "$RESULTS")"
{ printf '# ops/pg-failover-drill.sh %s — %s, %s, %s\n' "$LOAD_SECONDS" "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$BIN"; printf '%s\n' "$result"; } > "$RESULTS"
[ "$verdict" = ok ]
