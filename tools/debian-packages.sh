#!/usr/bin/env bash
# The Debian packages numanet's tests and demo run for real, installed when missing
# (a fresh Debian 12 machine, as root). Prints nothing when all are there.
#   tools/debian-packages.sh          install what is missing
#   tools/debian-packages.sh --list   only name what is missing
set -euo pipefail
packages=(
  openvswitch-switch-dpdk dpdk dpdk-dev   # the real OVS-DPDK and dpdk-testpmd
  containernetworking-plugins             # host-local IPAM, exec'd by the CNI
  iproute2 kmod udev util-linux           # network namespaces (ip netns, unshare), hugetlbfs
  openssl                                 # webhook TLS script tests
  python3 python3-venv python3-dev
  gcc libc6-dev                           # the CNI relay (cni/relay.c, make relay; static)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ "${1:-}" == "--list" ]]; then
  echo "missing Debian packages: ${missing[*]}"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "missing Debian packages: ${missing[*]}; run as root (or: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
