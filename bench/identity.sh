#!/usr/bin/env bash
# What identity, limits and budgets add to a request, release build, all on loopback.
#
# Three gateways on core 0 in front of one mock upstream (core 1, with wrk):
#   core      --reference-core: no credential, no limits, no budget, no usage accounting
#   governed  a virtual API key with RPM, TPM and concurrency limits and a monthly budget,
#             embedded default (SQLite, in-process state)
#   redis     the same, limits and budgets in Redis (leased ahead per replica, the default)
#   exact     the same in Redis with leasing off (lease_fraction: 0): one round trip per admission
# Measurements alternate between the three, ROUNDS times, one connection each, so that drift
# of the machine falls on all alike; the report gives the median p50 and p99 of each and the
# difference to the core.
#
# Usage: bench/identity.sh [seconds-per-measurement] [rounds]   (default 3 and 7)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-3}"; ROUNDS="${2:-7}"
MOCK_PORT=19011; CORE_PORT=19012; GOVERNED_PORT=19013; REDIS_GATEWAY_PORT=19014; REDIS_PORT=19015; EXACT_PORT=19016
WORK="$(mktemp -d /tmp/portcullis-identity.XXXXXX)"
RESULTS="bench/results/identity.txt"
log() { printf '[identity] %s\n' "$*" >&2; }
source bench/lib.sh

# This benchmark isolates identity, limits and budgets (bench/guard.sh times the guards).
NO_GUARDS="guardrails: { enabled: false }"
gateway_yaml "$GOVERNED_PORT" "" "$NO_GUARDS" > "$WORK/governed.yaml"
gateway_yaml "$REDIS_GATEWAY_PORT" ", redis: \"redis://127.0.0.1:$REDIS_PORT\"" "$NO_GUARDS" > "$WORK/redis.yaml"
gateway_yaml "$EXACT_PORT" ", redis: \"redis://127.0.0.1:$REDIS_PORT\", lease_fraction: 0" "$NO_GUARDS" > "$WORK/exact.yaml"
gateway_yaml "$CORE_PORT" "" "$NO_GUARDS" | grep -v master_key > "$WORK/core.yaml"
declare -A PID
taskset -c 0 "$BIN" serve --config "$WORK/core.yaml" --reference-core & PIDS+=($!); PID[core]=$!
taskset -c 0 "$BIN" serve --config "$WORK/governed.yaml" & PIDS+=($!); PID[governed]=$!
taskset -c 0 "$BIN" serve --config "$WORK/redis.yaml" & PIDS+=($!); PID[redis]=$!
taskset -c 0 "$BIN" serve --config "$WORK/exact.yaml" & PIDS+=($!); PID[exact]=$!
for port in $MOCK_PORT $CORE_PORT $GOVERNED_PORT $REDIS_GATEWAY_PORT $EXACT_PORT; do wait_port "$port"; done

declare -A KEYS=([core]="" [governed]="$(create_key $GOVERNED_PORT)" [redis]="$(create_key $REDIS_GATEWAY_PORT)" [exact]="$(create_key $EXACT_PORT)")
declare -A PORTS=([core]=$CORE_PORT [governed]=$GOVERNED_PORT [redis]=$REDIS_GATEWAY_PORT [exact]=$EXACT_PORT)
for path in governed redis exact; do [[ "${KEYS[$path]}" == pck_* ]] || { log "no key from $path"; exit 1; }; done

# CPU time (user + system, clock ticks) a gateway process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run() { # path seconds → RESULT line plus cpu_us (the gateway's CPU per request); a measurement with any non-2xx answer is refused
  local before after line
  before="$(ticks "${PID[$1]}")"
  line="$(BENCH_KEY="${KEYS[$1]}" taskset -c 1 wrk -t1 -c1 -d"$2s" --timeout 5s -s bench/chat.lua "http://127.0.0.1:${PORTS[$1]}/v1/chat/completions" | grep '^RESULT')"
  after="$(ticks "${PID[$1]}")"
  echo "$line cpu_us=$(( (after - before) * TICK_US / $(field requests "$line") ))"
}

log "warming up"
for path in core governed redis exact; do run "$path" 2 >/dev/null; done

declare -A P50 P99 CPU
for round in $(seq "$ROUNDS"); do
  for path in core governed redis exact; do
    line="$(run "$path" "$DURATION")"
    [ "$(field errors "$line")" = 0 ] || { log "$path answered errors: $line"; exit 1; }
    P50[$path]+="$(field p50_us "$line") "; P99[$path]+="$(field p99_us "$line") "; CPU[$path]+="$(field cpu_us "$line") "
    log "round $round $path: $line"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

{
  echo "Identity + limits + budget overhead — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo "command: bench/identity.sh $DURATION $ROUNDS   (release; gateways on core 0, mock and wrk on core 1; 1 connection;"
  echo "         $ROUNDS alternating rounds of ${DURATION}s, medians)"
  echo
  printf '%-10s %10s %10s %14s %12s %14s\n' path p50_us p99_us p50_over_core cpu_us_req cpu_over_core
  core50="$(median "${P50[core]}")"; corecpu="$(median "${CPU[core]}")"
  for path in core governed redis exact; do
    p50="$(median "${P50[$path]}")"; p99="$(median "${P99[$path]}")"; cpu="$(median "${CPU[$path]}")"
    printf '%-10s %10s %10s %14s %12s %14s\n' "$path" "$p50" "$p99" "$((p50 - core50))" "$cpu" "$((cpu - corecpu))"
  done
  echo "(cpu_us_req: the gateway process's user + system CPU per request, from /proc, median over the rounds)"
  echo
  echo "ceiling: identity + limits add at most 100 us p50 over the core (issue 3)"
} | tee "$RESULTS"
