#!/usr/bin/env bash
# Operator benchmark: for each N in BENCH_SIZES (default "100 300 1000"), start a fresh local
# cluster with enough KWOK GPU nodes, create N HybridModels (each with a Corpus, an Adapter and
# two ConfigMaps), and run the operator as the chart's ServiceAccount until all are Ready.
# Prints one `BENCH ...` line per N: time to all Ready, operator peak RSS, reconciles/s, and
# writes per object on an idle resync (from the apiserver audit log). See BENCHMARKS.md.
#
#   BENCH_SIZES="100 300"       sizes to run
#   BENCH_TIMEOUT_SECONDS=900   give up on a size after this long
#   BENCH_PROFILE=release       operator build profile: release (what ships) or debug
#   HYBRID_OPERATOR_BIN         benchmark this binary instead (nothing is built for it)
#   HYBRID_CLUSTER_DIR          cluster state dir (default target/bench-cluster)
#   BENCH_KEEP_CLUSTER=1        leave the last size's cluster running (its audit log, for one)
#   BENCH_CONTROL_PLANE_QPS=100 kube-controller-manager's and kube-scheduler's client rate limit:
#                               at 1000 models their ~10 writes per model need 100 s at 100/s
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export HYBRID_CLUSTER_DIR=${HYBRID_CLUSTER_DIR:-$repo/target/bench-cluster}
CARGO=${CARGO:-cargo}
log() { printf '[bench-operator %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

profile=${BENCH_PROFILE:-release}
case "$profile" in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) echo "BENCH_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
log "building the operator ($profile) and the bench"
if [ -z "${HYBRID_OPERATOR_BIN:-}" ]; then
  "$CARGO" build -p hybrid-operator "${profile_flag[@]}"
  export HYBRID_OPERATOR_BIN=${CARGO_TARGET_DIR:-$repo/target}/$profile/hybrid-operator
fi
"$CARGO" test -p hybrid-e2e --features e2e --test operator_bench --no-run
log "operator binary: $HYBRID_OPERATOR_BIN"

[ "${BENCH_KEEP_CLUSTER:-0}" = 1 ] ||
  trap 'tests/cluster/cluster.sh down >/dev/null 2>&1 || true' EXIT
for n in ${BENCH_SIZES:-100 300 1000}; do
  tests/cluster/cluster.sh down >/dev/null 2>&1 || true
  # One serving pod per model (1 GPU) plus short Job pods; BENCH_GPUS_PER_NODE (8) GPUs and 110
  # pods per node. (cluster.sh's `kubectl wait node --all --timeout=5s` did not pass with 131
  # nodes on the 2-core VM: 32 GPUs per node keeps N=1000 at 35 nodes.)
  gpus=${BENCH_GPUS_PER_NODE:-8}
  log "N=$n: starting a cluster with $((n / gpus + 4)) GPU nodes ($gpus GPUs each), control plane QPS ${BENCH_CONTROL_PLANE_QPS:-100}"
  GPUS_PER_NODE=$gpus GPU_NODES=$((n / gpus + 4)) CONTROL_PLANE_QPS=${BENCH_CONTROL_PLANE_QPS:-100} \
    tests/cluster/cluster.sh up >/dev/null
  eval "$(tests/cluster/cluster.sh env)"
  KUBECTL=$(command -v kubectl)
  export KUBECTL HELM="${KUBECTL%/*}/helm"
  log "N=$n: running (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  BENCH_MODELS=$n "$CARGO" test -p hybrid-e2e --features e2e --test operator_bench -- \
    --ignored --nocapture 2>&1 | grep --line-buffered -E '^BENCH|bench:|panicked|Error'
  log "N=$n: done (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  tests/cluster/cluster.sh status || true
done
