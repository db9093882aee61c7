#!/usr/bin/env bash
# Installs the Debian packages Tugboat builds and tests with. Safe to run
# again: it installs only what is missing. Needs root (or sudo).
set -euo pipefail

packages=(
  protobuf-compiler   # protoc, for the gRPC crates' build scripts
  etcd-server         # the etcd backend, and the etcd half of the tests
  etcd-client         # etcdctl, for looking at the store by hand
  curl                # anonymous health checks in the end-to-end tests
  # The node agent (tug agent / crates/kubelet) and its end-to-end tests:
  containerd                    # the CRI runtime the agent starts and supervises
  runc                          # containerd's OCI runtime (crun refuses this cgroup layout)
  containernetworking-plugins   # CNI bridge, host-local, portmap, loopback in /usr/lib/cni
  docker-registry               # serves the test image on 127.0.0.1 (scripts/test-image.sh)
  skopeo                        # pushes the test image into that registry
  umoci                         # builds the busybox test image without a registry
  busybox-static                # the test image's only binary
  nftables                      # pod masquerading and service rules
  iptables                      # CNI's bridge/portmap plugins program iptables
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "setup: kubectl is not on PATH; Tugboat's tests drive the real kubectl (1.29-1.33)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not on PATH; install a Rust toolchain (1.89 or newer)" >&2
  exit 1
fi
