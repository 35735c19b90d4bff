#!/usr/bin/env bash
# bench.sh: wmgwd2 against keepalived (VRRPv3) in the same lab, one run; writes docs/benchmarks.md
# (its bench section), docs/bench.csv and docs/bench.png. An entry point over the lab crate
# (scripts/lab, `wmgwd2-lab bench`, which runs scripts/bench_report.py for the document and the
# plot): builds wmgwd2 and wmgwd2-lab (release), then runs the benchmark with the arguments
# given. `scripts/bench.sh -h` lists the options and how each figure is measured.
#
# Usage (as root, on a quiet machine; it apt-get installs keepalived and python3-matplotlib when
# missing):
#   scripts/bench.sh [--vnis "10 100 1000"] [--intervals "1s 100ms 10ms"]
#                    [--daemons "wmgwd2 keepalived"] [--quick] [-g G] [--steady S]
#                    [-o DIR] [-b BIN | --rev REV] [--report-only]
#   Environment: BENCH_BOUND (seconds, default 60): the longest wait for any condition.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v keepalived >/dev/null || need+=(keepalived)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "building: cargo build --release (wmgwd2, wmgwd2-lab)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2 -p wmgwd2-lab --bins
# cargo run keeps the caller's directory, so a relative -o DIR or -b BIN means what it meant.
exec cargo run --release --quiet --manifest-path "$root/Cargo.toml" -p wmgwd2-lab -- bench "$@"
