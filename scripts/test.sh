#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test.
# Pure tests run anywhere; the lab tests (tests/lab.rs, tests/netlink.rs, tests/evpn.rs) need root
# and build their own network namespaces, and say clearly that they were skipped when run without
# root (or, for tests/evpn.rs, without FRR). As root it installs FRR for the EVPN lab, nftables
# for the loss labs and Debian's prometheus for promtool.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v bridge >/dev/null || need+=(iproute2)
# nft: the loss labs (tests/lab.rs) drop heartbeats inside the gateways' namespaces.
command -v nft >/dev/null || need+=(nftables)
[ -x /usr/lib/frr/zebra ] && [ -x /usr/lib/frr/bgpd ] && command -v vtysh >/dev/null || need+=(frr)
# promtool checks the /metrics exposition (tests/daemon.rs); the package's server is not started.
command -v promtool >/dev/null || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --quiet --workspace --bins
cargo test --quiet --workspace --all-targets
