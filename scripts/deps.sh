#!/usr/bin/env bash
# Installs (as root, with apt) the tools weft's lab, demo and tests use and that a fresh Debian
# machine may lack: ip/bridge (iproute2), nft (weft's firewall table), ping, curl, iperf3, dig,
# ss/ps, jq, tcpdump (the encryption tests capture the underlay), a Docker daemon (docker.io), docker-compose and busybox-static for the test image, openssl (the proxy's TLS test certificates); and make, which
# (with the C compiler Rust links with) builds the libsodium that weft-crypto bundles. Installs
# only what is missing; does nothing when everything is there.
set -euo pipefail
need=()
for p in iproute2 nftables iptables curl jq iputils-ping iperf3 bind9-dnsutils procps bc docker.io docker-compose busybox-static make tcpdump openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
