#!/usr/bin/env bash
# evpn-drill.sh: does BGP EVPN (real FRR) move the gateway when wmgwd2 does, as a remote host
# sees it? An entry point over the lab crate (scripts/lab, `wmgwd2-lab evpn-drill`): builds
# wmgwd2 and wmgwd2-lab (release), then runs the drill with the arguments given.
# `scripts/evpn-drill.sh -h` lists the options and explains the columns.
#
# Usage (as root; it apt-get installs frr when missing):
#   scripts/evpn-drill.sh [--mac shared|distinct|both] [--cycles N] [--pause S] [--bin PATH]
#                         [--logs DIR] [--frr-debug] [--doc FILE] [-- WMGWD2 ARGS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -eq 0 ] && ! { [ -x /usr/lib/frr/zebra ] && [ -x /usr/lib/frr/bgpd ] &&
  command -v vtysh && command -v ip && command -v bridge; } >/dev/null; then
  echo "installing: frr iproute2"
  export DEBIAN_FRONTEND=noninteractive
  # The frr package's own service is not used (on a systemd host it starts in the root
  # namespace with bgpd off; the lab never talks to it).
  apt-get update -qq
  apt-get install -y -qq frr iproute2 >/dev/null
fi
echo "building: cargo build --release (wmgwd2, wmgwd2-lab)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
# cargo run keeps the caller's directory, so relative paths mean what the caller meant.
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- evpn-drill "$@"
