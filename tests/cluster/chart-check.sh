#!/usr/bin/env bash
# Chart checks without the internet: `helm lint`, `helm template`, and kubeconform on the
# rendered manifests against JSON schemas made from a real kube-apiserver's OpenAPI document
# (built-in kinds of the pinned Kubernetes version plus the chart's own CRDs).
#
#   tests/cluster/chart-check.sh
#
# kubeconform cannot download its usual schemas here, so this script makes them: it uses the
# cluster of tests/cluster/cluster.sh in $HYBRID_CLUSTER_DIR when one is up there (as under
# `make e2e`), and otherwise starts a node-less one of its own for the few seconds it needs.
# Kinds with no schema (the Prometheus Operator's, which no local apiserver serves) are
# skipped and listed. The server-side dry run of the rendered chart is an e2e test
# (tests/tests/chart.rs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart="$repo/charts/hybrid-operator"
log() { printf '[chart-check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -f "$chart/Chart.yaml" ] || { log "error: no chart at $chart"; exit 1; }
BIN=$("$here/build.sh")
# shellcheck source=versions.env
source "$here/versions.env"
tmp=$(mktemp -d)
own_cluster=""
cleanup() {
  if [ -n "$own_cluster" ]; then HYBRID_CLUSTER_DIR=$own_cluster "$here/cluster.sh" down >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# helm built from source assumes Kubernetes v1.20 unless told; check for the pinned version.
# The second value set switches on every optional template, so those render and lint too.
all_on=(--set metrics.serviceMonitor.enabled=true --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true)
log "helm lint"
"$BIN/helm" lint --strict --kube-version "$K8S_VERSION" "$chart"
"$BIN/helm" lint --strict --kube-version "$K8S_VERSION" "$chart" "${all_on[@]}"
log "helm template"
{
  "$BIN/helm" template hybrid-operator "$chart" --namespace hybrid-system --kube-version "$K8S_VERSION"
  "$BIN/helm" template hybrid-operator "$chart" --namespace hybrid-system --kube-version "$K8S_VERSION" "${all_on[@]}"
} >"$tmp/rendered.yaml"

cluster_dir=${HYBRID_CLUSTER_DIR:-$repo/.cluster}
if ! HYBRID_CLUSTER_DIR=$cluster_dir "$here/cluster.sh" status >/dev/null 2>&1; then
  own_cluster="$tmp/cluster"
  cluster_dir=$own_cluster
  log "starting a temporary control plane for the OpenAPI schemas"
  HYBRID_CLUSTER_DIR=$cluster_dir GPU_NODES=0 CPU_NODES=0 "$here/cluster.sh" up >/dev/null
fi
kubectl() { "$BIN/kubectl" --kubeconfig="$cluster_dir/kubeconfig" "$@"; }

log "installing the chart's CRDs so their schemas are in the OpenAPI document"
kubectl apply --server-side --force-conflicts --field-manager=hybrid-chart-check -f "$chart/crds/" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
# The aggregated OpenAPI document picks CRDs up shortly after they are Established.
kinds=$(kubectl get crd -o jsonpath='{range .items[*]}{.spec.names.kind}{" "}{end}')
for _ in $(seq 1 60); do
  kubectl get --raw /openapi/v2 >"$tmp/openapi.json"
  # shellcheck disable=SC2086 # one argument per kind
  python3 -c '
import json, sys
defs = json.load(open(sys.argv[1]))["definitions"]
served = {g["kind"] for d in defs.values() for g in d.get("x-kubernetes-group-version-kind", [])}
sys.exit(0 if set(sys.argv[2:]) <= served else 1)' "$tmp/openapi.json" $kinds && break
  sleep 1
done
python3 "$here/openapi2schemas.py" "$tmp/openapi.json" "$tmp/schemas"

log "kubeconform"
"$BIN/kubeconform" -strict -summary -verbose -ignore-missing-schemas \
  -schema-location "$tmp/schemas/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}_{{ .Group }}.json" \
  "$tmp/rendered.yaml"
log "chart OK"
