#!/usr/bin/env bash
# What `make test` (and .ci/run) needs from the system, in one place. Installs the missing
# Debian packages when it can (root with apt-get), otherwise names them and fails.
#
#   scripts/prereqs.sh          the test suite's packages; with root also the real node's
#   scripts/prereqs.sh --check  only report, install nothing
#
# Tools: cargo (Rust), go (Go 1.26) and python3 are not installed here; the README lists them.
set -euo pipefail
check_only=0
[ "${1:-}" = --check ] && check_only=1
log() { printf '[prereqs] %s\n' "$*" >&2; }

need=()
want() { # command package
  command -v "$1" >/dev/null 2>&1 || need+=("$2")
}
want openssl openssl
want python3 python3
want make make
want git git
want unzip unzip
want curl curl
# promtool: the chart's alert rules and their unit tests (tests/prometheus); prometheus itself:
# the autoscaler e2e runs a real server.
want promtool prometheus
# PyYAML: tests/prometheus/check-rules.sh turns the rendered PrometheusRule into a rules file.
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -m venv -h >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$(id -u)" = 0 ]; then
  # The local cluster's real node (tests/cluster/realnode.sh) and the images it runs
  # (scripts/build-images.sh): only as root, which the real node needs anyway.
  want containerd containerd
  want runc runc
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] &&
    [ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
  want iptables iptables
  want ip iproute2
  want umoci umoci
  want skopeo skopeo
  want objcopy binutils
  want dpkg-deb dpkg
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | sed '/^$/d')

if [ ${#need[@]} = 0 ]; then
  log "system packages present"
elif [ "$check_only" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  log "missing Debian packages: ${need[*]}"
  log "install them with: sudo apt-get install ${need[*]}"
  exit 1
fi
command -v cargo >/dev/null || { log "cargo (Rust toolchain, https://rustup.rs) is required"; exit 1; }
command -v go >/dev/null || { log "go (Go 1.26) is required to build the control plane"; exit 1; }
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
fi
[ "$(id -u)" = 0 ] || log "not root: the real-node e2e (tests/cluster/real-pods.sh) will be reported NOT RUN"
