#!/usr/bin/env bash
# frame-cost.sh: what one heartbeat costs to build (encode, sign) and to read (decode, verify),
# unsigned and with HMAC-SHA256, with 3 and with 33 members in its ECHO. Pure: no root, no
# namespaces. An entry point over the lab crate (`wmgwd2-lab frame-cost`).
#
# Usage: scripts/frame-cost.sh [-n FRAMES]   (default 200000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- frame-cost "$@"
