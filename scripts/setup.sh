#!/usr/bin/env bash
# Prepares this machine for flock's tests, demo and benchmarks. Idempotent and fast when
# everything is already present, so `make test` can always run it first.
#
# What it installs (everything but Debian packages lives under $FLOCK_CACHE, default
# /var/cache/flock, and is linked into the repo's git-ignored .tools/bin):
#   - Debian packages: iproute2, podman + runc, the CNI reference plugins, bird2, busybox-static, ...
#   - Deno 2.9.6 from the npm package `deno`
#   - cnitool v1.3.0, gobgpd and gobgp v3 (built with `go install` from the Go module proxy)
#   - kube-apiserver and kubectl (Kubernetes 1.34) and etcd, built from the Go module proxy by
#     scripts/build_kube.sh (only the first time: 16 min on 2 busy cores, 620 CPU-seconds)
#   - a containers.conf for podman's test runs (CNI backend, runc, no default ulimits); the
#     global /etc/containers/containers.conf is never touched
#   - a busybox root filesystem for `podman run --rootfs`
#
# Progress goes to stderr. Needs root (apt-get).
set -euo pipefail

DENO_VERSION=2.9.6
CNITOOL_VERSION=v1.3.0
GOBGP_VERSION=v3.37.0
APT_PACKAGES=(iproute2 iputils-ping bird2 podman runc containernetworking-plugins busybox-static
  hyperfine jq procps psmisc)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${FLOCK_CACHE:-/var/cache/flock}"
tools="$repo/.tools/bin"

log() { echo "setup: $*" >&2; }

# Links .tools/bin/NAME to TARGET unless it already points there.
link_tool() {
  local name="$1" target="$2"
  if [[ "$(readlink "$tools/$name" 2>/dev/null || true)" != "$target" ]]; then
    log "linking .tools/bin/$name -> $target"
    ln -sfn "$target" "$tools/$name"
  fi
}

install_apt_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  # Keep package scripts from starting daemons (bird) in the host's own network namespace.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  ((made_policy)) && rm -f "$policy"
  return 0
}

install_deno() {
  local prefix="$cache/deno-$DENO_VERSION"
  local bin="$prefix/node_modules/.bin/deno"
  if ! [[ -x "$bin" && "$("$bin" --version 2>/dev/null | head -n1)" == "deno $DENO_VERSION "* ]]; then
    log "installing deno@$DENO_VERSION from npm into $prefix"
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --save-exact --prefix "$prefix" "deno@$DENO_VERSION" >&2
  fi
  link_tool deno "$bin"
}

# go_env runs the go command with its module cache and build cache under $FLOCK_CACHE.
go_env() {
  local go=go
  command -v go >/dev/null || go=/usr/local/go/bin/go
  env GOBIN="$cache/bin" GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" \
    GOCACHE="$cache/go/cache" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local "$go" "$@"
}

install_cnitool() {
  if [[ ! -x "$cache/bin/cnitool" ]]; then
    log "building cnitool $CNITOOL_VERSION"
    (cd /tmp && go_env install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION") >&2
  fi
  link_tool cnitool "$cache/bin/cnitool"
}

install_gobgp() {
  local stamp="$cache/bin/.gobgp-$GOBGP_VERSION"
  if [[ ! -x "$cache/bin/gobgpd" || ! -x "$cache/bin/gobgp" || ! -e "$stamp" ]]; then
    log "building gobgpd and gobgp $GOBGP_VERSION"
    # `go install module@version` asks the proxy for the module's version list, which it refuses
    # for gobgp/v3; resolving the exact version inside a scratch module avoids that request.
    local mod="$cache/gobgp-build"
    mkdir -p "$mod"
    printf 'module flock.local/gobgp-build\n\ngo 1.21\n' >"$mod/go.mod"
    rm -f "$mod/go.sum"
    (
      cd "$mod"
      go_env get "github.com/osrg/gobgp/v3/cmd/gobgpd@$GOBGP_VERSION" \
        "github.com/osrg/gobgp/v3/cmd/gobgp@$GOBGP_VERSION"
      go_env install github.com/osrg/gobgp/v3/cmd/gobgpd github.com/osrg/gobgp/v3/cmd/gobgp
    ) >&2
    touch "$stamp"
  fi
  link_tool gobgpd "$cache/bin/gobgpd"
  link_tool gobgp "$cache/bin/gobgp"
}

install_kube() {
  local dir name
  dir="$("$repo/scripts/build_kube.sh" "$cache")"
  for name in kube-apiserver kubectl etcd; do link_tool "$name" "$dir/$name"; done
}

# Writes FILE with CONTENT only if it differs, so repeated runs change nothing.
write_if_changed() {
  local file="$1" content="$2"
  if [[ ! -f "$file" || "$(cat "$file")" != "$content" ]]; then
    log "writing $file"
    printf '%s\n' "$content" >"$file.tmp" && mv "$file.tmp" "$file"
  fi
}

write_containers_conf() {
  # Used as CONTAINERS_CONF=$FLOCK_CACHE/containers.conf; tests/helpers/podman.ts writes the same
  # settings (with extra plugin dirs) for its own runs.
  write_if_changed "$cache/containers.conf" '# flock test runs: CONTAINERS_CONF=<this file> podman ...
[containers]
# No CAP_SYS_RESOURCE here, so podman must not raise any rlimit.
default_ulimits = []

[engine]
# crun refuses the hybrid cgroup v1 layout of the test machines.
runtime = "runc"

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]'
}

main() {
  mkdir -p "$cache/bin" "$tools"
  install_apt_packages
  install_deno
  # Cluster mode's Kubernetes client (npm), fetched now so an agent's first start waits on no download.
  "$tools/deno" cache --no-lock --quiet "$repo/agent/kube/api.ts" >&2
  install_cnitool
  install_gobgp
  install_kube
  write_containers_conf
  "$repo/scripts/make_rootfs.sh" "$cache/rootfs"
  log "ready (cache $cache, tools in .tools/bin)"
}

main "$@"
