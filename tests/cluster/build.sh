#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok), the real node's kubelet and kube-proxy and the chart tools (helm, kubeconform) from Go modules into a cache
# directory outside the repository, keyed by versions. Reuses what is already there.
#
#   tests/cluster/build.sh          build what is missing, print the bin directory on stdout
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
# The proxy serves modules and the checksum database; there is no VCS access to fall back to.
export GOPROXY=${GOPROXY_OVERRIDE:-https://proxy.golang.org}
cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
BIN="$cache_root/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_kubeconform-${KUBECONFORM_VERSION}"
work="$cache_root/gowork"
mkdir -p "$BIN" "$work"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { [ -x "$BIN/$1" ]; }
timed() {
  local what=$1; shift
  local t0=$SECONDS
  log "$what: building (this takes minutes on a cold cache)"
  "$@" >&2
  log "$what: done in $((SECONDS - t0)) s"
}

build_kube() {
  local dir="$work/k8sbins-$K8S_VERSION" stg="v0.${K8S_VERSION#v1.}" minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init localbuild/k8sbins >/dev/null 2>&1
  log "kubernetes: reading the staging module list of k8s.io/kubernetes@$K8S_VERSION"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths,
  # which a dependent module cannot see: pin each to its published tag instead.
  local m
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@$stg"
  done
  # Keep upstream's go line and GODEBUG defaults rather than this toolchain's.
  go mod edit -go="$(sed -n 's/^go //p' "$gomod")"
  grep -q '^godebug' "$gomod" && go mod edit -godebug="$(sed -n 's/^godebug \(default=.*\)/\1/p' "$gomod")"
  log "kubernetes: resolving modules (downloads on first run)"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2
  local ldf="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local out="$BIN/.partial-kube"; rm -rf "$out"; mkdir -p "$out"
  go build -trimpath -tags notest -ldflags "$ldf" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  mv "$out"/* "$BIN/"; rmdir "$out"
}

build_etcd() {
  local dir="$work/etcdbin-$ETCD_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init localbuild/etcdbin >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.partial" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.partial" "$BIN/etcd"
}

build_kwok() {
  local tmp="$BIN/.partial-kwok"; rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$tmp/kwok" "$BIN/"; rmdir "$tmp"
  # kwok has no built-in stages; keep the module's stage files beside the binary.
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$BIN/kwok-stages"; cp -r "$dir/kustomize/stage" "$BIN/kwok-stages"; chmod -R u+w "$BIN/kwok-stages"
}

build_helm() {
  local dir="$work/helmbin-$HELM_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init localbuild/helmbin >/dev/null 2>&1
  go get "helm.sh/helm/v3@$HELM_VERSION" >&2
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN/helm.partial" helm.sh/helm/v3/cmd/helm
  mv "$BIN/helm.partial" "$BIN/helm"
}

build_kubeconform() {
  local tmp="$BIN/.partial-kubeconform"; rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  mv "$tmp/kubeconform" "$BIN/"; rmdir "$tmp"
}

t_all=$SECONDS
have etcd || timed "etcd $ETCD_VERSION" build_etcd
have kwok && [ -d "$BIN/kwok-stages" ] || timed "kwok $KWOK_VERSION" build_kwok
{ have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl \
    && have kubelet && have kube-proxy; } \
  || timed "kubernetes $K8S_VERSION (apiserver, controller-manager, scheduler, kubectl, kubelet, kube-proxy)" build_kube
if [ "${BUILD_CHART_TOOLS:-1}" = 1 ]; then
  have helm || timed "helm $HELM_VERSION" build_helm
  have kubeconform || timed "kubeconform $KUBECONFORM_VERSION" build_kubeconform
fi
log "all binaries ready in $BIN ($((SECONDS - t_all)) s)"
echo "$BIN"
