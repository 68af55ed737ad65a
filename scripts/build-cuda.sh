#!/usr/bin/env bash
# The CUDA build of hybrid-runtime (`--features cuda`), compiled without a GPU: nvcc and the CUDA
# libraries from PyPI (scripts/cuda-toolkit.sh), the kernels for CUDA_COMPUTE_CAP (default 90,
# Hopper). Writes $CARGO_TARGET_DIR/cuda/hybrid-runtime, which `scripts/build-images.sh --cuda`
# puts in the -cuda image, then runs the runtime's device tests on that build: with no GPU
# visible they check that `--device cuda` is refused by name and `auto` falls back to the CPU
# (the driver library is the toolkit's link stub, whose cuInit fails); on a GPU machine the same
# tests compute on the GPU (runtime/tests/gpu.rs).
#
#   scripts/build-cuda.sh            build and test
#   scripts/build-cuda.sh --no-test  build only
#
# The first build compiles candle's CUDA kernels with nvcc (about 10 minutes on 2 cores); later
# builds reuse them. The dev profile, as the CPU image and the tests use.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
run_tests=1
for arg in "$@"; do
  case $arg in
    --no-test) run_tests=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-cuda.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
t0=$SECONDS
log() { printf '[cuda %4ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }

log "CUDA toolkit (PyPI wheels, cached by version)"
eval "$(scripts/cuda-toolkit.sh)"
log "nvcc: $(nvcc --version | tail -n 2 | head -n 1); kernels for compute capability $CUDA_COMPUTE_CAP"

target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}

log "cargo build -p hybrid-runtime --features cuda (dev profile)"
cargo build -p hybrid-runtime --features cuda
mkdir -p "$target_dir/cuda"
cp -f "$target_dir/debug/hybrid-runtime" "$target_dir/cuda/hybrid-runtime.partial"
mv -f "$target_dir/cuda/hybrid-runtime.partial" "$target_dir/cuda/hybrid-runtime"
log "wrote $target_dir/cuda/hybrid-runtime; it needs: $(readelf -d "$target_dir/cuda/hybrid-runtime" |
  sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"

if [ "$run_tests" = 1 ]; then
  # The driver library comes from the node; here the link stub stands in for it, so the binaries
  # start and find no GPU (a GPU machine's real libcuda.so.1 comes first on the search path).
  stubs=$CUDA_HOME/lib/stubs
  ln -sfn libcuda.so "$stubs/libcuda.so.1"
  export LD_LIBRARY_PATH=$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$stubs
  fi
  log "device tests on the CUDA build (cargo test -p hybrid-runtime --features cuda --lib device --test gpu)"
  cargo test -p hybrid-runtime --features cuda --lib --test gpu -- device gpu --nocapture 2>&1 |
    grep -E '^(test |SKIPPED|GPU|test result|running)|panicked|error' >&2
  log "the CUDA binary's own refusal: hybrid-runtime serve --device cuda"
  out=$("$target_dir/cuda/hybrid-runtime" serve --model /nonexistent.gguf --device cuda --listen 127.0.0.1:0 2>&1 || true)
  echo "    $out" >&2
  case $out in
    *"--device cuda:0: no CUDA device"* | *"computing on cuda:0"* | *"/nonexistent.gguf"*) ;;
    *) log "FAILED: unexpected output from the CUDA binary"; exit 1 ;;
  esac
fi
# The CPU binary is what target/debug/hybrid-runtime means to everything else (tests, images).
log "restoring the CPU build at $target_dir/debug/hybrid-runtime"
cargo build -p hybrid-runtime
log "done"
