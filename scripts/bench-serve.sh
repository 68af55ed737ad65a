#!/usr/bin/env bash
# `make bench-serve`: the serving benchmarks and their baselines in one run, then a side-by-side
# summary with ratios (BENCHMARKS.md, "Serving").
#
#   scripts/bench-serve.sh [SECTION...]     sections: generate precision embed retrieval e2e
#
# Ours: `cargo bench -p hybrid-runtime --bench serve` (release profile). Baselines: llama.cpp
# through llama-cpp-python and sentence-transformers, from scripts/bench/venv.sh (built once,
# several minutes: it compiles llama.cpp). Everything runs on THREADS threads (default 2), on CPU.
# Results land in BENCH_OUT (default target/bench-serve). About 10-15 minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
threads=${THREADS:-2}
out=${BENCH_OUT:-$root/target/bench-serve}
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(generate precision embed retrieval e2e)
has() { local s; for s in "${sections[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
log() { printf '[bench-serve] %s\n' "$*" >&2; }

eval "$(scripts/fetch-models.sh)"
export HYBRID_LLM_GGUF=$LLM_GGUF HYBRID_EMBEDDER_DIR=$EMBEDDER_DIR
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
export BENCH_OUT=$out HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
rm -rf "$out"; mkdir -p "$out"

python=
if has generate || has embed; then
  log "baseline environment (first run compiles llama.cpp; minutes)"
  python=$(scripts/bench/venv.sh | sed -n 's/^PYTHON=//p')
fi
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "building and running the Rust benchmarks (release profile)"
start=$(date +%s)
cargo bench -p hybrid-runtime --bench serve -- "${sections[@]}"
if has generate; then
  log "llama.cpp baseline"
  "$python" scripts/bench/llamacpp_baseline.py "$HYBRID_LLM_GGUF" "$out" "$threads"
  if [ "$threads" -gt 1 ]; then
    # llama.cpp's threads spin at every barrier, so on a machine that other work shares its
    # multi-thread numbers collapse; one thread each is the comparison that load cannot skew.
    log "generation again on 1 thread, ours and llama.cpp"
    mkdir -p "$out/t1"
    RAYON_NUM_THREADS=1 BENCH_OUT=$out/t1 cargo bench -q -p hybrid-runtime --bench serve -- generate
    "$python" scripts/bench/llamacpp_baseline.py "$HYBRID_LLM_GGUF" "$out/t1" 1
  fi
fi
if has embed; then
  log "sentence-transformers baseline"
  "$python" scripts/bench/st_baseline.py "$out" "$threads"
fi
python3 scripts/bench/report.py "$out"
log "done in $(( $(date +%s) - start )) s (build included); load average now $(cut -d' ' -f1-3 /proc/loadavg); results in $out"
