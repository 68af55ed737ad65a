#!/usr/bin/env bash
# Draws an autoscaler e2e timeline as a PNG (matplotlib from a cached venv, built once):
#
#   scripts/plot-autoscaler.sh [timeline.json] [out.png]
#
# Defaults: the timeline the last `tests/cluster/e2e.sh --test autoscaler_e2e` wrote, and
# docs/autoscaler-e2e.png. The venv is ~/.cache/hybrid-operator/plot-env-<digest of
# scripts/requirements-plot.txt>; everything comes from PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
req="$here/requirements-plot.txt"
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
venv="$cache_root/plot-env-$(sha256sum "$req" | cut -c1-12)"
if [ ! -f "$venv/.complete" ]; then
  printf '[plot-env] creating %s from %s\n' "$venv" "$req" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
target=${CARGO_TARGET_DIR:-$repo/target}
timeline=${1:-$target/tmp/autoscaler-e2e/timeline.json}
exec "$venv/bin/python" "$here/plot-autoscaler.py" "$timeline" "${2:-$repo/docs/autoscaler-e2e.png}"
