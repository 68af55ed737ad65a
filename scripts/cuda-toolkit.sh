#!/usr/bin/env bash
# The CUDA toolkit for `cargo build -p hybrid-runtime --features cuda`, from PyPI (no GPU and no
# NVIDIA driver needed to compile). Installs nvcc, the headers and the runtime libraries the build
# links (cudart, cuBLAS, cuBLASLt, cuRAND, NVRTC) into a cache keyed by version, then prints the
# environment a build needs as `export` lines:
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo build -p hybrid-runtime --features cuda
#
# The driver library (libcuda.so.1) comes from the node at run time. To link without it, this
# writes a stub libcuda.so with the driver API's symbols (the names cudarc declares) and the real
# library's soname, the same job as the stubs directory of NVIDIA's toolkit installers, which the
# PyPI wheels do not ship. The stub is only on the link path, never in an image.
set -euo pipefail

CUDA_VERSION=${CUDA_VERSION:-13.0.88}
# Versions released with CUDA 13.0 update 2 (cuBLAS and cuRAND number their own releases).
CCCL_VERSION=${CCCL_VERSION:-13.0.85}
CUBLAS_VERSION=${CUBLAS_VERSION:-13.0.2.14}
CURAND_VERSION=${CURAND_VERSION:-10.4.0.35}
# The GPU generation the kernels are compiled for: 90 = Hopper (H100, H200), 80 = Ampere (A100).
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

cache=${HYBRID_CACHE_DIR:-$HOME/.cache/hybrid-operator}/cuda-$CUDA_VERSION
home=$cache/nvidia/cu13
log() { echo "[cuda-toolkit] $*" >&2; }

if [[ ! -f $cache/.complete ]]; then
  log "installing CUDA $CUDA_VERSION from PyPI into $cache (about 1.2 GB)"
  rm -rf "$cache"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cache" \
    "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" \
    "nvidia-cuda-runtime==$CUDA_VERSION" "nvidia-cuda-nvrtc==$CUDA_VERSION" \
    "nvidia-cuda-cccl==$CCCL_VERSION" "nvidia-cublas==$CUBLAS_VERSION" "nvidia-curand==$CURAND_VERSION" >&2
  # The wheels ship versioned sonames only; the linker looks for the unversioned names.
  for so in "$home"/lib/lib{cudart,cublas,cublasLt,curand,nvrtc}.so.*; do
    base=${so##*/}
    ln -sfn "$base" "$home/lib/${base%%.so.*}.so"
  done
  # nvcc looks for nvvm/ and the crt headers beside bin/, where the wheels put them.
  mkdir -p "$home/lib/stubs"
  # The driver API's names, from cudarc's declarations (its sources arrive with `cargo fetch`).
  cudarc_sys() { ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | head -n1; }
  [ -n "$(cudarc_sys)" ] || (cd "$(dirname "$0")/.." && cargo fetch >/dev/null)
  syms=$(grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$(cudarc_sys)" | awk '{print $4}' | sort -u)
  stub=$(mktemp -d)
  # shellcheck disable=SC2086
  printf 'int %s(void) { return 999; }\n' $syms >"$stub/libcuda.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib/stubs/libcuda.so" "$stub/libcuda.c"
  rm -rf "$stub"
  log "stub libcuda.so: $(wc -w <<<"$syms") driver API symbols"
  touch "$cache/.complete"
fi

cat <<EOF
export HYBRID_CUDA_VERSION=$CUDA_VERSION
export CUDA_HOME=$home
export CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP
export PATH=$home/bin:\$PATH
export LIBRARY_PATH=$home/lib:$home/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}
EOF
