#!/usr/bin/env bash
# install-deps.sh - install every Debian package tidegate's build, tests and
# quick start need. Idempotent: packages already present are not touched and
# apt-get is skipped entirely when nothing is missing.
set -euo pipefail

PKGS=(
  # build
  build-essential pkg-config meson ninja-build clang llvm libclang-rt-14-dev
  # libraries (all through pkg-config)
  libdpdk-dev dpdk dpdk-dev libisal-dev libxxhash-dev libhiredis-dev libssl-dev
  libjansson-dev liburing-dev libcmocka-dev libmicrohttpd-dev libevent-dev libinih-dev
  # servers and tools the tests and the quick start talk to
  redis-server redis-tools iproute2 ethtool python3 python3-scapy
  python3-cryptography  # AES-256-GCM for tests/integration/tgproto.py
  iperf3 curl procps psmisc util-linux kmod systemd
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or install them) and try again" >&2
  exit 1
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# redis-server's package starts a system instance; tidegate's tests start their
# own on free loopback ports and the quick start starts its own too.
