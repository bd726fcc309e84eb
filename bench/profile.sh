#!/usr/bin/env bash
# CPU profile of one Portcullis path under load: the gateway pinned to core 0, the nginx mock
# and wrk on core 1 (as in bench/run.sh), `perf record -g` on the gateway for the middle of a
# 64-connection run. Prints the hottest symbols (self time) and the req/s reached.
#
# Usage: bench/profile.sh [core|limits|default|noaudit] [seconds]   (default: core 10)
# EVENTS=ev1,ev2 counts those perf events instead of sampling (e.g. probes on swift_job_run).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH_NAME="${1:-core}"; DURATION="${2:-10}"
MOCK_PORT=19101; GATEWAY_PORT=19102; REDIS_PORT=19103
WORK="$(mktemp -d /tmp/portcullis-profile.XXXXXX)"
log() { printf '[profile] %s\n' "$*" >&2; }
source bench/lib.sh
need perf linux-perf

if [ "$PATH_NAME" = limits ]; then
  gateway_yaml "$GATEWAY_PORT" "" "guardrails: { enabled: false }" > "$WORK/default.yaml"
elif [ "$PATH_NAME" = noaudit ]; then
  gateway_yaml "$GATEWAY_PORT" "" "audit: { enabled: false }" > "$WORK/default.yaml"
else
  gateway_yaml "$GATEWAY_PORT" > "$WORK/default.yaml"
fi
KEY=""
if [ "$PATH_NAME" = core ]; then
  grep -v master_key "$WORK/default.yaml" > "$WORK/core.yaml"
  taskset -c 0 "$BIN" serve --config "$WORK/core.yaml" --reference-core & GATEWAY=$!
else
  taskset -c 0 "$BIN" serve --config "$WORK/default.yaml" & GATEWAY=$!
fi
PIDS+=("$GATEWAY")
wait_port "$MOCK_PORT"; wait_port "$GATEWAY_PORT"
[ "$PATH_NAME" = core ] || KEY="$(create_key "$GATEWAY_PORT")"
URL="http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions"
BENCH_KEY="$KEY" taskset -c 1 wrk -t1 -c16 -d2s -s bench/chat.lua "$URL" >/dev/null
BENCH_KEY="$KEY" taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" -s bench/chat.lua "$URL" | grep '^RESULT' &
WRK=$!
sleep 1
if [ -n "${EVENTS:-}" ]; then
  # Counts of the given events (e.g. uprobes on the concurrency runtime) over the whole run, to divide by the requests.
  perf stat -x, -e "$EVENTS" -p "$GATEWAY" -- sleep $((DURATION - 2)) 2>&1 | cut -d, -f1,3
  wait "$WRK"
  exit 0
fi
perf record -q -g -p "$GATEWAY" -o "$WORK/perf.data" -- sleep $((DURATION - 2)) 2>/dev/null
wait "$WRK"
perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | cut -c1-160 | head -"${TOP:-45}" || true
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -12 || true
[ -n "${KEEP:-}" ] && cp "$WORK/perf.data" "$KEEP"
true
