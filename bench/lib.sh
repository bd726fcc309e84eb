# Shared set-up of the benchmark scripts (sourced, not run). Callers set WORK, MOCK_PORT and
# REDIS_PORT and define log() before sourcing; this file adds the tools, the release binary
# in $BIN, the mock upstream and redis-server (each on core 1), and the helpers below.

# A fresh machine has no package lists yet: install, and on failure refresh the lists once and retry.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
need wrk wrk
need redis-server redis-server
need curl curl

log "building release"
swift build -c release --product portcullis >/dev/null
BIN="$(swift build -c release --show-bin-path)/portcullis"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$WORK"/nginx-*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
  # A gateway writes its last audit checkpoint as it stops: wait for it before removing its files.
  for pid in "${PIDS[@]}"; do for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; log "port $1 never opened"; exit 1; }

# The upstream mock is nginx answering every request with one fixed chat completion: one
# worker on core 1 (beside wrk) does ~45k req/s here, several times what any proxy in front
# of it reaches, so a ratio measures the proxy, not the mock.
need nginx nginx-light
MOCK_BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}'
nginx_conf() { # name core http-block-body → a config file for one pinned nginx worker
  mkdir -p "$WORK/nginx-$1"
  cat > "$WORK/nginx-$1.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity $2;
pid $WORK/nginx-$1.pid;
error_log $WORK/nginx-$1/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-$1/body;
  proxy_temp_path $WORK/nginx-$1/proxy;
  fastcgi_temp_path $WORK/nginx-$1/fastcgi;
  uwsgi_temp_path $WORK/nginx-$1/uwsgi;
  scgi_temp_path $WORK/nginx-$1/scgi;
  keepalive_requests 1000000;
  $3
}
NGINX
  echo "$WORK/nginx-$1.conf"
}
nginx -c "$(nginx_conf mock 10 "server { listen 127.0.0.1:$MOCK_PORT; location / { default_type application/json; return 200 '$MOCK_BODY'; } }")"
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" >/dev/null

gateway_yaml() { # port [extra storage settings] [extra top-level yaml] — the same model for every Portcullis path
  cat <<YAML
server: { host: 127.0.0.1, port: $1 }
log_level: warning
auth: { master_key: bench-master-key }
# Every role's limits far above what the bench sends: it measures the path, not the limiter.
limits: { roles: { admin: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 }, user: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 } } }
storage: { database: "sqlite:$WORK/gateway-$1.db"${2:-} }
routing: { health_check: { interval_seconds: 0 } }
${3:-}
models:
  - name: bench
    deployments:
      - { provider: openai_compatible, model: mock, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: bench-key,
          price: { input_per_million: 1, output_per_million: 10 } }
YAML
}

# A virtual key with every limit and a budget set high enough never to refuse.
create_key() {
  curl -sf -X POST "http://127.0.0.1:$1/admin/keys" -H 'authorization: Bearer bench-master-key' -H 'content-type: application/json' \
    -d '{"name":"bench","rpm":100000000,"tpm":10000000000,"concurrency":100000,"budget":1000000,"budget_period":"month"}' |
    sed -E 's/.*"key":"([^"]+)".*/\1/'
}

field() { sed -E "s/.*$1=([0-9.]+).*/\\1/" <<<"$2"; }
