#!/usr/bin/env bash
# drill.sh: a failover drill on a real lab. Builds wmgwd2, builds G gateways + a client in network
# namespaces (scripts/lab.sh), runs one daemon per gateway, then crashes, stops, cuts and brings
# back gateways while it measures, from the kernel and the wire, what a client lives through.
#
# Usage (as root; on a fresh Debian 12 it apt-get installs iproute2, iputils-ping, tcpdump):
#   scripts/drill.sh [-g G] [-v V] [-i INTERVAL] [-m distinct|shared] [-b BIN] [-- DAEMON-ARGS...]
#     -g G         gateways (2-200, default 3)
#     -v V         VNIs 1..V (default 100)
#     -i INTERVAL  heartbeat interval, ms or s (default 100ms)
#     -m MODE      MAC of the vrrp4-<VNI> macvlans: distinct per gateway (default) or shared
#     -b BIN       run this wmgwd2 binary instead of building target/release/wmgwd2
#     -- ARGS      extra daemon flags, e.g. -- --dead-after 5 --garp-count 1
#   Exit status 0 when every step passed, 1 when one failed, 2 on a usage error.
#   Environment: DRILL_BOUND (seconds, default 30): the longest wait for any condition.
#
# Steps (targets: crash gw1, stop gw2, cut gw3 (gw1 when G=2)):
#   1 crash      kill -9 the daemon          2 restart    start it again
#   3 stop       SIGTERM (systemctl stop)    4 start      start it again
#   5 cut link   switch port p<g> down       6 restore    switch port up
# After each event the drill waits (bounded, polling the kernel) until every VNI has exactly one
# owner among the live gateways and the owner map has been still for max(1 s, 10 intervals).
#
# Columns, each measured live for the one step:
#   moved      VNIs whose owner changed (kernel: proto_down of vrrp4-<VNI> on each gateway)
#   converged  event -> the last change of a live gateway's protodown state (ip monitor): the
#              owner map took its final form (exactly one live owner per VNI)
#   GARPed     event -> the last moved VNI's first gratuitous ARP from its new owner, as seen by
#              the client (tcpdump in the client namespace; sender MAC = new owner's macvlan)
#   GARPs      moved VNIs announced by their new owner / moved VNIs, x GARPs seen per such VNI
#              (the daemon sends --garp-count, default 3, per takeover)
#   max gap    longest time between two ping replies (ping -D every 20 ms to ~8 sampled gateway
#              IPs, sampled among the VNIs of the targeted gateways) around the event
#   ownerless  VNIs with no live owner at some moment, and the longest such moment
#   2 owners   VNIs with two or more live owners at some moment, and the longest such moment
#              (moments under 1 ms are not counted: each gateway's monitor stamps its records
#              when it reads them, so two gateways' records are ordered only to about 1 ms)
#   owners     VNIs per gateway afterwards (- = not live)
# "Live" gateway: its daemon runs and its switch port is up. A gateway whose daemon was killed
# keeps the protodown state the daemon left (the kernel cannot know); it counts again from the
# moment its daemon is restarted. Ownership over time comes from `ip -ts -o monitor link` in
# each gateway namespace (a link is owned when its record lacks "protodown on").
# A step FAILs when it did not converge in time, a moved VNI got no GARP from its new owner, a
# daemon exited badly or died, or a "bring back" step did not restore the starting owner map
# (rendezvous hashing is deterministic, so it must).
#
# Everything runs in namespaces named wmd<pid>-*, removed on exit, failure or Ctrl-C; the drill
# stops only the processes it started, by PID. Logs stay in /tmp/wmgwd2-drill.*/ (printed).
set -euo pipefail
export LC_ALL=C

CALLER_PWD=$PWD
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab.sh
source scripts/lab.sh
# shellcheck source=scripts/measure.sh
source scripts/measure.sh

G=3
V=100
INTERVAL=100ms
MAC=distinct
BOUND=${DRILL_BOUND:-30}
EXTRA=()
B=1
BIN=

usage() { usage_from_header "$0"; }

while [ $# -gt 0 ]; do
  case $1 in
    -g) G=${2:-} && shift 2 ;;
    -v) V=${2:-} && shift 2 ;;
    -i) INTERVAL=${2:-} && shift 2 ;;
    -m) MAC=${2:-} && shift 2 ;;
    -b) BIN=${2:-} && shift 2 ;;
    --) shift && EXTRA=("$@") && break ;;
    -h | --help) usage ;;
    *) echo "drill.sh: unknown argument '$1'" >&2 && usage ;;
  esac
done

die() {
  echo "drill.sh: $*" >&2
  exit 1
}

if [[ ! $G =~ ^[0-9]+$ ]] || ((G < 2 || G > 200)); then die "-g must be 2-200"; fi
if [[ ! $V =~ ^[0-9]+$ ]] || ((V < 1 || V > LAB_MAX_VNI)); then die "-v must be 1-$LAB_MAX_VNI"; fi
if [[ ! $BOUND =~ ^[0-9]+$ ]] || ((BOUND < 1)); then die "DRILL_BOUND must be whole seconds"; fi
case $MAC in distinct | shared) ;; *) die "-m must be distinct or shared" ;; esac
INTERVAL_MS=$(interval_ms "$INTERVAL") || die "-i takes a whole number of ms or s, e.g. 100ms or 1s"
((INTERVAL_MS >= 10)) || die "-i must be at least 10ms"
E=$((B + V - 1))
# The owner map must be still this long (µs) to count as converged.
STABLE_US=$((INTERVAL_MS * 10 * 1000))
((STABLE_US >= 1000000)) || STABLE_US=1000000
((BOUND * 1000 >= INTERVAL_MS * 40)) || BOUND=$(((INTERVAL_MS * 40 + 999) / 1000))
BOUND_US=$((BOUND * 1000000))

[ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces)"

# ---- tools and binary -------------------------------------------------------------------------
need_packages
[ -n "$BIN" ] || build_release
[[ $BIN == /* ]] || BIN=$CALLER_PWD/$BIN
[ -x "$BIN" ] || die "no executable at $BIN"

# ---- state and cleanup ------------------------------------------------------------------------
NAME="wmd$(($$ % 100000))"
DIR=$(mktemp -d /tmp/wmgwd2-drill.XXXXXX)
declare -a DPID=()  # daemon PID per gateway ("" = not running)
declare -a LIVE=()  # 1 = daemon runs and port is up
declare -a PORT=()  # 1 = switch port up
HELPERS=()          # PIDs of monitors, tcpdump, pings
LAB_MADE=

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_all 2>/dev/null
  lab_abort
  [ -z "$LAB_MADE" ] || lab_down "$NAME"
  echo "logs: $DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build, start ----------------------------------------------------------------------------
echo "lab: $NAME, $G gateways, VNIs $B-$E, MAC $MAC, interval $INTERVAL"
t=$(now_us)
LAB_MADE=1
if ! lab_up "$NAME" "$G" "$V" --mac "$MAC" --vni-base "$B"; then
  # lab_up cleaned up after itself; a clash means the namespaces are someone else's.
  LAB_MADE=
  die "lab.sh up failed"
fi
echo "lab up in $(secs $(($(now_us) - t))) s"

start_watchers

echo "starting $G daemons"
start_all_converge || die "no convergence within $BOUND s after start; see $DIR/gw*.log"
MAP0=$MAP
echo "converged in $(secs $((CONV_US - DAEMONS_T0))) s; VNIs owned: $(owner_counts "$MAP0" | tr / '\n' | awk '{ printf "%sgw%d %s", (NR > 1 ? ", " : ""), NR, $1 }')"

# Sampled VNIs for pings: spread over the gateways the steps target.
CRASH=1 STOP=2 CUT=3
((G >= 3)) || CUT=1
start_pings "$MAP0" $CRASH $STOP $CUT
echo "pinging gateway IPs of VNIs ${SAMPLES[*]} every 20 ms from the client"
echo

# ---- steps ------------------------------------------------------------------------------------
ROWS=()
NOTES=()
FAILED=0
PREV=$MAP0

# run_step N LABEL KIND G: performs the event, waits, measures, appends a table row.
run_step() {
  local n=$1 label=$2 kind=$3 g=$4 t0 result=ok why=() conv m i ga drops0 drops
  drops0=$(backlog_drops)
  t0=$(now_us)
  [ "$kind" != start ] || [ -z "${DPID[g]}" ] || why+=("gw$g was still running")
  act "$kind" "$g" "$t0"
  if [ "$kind" = stop ]; then
    NOTES+=("step $n: gw$g exited $(secs $((REAPED_US - t0))) s after SIGTERM, status $REAPED")
    [ "$REAPED" = 0 ] || why+=("exit status $REAPED after SIGTERM")
  fi
  if wait_converged "$t0"; then conv=ok; else conv=timeout; fi
  step_figures "$t0" "$DIR/moved$n.txt"
  drops=$(($(backlog_drops) - drops0))
  if ((drops > 0)); then
    NOTES+=("step $n: the kernel dropped $drops packets machine-wide for a full input backlog (net.core.netdev_max_backlog=$(cat /proc/sys/net/core/netdev_max_backlog)); lost GARPs or pings may be among them")
  fi
  if [ "$conv" = ok ]; then
    conv="$LAST s"
  else
    why+=("no convergence in ${BOUND}s")
  fi
  ((GA_N == NMOV)) || why+=("$((NMOV - GA_N)) moved VNIs got no GARP from their new owner")
  case $kind in
    start | restore)
      m=$(moved "$MAP0" "$MAP" | wc -l)
      ((m == 0)) || why+=("$m VNIs not back with their starting owner")
      ;;
  esac
  for ((i = 1; i <= G; i++)); do
    if [ -n "${DPID[i]}" ] && ! running "${DPID[i]}"; then
      why+=("daemon gw$i died (see gw$i.log)")
    fi
  done
  if [ "$kind" = crash ]; then
    m=$(snapshot | awk -v g="$g" '$1 == g && $3 == 1' | wc -l)
    NOTES+=("step $n: the killed daemon left $m vrrp4 links of gw$g protodown off (the kernel keeps the last state)")
  elif [ "$kind" = cut ]; then
    m=$(snapshot | awk -v g="$g" '$1 == g && $3 == 1' | wc -l)
    NOTES+=("step $n: cut off, gw$g holds $m vrrp4 links protodown off (unreachable; not counted)")
  fi
  if [ ${#why[@]} -gt 0 ]; then
    result=FAIL
    FAILED=1
    local w
    for w in "${why[@]}"; do NOTES+=("step $n FAIL: $w"); done
  fi
  ga=$([ "$GA_N" -gt 0 ] && echo "$GA_MAX s" || echo "-")
  ROWS+=("$(printf '%-2s %-22s %5s %9s %9s %11s %13s %15s %15s %-11s %s' \
    "$n" "$label" "$NMOV" "$conv" "$ga" "$GA_N/$NMOV x$GA_EACH" "$GP s v$GPV" \
    "$(fmt_anom "$AN_N" "$AN_MAX")" "$(fmt_anom "$AD_N" "$AD_MAX")" "$(owner_counts "$MAP")" "$result")")
  echo "${ROWS[-1]}"
  PREV=$MAP
  sleep 0.5
}

fmt_anom() { if [ "$1" = 0 ]; then echo none; else echo "$1 VNIs $2 s"; fi; }

HEADER=$(printf '%-2s %-22s %5s %9s %9s %11s %13s %15s %15s %-11s %s' \
  "#" "step" "moved" "converged" "GARPed" "GARPs" "max gap" "ownerless" "2 owners" "owners" "result")
echo "$HEADER"
run_step 1 "crash gw$CRASH (kill -9)" crash "$CRASH"
run_step 2 "restart gw$CRASH" start "$CRASH"
run_step 3 "stop gw$STOP (SIGTERM)" stop "$STOP"
run_step 4 "start gw$STOP" start "$STOP"
run_step 5 "cut gw$CUT link (p$CUT)" cut "$CUT"
run_step 6 "restore gw$CUT link" restore "$CUT"

echo
echo "=== wmgwd2 drill: $G gateways, $V VNIs, interval $INTERVAL, MAC $MAC ==="
echo "start: VNIs per gateway $(owner_counts "$MAP0"); pinged VNIs ${SAMPLES[*]}"
echo "$HEADER"
printf '%s\n' "${ROWS[@]}"
echo "(columns: see the header of scripts/drill.sh; times are from the event; owners = VNIs per gateway)"
for n in "${NOTES[@]}"; do echo "note: $n"; done
if [ "$FAILED" = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit "$FAILED"
