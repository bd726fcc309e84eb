#!/usr/bin/env bash
# The local guard tiers (validation, normalisation, injection rules, classifier, PII, moderation) on a 4,000-token prompt,
# release build, pinned to one core; the reference is lower-casing the same prompt.
# Two prompts: the built-in one (seven sentences in five languages, repeated) and a varied one made of the benign texts of
# the labelled sets (look-alikes of attacks in five languages, few repeats), which is the harder of the two.
# Usage: bench/guard.sh [tokens] [iterations]   (default 4000 and 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product portcullis >/dev/null
BIN="$(swift build -c release --show-bin-path)/portcullis"
varied="$(mktemp)"
trap 'rm -f "$varied"' EXIT
grep -h '"label": "benign"' datasets/injection.jsonl datasets/injection-holdout.jsonl datasets/injection-holdout-2.jsonl > "$varied"
{
  echo "Local guard tiers — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo "command: bench/guard.sh ${1:-4000} ${2:-2000}   (release; taskset -c 0)"
  echo
  echo "## built-in prompt"
  taskset -c 0 "$BIN" guard bench --tokens "${1:-4000}" --iterations "${2:-2000}"
  echo
  echo "## varied prompt: the labelled sets' benign texts"
  taskset -c 0 "$BIN" guard bench --tokens "${1:-4000}" --iterations "${2:-2000}" --prompt-file "$varied"
} | tee bench/results/guard.txt
