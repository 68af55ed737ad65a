#!/usr/bin/env bash
# `make cluster-demo`: the operator for real, on this machine. Builds the two images without a
# container daemon (make images), starts the local cluster with a real kubelet node next to the
# KWOK GPU nodes (tests/cluster/cluster.sh, REAL_NODE=1, state in .cluster/), installs the chart
# with those images, applies the finance example with its no-GPU overlay, waits for the
# HybridModel to be Ready (a real index Job, a real training Job, a real serving pod), asks a
# question through the model's Service and prints the cited answer. The cluster keeps running;
# `make cluster-down` stops it and removes everything it created.
#
# Needs root: the real node runs containerd and runc, creates network namespaces, a bridge,
# iptables rules and cgroups.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { printf '\n[cluster-demo] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "make cluster-demo needs root (containerd, runc, network namespaces, iptables, cgroups); run it with sudo" >&2; exit 1; }
export HYBRID_CLUSTER_DIR=${HYBRID_CLUSTER_DIR:-$repo/.cluster}

log "1/4 system packages"
scripts/prereqs.sh
log "2/4 images (cargo build, then a root filesystem from Debian packages; the first build takes many minutes)"
scripts/build-images.sh
log "3/4 local cluster with a real node (the first run builds Kubernetes from Go modules)"
if [ -f "$HYBRID_CLUSTER_DIR/cluster.env" ]; then
  log "a cluster already runs in $HYBRID_CLUSTER_DIR: stopping it first"
  tests/cluster/cluster.sh down
fi
REAL_NODE=1 tests/cluster/cluster.sh up >/dev/null
log "4/4 the chart, the finance example, a question through the Service"
REAL_PODS_DEMO=1 tests/cluster/real-pods.sh
log "done. Try it yourself:"
cat >&2 <<MSG
  eval "\$(HYBRID_CLUSTER_DIR=$HYBRID_CLUSTER_DIR tests/cluster/cluster.sh env)"
  kubectl get hybrid -n finance
  curl -s http://\$(kubectl -n finance get svc advisor -o jsonpath='{.spec.clusterIP}'):8080/v1/chat/completions \\
    -H 'content-type: application/json' \\
    -d '{"model":"advisor","temperature":0,"max_tokens":64,"messages":[{"role":"user","content":"What did the Velorian Monetary Authority cut its policy rate to in February 2026?"}]}'
  (SmolLM2-135M on 2 CPU cores: about 30 s an answer; greedy decoding keeps it to the cited facts
  better than sampling does)
  make cluster-down
MSG
