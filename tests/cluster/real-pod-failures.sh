#!/usr/bin/env bash
# Failures on real pods are reported, never "Running" forever: each case makes the local
# cluster's real kubelet node fail a pod the operator created, for real (the scheduler, the
# kubelet and containerd produce the failure; nothing is played), and checks that the resource's
# conditions name the reason within a bounded time, with the message a user sees printed.
#
#   tests/cluster/real-pod-failures.sh     against a running REAL_NODE=1 cluster with the chart
#                                          installed (tests/cluster/real-pods.sh installs it)
#
# Cases (each in its own namespace, deleted afterwards):
#   unschedulable      serving pod asks for 64 CPUs              -> HybridModel Unschedulable
#   image-pull         serving pod's image does not exist        -> HybridModel ImagePullBackOff/ErrImagePull
#   missing-secret     serving pod's env names a missing Secret  -> HybridModel CreateContainerConfigError
#   oom-serving        serving pod limited to 40Mi               -> HybridModel CrashLoopBackOff / OOMKilled
#   crash-loop         serving pod's model file does not exist   -> HybridModel CrashLoopBackOff (with serve's error)
#   missing-pvc        index Job's PVC does not exist            -> Corpus Unschedulable (persistentvolumeclaim not found)
#   oom-job            index Job limited to 40Mi                 -> Corpus OOMKilled, then Stalled (RetryBudgetExhausted) after 3 attempts
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export HYBRID_CLUSTER_DIR=${HYBRID_CLUSTER_DIR:-$repo/.cluster}
eval "$("$here/cluster.sh" env)"
# shellcheck source=/dev/null
source "$HYBRID_CLUSTER_DIR/cluster.env"
[ "$REAL_NODE" = 1 ] || { echo "real-pod-failures.sh needs a cluster started with REAL_NODE=1" >&2; exit 2; }
t_start=$SECONDS
log() { printf '[real-pod-failures %4ds] %s\n' "$((SECONDS - t_start))" "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
results=()
current_ns=""
diagnose() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$current_ns" ]; then
    kubectl get hybrid,jobs,pods -n "$current_ns" -o wide 2>&1 | sed 's/^/  /' >&2 || true
    kubectl get events -n "$current_ns" --sort-by=.lastTimestamp 2>&1 | tail -n 15 | sed 's/^/  /' >&2 || true
  fi
}
trap diagnose EXIT

# The condition (type, reason, message) of kind/name whose reason or message matches `pattern`
# (an extended regex), as one line; empty when there is none yet.
matching_condition() { # ns kind/name pattern
  kubectl -n "$1" get "$2" -o json 2>/dev/null | python3 -c '
import json, re, sys
obj = json.load(sys.stdin)
pat = re.compile(sys.argv[1])
for c in obj.get("status", {}).get("conditions", []):
    if pat.search(c.get("reason", "")) or pat.search(c.get("message", "")):
        print("%s=%s reason=%s: %s" % (c["type"], c["status"], c.get("reason"), c.get("message")))
        break' "$3"
}

# Wait until kind/name has a condition matching pattern; record the line the user sees.
expect() { # case ns kind/name pattern timeout
  local name=$1 ns=$2 obj=$3 pat=$4 timeout=$5 t0=$SECONDS line=""
  while [ -z "$line" ]; do
    line=$(matching_condition "$ns" "$obj" "$pat" || true)
    [ -n "$line" ] && break
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      kubectl -n "$ns" get "$obj" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
      fail "$name: $obj has no condition matching /$pat/ after ${timeout}s"
    fi
    sleep 2
  done
  log "$name: after $((SECONDS - t0)) s: $obj $line"
  results+=("$name | $obj | $line | $((SECONDS - t0)) s")
}

new_ns() { # name [storage]
  current_ns="fail-$1"
  kubectl delete namespace "$current_ns" --ignore-not-found --wait=true --timeout=60s >/dev/null
  kubectl create namespace "$current_ns" >/dev/null
  [ "${2:-}" = storage ] && "$here/cluster.sh" storage "$current_ns" >/dev/null 2>&1
  kubectl -n "$current_ns" apply -f - >/dev/null <<EOF
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {name: cpu}
spec:
  latency: {p95Ms: 5000}
  replicas: {min: 1, max: 1}
  retrieval: {topK: 3, minTopK: 1}
  gpu: {count: 0}
  autoscaling: {enabled: false}
EOF
}
done_ns() {
  kubectl delete namespace "$current_ns" --wait=false >/dev/null 2>&1 || true
  current_ns=""
}

# A HybridModel on the packaged base model with no adapter or corpus; $1 is its `runtime` block.
model() { # runtime-yaml
  kubectl -n "$current_ns" apply -f - >/dev/null <<EOF
apiVersion: hybrid.dev/v1alpha1
kind: HybridModel
metadata: {name: m}
spec:
  model: {source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}
  servingPolicyRef: {name: cpu}
  runtime: $1
EOF
}

corpus() { # indexer-yaml
  kubectl -n "$current_ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: docs}
data:
  a.md: "# A\n\nThe answer is forty-two."
---
apiVersion: hybrid.dev/v1alpha1
kind: Corpus
metadata: {name: c}
spec:
  sources: [{configMap: {name: docs}}]
  chunking: {strategy: markdown, size: 128, overlap: 16}
  embedding: {model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}
  vectorStore: {embedded: {storage: pvc://hybrid-artifacts/indexes}}
  indexer: $1
EOF
}

log "case unschedulable: a serving pod that asks for 64 CPUs"
new_ns unschedulable storage
model '{resources: {requests: {cpu: "64"}}}'
expect unschedulable "$current_ns" hybridmodel/m 'Insufficient cpu' 120
done_ns

log "case image-pull: a serving pod whose image does not exist"
new_ns image-pull storage
model '{image: "localhost/hybrid-runtime:does-not-exist"}'
expect image-pull "$current_ns" hybridmodel/m 'ImagePullBackOff|ErrImagePull' 180
done_ns

log "case missing-secret: a serving pod whose env names a Secret that does not exist"
new_ns missing-secret storage
model '{env: [{name: API_KEY, valueFrom: {secretKeyRef: {name: not-there, key: key}}}]}'
expect missing-secret "$current_ns" hybridmodel/m 'CreateContainerConfigError' 180
done_ns

log "case oom-serving: a serving pod limited to 40Mi of memory"
new_ns oom-serving storage
model '{resources: {limits: {memory: 40Mi}, requests: {memory: 40Mi}}}'
expect oom-serving "$current_ns" hybridmodel/m 'CrashLoopBackOff|OOMKilled' 300
done_ns

log "case crash-loop: a serving pod whose base model file does not exist (serve exits 1)"
new_ns crash-loop storage
kubectl -n "$current_ns" apply -f - >/dev/null <<EOF
apiVersion: hybrid.dev/v1alpha1
kind: HybridModel
metadata: {name: m}
spec:
  model: {source: pvc://hybrid-models/not-there.gguf, format: gguf}
  servingPolicyRef: {name: cpu}
EOF
expect crash-loop "$current_ns" hybridmodel/m 'keeps crashing.*not-there[.]gguf' 300
done_ns

log "case missing-pvc: an index Job whose PVCs do not exist"
new_ns missing-pvc
corpus '{}'
expect missing-pvc "$current_ns" corpus/c 'persistentvolumeclaim .*not found|Unschedulable' 180
done_ns

log "case oom-job: an index Job limited to 40Mi of memory"
new_ns oom-job storage
corpus '{resources: {memory: 40Mi}}'
expect oom-job "$current_ns" corpus/c 'OOMKilled' 300
# An OOM kill is a failed attempt: retried with backoff (30 s, then 60 s), then Stalled.
expect oom-job-stalled "$current_ns" corpus/c 'RetryBudgetExhausted' 420
done_ns

log "PASSED: every failure case is reported; what a user sees:"
printf '  %s\n' "${results[@]}" >&2
