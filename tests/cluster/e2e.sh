#!/usr/bin/env bash
# `make e2e`: start the local cluster, run the cluster e2e tests and the chart check against
# it, stop it again (also when something fails or the run is interrupted).
#
#   E2E_TEST_THREADS   parallel tests per test binary (default 4)
#   E2E_KEEP_CLUSTER=1 leave the cluster running afterwards (stop it with `make cluster-down`)
#   E2E_REAL_NODE      the real-node phase: auto (default: run it as root, report NOT RUN
#                      otherwise), 1 (run it; fail without root), 0 (skip it)
#   extra arguments go to `cargo test`, e.g. tests/cluster/e2e.sh --test jobs
#
# Two phases. The KWOK phase runs the Rust e2e tests (tests/tests) on a cluster whose nodes are
# simulated, where the tests play Job results and the runtime's reports. The real-node phase
# (root only) builds the images (`make images`), starts a second cluster with a real kubelet node
# (REAL_NODE=1) and runs tests/cluster/real-pods.sh (the finance example end to end in real pods)
# and tests/cluster/real-pod-failures.sh (failures the kubelet really produces, as conditions).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
# A cluster of its own (under target/, which git ignores), so a developer's `make cluster-up`
# in .cluster/ is left alone.
export HYBRID_CLUSTER_DIR=${HYBRID_CLUSTER_DIR:-$repo/target/e2e-cluster}
CARGO=${CARGO:-cargo}

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Compile first, while no cluster is running: on a cold target dir this is the slow part.
log "building the e2e tests and the operator they run"
"$CARGO" test -p hybrid-e2e --features e2e --no-run
# The autoscaler test runs real `hybrid-runtime serve` processes next to the operator.
"$CARGO" build -p hybrid-operator -p hybrid-runtime
export HYBRID_OPERATOR_BIN=${HYBRID_OPERATOR_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/hybrid-operator}
export HYBRID_RUNTIME_BIN=${HYBRID_RUNTIME_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/hybrid-runtime}

# What each step printed, so a failure can be summed up last: CI shows only the tail of a
# run, and the component logs printed on failure push the failing test out of it.
out_dir=$(mktemp -d)
stage="building"
finish() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -f "$HYBRID_CLUSTER_DIR/cluster.env" ]; then
    log "failed (exit $rc); component logs:"
    "$here/cluster.sh" logs 40 || true
  fi
  if [ "${E2E_KEEP_CLUSTER:-0}" = 1 ]; then
    log "keeping the cluster: eval \"\$(HYBRID_CLUSTER_DIR=$HYBRID_CLUSTER_DIR tests/cluster/cluster.sh env)\""
  else
    "$here/cluster.sh" down || true
  fi
  if [ "$rc" != 0 ]; then
    log "FAILED while $stage (exit $rc); summary:"
    cat "$out_dir"/*.log 2>/dev/null |
      grep -E 'error: |^test .* FAILED$|panicked at|^Error: |^failures:$|^    [a-z_:]+$|FAILED: ' | head -60 >&2 || true
  fi
  rm -rf "$out_dir"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

"$here/cluster.sh" down >/dev/null 2>&1 || true # a leftover from an interrupted run
stage="starting the cluster"
"$here/cluster.sh" up 2>&1 >/dev/null | tee "$out_dir/cluster-up.log" >&2
eval "$("$here/cluster.sh" env)"
KUBECTL=$(command -v kubectl)
export KUBECTL HELM="${KUBECTL%/*}/helm"

log "running the e2e tests"
stage="running the e2e tests"
"$CARGO" test -p hybrid-e2e --features e2e "$@" -- --test-threads="${E2E_TEST_THREADS:-4}" 2>&1 |
  tee "$out_dir/tests.log"
log "chart: helm lint, kubeconform against this apiserver's schemas"
stage="checking the chart"
"$here/chart-check.sh" 2>&1 | tee "$out_dir/chart.log"
"$here/cluster.sh" status

real_node=${E2E_REAL_NODE:-auto}
case "$real_node" in
  0) log "NOT RUN: the real-node phase (tests/cluster/real-pods.sh, real-pod-failures.sh): E2E_REAL_NODE=0" ;;
  1) [ "$(id -u)" = 0 ] || { log "E2E_REAL_NODE=1: the real-node phase needs root (containerd, runc, network namespaces, iptables)"; exit 1; } ;;
  auto)
    if [ "$(id -u)" = 0 ]; then
      real_node=1
    else
      log "NOT RUN: the real-node phase (tests/cluster/real-pods.sh, real-pod-failures.sh) needs root for containerd, runc, network namespaces and iptables; run make test as root to include it"
      real_node=0
    fi ;;
  *) log "E2E_REAL_NODE must be auto, 0 or 1, not '$real_node'"; exit 2 ;;
esac
if [ "$real_node" = 1 ]; then
  stage="building the images"
  log "real-node phase: building the images (make images)"
  "$repo/scripts/build-images.sh" 2>&1 | tee "$out_dir/images.log" >&2
  stage="starting the real-node cluster"
  "$here/cluster.sh" down >/dev/null 2>&1
  REAL_NODE=1 "$here/cluster.sh" up 2>&1 >/dev/null | tee "$out_dir/cluster-real-up.log" >&2
  stage="running the finance example on real pods"
  "$here/real-pods.sh" 2>&1 | tee "$out_dir/real-pods.log" >&2
  stage="running the failure cases on real pods"
  "$here/real-pod-failures.sh" 2>&1 | tee "$out_dir/real-pod-failures.log" >&2
  "$here/cluster.sh" status
fi
