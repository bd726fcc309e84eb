#!/usr/bin/env bash
# Gateway overhead benchmark, release build, all on loopback.
#
# Measures in one run, with the same mock upstream and the same load generator:
#   direct      wrk → mock upstream
#   nginx       wrk → nginx (1 worker, pinned to core 0, keep-alive upstream pool) → mock
#   portcullis  wrk → Portcullis (pinned to core 0) → mock
# at 1 and 64 connections, and prints requests/s, p50, p99 and the ratios the issue asks for.
# The mock and wrk share core 1, identically for all three paths.
#
# Usage: bench/run.sh [seconds-per-measurement]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
MOCK_PORT=19001; NGINX_PORT=19002; GATEWAY_PORT=19003
WORK="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
RESULTS="bench/results/latest.txt"
log() { printf '[bench] %s\n' "$*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || { log "installing $2"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light

log "building release"
swift build -c release --product portcullis >/dev/null
BIN="$(swift build -c release --show-bin-path)/portcullis"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; log "port $1 never opened"; exit 1; }

taskset -c 1 "$BIN" mock-upstream --port "$MOCK_PORT" --reply "Hello there, how are you" --log-level error &
PIDS+=($!)

cat > "$WORK/gateway.yaml" <<YAML
server: { host: 127.0.0.1, port: $GATEWAY_PORT }
log_level: warning
routing: { health_check: { interval_seconds: 0 } }
models:
  - name: bench
    deployments:
      - { provider: openai_compatible, model: mock, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: bench-key }
YAML
taskset -c 0 "$BIN" serve --config "$WORK/gateway.yaml" &
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

wait_port "$MOCK_PORT"; wait_port "$GATEWAY_PORT"; wait_port "$NGINX_PORT"

measure() { # name port connections → "rps p50 p99"
  local line
  line="$(taskset -c 1 wrk -t1 -c"$3" -d"${DURATION}s" --timeout 5s -s bench/chat.lua "http://127.0.0.1:$2/v1/chat/completions" | grep '^RESULT')"
  log "$1 c=$3: $line"
  echo "$line"
}
field() { sed -E "s/.*$1=([0-9.]+).*/\\1/" <<<"$2"; }

log "warming up"
for port in $MOCK_PORT $NGINX_PORT $GATEWAY_PORT; do taskset -c 1 wrk -t1 -c16 -d2s -s bench/chat.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null; done

declare -A R
for c in 1 64; do
  R[direct_$c]="$(measure direct $MOCK_PORT $c)"
  R[nginx_$c]="$(measure nginx $NGINX_PORT $c)"
  R[portcullis_$c]="$(measure portcullis $GATEWAY_PORT $c)"
done

{
  echo "Portcullis gateway benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${DURATION}s per measurement"
  echo "command: bench/run.sh $DURATION   (release build; gateway and nginx pinned to core 0; mock and wrk on core 1)"
  echo
  printf '%-12s %5s %12s %10s %10s %8s\n' path conns req/s p50_us p99_us errors
  for c in 1 64; do
    for path in direct nginx portcullis; do
      line="${R[${path}_$c]}"
      printf '%-12s %5s %12s %10s %10s %8s\n' "$path" "$c" "$(field rps "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field errors "$line")"
    done
  done
  echo
  awk -v p="$(field rps "${R[portcullis_64]}")" -v n="$(field rps "${R[nginx_64]}")" -v d="$(field rps "${R[direct_64]}")" \
    'BEGIN { printf "64 connections: portcullis/nginx req/s = %.2f (floor 0.50); portcullis/direct = %.2f; nginx/direct = %.2f\n", p/n, p/d, n/d }'
  awk -v p="$(field p99_us "${R[portcullis_1]}")" -v d="$(field p99_us "${R[direct_1]}")" -v p5="$(field p50_us "${R[portcullis_1]}")" -v d5="$(field p50_us "${R[direct_1]}")" \
    'BEGIN { printf "1 connection: added latency p50 = %d us, p99 = %d us (ceiling 1000 us)\n", p5-d5, p-d }'
} | tee "$RESULTS"
