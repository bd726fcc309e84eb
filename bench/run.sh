#!/usr/bin/env bash
# Gateway overhead benchmark, release build, all on loopback.
#
# Measures in one run, with the same mock upstream and the same load generator:
#   direct      wrk → mock upstream
#   nginx       wrk → nginx (1 worker, pinned to core 0, keep-alive upstream pool) → mock
#   core        wrk → Portcullis without identity, limits or budgets (--reference-core) → mock
#   portcullis  wrk → Portcullis with a virtual API key, RPM/TPM/concurrency limits and a budget,
#               embedded default (SQLite, in-process state) → mock
#   redis       the same as portcullis with limits and budgets in Redis (redis-server on core 1)
# at 1 and 64 connections, and prints requests/s, p50, p99 and the ratios the issue asks for.
# The mock and wrk share core 1, identically for all three paths.
#
# Usage: bench/run.sh [seconds-per-measurement]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
MOCK_PORT=19001; NGINX_PORT=19002; GATEWAY_PORT=19003; CORE_PORT=19004; REDIS_GATEWAY_PORT=19005; REDIS_PORT=19006
WORK="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
RESULTS="bench/results/latest.txt"
log() { printf '[bench] %s\n' "$*" >&2; }

source bench/lib.sh
need nginx nginx-light

gateway_yaml "$GATEWAY_PORT" > "$WORK/gateway.yaml"
gateway_yaml "$REDIS_GATEWAY_PORT" ", redis: \"redis://127.0.0.1:$REDIS_PORT\"" > "$WORK/gateway-redis.yaml"
# The reference: the same gateway without credentials, limits, budgets or accounting.
gateway_yaml "$CORE_PORT" | grep -v master_key > "$WORK/core.yaml"
taskset -c 0 "$BIN" serve --config "$WORK/gateway.yaml" &
PIDS+=($!)
taskset -c 0 "$BIN" serve --config "$WORK/gateway-redis.yaml" &
PIDS+=($!)
taskset -c 0 "$BIN" serve --config "$WORK/core.yaml" --reference-core &
PIDS+=($!)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 01;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf"

wait_port "$MOCK_PORT"; wait_port "$GATEWAY_PORT"; wait_port "$NGINX_PORT"; wait_port "$CORE_PORT"; wait_port "$REDIS_GATEWAY_PORT"

declare -A KEYS=([$GATEWAY_PORT]="$(create_key $GATEWAY_PORT)" [$REDIS_GATEWAY_PORT]="$(create_key $REDIS_GATEWAY_PORT)")
for port in "${!KEYS[@]}"; do [[ "${KEYS[$port]}" == pck_* ]] || { log "no key from the gateway on $port"; exit 1; }; done

measure() { # name port connections → "rps p50 p99"
  local line
  line="$(BENCH_KEY="${KEYS[$2]:-}" taskset -c 1 wrk -t1 -c"$3" -d"${DURATION}s" --timeout 5s -s bench/chat.lua \
    "http://127.0.0.1:$2/v1/chat/completions" | grep '^RESULT')"
  log "$1 c=$3: $line"
  echo "$line"
}

log "warming up"
for port in $MOCK_PORT $NGINX_PORT $CORE_PORT $GATEWAY_PORT $REDIS_GATEWAY_PORT; do
  BENCH_KEY="${KEYS[$port]:-}" taskset -c 1 wrk -t1 -c16 -d2s -s bench/chat.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
done

declare -A R
for c in 1 64; do
  R[direct_$c]="$(measure direct $MOCK_PORT $c)"
  R[nginx_$c]="$(measure nginx $NGINX_PORT $c)"
  R[core_$c]="$(measure core $CORE_PORT $c)"
  R[portcullis_$c]="$(measure portcullis $GATEWAY_PORT $c)"
  R[redis_$c]="$(measure redis $REDIS_GATEWAY_PORT $c)"
done

{
  echo "Portcullis gateway benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${DURATION}s per measurement"
  echo "command: bench/run.sh $DURATION   (release build; gateway and nginx pinned to core 0; mock and wrk on core 1)"
  echo
  printf '%-12s %5s %12s %10s %10s %8s\n' path conns req/s p50_us p99_us errors
  for c in 1 64; do
    for path in direct nginx core portcullis redis; do
      line="${R[${path}_$c]}"
      printf '%-12s %5s %12s %10s %10s %8s\n' "$path" "$c" "$(field rps "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field errors "$line")"
    done
  done
  echo
  awk -v p="$(field rps "${R[portcullis_64]}")" -v n="$(field rps "${R[nginx_64]}")" -v d="$(field rps "${R[direct_64]}")" \
    'BEGIN { printf "64 connections: portcullis/nginx req/s = %.2f (floor 0.50); portcullis/direct = %.2f; nginx/direct = %.2f\n", p/n, p/d, n/d }'
  awk -v p="$(field p99_us "${R[portcullis_1]}")" -v d="$(field p99_us "${R[direct_1]}")" -v p5="$(field p50_us "${R[portcullis_1]}")" -v d5="$(field p50_us "${R[direct_1]}")" \
    'BEGIN { printf "1 connection: added latency p50 = %d us, p99 = %d us (ceiling 1000 us)\n", p5-d5, p-d }'
  for governed in portcullis redis; do
    awk -v name="$governed" -v g="$(field p50_us "${R[${governed}_1]}")" -v c="$(field p50_us "${R[core_1]}")" \
        -v gr="$(field rps "${R[${governed}_64]}")" -v cr="$(field rps "${R[core_64]}")" \
      'BEGIN { printf "identity + limits + budget (%s): p50 %+d us over the core at 1 connection (ceiling 100 us); req/s at 64 connections = %.2f of the core\n", name, g-c, gr/cr }'
  done
} | tee "$RESULTS"
