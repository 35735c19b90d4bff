#!/usr/bin/env bash
# drill.sh: a failover drill on a real lab. An entry point over the lab crate (scripts/lab,
# `wmgwd2-lab drill`): builds wmgwd2 and wmgwd2-lab (release), then runs the drill with the
# arguments given. `scripts/drill.sh -h` lists the options, the steps and the columns.
#
# Usage (as root; on a fresh Debian 12 it apt-get installs iproute2 when missing):
#   scripts/drill.sh [-g G] [-v V] [-i INTERVAL] [-m distinct|shared] [-u segment|routed|ipv6]
#                    [-b BIN] [-- DAEMON-ARGS...]
#   Environment: DRILL_BOUND (seconds, default 30): the longest wait for any condition.
#   Exit status 0 when every step passed, 1 when one failed, 2 on a usage error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -eq 0 ] && ! { command -v ip && command -v bridge; } >/dev/null; then
  echo "installing: iproute2"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq iproute2 >/dev/null
fi
command -v cargo >/dev/null || {
  echo "drill.sh: cargo not found: install Rust (https://rustup.rs), then rerun" >&2
  exit 1
}
echo "building: cargo build --release (wmgwd2, wmgwd2-lab)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
# cargo run keeps the caller's directory, so a relative -b BIN means what the caller meant.
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- drill "$@"
