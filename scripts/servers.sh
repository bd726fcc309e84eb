# PostgreSQL (TLS 1.3 offered, with a CA made for the run) and Redis on loopback, in $SCRATCH.
# Sourced by scripts/test.sh and ops/ha-drill.sh; the caller sets SCRATCH, PG_PORT, REDIS_PORT
# and a log function, and stops the servers ("${PG_CTL[@]}" -m fast stop; the Redis pid file).

# A CA of the run's own, a server certificate for the name localhost only (no IP address, so
# verify-full to 127.0.0.1 must fail while verify-ca passes), and a client certificate for the role pgcert.
make_postgres_tls() {
  local dir="$SCRATCH/pg-tls"
  mkdir -p "$dir"
  (
    cd "$dir"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
    key ca.key
    openssl req -x509 -new -key ca.key -days 30 -subj '/CN=Portcullis test PostgreSQL CA' -out ca.pem 2>/dev/null
    for name in server client; do
      key "$name.key"
      subject='/CN=localhost'; extension='subjectAltName=DNS:localhost'
      if [ "$name" = client ]; then subject='/CN=pgcert'; extension='extendedKeyUsage=clientAuth'; fi
      openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
      printf '%s\n' "$extension" > "$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 20 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    done
  )
  chmod 600 "$dir/server.key"
  chown postgres:postgres "$dir/server.key" 2>/dev/null || true
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
  make_postgres_tls
  # TLS is offered (1.3 only) beside plain connections; the role pgcert may only log in over TLS
  # with a client certificate the test CA signed.
  printf 'hostssl all pgcert 127.0.0.1/32 cert\nhost all pgcert 0.0.0.0/0 reject\n%s\n' \
    "$(cat "$SCRATCH/pg/data/pg_hba.conf")" > "$SCRATCH/pg/data/pg_hba.conf"
  local tls="-c ssl=on -c ssl_min_protocol_version=TLSv1.3 -c ssl_ca_file=$SCRATCH/pg-tls/ca.pem"
  tls="$tls -c ssl_cert_file=$SCRATCH/pg-tls/server.pem -c ssl_key_file=$SCRATCH/pg-tls/server.key"
  if ! "${as_postgres[@]}" "$bin/pg_ctl" -D "$SCRATCH/pg/data" -l "$SCRATCH/pg/log" -w \
    -o "-p $PG_PORT -k $SCRATCH/pg -c listen_addresses=127.0.0.1 $tls" start >/dev/null; then
    log "PostgreSQL did not start:"; cat "$SCRATCH/pg/log" >&2; exit 1
  fi
  PG_CTL=("${as_postgres[@]}" "$bin/pg_ctl" -D "$SCRATCH/pg/data")
  "${as_postgres[@]}" "$bin/psql" -h "$SCRATCH/pg" -p "$PG_PORT" -U postgres -qc "CREATE ROLE pgcert LOGIN" >/dev/null
  export PORTCULLIS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  export PORTCULLIS_TEST_POSTGRES_TLS="$SCRATCH/pg-tls"
  log "PostgreSQL on 127.0.0.1:$PG_PORT"
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$SCRATCH" --save '' --appendonly no \
    --daemonize yes --pidfile "$SCRATCH/redis.pid" --logfile "$SCRATCH/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export PORTCULLIS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  log "Redis on 127.0.0.1:$REDIS_PORT"
}
