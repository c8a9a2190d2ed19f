#!/usr/bin/env bash
# Builds berth's image from a static binary compiled on this host: no image registry and no
# Rust image needed.
#
#   bash deploy/build-image.sh [--tag NAME:TAG]    (default berth:<version> and berth:latest)
#
# 1. `cargo build --release` for the host's target with glibc linked statically
#    (-C target-feature=+crt-static); the release profile strips and uses fat LTO with one
#    codegen unit (Cargo.toml).
# 2. Checks the binary has no dynamic dependencies, stages it with the host's CA bundle
#    (Debian's ca-certificates) and an nsswitch.conf in a build context under target/.
# 3. `docker build` of deploy/Dockerfile with OCI labels, then prints the binary's and the
#    image's sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tags=("berth:$version" "berth:latest")
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tags=("$2"); shift 2 ;;
    *) echo "build-image: unknown argument $1 (usage: build-image.sh [--tag NAME:TAG])" >&2; exit 64 ;;
  esac
done

target=$(rustc -vV | sed -n 's/^host: //p')
case $target in
  *-linux-gnu) ;;
  *) echo "build-image: host target $target is not *-linux-gnu; only static glibc builds are supported" >&2; exit 1 ;;
esac
ca=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca" ]; then
  echo "build-image: $ca is missing (apt-get install ca-certificates)" >&2
  exit 1
fi

# Only the target's own crates get +crt-static; build scripts and proc macros stay dynamic.
flags_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$flags_var=-C target-feature=+crt-static"
echo "build-image: cargo build --release -p berth --target $target ($flags_var=${!flags_var})"
cargo build --release --locked -p berth --target "$target"
bin="target/$target/release/berth"

if readelf -d "$bin" | grep -q NEEDED; then
  echo "build-image: $bin links shared libraries; it would not run in a scratch image:" >&2
  readelf -d "$bin" | grep NEEDED >&2
  exit 1
fi

# A context of its own per run: two builds at once (parallel tests) must not share one.
mkdir -p target
ctx=$(mktemp -d target/image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc/ssl/certs"
cp deploy/Dockerfile "$ctx/Dockerfile"
cp "$bin" "$ctx/rootfs/berth"
cp "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
# Without this file glibc asks DNS first and stops at its NXDOMAIN, never reading /etc/hosts.
printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then revision="$revision-dirty"; fi
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
tag_args=()
for t in "${tags[@]}"; do tag_args+=(-t "$t"); done
DOCKER_BUILDKIT=0 docker build -q "${tag_args[@]}" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
  "$ctx" >/dev/null

bin_bytes=$(stat -c %s "$bin")
image_bytes=$(docker image inspect --format '{{.Size}}' "${tags[0]}")
echo "build-image: built ${tags[*]}"
echo "build-image: binary $bin_bytes bytes ($(( bin_bytes / 1024 / 1024 )) MiB), image $image_bytes bytes ($(( image_bytes / 1024 / 1024 )) MiB)"
