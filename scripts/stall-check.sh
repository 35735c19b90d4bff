#!/usr/bin/env bash
# stall-check.sh: do the gateways expire each other at a short interval on this machine when
# nothing but the daemons runs? An entry point over the lab crate (scripts/lab,
# `wmgwd2-lab stall-check`): builds wmgwd2 and wmgwd2-lab (release), then runs the check with
# the arguments given. `scripts/stall-check.sh -h` explains it.
#
# Usage (as root): scripts/stall-check.sh [-g G] [-v V] [-i INTERVAL] [-s SECONDS] [-b BIN]
#   defaults: -g 3 -v 1000 -i 10ms -s 35
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- stall-check "$@"
