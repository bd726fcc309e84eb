# Shared by the drills in ops/: the gateways' configuration, starting a replica, HAProxy in front.

# Writes a drill gateway's configuration to $1: the demo model as `bench` (unlimited, for load)
# and `limited` ($4 requests a minute across every replica), on PostgreSQL $2 and Redis $3;
# guards and request auditing off so the drill loads routing and shared state, not them.
write_drill_config() { # file database-url redis-url limit probe-seconds
  cat > "$1" <<YAML
log_level: warning
server: { shutdown_grace_seconds: 10 }
auth: { master_key: drill-master-key, key_pepper: "drill-pepper-0123456789abcdef-0123456789" }
storage: { database: "$2", redis: "$3", probe_interval_seconds: $5 }
limits:
  roles: { admin: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 } }
  models: { limited: { rpm: $4 } }
guardrails: { enabled: false }
audit: { enabled: false }
routing: { health_check: { interval_seconds: 0 } }
models:
  - name: bench
    deployments: [{ provider: demo }]
  - name: limited
    deployments: [{ provider: demo }]
YAML
}

# Starts replica $1 of GATEWAY_PORTS from $BIN with $SCRATCH/gateway.yaml (its pid in
# GATEWAY_PIDS) and waits until it is ready.
start_gateway() { # index
  local port="${GATEWAY_PORTS[$1]}"
  "$BIN" serve --config "$SCRATCH/gateway.yaml" --port "$port" >>"$SCRATCH/gateway-$1.log" 2>&1 &
  GATEWAY_PIDS[$1]=$!
  for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && return 0; sleep 0.05; done
  log "replica $1 did not become ready:"; tail -20 "$SCRATCH/gateway-$1.log" >&2; exit 1
}

# Writes $SCRATCH/haproxy.cfg: HAProxy on $1 in front of the GATEWAY_PORTS replicas. It checks
# readiness twice a second and retries, on another replica, a request whose connection failed
# or was closed before any answer (a replica killed or draining).
write_haproxy_config() { # listen-port
  {
    cat <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
  option http-buffer-request
frontend gateway
  bind 127.0.0.1:$1
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /health/ready
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
CFG
    local index
    for index in "${!GATEWAY_PORTS[@]}"; do printf '  server r%s 127.0.0.1:%s check\n' "$index" "${GATEWAY_PORTS[$index]}"; done
  } > "$SCRATCH/haproxy.cfg"
}

# Installs the drill's tools that are missing: commands of Debian packages of the same name, and
# `postgresql` (its initdb).
install_drill_tools() { # tool…
  local missing=() tool
  for tool in "$@"; do
    if [ "$tool" = postgresql ]; then
      ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    else
      command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    fi
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null   # a fresh machine has no package lists yet
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
}

# Sets BIN to $PORTCULLIS_BIN, or to the release build, built now.
drill_binary() {
  if [ -n "${PORTCULLIS_BIN:-}" ]; then
    BIN="$PORTCULLIS_BIN"
  else
    log "building the release binary"
    swift build -c release --product portcullis >/dev/null
    BIN="$(swift build -c release --show-bin-path)/portcullis"
  fi
}
