#!/usr/bin/env bash
# The finance example end to end on real pods: the chart installs the operator as a pod (its own
# image, the chart's RBAC, leader election on); the operator's index Job, training Job and serving
# pod run the project's runtime image on the local cluster's real kubelet node (REAL_NODE=1);
# nothing is played by this script: every Job result and every `status.loaded` comes from the
# real runtime. Then: a corpus edit and a dataset edit reach the same serving pod without a
# restart; deleting the HybridModel removes what it owned; deleting the Corpus and the Adapter
# prunes their stored revisions with real prune Jobs.
#
#   tests/cluster/real-pods.sh          against the running cluster (cluster.sh env), REAL_NODE=1
#   REAL_PODS_DEMO=1                    stop after the first cited answer (make cluster-demo)
#   REAL_PODS_NAMESPACE                 the example's namespace (default finance)
#
# Every wait is bounded; on failure it prints the resources, pods, events and pod logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export HYBRID_CLUSTER_DIR=${HYBRID_CLUSTER_DIR:-$repo/.cluster}
eval "$("$here/cluster.sh" env)"
# shellcheck source=/dev/null
source "$HYBRID_CLUSTER_DIR/cluster.env"
[ "$REAL_NODE" = 1 ] || { echo "real-pods.sh needs a cluster started with REAL_NODE=1" >&2; exit 2; }
images_env="$HYBRID_CLUSTER_DIR/rn/images.env"
[ -f "$images_env" ] || { echo "no project images in the real node: run make images, then cluster.sh import" >&2; exit 2; }
# shellcheck source=/dev/null
source "$images_env"

NS=${REAL_PODS_NAMESPACE:-finance}
OP_NS=hybrid-system
k() { kubectl -n "$NS" "$@"; }
t_start=$SECONDS
log() { printf '[real-pods %4ds] %s\n' "$((SECONDS - t_start))" "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
diagnose() {
  local rc=$?
  [ "$rc" = 0 ] && return 0
  log "diagnostics after failure (exit $rc)"
  kubectl get hybrid,jobs,pods,deploy,svc,pvc -n "$NS" -o wide 2>&1 | sed 's/^/  /' >&2 || true
  kubectl get pods -n "$OP_NS" -o wide 2>&1 | sed 's/^/  /' >&2 || true
  kubectl get events -n "$NS" --sort-by=.lastTimestamp 2>&1 | tail -n 30 | sed 's/^/  /' >&2 || true
  local p
  for p in $(kubectl get pods -n "$NS" -o name 2>/dev/null) $(kubectl get pods -n "$OP_NS" -o name 2>/dev/null); do
    echo "----- ${p} (last 25 lines)" >&2
    kubectl logs -n "$NS" "$p" --all-containers --tail=25 2>/dev/null >&2 ||
      kubectl logs -n "$OP_NS" "$p" --all-containers --tail=25 2>/dev/null >&2 || true
  done
  for t in hybridmodel/advisor corpus/finance-notes adapter/finance-compliance; do
    echo "----- $t status" >&2
    k get "$t" -o jsonpath='{.status}' 2>/dev/null >&2 || true; echo >&2
  done
}
trap diagnose EXIT

# Poll until `cond` (a shell command) succeeds, printing `show` every 15 s; fail after timeout.
wait_for() { # what timeout cond [show]
  local what=$1 timeout=$2 cond=$3 show=${4:-} t0=$SECONDS last=0
  log "waiting for $what (at most ${timeout}s)"
  until eval "$cond" >/dev/null 2>&1; do
    [ $((SECONDS - t0)) -ge "$timeout" ] && fail "$what: not after ${timeout}s"
    if [ -n "$show" ] && [ $((SECONDS - last)) -ge 15 ]; then
      last=$SECONDS
      eval "$show" 2>&1 | sed 's/^/    /' >&2 || true
    fi
    sleep 2
  done
  log "$what: after $((SECONDS - t0)) s"
}
jpath() { k get "$1" -o jsonpath="$2" 2>/dev/null; }
progress="kubectl get hybrid -n $NS --no-headers; kubectl get pods -n $NS --no-headers"

# --- the operator, from the chart and its image ----------------------------------------------
log "helm install the chart: operator $OPERATOR_IMAGE, runtime $RUNTIME_IMAGE"
kubectl create namespace "$OP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$BIN/helm" upgrade --install hybrid-operator charts/hybrid-operator -n "$OP_NS" \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set runtimeImage.repository="${RUNTIME_IMAGE%:*}" --set runtimeImage.tag="${RUNTIME_IMAGE##*:}" \
  --set leaderElection.enabled=true --set logFormat=text --wait --timeout 180s >/dev/null
kubectl -n "$OP_NS" rollout status deploy/hybrid-operator --timeout=120s >&2
op_pod=$(kubectl -n "$OP_NS" get pods -l app.kubernetes.io/name=hybrid-operator -o jsonpath='{.items[0].metadata.name}')
log "operator pod $op_pod runs on $(kubectl -n "$OP_NS" get pod "$op_pod" -o jsonpath='{.spec.nodeName}')"
wait_for "the operator to hold the leader Lease" 60 \
  "kubectl -n $OP_NS get lease -o jsonpath='{.items[*].spec.holderIdentity}' | grep -q $op_pod"

# --- the finance example ---------------------------------------------------------------------
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$here/cluster.sh" storage "$NS"
log "kubectl apply the finance example with its local overlay (examples/finance/local)"
kubectl kustomize --load-restrictor=LoadRestrictionsNone examples/finance/local | k apply -f - >&2
wait_for "hybridmodel/advisor Ready" 1500 \
  "k wait --for=condition=Ready hybridmodel/advisor --timeout=1s" "$progress"
kubectl get hybrid -n "$NS" >&2

pod_of() { k get pods -l hybrid.dev/hybridmodel=advisor,app.kubernetes.io/component=serving \
  --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.uid} {.items[0].status.containerStatuses[0].restartCount} {.items[0].metadata.name}'; }
read -r uid0 restarts0 pod0 <<<"$(pod_of)"
log "serving pod $pod0 uid $uid0 restartCount $restarts0"
[ "$restarts0" = 0 ] || fail "the serving pod restarted $restarts0 times before the first question"
# status.loaded is written by the operator from the pod's own report (the runtime annotates its
# pod); check both agree and name the active revisions.
loaded_index=$(jpath hybridmodel/advisor '{.status.loaded.indexes[0].revision}')
loaded_adapter=$(jpath hybridmodel/advisor '{.status.loaded.adapters[0].revision}')
active_index=$(jpath corpus/finance-notes '{.status.activeRevision.revision}')
active_adapter=$(jpath adapter/finance-compliance '{.status.activeRevision.revision}')
log "status.loaded: index $loaded_index adapter $loaded_adapter (active: $active_index, $active_adapter)"
[ -n "$loaded_index" ] && [ "$loaded_index" = "$active_index" ] || fail "loaded index $loaded_index != active $active_index"
[ -n "$loaded_adapter" ] && [ "$loaded_adapter" = "$active_adapter" ] || fail "loaded adapter $loaded_adapter != active $active_adapter"
k get pod "$pod0" -o jsonpath='{.metadata.annotations.hybrid\.dev/loaded-revisions}' | grep -q "$loaded_index" ||
  fail "the pod's own loaded-revisions annotation does not name $loaded_index"

svc_ip=$(jpath service/advisor '{.spec.clusterIP}')
svc_port=$(jpath service/advisor '{.spec.ports[0].port}')
log "asking through Service advisor ($svc_ip:$svc_port, kube-proxy to the pod on the real node)"
ask() { # question -> the response JSON in $out_dir/$2.json
  python3 - "$svc_ip" "$svc_port" "$1" >"$out_dir/$2.json" <<'PY'
import json, sys, urllib.request
ip, port, q = sys.argv[1], sys.argv[2], sys.argv[3]
body = json.dumps({"model": "advisor", "temperature": 0, "max_tokens": 48,
                   "messages": [{"role": "user", "content": q}]}).encode()
req = urllib.request.Request(f"http://{ip}:{port}/v1/chat/completions", body,
                             {"content-type": "application/json"})
print(urllib.request.urlopen(req, timeout=120).read().decode())
PY
}
show_answer() { # name
  python3 - "$out_dir/$1.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
print("  answer:", r["choices"][0]["message"]["content"].strip().replace("\n", " "))
for c in r["citations"]:
    print(f"  [{c['index']}] {c['title']} ({c['corpus']}/{c['document']}, score {c['score']:.3f})")
print("  revisions:", json.dumps(r.get("revisions")))
PY
}
# Does the response cite `doc` and was the passage it cites retrieved from the serving index?
cites() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if any(c["document"].startswith(sys.argv[2]) for c in r["citations"]) else 1)' "$out_dir/$1.json" "$2"; }
# Does the answer's text contain `fact`? (Greedy decoding: the same weights give the same text.)
says() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if sys.argv[2] in r["choices"][0]["message"]["content"] else 1)' "$out_dir/$1.json" "$2"; }
out_dir=$(mktemp -d)
question="What did the Velorian Monetary Authority cut its policy rate to in February 2026?"
ask "$question" before
log "answer before the corpus edit:"; show_answer before
cites before rates-outlook-q1-2026 || fail "the answer does not cite rates-outlook-q1-2026"
says before "4.25%" || fail "the answer does not give the corpus's rate (4.25%)"
if [ "${REAL_PODS_DEMO:-0}" = 1 ]; then
  log "demo: stopping here, the cluster keeps running"
  rm -rf "$out_dir"
  exit 0
fi

# --- a corpus edit: a new index revision, swapped into the same pod ---------------------------
log "editing one corpus document: the policy rate becomes 3.85% (ConfigMap finance-corpus)"
key=rates-outlook-q1-2026.md
k get configmap finance-corpus -o json | python3 -c '
import json, sys
cm = json.load(sys.stdin)
key = sys.argv[1]
old = "cut its policy rate by 25 basis points on 11 February 2026, taking it from 4.50% to 4.25%."
assert old in cm["data"][key], "the document no longer has the sentence this test edits"
cm["data"][key] = cm["data"][key].replace(old, "cut its policy rate to 3.85% on 11 February 2026, a cut of 65 basis points.")
print(json.dumps({"data": {key: cm["data"][key]}}))' "$key" >"$out_dir/patch.json"
k patch configmap finance-corpus --type merge --patch-file "$out_dir/patch.json" >/dev/null
wait_for "a new active index revision" 600 \
  "[ \"\$(jpath corpus/finance-notes '{.status.activeRevision.revision}')\" != '$active_index' ] && [ -n \"\$(jpath corpus/finance-notes '{.status.activeRevision.revision}')\" ]" "$progress"
new_index=$(jpath corpus/finance-notes '{.status.activeRevision.revision}')
wait_for "the serving pod to report index $new_index (status.loaded)" 300 \
  "[ \"\$(jpath hybridmodel/advisor '{.status.loaded.indexes[0].revision}')\" = '$new_index' ]" "$progress"
ask "$question" after
log "answer after the corpus edit:"; show_answer after
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if json.dumps(r.get("revisions")).find(sys.argv[2]) >= 0 else 1)' \
  "$out_dir/after.json" "$new_index" || fail "the response does not name index revision $new_index"
says after "3.85%" || fail "the answer after the corpus edit does not give the new rate (3.85%)"
# The edited fact reaches the model: the cited passage of the edited document now says 3.85%.
python3 - "$svc_ip" "$svc_port" "$question" <<'PY' || fail "retrieval does not return the edited fact"
import json, sys, urllib.request
ip, port, q = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(f"http://{ip}:{port}/v1/retrieve",
                             json.dumps({"query": q, "top_k": 3}).encode(), {"content-type": "application/json"})
r = json.load(urllib.request.urlopen(req, timeout=60))
texts = [p["text"] for res in r["results"] for p in res["passages"]]
print("  top passage:", texts[0][:160].replace("\n", " ") if texts else None, file=sys.stderr)
sys.exit(0 if any("3.85%" in t for t in texts) and not any("4.25%" in t for t in texts) else 1)
PY
read -r uid1 restarts1 pod1 <<<"$(pod_of)"
log "serving pod after the corpus edit: $pod1 uid $uid1 restartCount $restarts1"
[ "$uid1" = "$uid0" ] && [ "$restarts1" = 0 ] || fail "the serving pod changed or restarted ($uid0 -> $uid1, restarts $restarts1)"

# --- a dataset edit: a new adapter revision, trained and swapped the same way -----------------
dataset_cm=$(jpath adapter/finance-compliance '{.spec.dataset[0].configMap.name}')
log "editing the dataset: one more training example (ConfigMap $dataset_cm)"
k get configmap "$dataset_cm" -o json | python3 -c '
import json, sys
cm = json.load(sys.stdin)
lines = cm["data"]["train.jsonl"].rstrip("\n").split("\n")
lines.append(lines[0])
print(json.dumps({"data": {"train.jsonl": "\n".join(lines) + "\n"}}))' >"$out_dir/patch.json"
k patch configmap "$dataset_cm" --type merge --patch-file "$out_dir/patch.json" >/dev/null
wait_for "a new active adapter revision (training on the CPU)" 1500 \
  "[ \"\$(jpath adapter/finance-compliance '{.status.activeRevision.revision}')\" != '$active_adapter' ] && [ -n \"\$(jpath adapter/finance-compliance '{.status.activeRevision.revision}')\" ]" "$progress"
new_adapter=$(jpath adapter/finance-compliance '{.status.activeRevision.revision}')
wait_for "the serving pod to report adapter $new_adapter (status.loaded)" 300 \
  "[ \"\$(jpath hybridmodel/advisor '{.status.loaded.adapters[0].revision}')\" = '$new_adapter' ]" "$progress"
ask "$question" retrained
log "answer after the retraining:"; show_answer retrained
read -r uid2 restarts2 pod2 <<<"$(pod_of)"
log "serving pod after the retraining: $pod2 uid $uid2 restartCount $restarts2"
[ "$uid2" = "$uid0" ] && [ "$restarts2" = 0 ] || fail "the serving pod changed or restarted ($uid0 -> $uid2, restarts $restarts2)"
kubectl get hybrid -n "$NS" >&2

# --- deletion ----------------------------------------------------------------------------------
log "deleting the HybridModel: its Deployment, Service, PDB and ConfigMaps go"
k delete hybridmodel advisor --wait=true --timeout=120s >/dev/null
owned="k get deploy,svc,pdb,configmap -l hybrid.dev/hybridmodel=advisor -o name"
wait_for "objects of hybridmodel/advisor gone" 120 "[ -z \"\$($owned)\" ]" "$owned"

art="$HYBRID_CLUSTER_DIR/rn/volumes/$NS-artifacts"
log "stored revisions before deleting the Corpus and the Adapter:"
find "$art" -mindepth 2 -maxdepth 2 | sed "s#^$art/#  #" >&2
[ -n "$(ls -A "$art/indexes" 2>/dev/null)" ] || fail "no index revisions stored under $art/indexes"
[ -n "$(ls -A "$art/adapters" 2>/dev/null)" ] || fail "no adapter revisions stored under $art/adapters"
log "deleting the Corpus and the Adapter: real prune Jobs remove their stored revisions"
k delete corpus finance-notes --wait=false >/dev/null
k delete adapter finance-compliance --wait=false >/dev/null
wait_for "Corpus and Adapter finalized" 300 \
  "! k get corpus finance-notes && ! k get adapter finance-compliance" "$progress; kubectl get jobs -n $NS --no-headers"
[ -z "$(ls -A "$art/indexes" 2>/dev/null)" ] || fail "index revisions left: $(ls "$art/indexes")"
[ -z "$(ls -A "$art/adapters" 2>/dev/null)" ] || fail "adapter revisions left: $(ls "$art/adapters")"
log "PASSED: the finance example ran end to end on real pods in $((SECONDS - t_start)) s"
rm -rf "$out_dir"
