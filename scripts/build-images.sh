#!/usr/bin/env bash
# `make images`: the two OCI images, hybrid-operator and hybrid-runtime, built without a container
# daemon (no docker, no podman, no buildah): the dev-profile binaries the tests use (one cargo
# build for both), stripped of debug info, on a minimal root filesystem unpacked from the Debian
# packages they link against (apt-get download + dpkg-deb -x), put together with umoci and written
# as OCI archives (a tar of an OCI layout) with the tag inside:
#
#   $HYBRID_CACHE_DIR/images/hybrid-operator.oci.tar   ref localhost/hybrid-operator:$IMAGE_TAG
#   $HYBRID_CACHE_DIR/images/hybrid-runtime.oci.tar    ref localhost/hybrid-runtime:$IMAGE_TAG
#   $HYBRID_CACHE_DIR/images/images.env                OPERATOR_ARCHIVE, RUNTIME_ARCHIVE, IMAGE_TAG,
#                                                      OPERATOR_IMAGE, RUNTIME_IMAGE
#   $HYBRID_CACHE_DIR/images/debian-packages.txt       the Debian packages and versions inside
#   with --cuda, also:
#   $HYBRID_CACHE_DIR/images/hybrid-runtime-cuda.oci.tar  ref localhost/hybrid-runtime:$IMAGE_TAG-cuda
#     (RUNTIME_CUDA_ARCHIVE, RUNTIME_CUDA_IMAGE in images.env): the CUDA build of the runtime
#     (scripts/build-cuda.sh) with the CUDA libraries it links (cuBLAS, cuBLASLt, cuRAND, NVRTC,
#     cudart; from the PyPI toolkit), not the driver: libcuda.so.1 comes from the node.
#
#   scripts/build-images.sh              build (cargo build first; a no-op when it is fresh)
#   scripts/build-images.sh --check      build, then run both images in a throwaway containerd
#   scripts/build-images.sh --check-only run the checks on the archives images.env names
#   scripts/build-images.sh --no-cargo   use the binaries already in $CARGO_TARGET_DIR/debug
#   scripts/build-images.sh --cuda       also the -cuda runtime image, from $CARGO_TARGET_DIR/cuda
#                                        (run scripts/build-cuda.sh first)
#
# Environment: HYBRID_CACHE_DIR (default ~/.cache/hybrid-operator), CARGO_TARGET_DIR (default:
# cargo's own choice), IMAGE_TAG (default <workspace version>-<git short sha>[-dirty]),
# SOURCE_DATE_EPOCH (default: the commit time of HEAD; every mtime and `created` in the images),
# IMAGE_SOURCE (the org.opencontainers.image.source label; default: the workspace repository),
# IMAGE_CHECK_SNAPSHOTTER (containerd snapshotter for --check, default overlayfs).
#
# Needs: cargo, apt-get (Debian or Ubuntu with reachable package lists), dpkg-deb, objcopy and
# readelf (binutils), umoci, skopeo, GNU tar, python3. --check also needs root, containerd, ctr
# and runc; busybox-static (optional) adds the user/read-only probe. docs/images.md has the rest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

do_build=1 do_cargo=1 do_check=0 do_cuda=0
for arg in "$@"; do
  case $arg in
    --cuda) do_cuda=1 ;;
    --check) do_check=1 ;;
    --check-only) do_check=1 do_build=0 ;;
    --no-cargo) do_cargo=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

t_start=$SECONDS
log() { printf '[images %4ds] %s\n' "$((SECONDS - t_start))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (Debian package: $2)"; }
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

cache_root=${HYBRID_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybrid-operator}
out_dir=$cache_root/images
deb_cache=$out_dir/debs
env_file=$out_dir/images.env
mkdir -p "$out_dir" "$deb_cache"

# ---------------------------------------------------------------------------------------------
build_images() {
  need cargo cargo
  need apt-get apt
  need dpkg-deb dpkg
  need objcopy binutils
  need readelf binutils
  need umoci umoci
  need skopeo skopeo
  need python3 python3
  tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar needed (--sort, --mtime)"

  local meta version source_repo
  meta=$(cargo metadata --no-deps --format-version 1)
  read -r target_dir version source_repo < <(python3 -c '
import json, sys
m = json.load(sys.stdin)
op = next(p for p in m["packages"] if p["name"] == "hybrid-operator")
repo = op.get("repository")
if not repo:
    import tomllib
    with open("Cargo.toml", "rb") as f:
        repo = tomllib.load(f).get("workspace", {}).get("package", {}).get("repository")
print(m["target_directory"], op["version"], repo or "unknown")' <<<"$meta")
  target_dir=${CARGO_TARGET_DIR:-$target_dir}
  local source=${IMAGE_SOURCE:-$source_repo}

  local revision=unknown short=dev dirty=""
  if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    revision=$(git rev-parse HEAD)
    short=$(git rev-parse --short=12 HEAD)
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=-dirty
  fi
  local tag=${IMAGE_TAG:-$version-$short$dirty}
  [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "IMAGE_TAG '$tag' is not a valid tag"
  local epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
  local created; created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  local deb_arch oci_arch
  deb_arch=$(dpkg --print-architecture)
  case $deb_arch in
    amd64 | arm64) oci_arch=$deb_arch ;;
    *) die "architecture $deb_arch: only amd64 and arm64 are mapped to OCI names" ;;
  esac
  log "tag $tag, revision $revision$dirty, created $created (SOURCE_DATE_EPOCH=$epoch), linux/$oci_arch"

  # --- 1. binaries ------------------------------------------------------------------------------
  local bin_dir=$target_dir/debug
  if [ "$do_cargo" = 1 ]; then
    log "1/6 cargo build -p hybrid-operator -p hybrid-runtime (dev profile, the tests' build; no-op when fresh)"
    cargo build -p hybrid-operator -p hybrid-runtime
  else
    log "1/6 --no-cargo: using the binaries in $bin_dir as they are"
  fi
  local b
  for b in hybrid-operator hybrid-runtime; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b missing (run without --no-cargo, or set CARGO_TARGET_DIR)"
  done

  work=$(mktemp -d "${TMPDIR:-/tmp}/hybrid-images.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bin"
  local -a bins=(hybrid-operator hybrid-runtime)
  local -A bin_src=([hybrid-operator]=$bin_dir/hybrid-operator [hybrid-runtime]=$bin_dir/hybrid-runtime)
  if [ "$do_cuda" = 1 ]; then
    bins+=(hybrid-runtime-cuda)
    bin_src[hybrid-runtime-cuda]=$target_dir/cuda/hybrid-runtime
    [ -x "${bin_src[hybrid-runtime-cuda]}" ] || die "${bin_src[hybrid-runtime-cuda]} missing (run scripts/build-cuda.sh)"
  fi
  log "2/6 objcopy --strip-debug into the images"
  for b in "${bins[@]}"; do
    objcopy --strip-debug "${bin_src[$b]}" "$work/bin/$b"
    chmod 0755 "$work/bin/$b"
    log "    $b: $(human "$(stat -c %s "${bin_src[$b]}")") -> $(human "$(stat -c %s "$work/bin/$b")")"
  done
  # The CUDA libraries the CUDA build links, from the toolkit it was built with; not the driver
  # (libcuda.so.1), which the node's container toolkit mounts into GPU pods.
  local cuda_libs=$work/layer-cuda-libs/usr/local/cuda/lib
  if [ "$do_cuda" = 1 ]; then
    eval "$(scripts/cuda-toolkit.sh)"
    mkdir -p "$cuda_libs"
    local -a cq=("$work/bin/hybrid-runtime-cuda")
    local -A cseen=()
    local cf cn
    while [ "${#cq[@]}" -gt 0 ]; do
      cf=${cq[0]}; cq=("${cq[@]:1}")
      for cn in $(readelf -d "$cf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [ -z "${cseen[$cn]:-}" ] && [ -f "$CUDA_HOME/lib/$cn" ] || continue
        cseen[$cn]=1
        cp -L "$CUDA_HOME/lib/$cn" "$cuda_libs/$cn"
        cq+=("$cuda_libs/$cn")
      done
    done
    # NVRTC loads its builtins with dlopen, which readelf does not show.
    if [ -n "${cseen[libnvrtc.so.13]:-}" ]; then
      cp -L "$CUDA_HOME"/lib/libnvrtc-builtins.so.13.* "$cuda_libs/"
    fi
    chmod 0644 "$cuda_libs"/*
    log "    CUDA libraries for the -cuda image: $(cd "$cuda_libs" && ls | tr '\n' ' ')($(human "$(du -sb "$cuda_libs" | cut -f1)"))"
  fi

  # --- 2. Debian packages -----------------------------------------------------------------------
  # The packages that own the shared libraries the binaries load (ldd), plus the fixed set.
  local -A pkgs=([libc6]=1 [libgcc-s1]=1)
  local lib owner
  while read -r lib; do
    owner=$({ dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true; } | grep -v "^diversion" | head -n1 || true)
    owner=${owner%%:*}
    [ -n "$owner" ] || die "no Debian package owns $lib (ldd of the binaries)"
    pkgs[$owner]=1
  done < <(ldd "${bins[@]/#/$work/bin/}" 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(0x/ {print $1}' | sort -u)
  # With what they depend on (libgcc-s1 -> gcc-12-base, which holds its copyright), and the CA
  # certificates (whose maintainer-script dependencies, openssl and debconf, stay out).
  local names
  names=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${!pkgs[@]}" | grep -v -e '^ ' -e '^<' | sort -u | tr '\n' ' ') ||
    die "apt-cache depends ${!pkgs[*]} failed (run apt-get update)"
  names="${names}ca-certificates "
  log "3/6 Debian packages: $names(the binaries' shared libraries, ldd, and what they depend on; ca-certificates)"
  local uris
  uris=$(apt-get download --print-uris ${names}) ||
    die "apt-get could not resolve $names(run apt-get update)"
  : >"$work/packages.txt"
  local url file size hash
  while read -r url file size hash; do
    [ -n "$file" ] || continue
    hash=${hash#SHA256:}
    if [ -f "$deb_cache/$file" ] && [ "$(sha256sum "$deb_cache/$file" | cut -d' ' -f1)" = "$hash" ]; then
      log "    $file (cached)"
    else
      log "    $file: apt-get download ($(human "$size"))"
      # The candidate --print-uris just resolved; the checksum below pins it to that version.
      (cd "$deb_cache" && apt-get download -q -o APT::Sandbox::User=root "${file%%_*}" >&2)
      [ -f "$deb_cache/$file" ] || die "apt-get download ${file%%_*} did not write $file"
      [ "$(sha256sum "$deb_cache/$file" | cut -d' ' -f1)" = "$hash" ] || die "$file: SHA256 mismatch"
    fi
    printf '%s %s %s\n' "$(dpkg-deb -f "$deb_cache/$file" Package)" "$(dpkg-deb -f "$deb_cache/$file" Version)" "$hash" >>"$work/packages.txt"
  done <<<"$uris"
  sort -o "$work/packages.txt" "$work/packages.txt"

  # --- 3. the root filesystem (one layer, the same in both images) ------------------------------
  log "4/6 root filesystem: dpkg-deb -x, prune, /etc/passwd (nonroot 65532), /tmp"
  local root=$work/rootfs deb
  mkdir -p "$root"
  for deb in $(awk '{print $2}' <<<"$uris"); do
    dpkg-deb -x "$deb_cache/$deb" "$root"
    local p; p=$(dpkg-deb -f "$deb_cache/$deb" Package)
    mkdir -p "$root/var/lib/dpkg/status.d"
    # What scanners (trivy, grype, syft) read in distroless-style images: the package's control.
    { dpkg-deb -f "$deb_cache/$deb"; echo "Status: install ok installed"; } >"$root/var/lib/dpkg/status.d/$p"
  done
  # Keep the libraries, the CA certificates and each package's copyright; drop the rest.
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/{man,info,locale,lintian,bug,gcc,gdb} "$root"/usr/lib/*/gconv \
    "$root"/usr/{bin,sbin,libexec} "$root"/{bin,sbin} "$root"/etc/ca-certificates.conf* \
    "$root"/usr/share/ca-certificates-* 2>/dev/null || true
  find "$root/usr/share/doc" -xtype l -delete 2>/dev/null || true
  # update-ca-certificates (a maintainer script, which dpkg-deb -x does not run) would write this.
  mkdir -p "$root/etc/ssl/certs"
  local crt
  while IFS= read -r crt; do
    cat "$crt"
    [ -z "$(tail -c1 "$crt")" ] || echo
  done < <(find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort) >"$root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "no CA certificates in ca-certificates"
  rm -rf "$root/usr/share/ca-certificates" "$root/etc/ca-certificates" "$root/usr/share/doc/ca-certificates/examples"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  [ -f /etc/os-release ] && cat /etc/os-release >"$root/etc/os-release"
  mkdir -p "$root"/{proc,sys,dev,run,root,tmp,home/nonroot,usr/local/bin}
  chmod 0755 "$root"/{proc,sys,dev,run,usr/local/bin}
  chmod 0700 "$root/root" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  cp "$work/packages.txt" "$out_dir/debian-packages.txt"
  sed 's/^/    /; s/ [0-9a-f]\{64\}$//' "$work/packages.txt" >&2

  # Every shared library the binaries (and those libraries) need must be in the root filesystem.
  local -a queue=("${bins[@]/#/$work/bin/}") lib_dirs=()
  local -A seen=()
  local f n hit
  for f in "$root/lib" "$root/usr/lib" "$root/lib64" "$cuda_libs"; do
    [ ! -d "$f" ] || lib_dirs+=("$f")
  done
  while [ "${#queue[@]}" -gt 0 ]; do
    f=${queue[0]}; queue=("${queue[@]:1}")
    for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -z "${seen[$n]:-}" ] || continue
      seen[$n]=1
      [ "$n" != libcuda.so.1 ] || continue # the node's driver, mounted into GPU pods
      hit=$(find "${lib_dirs[@]}" -name "$n" 2>/dev/null | head -n1 || true)
      [ -n "$hit" ] || die "$n (needed by ${f##*/}) is not in the root filesystem"
      queue+=("$(readlink -f "$hit" 2>/dev/null || echo "$hit")")
    done
  done
  log "    shared libraries resolved in the root filesystem: ${!seen[*]}"

  # --- 4. layers: deterministic tars (sorted, fixed mtime, numeric root ownership) --------------
  log "5/6 layers (SOURCE_DATE_EPOCH mtimes) and umoci"
  local -a tar_opts=(--sort=name --format=posix --numeric-owner --mtime="@$epoch"
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
  tar "${tar_opts[@]}" --owner=0 --group=0 --exclude=./home/nonroot -C "$root" -cf "$work/base.tar" .
  tar "${tar_opts[@]}" --owner=65532 --group=65532 --no-recursion -C "$root" -rf "$work/base.tar" ./home/nonroot
  for b in hybrid-operator hybrid-runtime; do
    mkdir -p "$work/layer-$b/usr/local/bin"
    cp "$work/bin/$b" "$work/layer-$b/usr/local/bin/$b"
    tar "${tar_opts[@]}" --owner=0 --group=0 -C "$work/layer-$b" -cf "$work/$b.tar" ./usr/local/bin/$b
  done
  if [ "$do_cuda" = 1 ]; then
    mkdir -p "$work/layer-hybrid-runtime-cuda/usr/local/bin"
    cp "$work/bin/hybrid-runtime-cuda" "$work/layer-hybrid-runtime-cuda/usr/local/bin/hybrid-runtime"
    tar "${tar_opts[@]}" --owner=0 --group=0 -C "$work/layer-hybrid-runtime-cuda" \
      -cf "$work/hybrid-runtime-cuda.tar" ./usr/local/bin/hybrid-runtime
    tar "${tar_opts[@]}" --owner=0 --group=0 -C "$work/layer-cuda-libs" -cf "$work/cuda-libs.tar" ./usr/local/cuda
  fi

  # Each image: its tag, entrypoint, layers (oldest first) and what it adds to the config.
  local -a images=(hybrid-operator hybrid-runtime)
  [ "$do_cuda" = 0 ] || images+=(hybrid-runtime-cuda)
  local -A archive=()
  local -A image_tag=([hybrid-operator]=$tag [hybrid-runtime]=$tag [hybrid-runtime-cuda]=$tag-cuda)
  local -A entry=([hybrid-operator]=hybrid-operator [hybrid-runtime]=hybrid-runtime [hybrid-runtime-cuda]=hybrid-runtime)
  local -A layers=([hybrid-operator]="base hybrid-operator" [hybrid-runtime]="base hybrid-runtime"
    [hybrid-runtime-cuda]="base cuda-libs hybrid-runtime-cuda")
  local -A created_by=(
    [base]="Debian packages $(cut -d' ' -f1,2 "$work/packages.txt" | tr ' \n' '= ' | sed 's/ $//'), /etc/passwd nonroot 65532, /tmp"
    [hybrid-operator]="/usr/local/bin/hybrid-operator (cargo dev profile, objcopy --strip-debug)"
    [hybrid-runtime]="/usr/local/bin/hybrid-runtime (cargo dev profile, objcopy --strip-debug)"
    [cuda-libs]="/usr/local/cuda/lib (CUDA ${HYBRID_CUDA_VERSION:-} runtime libraries from PyPI; the driver comes from the node)"
    [hybrid-runtime-cuda]="/usr/local/bin/hybrid-runtime (cargo dev profile, --features cuda, compute capability ${CUDA_COMPUTE_CAP:-}, objcopy --strip-debug)")
  local -A title=([hybrid-operator]="hybrid-operator" [hybrid-runtime]="hybrid-runtime"
    [hybrid-runtime-cuda]="hybrid-runtime (CUDA)")
  local runtime_descr="Index, training, evaluation and serving runtime the hybrid-operator runs in Jobs and pods"
  local -A descr=(
    [hybrid-operator]="Kubernetes operator for hybrid RAG + LoRA LLM deployments (hybrid.dev)"
    [hybrid-runtime]="$runtime_descr"
    [hybrid-runtime-cuda]="$runtime_descr, CUDA build (compute capability ${CUDA_COMPUTE_CAP:-}; needs the NVIDIA driver on the node)")
  local -A extra_env=([hybrid-runtime-cuda]="LD_LIBRARY_PATH=/usr/local/cuda/lib NVIDIA_DRIVER_CAPABILITIES=compute,utility")
  local t l e
  for b in "${images[@]}"; do
    local layout=$work/oci-$b
    t=${image_tag[$b]}
    [ "$b" != hybrid-runtime-cuda ] ||
      log "    hybrid-runtime:$t: compressing $(human "$(stat -c %s "$work/cuda-libs.tar")") of CUDA libraries"
    umoci init --layout "$layout"
    umoci new --image "$layout:$t"
    for l in ${layers[$b]}; do
      umoci raw add-layer --image "$layout:$t" --history.created "$created" \
        --history.created_by "build-images.sh: ${created_by[$l]}" "$work/$l.tar"
    done
    local -a env_args=()
    for e in ${extra_env[$b]:-}; do env_args+=(--config.env "$e"); done
    umoci config --image "$layout:$t" --no-history \
      --created "$created" --architecture "$oci_arch" --os linux \
      --config.user 65532:65532 \
      --config.entrypoint "/usr/local/bin/${entry[$b]}" \
      --config.workingdir / \
      --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --config.env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
      "${env_args[@]}" \
      --config.label "org.opencontainers.image.title=${title[$b]}" \
      --config.label "org.opencontainers.image.description=${descr[$b]}" \
      --config.label "org.opencontainers.image.source=$source" \
      --config.label "org.opencontainers.image.revision=$revision" \
      --config.label "org.opencontainers.image.version=$version" \
      --config.label "org.opencontainers.image.created=$created" \
      --config.label "org.opencontainers.image.licenses=Apache-2.0"
    umoci gc --layout "$layout"
    archive[$b]=$work/$b.oci.tar
    tar "${tar_opts[@]}" --owner=0 --group=0 -C "$layout" -cf "${archive[$b]}" .
  done

  # --- 5. into the cache, then images.env (last, so it never names a half-written archive) ------
  log "6/6 archives in $out_dir"
  for b in "${!archive[@]}"; do
    mv -f "${archive[$b]}" "$out_dir/$b.oci.tar"
  done
  cat >"$env_file.partial" <<ENV
OPERATOR_ARCHIVE=$out_dir/hybrid-operator.oci.tar
RUNTIME_ARCHIVE=$out_dir/hybrid-runtime.oci.tar
IMAGE_TAG=$tag
OPERATOR_IMAGE=localhost/hybrid-operator:$tag
RUNTIME_IMAGE=localhost/hybrid-runtime:$tag
ENV
  if [ "$do_cuda" = 1 ]; then
    printf 'RUNTIME_CUDA_ARCHIVE=%s\nRUNTIME_CUDA_IMAGE=%s\n' "$out_dir/hybrid-runtime-cuda.oci.tar" \
      "localhost/hybrid-runtime:$tag-cuda" >>"$env_file.partial"
  fi
  mv -f "$env_file.partial" "$env_file"

  for b in hybrid-operator hybrid-runtime; do
    local packed unpacked
    packed=$(stat -c %s "$out_dir/$b.oci.tar")
    unpacked=$(($(stat -c %s "$work/base.tar") + $(stat -c %s "$work/$b.tar")))
    log "$b: localhost/$b:$tag, archive $(human "$packed") (gzip layers), uncompressed layers $(human "$unpacked")"
    echo "----- skopeo inspect oci-archive:$out_dir/$b.oci.tar" >&2
    skopeo inspect "oci-archive:$out_dir/$b.oci.tar" >&2
    skopeo inspect --config "oci-archive:$out_dir/$b.oci.tar" |
      python3 -c 'import json,sys; c=json.load(sys.stdin)["config"]; print("config: User=%s Entrypoint=%s WorkingDir=%s" % (c.get("User"), c.get("Entrypoint"), c.get("WorkingDir")))' >&2
  done
  if [ "$do_cuda" = 1 ]; then
    log "hybrid-runtime (CUDA): localhost/hybrid-runtime:$tag-cuda, archive $(human "$(stat -c %s "$out_dir/hybrid-runtime-cuda.oci.tar")") (gzip layers), uncompressed layers $(human "$(($(stat -c %s "$work/base.tar") + $(stat -c %s "$work/cuda-libs.tar") + $(stat -c %s "$work/hybrid-runtime-cuda.tar")))")"
  fi
  log "wrote $env_file:"
  sed 's/^/    /' "$env_file" >&2
}

# ---------------------------------------------------------------------------------------------
# Both images in a throwaway containerd (own root, state, socket and runc root under a temp dir;
# the CRI plugin off): import as the cluster would, then run each binary's --help as the image's
# user with a read-only root filesystem and a tmpfs at /tmp (the pods' emptyDir).
check_images() {
  [ "$(id -u)" = 0 ] || die "--check needs root (containerd, runc)"
  need containerd containerd
  need ctr containerd
  need runc runc
  need skopeo skopeo
  [ -f "$env_file" ] || die "$env_file missing: build the images first"
  # shellcheck source=/dev/null
  source "$env_file"
  local snap=${IMAGE_CHECK_SNAPSHOTTER:-overlayfs}
  ck=$(mktemp -d "${TMPDIR:-/tmp}/hybrid-images-check.XXXXXX")
  ck_pid=""
  ck_ids=()
  trap check_cleanup EXIT
  cat >"$ck/containerd.toml" <<TOML
version = 2
root = "$ck/root"
state = "$ck/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ck/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ck/opt"
TOML
  log "check: containerd in $ck (CRI plugin off, snapshotter $snap)"
  containerd --config "$ck/containerd.toml" >"$ck/containerd.log" 2>&1 &
  ck_pid=$!
  local i
  for i in $(seq 1 100); do
    ckctr version >/dev/null 2>&1 && break
    kill -0 "$ck_pid" 2>/dev/null || { tail -n 20 "$ck/containerd.log" >&2; die "containerd exited"; }
    sleep 0.2
  done
  ckctr version >/dev/null 2>&1 || { tail -n 20 "$ck/containerd.log" >&2; die "containerd did not answer on $ck/containerd.sock"; }

  local b ar ref out
  for b in hybrid-operator hybrid-runtime; do
    if [ "$b" = hybrid-operator ]; then ar=$OPERATOR_ARCHIVE ref=$OPERATOR_IMAGE; else ar=$RUNTIME_ARCHIVE ref=$RUNTIME_IMAGE; fi
    log "check: skopeo inspect oci-archive:$ar"
    skopeo inspect "oci-archive:$ar" >/dev/null || die "skopeo inspect $ar"
    log "check: ctr -n k8s.io images import --base-name ${ref%:*} $ar"
    ckctr images import --base-name "${ref%:*}" --snapshotter "$snap" "$ar" >&2
    ckctr images ls -q | grep -qxF "$ref" || { ckctr images ls >&2; die "$ref not among the imported images"; }
    log "check: $ref imported (ctr images ls):"
    ckctr images ls | awk -v r="$ref" 'NR == 1 || $1 == r' | sed 's/^/    /' >&2
    for args in "--help" "--version"; do
      out=$(ck_run "$ref" "$b" "/usr/local/bin/$b" $args) || { printf '%s\n' "$out" >&2; die "$b $args failed in $ref"; }
      log "check: ctr run --rm --read-only $ref /usr/local/bin/$b $args (user from the image):"
      printf '%s\n' "$out" | head -n 25 | sed 's/^/    | /' >&2
    done
    printf '%s\n' "$out" | grep -q "$b" || die "$b --version did not name $b"
    if [ "$b" = hybrid-runtime ]; then
      # Real work, as a Job would run it: read a file of the image, write the result into /tmp.
      out=$(ck_run "$ref" "$b" hybrid-runtime scan --source /etc/ssl/certs/ca-certificates.crt \
        --result-path /tmp/scan.json) || { printf '%s\n' "$out" >&2; die "hybrid-runtime scan failed in $ref"; }
      log "check: ctr run ... $ref hybrid-runtime scan --source /etc/ssl/certs/ca-certificates.crt --result-path /tmp/scan.json (through PATH):"
      printf '%s\n' "$out" | sed 's/^/    | /' >&2
      printf '%s\n' "$out" | grep -q '"kind":"ScanResult"' || die "hybrid-runtime scan printed no ScanResult"
    fi
    if [ -x /bin/busybox ] && ! readelf -d /bin/busybox 2>/dev/null | grep -q NEEDED; then
      out=$(ck_run "$ref" "$b" /tmp/.probe/busybox sh -c '
        set -e
        echo "uid=$(/tmp/.probe/busybox id -u) gid=$(/tmp/.probe/busybox id -g)"
        if /tmp/.probe/busybox touch /probe 2>/dev/null; then echo "root filesystem WRITABLE"; exit 1; fi
        echo "root filesystem read-only"
        /tmp/.probe/busybox touch /tmp/probe && echo "/tmp writable"
        [ -s /etc/ssl/certs/ca-certificates.crt ] && echo "CA bundle $(/tmp/.probe/busybox grep -c BEGIN /etc/ssl/certs/ca-certificates.crt) certificates"
        /tmp/.probe/busybox ls /usr/local/bin') || { printf '%s\n' "$out" >&2; die "probe in $ref"; }
      log "check: probe in $ref (busybox bind-mounted under /tmp):"
      printf '%s\n' "$out" | sed 's/^/    | /' >&2
      printf '%s\n' "$out" | grep -qx 'uid=65532 gid=65532' || die "$ref does not run as 65532:65532"
    else
      log "check: no static /bin/busybox (busybox-static): the user/read-only probe is skipped"
    fi
  done
  if [ -n "${RUNTIME_CUDA_ARCHIVE:-}" ]; then
    ref=$RUNTIME_CUDA_IMAGE
    log "check: ctr -n k8s.io images import --base-name ${ref%:*} $RUNTIME_CUDA_ARCHIVE"
    ckctr images import --base-name "${ref%:*}" --snapshotter "$snap" "$RUNTIME_CUDA_ARCHIVE" >&2
    ckctr images ls -q | grep -qxF "$ref" || die "$ref not among the imported images"
    # A GPU node's container toolkit mounts the driver's libcuda.so.1 into the pod; the toolkit's
    # link stub stands in for it (its cuInit fails: a driver with no GPU behind it).
    eval "$(scripts/cuda-toolkit.sh)"
    ck_extra_mount="type=bind,src=$CUDA_HOME/lib/stubs/libcuda.so,dst=/usr/local/cuda/lib/libcuda.so.1,options=rbind:ro"
    out=$(ck_run "$ref" cuda hybrid-runtime --version) || { printf '%s\n' "$out" >&2; die "the CUDA runtime does not start in $ref"; }
    log "check: ctr run ... $ref hybrid-runtime --version (libcuda.so.1: the link stub):"
    printf '%s\n' "$out" | sed 's/^/    | /' >&2
    out=$(ck_run "$ref" cuda hybrid-runtime serve --model /none.gguf --device cuda --listen 127.0.0.1:0) && die "serve --device cuda succeeded without a GPU in $ref"
    log "check: ctr run ... $ref hybrid-runtime serve --device cuda (no GPU behind the driver):"
    printf '%s\n' "$out" | sed 's/^/    | /' >&2
    printf '%s\n' "$out" | grep -q -- '--device cuda:0: no CUDA device' || die "$ref did not refuse --device cuda by name"
    out=$(ck_run "$ref" cuda hybrid-runtime serve --model /none.gguf --listen 127.0.0.1:0) || true
    printf '%s\n' "$out" | grep -q 'computing on cpu (--device auto; this binary has CUDA)' ||
      { printf '%s\n' "$out" >&2; die "$ref: --device auto did not fall back to the CPU"; }
    log "check: $ref starts, refuses --device cuda without a GPU by name, and runs on the CPU with --device auto"
    ck_extra_mount=""
  fi
  log "check: the images import and run as 65532 with a read-only root filesystem"
}

ckctr() { timeout 120 ctr --address "$ck/containerd.sock" -n k8s.io "$@"; }

ck_run() { # image name cmd... -> output; the container's id is unique to this run
  local ref=$1 name=$2; shift 2
  local id="images-check-$$-${#ck_ids[@]}-$name"
  ck_ids+=("$id")
  local -a mounts=(--mount "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev:mode=1777")
  [ "$1" != /tmp/.probe/busybox ] || mounts+=(--mount "type=bind,src=/bin/busybox,dst=/tmp/.probe/busybox,options=rbind:ro")
  [ -z "${ck_extra_mount:-}" ] || mounts+=(--mount "$ck_extra_mount")
  ckctr run --rm --read-only --snapshotter "${IMAGE_CHECK_SNAPSHOTTER:-overlayfs}" \
    --runc-root "$ck/runc" --fifo-dir "$ck/fifo" "${mounts[@]}" "$ref" "$id" "$@" 2>&1
}

check_cleanup() {
  local rc=$? id m
  if [ -n "${ck_pid:-}" ] && kill -0 "$ck_pid" 2>/dev/null; then
    for id in "${ck_ids[@]}"; do
      ctr --address "$ck/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      ctr --address "$ck/containerd.sock" -n k8s.io tasks delete "$id" >/dev/null 2>&1 || true
      ctr --address "$ck/containerd.sock" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
    kill "$ck_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$ck_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$ck_pid" 2>/dev/null || true
    wait "$ck_pid" 2>/dev/null || true
  fi
  if [ -n "${ck:-}" ] && [ -d "$ck" ]; then
    # Snapshot and shim mounts left under the temp dir, deepest first.
    for m in $(awk -v d="$ck/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$ck"
    log "check: containerd stopped, $ck removed"
  fi
  [ -z "${work:-}" ] || rm -rf "$work"
  exit "$rc"
}

[ "$do_build" = 0 ] || build_images
[ "$do_check" = 0 ] || check_images
log "done"
