#!/usr/bin/env bash
# The local guard tiers (validation, normalisation, injection rules, classifier, PII, moderation) on a 4,000-token prompt,
# release build, pinned to one core; the reference is lower-casing the same prompt.
# Usage: bench/guard.sh [tokens] [iterations]   (default 4000 and 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product portcullis >/dev/null
BIN="$(swift build -c release --show-bin-path)/portcullis"
{
  echo "Local guard tiers — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo "command: bench/guard.sh ${1:-4000} ${2:-2000}   (release; taskset -c 0)"
  taskset -c 0 "$BIN" guard bench --tokens "${1:-4000}" --iterations "${2:-2000}"
} | tee bench/results/guard.txt
