#!/usr/bin/env bash
# Builds, once, a small venv with the official OpenAI Python client and prints its interpreter:
#
#   scripts/openai-env.sh        prints PYTHON=<path to the venv's python>
#
# Keyed by the digest of scripts/requirements-openai.txt: ~/.cache/hybrid-operator/openai-env-<key>.
# Everything comes from PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements-openai.txt"
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
key=$(sha256sum "$req" | cut -c1-12)
venv="$cache_root/openai-env-$key"
if [ ! -f "$venv/.complete" ]; then
  printf '[openai-env] creating %s from %s\n' "$venv" "$req" >&2
  mkdir -p "$cache_root"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "PYTHON=$venv/bin/python"
