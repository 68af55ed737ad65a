#!/usr/bin/env bash
# Builds, once, the Python environment the serving benchmarks' baselines run in, and prints its
# interpreter:  scripts/bench/venv.sh  ->  PYTHON=<path>
#
# llama-cpp-python compiles llama.cpp (CPU only) from its sdist; that takes several minutes on two
# cores, and its compiler output is shown as it goes. torch and transformers are reused from the
# PEFT test environment (scripts/python-env.sh) through a .pth file instead of a second ~3 GB copy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
req="$here/requirements.txt"
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
log() { printf '[bench-venv] %s\n' "$*" >&2; }

base_python=$("$here/../python-env.sh" | sed -n 's/^PYTHON=//p')
base_site=$("$base_python" -c 'import site; print(site.getsitepackages()[0])')
key=$(cat "$req" <(echo "$base_site") | sha256sum | cut -c1-12)
venv="$cache_root/bench-venv-$key"

if [ ! -f "$venv/.complete" ]; then
  for tool in cmake cc c++; do
    command -v "$tool" >/dev/null || {
      log "llama-cpp-python needs '$tool' to build llama.cpp: apt-get install -y cmake build-essential"
      exit 1
    }
  done
  log "creating $venv (builds llama.cpp from source; minutes)"
  rm -rf "$venv"
  "$base_python" -m venv "$venv"
  site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
  echo "$base_site" >"$site/hybrid-pyenv.pth"
  # CPU only, tuned for this machine; -v streams the cmake/compiler lines as progress.
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$venv/bin/python" -m pip install -v --disable-pip-version-check -r "$req" 2>&1 |
    grep --line-buffered -E '\[[0-9]+/[0-9]+\]|Building|Successfully|ERROR|error:' >&2 || true
  "$venv/bin/python" -c 'import llama_cpp, sentence_transformers' ||
    { log "install failed (see above)"; exit 1; }
  touch "$venv/.complete"
fi
echo "PYTHON=$venv/bin/python"
