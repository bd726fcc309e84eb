# Shared by the drills in ops/: the gateways' configuration.

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
