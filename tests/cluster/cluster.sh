#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 with KWOK-simulated GPU and CPU nodes.
#
#   tests/cluster/cluster.sh up       build what is missing (cached), start, create nodes
#   tests/cluster/cluster.sh env      print `export KUBECONFIG=…` (and PATH with the matching kubectl)
#   tests/cluster/cluster.sh status   processes, RSS, readiness, nodes
#   tests/cluster/cluster.sh logs     tail of every component's log
#   tests/cluster/cluster.sh down     stop the processes `up` started (by PID), remove the state dir
#   tests/cluster/cluster.sh storage NS   (real node) PVCs hybrid-models/hybrid-artifacts in NS
#   tests/cluster/cluster.sh import   (real node) import the images `make images` built
#
# State (PKI, etcd data, logs, PIDs, kubeconfig) lives in $HYBRID_CLUSTER_DIR, default
# <repo>/.cluster. Ports are picked free at start, so clusters with different state dirs can
# run side by side. Node counts: GPU_NODES (4), GPUS_PER_NODE (8), GPU_PRODUCT, CPU_NODES (2);
# CONTROL_PLANE_QPS (100): kube-controller-manager's and kube-scheduler's client rate limit.
# REAL_NODE=1 (root only) adds one real kubelet node, `real-0`, with containerd, runc and a CNI
# bridge (tests/cluster/realnode.sh); the apiserver then listens on that node's dummy address
# instead of 127.0.0.1 so that pods reach it. docs/local-cluster.md describes the whole thing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
D=${HYBRID_CLUSTER_DIR:-$repo/.cluster}
MARKER=.hybrid-cluster
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok containerd kubelet kube-proxy)
REAL_NODE=${REAL_NODE:-0}

GPU_NODES=${GPU_NODES:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GPU_PRODUCT=${GPU_PRODUCT:-NVIDIA-H100-80GB-HBM3}
GPU_MEMORY_MIB=${GPU_MEMORY_MIB:-81559}
# With a real node, zero-GPU pods should run on it, not on KWOK CPU nodes.
if [ "${REAL_NODE:-0}" = 1 ]; then CPU_NODES=${CPU_NODES:-0}; else CPU_NODES=${CPU_NODES:-2}; fi
# Client rate limit of kube-controller-manager and kube-scheduler (requests/s; burst is twice).
CONTROL_PLANE_QPS=${CONTROL_PLANE_QPS:-100}
SERVICE_CIDR=10.96.0.0/16
READY_TIMEOUT=${READY_TIMEOUT:-120}

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- process bookkeeping --------------------------------------------------------------------

# Is the recorded PID still the process we started (and not a recycled PID)?
ours() {
  local name=$1 pid exe
  [ -f "$D/pids/$name" ] || return 1
  pid=$(cat "$D/pids/$name")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "$exe" = "$(cat "$D/pids/$name.exe")" ]
}

start() { local name=$1; shift; start_cmd "$name" "$BIN/$name" "$@"; }

start_cmd() {
  local name=$1 bin=$2; shift 2
  # setsid: the components outlive this script and do not get the terminal's Ctrl-C.
  setsid "$bin" "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
  local pid=$! exe i
  exe=$(readlink -f "$bin")
  echo "$pid" >"$D/pids/$name"
  echo "$exe" >"$D/pids/$name.exe"
  # Until the forked shell has exec'd the binary, /proc/PID/exe is still bash and `ours` would
  # call the component gone. On a loaded machine that gap is long enough for wait_until to see it
  # (a CI run died with "exited" and empty logs), so wait for the exec (or the process's end).
  for i in $(seq 1 200); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  log "warning: $name (PID $pid) has not exec'd $exe after 10 s"
}

# SIGTERM to the named components at once, then SIGKILL whatever still runs after 10 s.
terminate() {
  local name pids=() alive pid i
  for name in "$@"; do
    if ours "$name"; then
      pid=$(cat "$D/pids/$name")
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  alive=("${pids[@]}")
  for i in $(seq 1 50); do
    [ ${#alive[@]} = 0 ] && return 0
    sleep 0.2
    pids=("${alive[@]}") alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
  done
  for pid in "${alive[@]}"; do
    log "PID $pid ignored SIGTERM for 10 s, killing"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# etcd last: kube-apiserver's graceful shutdown hangs without it.
stop_all() {
  [ "$REAL_NODE" = 1 ] && rn_down
  terminate kwok kube-scheduler kube-controller-manager kube-apiserver
  terminate etcd
}

tail_logs() {
  local name
  for name in "${COMPONENTS[@]}"; do
    [ -f "$D/logs/$name.log" ] || continue
    printf '\n===== %s (last %s lines of %s)\n' "$name" "${1:-30}" "$D/logs/$name.log" >&2
    tail -n "${1:-30}" "$D/logs/$name.log" >&2
  done
}

# Poll until a command succeeds; on timeout show the logs and fail.
wait_until() {
  local what=$1 timeout=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      tail_logs 40
      die "$what not ready after ${timeout}s (logs above, full logs in $D/logs)"
    fi
    local name
    for name in "${COMPONENTS[@]}"; do
      if [ -f "$D/pids/$name" ] && ! ours "$name"; then
        tail_logs 40
        die "$name exited while waiting for $what (logs above)"
      fi
    done
    sleep 0.5
  done
}

# GET a URL and succeed on 200. python3 rather than curl: it is one of the few tools this
# needs on a fresh machine. Args: url [ca-file cert-file key-file]; no CA skips verification
# (the controller-manager and scheduler serve self-signed health endpoints).
probe() {
  python3 - "$@" <<'EOF'
import ssl, sys, urllib.request
url, files = sys.argv[1], sys.argv[2:]
ctx = None
if url.startswith("https://"):
    ctx = ssl.create_default_context(cafile=files[0] if files else None)
    if files:
        ctx.load_cert_chain(files[1], files[2])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

free_ports() {
  # Bind all at once so the kernel hands out distinct ports; a tiny race with other
  # programs remains between closing them and the components binding.
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- PKI ------------------------------------------------------------------------------------

# A key and a certificate signed by the cluster CA, in the current directory (the PKI dir).
leaf() { # name subject extfile
  openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 \
    -extfile "$3" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr"
}

pki() {
  local p="$D/pki"
  mkdir -p "$p"
  (
    cd "$p"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=hybrid-local-ca" -out ca.crt 2>/dev/null

    cat >serving.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$RN_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    cat >client.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    leaf serving "/CN=kube-apiserver" serving.ext
    leaf admin "/O=system:masters/CN=hybrid-admin" client.ext
    # The apiserver's identity towards kubelets (logs, exec, port-forward).
    leaf apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
    # Service account tokens are signed with their own key.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() {
  local b64='base64 -w0'
  cat >"$D/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hybrid-local
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $($b64 <"$D/pki/ca.crt")
users:
- name: hybrid-admin
  user:
    client-certificate-data: $($b64 <"$D/pki/admin.crt")
    client-key-data: $($b64 <"$D/pki/admin.key")
contexts:
- name: hybrid-local
  context: {cluster: hybrid-local, user: hybrid-admin, namespace: default}
current-context: hybrid-local
EOF
  chmod 600 "$D/kubeconfig"
}

# --- nodes and KWOK -------------------------------------------------------------------------

node_yaml() { # name cpu memory extra-labels extra-capacity taints
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: kwok
    type: kwok
$4
spec:
$6
status:
  capacity: {cpu: "$2", memory: $3, pods: "110", ephemeral-storage: 1Ti$5}
  allocatable: {cpu: "$2", memory: $3, pods: "110", ephemeral-storage: 1Ti$5}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $K8S_VERSION
    kubeProxyVersion: $K8S_VERSION
    containerRuntimeVersion: kwok-$KWOK_VERSION
    kernelVersion: kwok
    osImage: kwok
    bootID: ""
    machineID: ""
    systemUUID: ""
  phase: Running
EOF
}

nodes_yaml() {
  local i
  for ((i = 0; i < GPU_NODES; i++)); do
    node_yaml "kwok-gpu-$i" 96 1Ti "$(
      cat <<EOF
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: $GPU_PRODUCT
    nvidia.com/gpu.count: "$GPUS_PER_NODE"
    nvidia.com/gpu.memory: "$GPU_MEMORY_MIB"
EOF
    )" ", nvidia.com/gpu: \"$GPUS_PER_NODE\"" "$(
      cat <<EOF
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
EOF
    )"
  done
  for ((i = 0; i < CPU_NODES; i++)); do
    node_yaml "kwok-cpu-$i" 16 64Gi "" "" "  unschedulable: false"
  done
}

# Audit log ($D/audit.log, JSON lines): every write request (create, update, patch, delete,
# deletecollection) at Metadata level, i.e. who wrote which object with which verb, no bodies.
# Reads are not logged. Tests count a client's writes from it (e.g. zero writes on a resync).
audit_policy() {
  cat <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF
}

kwok_config() {
  local s="$BIN/kwok-stages" f
  [ -d "$s" ] || die "$s missing: run tests/cluster/build.sh"
  {
    # kwok's own node lifecycle and pod start/delete; pod completion is ours (kwok/stages.yaml).
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
      echo "---"; cat "$s/$f"
    done
    echo "---"; cat "$here/kwok/stages.yaml"
  } >"$D/kwok.yaml"
}

# --- commands -------------------------------------------------------------------------------

kubectl() { "$BIN/kubectl" --kubeconfig="$D/kubeconfig" "$@"; }

# shellcheck source=realnode.sh
source "$here/realnode.sh"

load_state() {
  [ -f "$D/cluster.env" ] || die "no cluster in $D (run: tests/cluster/cluster.sh up)"
  # shellcheck source=/dev/null
  source "$D/cluster.env"
}

cmd_up() {
  local t0=$SECONDS
  if [ -f "$D/$MARKER" ]; then
    local alive=0 name
    for name in "${COMPONENTS[@]}"; do ours "$name" && alive=1; done
    [ "$alive" = 0 ] || die "a cluster is already running in $D (tests/cluster/cluster.sh down first)"
    log "removing stale state in $D"
    rm -rf "$D"
  elif [ -e "$D" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then
    die "$D exists and is not a cluster state dir; set HYBRID_CLUSTER_DIR elsewhere"
  fi

  [ "$REAL_NODE" = 1 ] && rn_check_host
  log "binaries: tests/cluster/build.sh (cached after the first run)"
  BIN=$("$here/build.sh")
  # shellcheck source=versions.env
  source "$here/versions.env"

  mkdir -p "$D/logs" "$D/pids"
  mkdir -m 700 "$D/etcd"
  touch "$D/$MARKER"
  # A failed start stops what it started but keeps the logs; the next `up` or `down` clears them.
  trap 'rc=$?; if [ $rc != 0 ]; then stop_all; log "start failed; logs kept in $D/logs"; fi' EXIT
  read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT <<<"$(free_ports 5)"
  API_HOST=127.0.0.1
  if [ "$REAL_NODE" = 1 ]; then
    API_HOST=$RN_API_IP
    rn_net_up
  fi
  cat >"$D/cluster.env" <<EOF
BIN=$BIN
REAL_NODE=$REAL_NODE
API_HOST=$API_HOST
K8S_VERSION=$K8S_VERSION
KWOK_VERSION=$KWOK_VERSION
ETCD_PORT=$ETCD_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
EOF
  pki
  kubeconfig
  kwok_config

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd --name=n0 --data-dir="$D/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="n0=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
  wait_until etcd 30 probe "http://127.0.0.1:$ETCD_PORT/health"

  log "starting kube-apiserver on https://$API_HOST:$API_PORT"
  local p="$D/pki"
  audit_policy >"$D/audit-policy.yaml"
  # Without a real node the endpoint reconciler is off: it would publish 127.0.0.1 as the
  # `kubernetes` Service's endpoint, which endpoint validation rejects (loopback), and no pod
  # needs it. With one, the apiserver binds the node's dummy address and publishes it, and
  # kube-proxy sends pods' traffic for the `kubernetes` Service there.
  local reconciler=none
  [ "$REAL_NODE" = 1 ] && reconciler=lease
  start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$API_HOST" --advertise-address="$API_HOST" --secure-port="$API_PORT" \
    --cert-dir="$p" --tls-cert-file="$p/serving.crt" --tls-private-key-file="$p/serving.key" \
    --client-ca-file="$p/ca.crt" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --endpoint-reconciler-type="$reconciler" --profiling=false \
    --kubelet-client-certificate="$p/apiserver-kubelet.crt" --kubelet-client-key="$p/apiserver-kubelet.key" \
    --kubelet-preferred-address-types=InternalIP \
    --audit-policy-file="$D/audit-policy.yaml" --audit-log-path="$D/audit.log" \
    --audit-log-format=json --audit-log-maxsize=200 --audit-log-maxbackup=1
  wait_until kube-apiserver "$READY_TIMEOUT" probe "https://$API_HOST:$API_PORT/readyz" \
    "$p/ca.crt" "$p/admin.crt" "$p/admin.key"

  log "starting kube-controller-manager, kube-scheduler, kwok"
  mkdir -p "$D/kcm-certs" "$D/scheduler-certs"
  start kube-controller-manager --kubeconfig="$D/kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$D/kcm-certs" \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --node-monitor-period=5s --node-monitor-grace-period=40s \
    --kube-api-qps="$CONTROL_PLANE_QPS" --kube-api-burst=$((CONTROL_PLANE_QPS * 2)) --profiling=false
  start kube-scheduler --kubeconfig="$D/kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$D/scheduler-certs" \
    --kube-api-qps="$CONTROL_PLANE_QPS" --kube-api-burst=$((CONTROL_PLANE_QPS * 2)) --profiling=false
  # Only the nodes cluster.sh created as fake: the real node, when there is one, is the kubelet's.
  start kwok --kubeconfig="$D/kubeconfig" --config="$D/kwok.yaml" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=10.0.0.1

  wait_until kube-controller-manager "$READY_TIMEOUT" probe "https://127.0.0.1:$KCM_PORT/healthz"
  wait_until kube-scheduler "$READY_TIMEOUT" probe "https://127.0.0.1:$SCHED_PORT/healthz"

  log "creating $GPU_NODES GPU nodes ($GPUS_PER_NODE x nvidia.com/gpu each) and $CPU_NODES CPU nodes"
  nodes_yaml >"$D/nodes.yaml"
  if [ $((GPU_NODES + CPU_NODES)) -gt 0 ]; then
    kubectl create -f "$D/nodes.yaml" >/dev/null
    wait_until "nodes Ready (kwok)" "$READY_TIMEOUT" kubectl wait --for=condition=Ready node --all --timeout=5s
  fi
  # The controller-manager is working once it has given `default` its ServiceAccount.
  wait_until "default ServiceAccount (controller-manager)" "$READY_TIMEOUT" kubectl -n default get serviceaccount default
  [ "$REAL_NODE" = 1 ] && rn_up

  log "cluster up in $((SECONDS - t0)) s; state in $D"
  echo "export KUBECONFIG=$D/kubeconfig"
}

cmd_down() {
  if [ ! -f "$D/$MARKER" ]; then
    log "no cluster state in $D, nothing to stop"
    return 0
  fi
  [ -f "$D/cluster.env" ] && load_state
  stop_all
  rm -rf "$D"
  if [ "$REAL_NODE" = 1 ] && ! rn_check_clean; then
    die "the real node left the items above behind"
  fi
  log "stopped; removed $D"
}

cmd_env() {
  load_state
  echo "export KUBECONFIG=$D/kubeconfig"
  echo "export PATH=$BIN:\$PATH"
}

cmd_status() {
  load_state
  local name pid rss state=0
  printf '%-24s %-8s %-10s %s\n' COMPONENT PID RSS_MIB STATE
  for name in "${COMPONENTS[@]}"; do
    # The real node's processes exist only with REAL_NODE=1.
    case $name in containerd | kubelet | kube-proxy) [ "$REAL_NODE" = 1 ] || continue ;; esac
    pid=$(cat "$D/pids/$name" 2>/dev/null || echo -)
    if ours "$name"; then
      rss=$(($(ps -o rss= -p "$pid") / 1024))
      printf '%-24s %-8s %-10s %s\n' "$name" "$pid" "$rss" running
    else
      printf '%-24s %-8s %-10s %s\n' "$name" "$pid" - stopped
      state=1
    fi
  done
  echo
  echo "apiserver https://$API_HOST:$API_PORT readyz: $(kubectl get --raw /readyz 2>&1 || true)"
  kubectl get nodes -L nvidia.com/gpu.product 2>&1 || state=1
  return $state
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  logs) load_state; tail_logs "${2:-50}" ;;
  storage) load_state; [ "$REAL_NODE" = 1 ] || die "storage needs a real node (REAL_NODE=1 up)"; rn_storage "${2:?namespace}" ;;
  import) load_state; [ "$REAL_NODE" = 1 ] || die "import needs a real node"; rn_import_project_images ;;
  *) echo "usage: $0 up|down|env|status|logs [lines]|storage NAMESPACE|import" >&2; exit 2 ;;
esac
