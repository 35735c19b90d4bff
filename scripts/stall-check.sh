#!/usr/bin/env bash
# stall-check.sh: do the gateways expire each other at a short interval on this machine when
# nothing but the daemons runs? Builds a lab (scripts/lab.sh: G gateways, V VNIs), runs one
# wmgwd2 per gateway for S seconds with no probes at all (no pings, tcpdump or ip monitor), and
# meanwhile measures, in a 1 ms sleep loop, how long this machine keeps a process waiting.
# Prints the stalls over 15 ms and the number of spurious "peer dead" lines (there is no failure,
# so every one is spurious). docs/benchmarks.md ("10 ms") compares this with the benchmark.
#
# Usage (as root): scripts/stall-check.sh [-g G] [-v V] [-i INTERVAL] [-s SECONDS] [-b BIN]
#   defaults: -g 3 -v 1000 -i 10ms -s 35; -b: the wmgwd2 binary (default: cargo build --release)
# Namespaces wsc<pid>-*, removed on exit; only the daemons it started are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab.sh
source scripts/lab.sh

G=3 V=1000 INTERVAL=10ms SECS=35 BIN=
while getopts "g:v:i:s:b:h" o; do
  case $o in
    g) G=$OPTARG ;;
    v) V=$OPTARG ;;
    i) INTERVAL=$OPTARG ;;
    s) SECS=$OPTARG ;;
    b) BIN=$OPTARG ;;
    *) lab_usage "$0" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "stall-check.sh: must run as root" >&2 && exit 1; }
[[ $G =~ ^[0-9]+$ && $V =~ ^[0-9]+$ && $SECS =~ ^[0-9]+$ ]] || lab_usage "$0"
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/wmgwd2
fi
NAME=wsc$(($$ % 100000))
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/stall-check.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  lab_abort
  lab_down "$NAME"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lab_up "$NAME" "$G" "$V" >/dev/null
for ((g = 1; g <= G; g++)); do
  ip netns exec "$(lab_ns "$NAME" "gw$g")" "$BIN" --uid "$((0x1000 + g))" --minvni 1 --maxvni "$V" \
    --interval "$INTERVAL" --broadcast 10.0.1.255 --bind-interface eth0 2>"$LOGS/gw$g.log" &
  PIDS+=($!)
done
echo "lab $NAME: $G gateways x $V VNIs, interval $INTERVAL; watching for $SECS s"
python3 - "$SECS" <<'PY'
import sys, time
end = time.monotonic() + float(sys.argv[1])
prev = start = time.monotonic()
worst = 0.0
while prev < end:
    time.sleep(0.001)
    now = time.monotonic()
    d = now - prev
    worst = max(worst, d)
    if d > 0.015:
        print(f"  stall {1000 * d:.0f} ms at +{now - start:.1f} s")
    prev = now
print(f"longest wait for the CPU in a 1 ms sleep loop: {1000 * worst:.1f} ms")
PY
dead=$(cat "$LOGS"/gw*.log | grep -c "peer dead" || true)
echo "spurious 'peer dead' lines (no failure was caused): $dead"
rm -rf "$LOGS"
