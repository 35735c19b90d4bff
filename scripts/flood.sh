#!/usr/bin/env bash
# flood.sh: a flood at the heartbeat port (issue 8): a million datagrams from a host on the
# segment at full rate at a fleet of three gateways, keyed or not, optionally a SIGTERM during
# it; the daemons' heartbeat gaps as the client hears them, their CPU, RSS and socket drops, the
# ownership timeline, the stop. An entry point over the lab crate (scripts/lab,
# `wmgwd2-lab flood`): builds wmgwd2 and wmgwd2-lab (release), then runs it with the arguments
# given. `scripts/flood.sh -h` explains it.
#
# Usage (as root; the run refuses otherwise):
#   scripts/flood.sh [-g G] [-v V] [-i INTERVAL] [-n N] [--window W] [--recover R]
#                    [--unkeyed] [--stop-during] [-b BIN] [-- DAEMON-ARGS...]
#   defaults: -g 3 -v 30 -i 100ms -n 1000000 --window 10s --recover 240s (keyed)
#   Exit status 0 when every verdict holds, 1 when one does not, 2 on a usage error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
# cargo run keeps the caller's directory, so a relative -b BIN means what the caller meant.
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- flood "$@"
