#!/usr/bin/env bash
# Builds kube-apiserver, kubectl (Kubernetes $KUBE_VERSION) and etcd from the Go module proxy into
# CACHE/kube-$KUBE_VERSION and prints that directory on stdout (progress goes to stderr). Called by
# scripts/setup.sh, which links the binaries into .tools/bin; builds only once per version (a stamp
# file records what was built).
#
# Usage: scripts/build_kube.sh CACHE
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at
# v0.0.0 and maps them with `replace` directives that Go ignores for a dependency, so the wrapper
# replaces each one with its published v0.<minor>.<patch> tag. etcd's own go.mod has replace
# directives too, which is why `go install go.etcd.io/etcd/server/v3@...` fails; built from the
# wrapper module instead, at the etcd version Kubernetes itself uses as a client.
set -euo pipefail

KUBE_VERSION=1.34.4
# The 31 staging modules of Kubernetes 1.34 (the replace block of its go.mod).
STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

cache="${1:?usage: build_kube.sh CACHE}"
out="$cache/kube-$KUBE_VERSION"
stamp="$out/.built"
mod="$cache/kube-build"

log() { echo "build_kube: $*" >&2; }

go_env() {
  local go=go
  command -v go >/dev/null || go=/usr/local/go/bin/go
  env GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/cache" \
    GOFLAGS="-mod=mod -buildvcs=false -trimpath" GOTOOLCHAIN=local CGO_ENABLED=0 "$go" "$@"
}

# Writes the wrapper module: k8s.io/kubernetes plus one replace per staging module.
write_wrapper_module() {
  local minor="${KUBE_VERSION#1.}" m
  rm -rf "$mod" && mkdir -p "$mod"
  {
    printf 'module flock.local/kube-build\n\ngo 1.24.0\n\nreplace (\n'
    for m in "${STAGING[@]}"; do printf '\tk8s.io/%s => k8s.io/%s v0.%s\n' "$m" "$m" "$minor"; done
    printf ')\n'
  } >"$mod/go.mod"
}

build() {
  local started=$SECONDS minor="${KUBE_VERSION#1.}" ldflags="-s -w" date p etcd_version
  write_wrapper_module
  cd "$mod"
  log "resolving k8s.io/kubernetes v$KUBE_VERSION"
  go_env get "k8s.io/kubernetes@v$KUBE_VERSION" >&2
  etcd_version="$(go_env list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)"
  log "resolving go.etcd.io/etcd/server/v3 $etcd_version (the client version Kubernetes uses)"
  go_env get "go.etcd.io/etcd/server/v3@$etcd_version" >&2
  # Version stamping as Kubernetes' hack/lib/version.sh does; without it the binaries report
  # v0.0.0-master and kubectl warns about version skew.
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*}"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  mkdir -p "$out"
  log "building kube-apiserver, kubectl and etcd (the first time takes many minutes)"
  go_env build -ldflags "$ldflags" -o "$out/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver
  go_env build -ldflags "$ldflags" -o "$out/kubectl.new" k8s.io/kubernetes/cmd/kubectl
  go_env build -ldflags "-s -w" -o "$out/etcd.new" go.etcd.io/etcd/server/v3
  for p in kube-apiserver kubectl etcd; do mv "$out/$p.new" "$out/$p"; done
  printf 'kubernetes v%s\netcd %s\nbuild seconds %s\n' "$KUBE_VERSION" "$etcd_version" \
    "$((SECONDS - started))" >"$stamp"
  log "built in $((SECONDS - started)) s: $(tr '\n' ' ' <"$stamp")"
}

main() {
  if [[ ! -f "$stamp" ]] || ! grep -qx "kubernetes v$KUBE_VERSION" "$stamp"; then
    (build) >&2
  fi
  echo "$out"
}

main
