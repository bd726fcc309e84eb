#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs PostgreSQL and Redis from
# Debian when missing, starts them on loopback ports in a scratch folder, builds once,
# runs every test, and stops the servers again (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH="$(mktemp -d /tmp/portcullis-test.XXXXXX)"
PG_PORT="${PORTCULLIS_TEST_PG_PORT:-55432}"
REDIS_PORT="${PORTCULLIS_TEST_REDIS_PORT:-56379}"
log() { printf '[test.sh] %s\n' "$*" >&2; }

install_missing() {
  local packages=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  if ((${#packages[@]})); then
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

start_postgres() {
  local bin
  bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  mkdir -p "$SCRATCH/pg"
  chown -R postgres:postgres "$SCRATCH/pg" 2>/dev/null || true
  chmod 755 "$SCRATCH"
  local as_postgres=()
  if [ "$(id -u)" = 0 ]; then as_postgres=(runuser -u postgres --); fi
  "${as_postgres[@]}" "$bin/initdb" -D "$SCRATCH/pg/data" -U postgres -A trust >/dev/null
  "${as_postgres[@]}" "$bin/pg_ctl" -D "$SCRATCH/pg/data" -l "$SCRATCH/pg/log" -w \
    -o "-p $PG_PORT -k $SCRATCH/pg -c listen_addresses=127.0.0.1" start >/dev/null
  PG_CTL=("${as_postgres[@]}" "$bin/pg_ctl" -D "$SCRATCH/pg/data")
  export PORTCULLIS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  log "PostgreSQL on 127.0.0.1:$PG_PORT"
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$SCRATCH" --save '' --appendonly no \
    --daemonize yes --pidfile "$SCRATCH/redis.pid" --logfile "$SCRATCH/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export PORTCULLIS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  log "Redis on 127.0.0.1:$REDIS_PORT"
}

cleanup() {
  if [ -n "${PG_CTL:-}" ]; then "${PG_CTL[@]}" -m fast stop >/dev/null 2>&1 || true; fi
  if [ -f "$SCRATCH/redis.pid" ]; then kill "$(cat "$SCRATCH/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

install_missing
start_postgres
start_redis

log "building (debug, tests included)"
swift build --build-tests
log "running the suite"
swift test --skip-build
