# shellcheck shell=bash
# One real kubelet node, `real-0`, next to the KWOK nodes: containerd and runc (Debian), the CNI
# bridge/host-local/portmap/loopback plugins (Debian), kubelet and kube-proxy built from Go modules
# (tests/cluster/build.sh), a pause image built here (tests/cluster/pause). Sourced by cluster.sh
# when REAL_NODE=1; needs root. Only one real node per machine: it uses fixed interface names,
# addresses and the kubelet's ports.
#
# Network (nothing leaves this machine):
#   hyb-api   portless bridge (as a dummy interface) with RN_API_IP (10.200.0.1/32): the node IP, and the address the
#             kube-apiserver binds so pods reach it through the `kubernetes` Service
#   hyb0      the pod bridge, RN_POD_CIDR (10.245.0.0/24), gateway .1; no NAT, and a FORWARD rule
#             drops everything from the bridge to any other interface
# The node is labelled hybrid.dev/real-node=true and has no taint: with REAL_NODE=1, cluster.sh
# creates no KWOK CPU nodes by default (CPU_NODES=0), so every pod that asks for no GPU runs here
# for real, and pods that ask for GPUs go to the (tainted) KWOK GPU nodes.
#
# `down` removes every pod, container, mount, netns, interface, iptables rule, cgroup and sysctl
# change it made (the host's values are saved at `up`).

RN_NODE=real-0
RN_API_IP=${RN_API_IP:-10.200.0.1}
RN_POD_CIDR=10.245.0.0/24
RN_POD_GW=10.245.0.1
RN_BRIDGE=hyb0
RN_DUMMY=hyb-api
RN_CGROUP=hybrid-rn
RN_LABEL=hybrid.dev/real-node
# containerd's sockets and state, kept short (unix socket paths are limited to 107 bytes).
RNS=/run/hybrid-rn
RN_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory
  vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

rn_dir() { echo "$D/rn"; }

# Everything the real node needs from the host, named with the package that has it.
rn_check_host() {
  local missing=() t
  [ "$(id -u)" = 0 ] || die "REAL_NODE=1 needs root (containerd, runc, network namespaces, iptables, cgroups)"
  for t in containerd:containerd runc:runc ctr:containerd iptables:iptables ip:iproute2 umoci:umoci; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t##*:}")
  done
  for t in bridge host-local portmap loopback; do
    [ -x "/usr/lib/cni/$t" ] || { missing+=(containernetworking-plugins); break; }
  done
  [ ${#missing[@]} = 0 ] || die "the real node needs: apt-get install ${missing[*]}"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup hierarchy mounted"
  if [ -e "$RNS/owner" ] && [ "$(cat "$RNS/owner")" != "$D" ]; then
    die "a real node of the cluster in $(cat "$RNS/owner") is running (stop it first: HYBRID_CLUSTER_DIR=$(cat "$RNS/owner") tests/cluster/cluster.sh down)"
  fi
}

# Before the apiserver starts: the dummy interface it binds to, and the host state to restore.
rn_net_up() {
  local rn; rn=$(rn_dir)
  mkdir -p "$rn" "$RNS"
  echo "$D" >"$RNS/owner"
  if [ ! -f "$rn/host-state" ]; then
    {
      lsmod 2>/dev/null | grep -q '^br_netfilter' && echo "br_netfilter=loaded" || echo "br_netfilter=absent"
      local s
      for s in "${RN_SYSCTLS[@]}"; do echo "sysctl $s=$(sysctl -n "$s" 2>/dev/null || echo -)"; done
      # KUBE-/CNI- chains the host already has are not ours to delete.
      local t
      for t in filter nat mangle; do
        iptables -w -t "$t" -S 2>/dev/null | sed -n "s/^-N \(\(KUBE\|CNI\)-.*\)$/chain $t \1/p"
      done
    } >"$rn/host-state"
  fi
  modprobe br_netfilter 2>/dev/null || true
  # A bridge with no ports stands in for a dummy interface: this kernel has no `dummy` driver,
  # and a local address on a portless bridge is reachable from this host and, through
  # kube-proxy's DNAT, from pods.
  ip link show "$RN_DUMMY" >/dev/null 2>&1 || ip link add "$RN_DUMMY" type bridge
  ip addr replace "$RN_API_IP/32" dev "$RN_DUMMY"
  ip link set "$RN_DUMMY" up
}

rn_pki() {
  local p="$D/pki"
  (
    cd "$p"
    cat >kubelet-serving.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$RN_API_IP,DNS:$RN_NODE
EOF
    leaf kubelet "/O=system:nodes/CN=system:node:$RN_NODE" client.ext
    leaf kubelet-serving "/CN=$RN_NODE" kubelet-serving.ext
    leaf kube-proxy "/CN=system:kube-proxy" client.ext
  )
}

rn_kubeconfig() { # file cert-name
  local b64='base64 -w0'
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hybrid-local
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $($b64 <"$D/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$D/pki/$2.crt")
    client-key-data: $($b64 <"$D/pki/$2.key")
contexts:
- name: default
  context: {cluster: hybrid-local, user: $2}
current-context: default
EOF
  chmod 600 "$1"
}

# Without CAP_SYS_RESOURCE (even root may lack it here), runc cannot set the negative
# oom_score_adj the kubelet asks for; then containerd runs runc through runc-oom-clamp.
rn_runc_binary() {
  if ! (echo -1 >/proc/self/oom_score_adj) 2>/dev/null; then
    echo "        BinaryName = \"$here/runc-oom-clamp\""
  fi
}

rn_containerd_config() {
  local rn; rn=$(rn_dir)
  cat <<EOF
version = 2
root = "$rn/containerd"
state = "$RNS/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$RNS/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$rn/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  netns_mounts_under_state_dir = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RNS/runc"
$(rn_runc_binary)
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$rn/cni"
    max_conf_num = 1
EOF
}

rn_cni_config() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "hybrid-rn",
  "plugins": [
    {
      "type": "bridge", "bridge": "$RN_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$(rn_dir)/ipam",
        "ranges": [[{"subnet": "$RN_POD_CIDR", "gateway": "$RN_POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

rn_kubelet_config() {
  local rn; rn=$(rn_dir)
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host mounts cgroup v1, which Kubernetes 1.35's kubelet refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$RN_CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://$RNS/containerd.sock
address: $RN_API_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
tlsCertFile: $D/pki/kubelet-serving.crt
tlsPrivateKeyFile: $D/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
# No cluster DNS and no host resolver in pods: nothing here resolves names (pods reach the API
# through KUBERNETES_SERVICE_HOST, an IP).
resolvConf: ""
failSwapOn: false
protectKernelDefaults: false
localStorageCapacityIsolation: false
# Images come from archives, not a registry: they must never be garbage-collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
podLogsDir: $rn/pod-logs
maxPods: 40
serializeImagePulls: false
shutdownGracePeriod: 0s
# ConfigMap volumes (the serving config) reach running pods within seconds, not a minute.
syncFrequency: 10s
EOF
}

rn_kube_proxy_config() {
  cat <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $RN_NODE
bindAddress: $RN_API_IP
clientConnection: {kubeconfig: $(rn_dir)/kube-proxy.kubeconfig}
clusterCIDR: $RN_POD_CIDR
detectLocalMode: ClusterCIDR
iptables: {localhostNodePorts: false, minSyncPeriod: 1s, syncPeriod: 30s}
# Leave the host's conntrack table size and timeouts alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
# NodePorts only on the node's own dummy address, never on the machine's interfaces.
nodePortAddresses: ["$RN_API_IP/32"]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
EOF
}

rn_cgroups_up() {
  local c
  for c in /sys/fs/cgroup/*/; do
    [ -e "$c/cgroup.procs" ] || continue
    mkdir -p "$c$RN_CGROUP"
  done
  if [ -d /sys/fs/cgroup/cpuset/$RN_CGROUP ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/$RN_CGROUP/cpuset.cpus
    cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/$RN_CGROUP/cpuset.mems
  fi
}

rn_ctr() { ctr --address "$RNS/containerd.sock" -n k8s.io "$@"; }

# Import an OCI archive into the node's containerd as NAME (no registry is involved).
rn_import() { # archive base-name (the archive's tag is appended)
  rn_ctr images import --base-name "$2" --snapshotter overlayfs "$1" >/dev/null
}

# The pause image, built once from tests/cluster/pause into the binary cache.
rn_pause_image() {
  local out="$BIN/pause-oci.tar"
  [ -f "$out" ] && return 0
  local tmp; tmp=$(mktemp -d)
  (
    cd "$here/pause"
    GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/pause" .
  )
  (
    cd "$tmp"
    umoci init --layout oci >/dev/null
    umoci new --image oci:3.10
    umoci unpack --rootless --image oci:3.10 b >/dev/null
    install -m755 pause b/rootfs/pause
    umoci repack --image oci:3.10 b
    umoci config --image oci:3.10 --config.entrypoint /pause --config.user 65535:65535
    tar -C oci -cf "$out.partial" .
  )
  mv "$out.partial" "$out"
  rm -rf "$tmp"
}

rn_wait_socket() {
  local i
  for i in $(seq 1 100); do
    rn_ctr version >/dev/null 2>&1 && return 0
    ours containerd || { tail_logs 40; die "containerd exited (log: $D/logs/containerd.log)"; }
    sleep 0.2
  done
  die "containerd did not open $RNS/containerd.sock in 20 s"
}

# After the control plane is up: containerd, images, kubelet, kube-proxy; waits for Ready.
rn_up() {
  local rn t0=$SECONDS; rn=$(rn_dir)
  log "real node $RN_NODE: containerd, kubelet, kube-proxy on $RN_API_IP, pods on $RN_BRIDGE ($RN_POD_CIDR)"
  mkdir -p "$rn/cni" "$rn/ipam" "$rn/pod-logs" "$rn/kubelet" "$RNS"
  rn_pki
  rn_kubeconfig "$rn/kubelet.kubeconfig" kubelet
  rn_kubeconfig "$rn/kube-proxy.kubeconfig" kube-proxy
  rn_containerd_config >"$rn/containerd.toml"
  rn_cni_config >"$rn/cni/10-hybrid-rn.conflist"
  rn_kubelet_config >"$rn/kubelet.yaml"
  rn_kube_proxy_config >"$rn/kube-proxy.yaml"
  rn_cgroups_up
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Pods may talk to each other and to this host, never past it: nothing from the bridge is
  # forwarded to another interface (the bridge plugin turns on ip_forward for its gateway).
  iptables -w -C FORWARD -i "$RN_BRIDGE" ! -o "$RN_BRIDGE" -j DROP 2>/dev/null ||
    iptables -w -I FORWARD 1 -i "$RN_BRIDGE" ! -o "$RN_BRIDGE" -j DROP
  iptables -w -C FORWARD -o "$RN_BRIDGE" ! -i "$RN_BRIDGE" -j DROP 2>/dev/null ||
    iptables -w -I FORWARD 1 -o "$RN_BRIDGE" ! -i "$RN_BRIDGE" -j DROP

  start_cmd containerd "$(command -v containerd)" --config "$rn/containerd.toml"
  rn_wait_socket
  rn_pause_image
  rn_import "$BIN/pause-oci.tar" registry.k8s.io/pause
  rn_import_project_images

  start_cmd kubelet "$BIN/kubelet" --config "$rn/kubelet.yaml" --kubeconfig "$rn/kubelet.kubeconfig" \
    --root-dir "$rn/kubelet" --hostname-override "$RN_NODE" --node-ip "$RN_API_IP" \
    --node-labels "$RN_LABEL=true" --v 1
  start_cmd kube-proxy "$BIN/kube-proxy" --config "$rn/kube-proxy.yaml" --v 1
  wait_until "real node $RN_NODE Ready" "$READY_TIMEOUT" kubectl wait --for=condition=Ready "node/$RN_NODE" --timeout=5s
  log "real node $RN_NODE Ready in $((SECONDS - t0)) s"
}

# The project's images (make images), when built: imported under the names images.env gives.
rn_import_project_images() {
  local env=${HYBRID_IMAGES_ENV:-${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}/images/images.env}
  if [ ! -f "$env" ]; then
    log "no project images ($env missing: run make images); the real node has only the pause image"
    return 0
  fi
  (
    # shellcheck source=/dev/null
    source "$env"
    log "importing $OPERATOR_IMAGE and $RUNTIME_IMAGE into the node's containerd"
    rn_import "$OPERATOR_ARCHIVE" "${OPERATOR_IMAGE%:*}"
    rn_import "$RUNTIME_ARCHIVE" "${RUNTIME_IMAGE%:*}"
  )
  cp "$env" "$(rn_dir)/images.env"
}

rn_down() {
  local rn; rn=$(rn_dir)
  [ -d "$rn" ] || [ -d "$RNS" ] || return 0
  if ours kubelet && ours kube-apiserver; then
    kubectl delete pods -A --field-selector "spec.nodeName=$RN_NODE" --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 60); do
      [ -z "$(kubectl get pods -A --field-selector "spec.nodeName=$RN_NODE" -o name 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  terminate kubelet
  # Sandboxes the kubelet did not tear down: crictl is not installed, so stop them through
  # containerd (CNI DEL is skipped for these; the bridge and IPAM dir go below anyway).
  if ours containerd; then
    local c
    for c in $(rn_ctr tasks ls -q 2>/dev/null); do rn_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.5
    for c in $(rn_ctr tasks ls -q 2>/dev/null); do rn_ctr tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $(rn_ctr containers ls -q 2>/dev/null); do rn_ctr containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  if ours kube-proxy; then terminate kube-proxy; fi
  [ -x "$BIN/kube-proxy" ] && [ -f "$rn/kube-proxy.yaml" ] && "$BIN/kube-proxy" --cleanup --config "$rn/kube-proxy.yaml" >/dev/null 2>&1 || true
  terminate containerd
  # Shims of this containerd (their command line names its socket) outlive it.
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $RNS/containerd.sock" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Container processes left in the node's cgroups.
  local procs
  for procs in $(find /sys/fs/cgroup/*/$RN_CGROUP -name cgroup.procs 2>/dev/null); do
    for pid in $(cat "$procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  # Mounts under our dirs, deepest first (netns bind mounts, overlay rootfs, kubelet volumes).
  local m
  for m in $(findmnt -rno TARGET | grep -E "^($rn|$RNS)(/|$)" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  ip link del "$RN_BRIDGE" 2>/dev/null || true
  ip link del "$RN_DUMMY" 2>/dev/null || true
  # Veths of pods whose netns was not torn down go with their netns; named netns are ours only.
  iptables -w -D FORWARD -i "$RN_BRIDGE" ! -o "$RN_BRIDGE" -j DROP 2>/dev/null || true
  iptables -w -D FORWARD -o "$RN_BRIDGE" ! -i "$RN_BRIDGE" -j DROP 2>/dev/null || true
  rn_iptables_cleanup
  local i
  for i in 1 2 3 4 5; do
    find /sys/fs/cgroup/*/$RN_CGROUP -depth -type d -exec rmdir {} + 2>/dev/null || true
    ls -d /sys/fs/cgroup/*/$RN_CGROUP >/dev/null 2>&1 || break
    sleep 0.5
  done
  if [ -f "$rn/host-state" ]; then
    local line
    while read -r line; do
      case $line in
        "sysctl "*)
          local kv=${line#sysctl }
          [ "${kv#*=}" = - ] || sysctl -qw "${kv%%=*}=${kv#*=}" 2>/dev/null || true ;;
        br_netfilter=absent) modprobe -r br_netfilter 2>/dev/null || true ;;
      esac
    done <"$rn/host-state"
  fi
  rm -f /var/log/containers/*_hybrid-rn-* 2>/dev/null || true
  find /var/log/containers -xtype l -delete 2>/dev/null || true
  rm -rf /var/lib/cni/results/hybrid-rn-* "$RNS"
  rm -rf "$rn"
}

# Chains the kubelet, kube-proxy and the CNI plugins created (KUBE-*, CNI-*), in every table.
rn_iptables_cleanup() {
  local table chain keep
  keep=$(grep '^chain ' "$(rn_dir)/host-state" 2>/dev/null || true)
  [ -z "$keep" ] || { log "warning: the host had KUBE-/CNI- iptables chains before; leaving every such chain alone"; return 0; }
  for table in filter nat mangle; do
    # Jumps into our chains first, then the chains themselves.
    { iptables -w -t "$table" -S 2>/dev/null || true; } | { grep -E '^-A .* -j (KUBE|CNI)-' || true; } |
      sed 's/^-A/-D/' | while read -r rule; do eval "iptables -w -t $table $rule" 2>/dev/null || true; done
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[A-Za-z0-9_-]*\)$/\1/p'); do
      iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[A-Za-z0-9_-]*\)$/\1/p'); do
      iptables -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

# What `down` must have removed; prints each leftover and fails if there is one.
rn_check_clean() {
  local left=0
  ip link show "$RN_BRIDGE" >/dev/null 2>&1 && { echo "left: bridge $RN_BRIDGE"; left=1; }
  ip link show "$RN_DUMMY" >/dev/null 2>&1 && { echo "left: interface $RN_DUMMY"; left=1; }
  iptables -w -S 2>/dev/null | grep -q "$RN_BRIDGE" && { echo "left: FORWARD rules for $RN_BRIDGE"; left=1; }
  local t
  for t in filter nat mangle; do
    iptables -w -t "$t" -S 2>/dev/null | grep -qE '^-N (KUBE|CNI)-' && { echo "left: KUBE-/CNI- chains in $t"; left=1; }
  done
  ls -d /sys/fs/cgroup/*/$RN_CGROUP 2>/dev/null | sed 's/^/left: cgroup /' | grep . && left=1
  findmnt -rno TARGET | grep -E "^($(rn_dir)|$RNS)(/|$)" | sed 's/^/left: mount /' | grep . && left=1
  pgrep -f "containerd-shim-runc-v2 .*-address $RNS/" >/dev/null && { echo "left: containerd shims"; left=1; }
  return $left
}

# Storage for the examples in NAMESPACE: PVCs `hybrid-models` (read-only; the packaged SmolLM2
# GGUF and the all-MiniLM-L6-v2 directory, under the names the examples use) and
# `hybrid-artifacts` (writable by the runtime's user 65532), each bound to a hostPath
# PersistentVolume on the real node. There is no dynamic provisioner in the local cluster.
rn_storage() { # namespace
  local ns=$1 rn models art
  rn=$(rn_dir)
  models="$rn/volumes/models"
  art="$rn/volumes/$ns-artifacts"
  if [ ! -f "$models/.complete" ]; then
    local LLM_GGUF EMBEDDER_DIR
    eval "$("$repo/scripts/fetch-models.sh")"
    rm -rf "$models"; mkdir -p "$models"
    cp "$LLM_GGUF" "$models/SmolLM2-135M-Instruct.Q4_1.gguf"
    cp -r "$EMBEDDER_DIR" "$models/all-MiniLM-L6-v2"
    chmod -R a+rX "$models"
    touch "$models/.complete"
  fi
  mkdir -p "$art"
  chown 65532:65532 "$art"
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # A namespace deleted and made again: its old claims are gone and their volumes Released (bound
  # to the old claims' UIDs, which new claims of the same name cannot take). Make them anew.
  local pv
  for pv in "$ns-hybrid-models" "$ns-hybrid-artifacts"; do
    if [ "$(kubectl get pv "$pv" -o jsonpath='{.status.phase}' 2>/dev/null)" = Released ]; then
      kubectl delete pv "$pv" --wait=true --timeout=60s >/dev/null
    fi
  done
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $ns-hybrid-models, labels: {hybrid.dev/local-storage: "true"}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $ns, name: hybrid-models}
  hostPath: {path: $models, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: $RN_LABEL, operator: In, values: ["true"]}]}]
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $ns-hybrid-artifacts, labels: {hybrid.dev/local-storage: "true"}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $ns, name: hybrid-artifacts}
  hostPath: {path: $art, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: $RN_LABEL, operator: In, values: ["true"]}]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: hybrid-models, namespace: $ns}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: $ns-hybrid-models
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: hybrid-artifacts, namespace: $ns}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: $ns-hybrid-artifacts
  resources: {requests: {storage: 10Gi}}
EOF
  # Bound before anything uses them: a pod whose claim is still unbound is unschedulable for that.
  kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Bound pvc/hybrid-models pvc/hybrid-artifacts \
    --timeout=60s >/dev/null
  log "PVCs hybrid-models and hybrid-artifacts in namespace $ns (hostPath under $rn/volumes)"
}
