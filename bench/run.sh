#!/usr/bin/env bash
# Gateway throughput and latency benchmark, release build, all on loopback.
#
# The upstream is nginx answering every request with one fixed chat completion (bench/lib.sh),
# on core 1 with wrk; everything measured is pinned to core 0. In one run:
#   direct    wrk → the nginx mock (the ceiling: must be ≥ 4× the fastest Portcullis path, else the run is invalid)
#   nginx     wrk → nginx reverse proxy (1 worker, keep-alive upstream pool) → mock: the reference
#   core      wrk → Portcullis --reference-core (no identity, limits or guards) → mock
#   limits    wrk → Portcullis, virtual key + in-process limits and budget, guards off
#   default   wrk → Portcullis, the default security path: virtual key, limits, budget, default input guards
#   redis     wrk → the default security path with limits and budgets in Redis (leased ahead)
#   noaudit   wrk → the default security path with request auditing off (audit: { enabled: false }),
#             against which the default path's cost of its audit records is read
# at 64 connections (req/s) and 1 connection (p50, p99); then three paired rounds of default and
# noaudit loaded together (32 connections each), reporting each one's CPU time per request. Any non-2xx answer, connect, read or
# timeout error counts as a failure and marks the measurement FAILED. Every limit is set far
# above what is sent, so the bench measures the path, not the limiter. Also reports the
# default gateway's resident memory before and after the run.
#
# Usage: bench/run.sh [seconds-per-measurement]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
MOCK_PORT=19001; NGINX_PORT=19002; DEFAULT_PORT=19003; CORE_PORT=19004; REDIS_GATEWAY_PORT=19005; REDIS_PORT=19006; LIMITS_PORT=19007
NOAUDIT_PORT=19008
WORK="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
RESULTS="bench/results/latest.txt"
log() { printf '[bench] %s\n' "$*" >&2; }

source bench/lib.sh

gateway_yaml "$DEFAULT_PORT" > "$WORK/default.yaml"
gateway_yaml "$LIMITS_PORT" "" "guardrails: { enabled: false }" > "$WORK/limits.yaml"
gateway_yaml "$NOAUDIT_PORT" "" "audit: { enabled: false }" > "$WORK/noaudit.yaml"
gateway_yaml "$REDIS_GATEWAY_PORT" ", redis: \"redis://127.0.0.1:$REDIS_PORT\"" > "$WORK/redis.yaml"
# The reference core: the same gateway without credentials, limits, budgets or accounting.
gateway_yaml "$CORE_PORT" | grep -v master_key > "$WORK/core.yaml"
declare -A PID
for name in default limits redis noaudit; do
  taskset -c 0 "$BIN" serve --config "$WORK/$name.yaml" & PID[$name]=$!; PIDS+=($!)
done
taskset -c 0 "$BIN" serve --config "$WORK/core.yaml" --reference-core & PIDS+=($!)
nginx -c "$(nginx_conf proxy 01 "upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 128; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }")"

for port in $MOCK_PORT $NGINX_PORT $DEFAULT_PORT $LIMITS_PORT $CORE_PORT $REDIS_GATEWAY_PORT $NOAUDIT_PORT; do wait_port "$port"; done

declare -A KEYS=([$DEFAULT_PORT]="$(create_key $DEFAULT_PORT)" [$LIMITS_PORT]="$(create_key $LIMITS_PORT)"
                 [$REDIS_GATEWAY_PORT]="$(create_key $REDIS_GATEWAY_PORT)" [$NOAUDIT_PORT]="$(create_key $NOAUDIT_PORT)")
for port in "${!KEYS[@]}"; do [[ "${KEYS[$port]}" == pck_* ]] || { log "no key from the gateway on $port"; exit 1; }; done
declare -A PORT=([direct]=$MOCK_PORT [nginx]=$NGINX_PORT [core]=$CORE_PORT [limits]=$LIMITS_PORT [default]=$DEFAULT_PORT [redis]=$REDIS_GATEWAY_PORT
                 [noaudit]=$NOAUDIT_PORT)
# noaudit right after default: the audit ratio compares two measurements a few seconds apart, not across the redis run.
PATHS=(direct nginx core limits default noaudit redis)

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

measure() { # name connections → "RESULT rps=… p50_us=… p99_us=… errors=… requests=…"
  local line
  line="$(BENCH_KEY="${KEYS[${PORT[$1]}]:-}" taskset -c 1 wrk -t1 -c"$2" -d"${DURATION}s" --timeout 5s -s bench/chat.lua \
    "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" | grep '^RESULT')"
  log "$1 c=$2: $line"
  echo "$line"
}

log "warming up"
for path in "${PATHS[@]}"; do
  BENCH_KEY="${KEYS[${PORT[$path]}]:-}" taskset -c 1 wrk -t1 -c16 -d2s -s bench/chat.lua "http://127.0.0.1:${PORT[$path]}/v1/chat/completions" >/dev/null
done
RSS_BEFORE="$(rss_kb "${PID[default]}")"

declare -A R
for c in 64 1; do
  for path in "${PATHS[@]}"; do R[${path}_$c]="$(measure "$path" "$c")"; done
done
RSS_AFTER="$(rss_kb "${PID[default]}")"

# The audit's cost measured in pairs as well: default and noaudit loaded at the same moment (32
# connections each), each one's CPU time divided by the requests it answered. Both share the
# core's noise in the same seconds, which the sequential ratio above cannot promise on a noisy VM.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
PAIRED=()
for round in 1 2 3; do
  a0="$(cpu_ticks "${PID[default]}")"; o0="$(cpu_ticks "${PID[noaudit]}")"
  BENCH_KEY="${KEYS[$DEFAULT_PORT]}" taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --timeout 5s -s bench/chat.lua \
    "http://127.0.0.1:$DEFAULT_PORT/v1/chat/completions" > "$WORK/paired-default" & PAIRED_WRK=$!
  BENCH_KEY="${KEYS[$NOAUDIT_PORT]}" taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --timeout 5s -s bench/chat.lua \
    "http://127.0.0.1:$NOAUDIT_PORT/v1/chat/completions" > "$WORK/paired-noaudit"
  wait "$PAIRED_WRK"
  a1="$(cpu_ticks "${PID[default]}")"; o1="$(cpu_ticks "${PID[noaudit]}")"
  on="$(grep '^RESULT' "$WORK/paired-default")"; off="$(grep '^RESULT' "$WORK/paired-noaudit")"
  log "paired round $round: default $on cpu_ticks=$((a1 - a0)); noaudit $off cpu_ticks=$((o1 - o0))"
  PAIRED+=("$(awk -v ca=$((a1 - a0)) -v co=$((o1 - o0)) -v na="$(field requests "$on")" -v no="$(field requests "$off")" \
    -v ea="$(field errors "$on")" -v eo="$(field errors "$off")" \
    'BEGIN { printf "%.1f %.1f %.3f %d", ca * 1e4 / na, co * 1e4 / no, (co / no) / (ca / na), ea + eo }')")
done

failed=0
{
  echo "Portcullis gateway benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${DURATION}s per measurement"
  echo "command: bench/run.sh $DURATION   (release build; everything measured pinned to core 0; the nginx mock and wrk on core 1)"
  echo
  printf '%-8s %5s %12s %10s %10s %9s %10s\n' path conns req/s p50_us p99_us failures requests
  for c in 64 1; do
    for path in "${PATHS[@]}"; do
      line="${R[${path}_$c]}"
      errors="$(field errors "$line")"
      mark=""; if [ "$errors" != 0 ]; then mark=" FAILED"; failed=1; fi
      printf '%-8s %5s %12s %10s %10s %9s %10s%s\n' "$path" "$c" "$(field rps "$line")" "$(field p50_us "$line")" \
        "$(field p99_us "$line")" "$errors" "$(field requests "$line")" "$mark"
    done
  done
  echo
  rps() { field rps "${R[$1_64]}"; }
  fastest="$(printf '%s\n' "$(rps core)" "$(rps limits)" "$(rps default)" "$(rps redis)" "$(rps noaudit)" | sort -g | tail -1)"
  awk -v d="$(rps direct)" -v f="$fastest" -v n="$(rps nginx)" 'BEGIN {
    printf "validity: direct-to-mock %.0f req/s = %.1fx the fastest Portcullis path (%.0f): %s\n", d, d / f, f, (d >= 4 * f ? "valid" : "INVALID: the mock is too close to the gateway, the ratios measure it")
    printf "          nginx, the reference, reaches %.2f of direct: it is partly held by the mock, so ratios against it flatter Portcullis slightly\n", n / d
  }'
  for path in core limits default redis; do
    awk -v name="$path" -v p="$(rps "$path")" -v n="$(rps nginx)" 'BEGIN { printf "64 connections: %-7s / nginx req/s = %.3f\n", name, p / n }'
  done
  echo "targets (issue 15): default >= 0.30, core >= 0.45, redis >= 0.25"
  awk -v a="$(rps default)" -v o="$(rps noaudit)" 'BEGIN { printf "64 connections: audit on / audit off (default / noaudit) req/s = %.3f (issue 16: >= 0.90)\n", a / o }'
  for round in 1 2 3; do
    read -r on_us off_us ratio errors <<<"${PAIRED[$((round - 1))]}"
    mark=""; if [ "$errors" != 0 ]; then mark=" FAILED ($errors failures)"; failed=1; fi
    printf 'paired round %d: CPU per request, audit on %s us, audit off %s us: off / on = %s%s\n' "$round" "$on_us" "$off_us" "$ratio" "$mark"
  done
  awk -v g5="$(field p50_us "${R[default_1]}")" -v n5="$(field p50_us "${R[nginx_1]}")" \
      -v g9="$(field p99_us "${R[default_1]}")" -v n9="$(field p99_us "${R[nginx_1]}")" \
    'BEGIN { printf "1 connection, default path over nginx: p50 %+d us (target <= 150), p99 %+d us (target <= 400)\n", g5 - n5, g9 - n9 }'
  awk -v b="$RSS_BEFORE" -v a="$RSS_AFTER" 'BEGIN { printf "default gateway RSS: %.1f MB after warm-up, %.1f MB after the run (%+.1f%%)\n", b / 1024, a / 1024, (a - b) * 100 / b }'
  [ "$failed" = 0 ] || echo "FAILED: some answers were not 2xx or did not arrive (see the failures column)"
} | tee "$RESULTS"
