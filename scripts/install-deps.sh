#!/usr/bin/env bash
# Installs everything berth's build and tests need on a Debian bookworm machine:
# protoc (etcd-client build), busybox-static (test images), etcd, dig, socat (a tcp:// Docker
# endpoint in tests), openssl (an HTTPS server for the probe tests), chromium (the status
# page's screenshot test), prometheus (for `promtool check metrics`), docker-compose (the
# compose demo's config check), consul from the bullseye suite, and kubernetes-validate from
# PyPI (the DaemonSet's offline schema check, tests/tests/manifests.rs). The bullseye source is derived from this machine's own apt configuration,
# so no mirror host name is written into the repository.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "install-deps: run as root (or via sudo)" >&2; exit 1; fi; }

have_all() {
  command -v protoc >/dev/null && [ -e /usr/include/google/protobuf/timestamp.proto ] \
    && [ -x /bin/busybox ] && command -v consul >/dev/null && command -v etcd >/dev/null \
    && command -v etcdctl >/dev/null && command -v dig >/dev/null && command -v curl >/dev/null \
    && command -v jq >/dev/null && command -v socat >/dev/null && command -v ip >/dev/null \
    && command -v openssl >/dev/null && command -v chromium >/dev/null \
    && command -v promtool >/dev/null && command -v docker-compose >/dev/null
}

# The Kubernetes OpenAPI schemas, offline: a pinned kubernetes-validate (it bundles them).
kubernetes_validate=1.37.0
if [ "$(kubernetes-validate --version 2>/dev/null)" != "$kubernetes_validate" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "kubernetes-validate==$kubernetes_validate"
  # pyenv puts new console scripts on PATH through its shims.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  [ "$(kubernetes-validate --version 2>/dev/null)" = "$kubernetes_validate" ] \
    || { echo "install-deps: kubernetes-validate $kubernetes_validate is not on PATH after pip install" >&2; exit 1; }
fi

if have_all; then exit 0; fi
need_root
export DEBIAN_FRONTEND=noninteractive

# The first Debian URI this machine already uses for the main archive.
debian_uri() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

bullseye=/etc/apt/sources.list.d/berth-bullseye.sources
if [ ! -f "$bullseye" ]; then
  uri=$(debian_uri)
  if [ -z "$uri" ]; then echo "install-deps: no Debian apt source found to derive bullseye from" >&2; exit 1; fi
  cat >"$bullseye" <<SRC
Types: deb
URIs: $uri
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # Prefer bookworm for everything but what we ask for from bullseye explicitly.
  cat >/etc/apt/preferences.d/berth-bullseye <<'PREF'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PREF
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  protobuf-compiler libprotobuf-dev busybox-static etcd-server etcd-client \
  dnsutils curl jq socat iproute2 ca-certificates openssl chromium prometheus docker-compose >/dev/null
apt-get install -y -qq --no-install-recommends -t bullseye consul >/dev/null
# Debian's etcd-server package may start a system etcd on :2379; the tests run their own.
# Likewise Debian's prometheus package may start a server; only promtool is wanted.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
  systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
pkill -x etcd >/dev/null 2>&1 || true
pkill -x prometheus >/dev/null 2>&1 || true
pkill -f prometheus-node-exporter >/dev/null 2>&1 || true
have_all || { echo "install-deps: something is still missing after install" >&2; exit 1; }
echo "install-deps: ok (consul $(consul version | head -1), etcd $(etcd --version | head -1))"
