#!/usr/bin/env bash
# cost.sh: what serving metrics and status costs the daemons (issue 10): quiet windows against
# windows in which every gateway is asked GET /metrics and `wmgwd2 status --json` every second,
# each daemon's CPU per window from /proc. An entry point over the lab crate (scripts/lab,
# `wmgwd2-lab cost`): builds wmgwd2 and wmgwd2-lab (release), then runs it with the arguments
# given. `scripts/cost.sh -h` explains it.
#
# Usage (as root; the run refuses otherwise):
#   scripts/cost.sh [-g G] [-v V] [-i INTERVAL] [--rounds R] [--window W] [--every E]
#                   [--ask both|metrics|status] [--prometheus] [-b BIN] [-- DAEMON-ARGS...]
#   defaults: -g 3 -v 1000 -i 100ms --rounds 4 --window 60s --every 1s --ask both
#   (about 10 minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- cost "$@"
