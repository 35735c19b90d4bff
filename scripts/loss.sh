#!/usr/bin/env bash
# loss.sh: heartbeat loss and failure detection (issue 9) on a real lab. An entry point over the
# lab crate (scripts/lab, `wmgwd2-lab loss`): builds wmgwd2 and wmgwd2-lab (release), then runs
# the loss lab with the arguments given. `scripts/loss.sh -h` lists the options and the columns.
#
# Usage (as root; on a fresh Debian 12 it apt-get installs iproute2 and nftables when missing):
#   scripts/loss.sh [-g G] [-v V] [-i INTERVAL] [--loss N] [--one-way A:B[,A:B...]]
#                   [--duration D] [--fail-after S] [-b BIN] [-- DAEMON-ARGS...]
#   e.g. scripts/loss.sh -g 3 -v 30 -i 100ms --loss 20 --duration 60s --fail-after 50
#   Exit status 0 when every verdict holds, 1 when one does not, 2 on a usage error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "building: cargo build --release (wmgwd2, wmgwd2-lab)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
# cargo run keeps the caller's directory, so a relative -b BIN means what the caller meant.
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- loss "$@"
