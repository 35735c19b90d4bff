#!/usr/bin/env bash
# bench.sh: wmgwd2 against keepalived (VRRPv3) in the same lab, with the same client probes, in
# one run; writes docs/benchmarks.md (between <!-- bench:begin --> and <!-- bench:end -->, the
# rest of the file is kept), docs/bench.csv (one row per configuration and failure) and
# docs/bench.png. Figures are what this run measured; nothing is edited by hand.
#
# Usage (as root, on a quiet machine: other labs or builds running beside it distort CPU figures
# and gaps; it apt-get installs keepalived, tcpdump and python3-matplotlib when missing):
#   scripts/bench.sh [--vnis "10 100 1000"] [--intervals "1s 100ms 10ms"]
#                    [--daemons "wmgwd2 keepalived"] [--quick] [-g G] [--steady S]
#                    [-o DIR] [-b BIN | --rev REV] [--report-only]
#     --vnis LIST       VNI counts V (default 10 100 1000)
#     --intervals LIST  heartbeat / advert intervals (default 1s 100ms 10ms); keepalived runs
#                       only at 1s and 100ms (its adverts take 10 ms units, but the issue asks
#                       for wmgwd2 alone at 10 ms)
#     --daemons LIST    wmgwd2 and/or keepalived (default both)
#     --quick           V = 10 and 100 only (a few minutes; for development)
#     -g G              gateways (2-9, default 3)
#     --steady S        steady window in seconds for packets/s and CPU (default 20)
#     -o DIR            write benchmarks.md, bench.csv and bench.png there (default docs)
#     -b BIN            wmgwd2 binary (default: cargo build --release, target/release/wmgwd2)
#     --rev REV         build wmgwd2 from git commit REV (git archive, into target/bench/),
#                       leaving the work tree alone: figures of a committed revision
#     --report-only     rewrite the document and the plot from DIR/bench.csv, measure nothing
#   Environment: BENCH_BOUND (seconds, default 60): the longest wait for any condition.
#
# Per configuration (daemon, V, interval) a fresh lab (scripts/lab.sh, G gateways, distinct MACs):
#   start all daemons and wait until every VNI has one owner and the owner map has been still
#   for max(1 s, 5 intervals); ping sampled gateway IPs from the client every 10 ms; a steady
#   window (packets/s, CPU, RSS); then the events, each followed by the same wait (after restart,
#   heal and rejoin: until the starting owner map is back), and until the client's pings to the
#   sampled gateway IPs are answered again:
#     crash    gw1: kill -9 (keepalived: its parent and VRRP child)
#     restart  gw1: started again after the crash
#     node     gw3: whole-gateway failure, its switch port down
#     heal     gw3: its switch port up again
#     stop     gw2: SIGTERM (graceful stop)
#     rejoin   gw2: started again after the graceful stop
# How each column is measured is written into the document (scripts/bench_report.py).
# keepalived: one vrrp_instance per VNI on the existing macvlan vrrp4-<V> (vrrp_version 3,
# advert_int = the interval, priorities 200/150/100 rotating over the gateways, default GARP
# settings), virtual_ipaddress = the gateway IP; each gateway has its own address on vrrp4-<V>
# (lab.sh --gateway-ip vrrp) for the adverts' source.
#
# Namespaces are named wb<pid>c<n>-*, removed on exit, failure or Ctrl-C; only processes this
# script started are stopped, by PID. Raw records stay in /tmp/wmgwd2-bench.*/ (printed).
set -euo pipefail
export LC_ALL=C

COMMAND="scripts/bench.sh${*:+ $*}"
CALLER_PWD=$PWD
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab.sh
source scripts/lab.sh
# shellcheck source=scripts/measure.sh
source scripts/measure.sh

VNIS="10 100 1000"
INTERVALS="1s 100ms 10ms"
DAEMONS="wmgwd2 keepalived"
G=3
STEADY=20
OUT=docs
BIN=
REV=
REPORT_ONLY=
BOUND=${BENCH_BOUND:-60}

usage() { usage_from_header "$0"; }

die() {
  echo "bench.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --vnis) VNIS=${2:-} && shift 2 ;;
    --intervals) INTERVALS=${2:-} && shift 2 ;;
    --daemons) DAEMONS=${2:-} && shift 2 ;;
    --quick) VNIS="10 100" && shift ;;
    -g) G=${2:-} && shift 2 ;;
    --steady) STEADY=${2:-} && shift 2 ;;
    -o) OUT=${2:-} && shift 2 ;;
    -b) BIN=${2:-} && shift 2 ;;
    --rev) REV=${2:-} && shift 2 ;;
    --report-only) REPORT_ONLY=1 && shift ;;
    -h | --help) usage ;;
    *) echo "bench.sh: unknown argument '$1'" >&2 && usage ;;
  esac
done

[[ $OUT == /* ]] || OUT=$CALLER_PWD/$OUT
CSV=$OUT/bench.csv
# Debian's interpreter, the one python3-matplotlib installs into (a pyenv or venv python3 earlier
# in PATH would not see it).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
report() {
  "$PY" scripts/bench_report.py --csv "$CSV" --doc "$OUT/benchmarks.md" --png "$OUT/bench.png" \
    --meta "$CSV.meta"
}
if [ -n "$REPORT_ONLY" ]; then
  [ -f "$CSV" ] && [ -f "$CSV.meta" ] || die "--report-only needs $CSV and $CSV.meta"
  report
  exit 0
fi

if [[ ! $G =~ ^[0-9]$ ]] || ((G < 2)); then die "-g must be 2-9"; fi
if [[ ! $STEADY =~ ^[0-9]+$ ]] || ((STEADY < 1)); then die "--steady must be whole seconds"; fi
if [[ ! $BOUND =~ ^[0-9]+$ ]] || ((BOUND < 1)); then die "BENCH_BOUND must be whole seconds"; fi
for v in $VNIS; do
  [[ $v =~ ^[0-9]+$ ]] && ((v >= 1 && v <= LAB_MAX_VNI)) || die "--vnis: bad V '$v'"
done
for d in $DAEMONS; do
  case $d in wmgwd2 | keepalived) ;; *) die "--daemons: unknown daemon '$d'" ;; esac
done
for i in $INTERVALS; do
  ms=$(interval_ms "$i") || die "--intervals: '$i' is not a whole number of ms or s"
  ((ms >= 10)) || die "--intervals: at least 10ms"
done
[ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces)"

# ---- tools and binary -------------------------------------------------------------------------
extra=()
[[ " $DAEMONS " != *" keepalived "* ]] || command -v keepalived >/dev/null || extra+=(keepalived)
"$PY" -c 'import matplotlib' 2>/dev/null || extra+=(python3-matplotlib)
need_packages "${extra[@]}"
[ -z "$BIN" ] || [ -z "$REV" ] || die "-b and --rev exclude each other"
BUILT="(git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ", work tree with uncommitted changes in src"))"
if [ -n "$REV" ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), then rerun"
  REV=$(git rev-parse --short "$REV^{commit}") || die "--rev: no commit '$REV'"
  SRC=$PWD/target/bench/src-$REV
  echo "building: wmgwd2 at $REV (git archive into $SRC, cargo build --release)"
  rm -rf "$SRC" && mkdir -p "$SRC"
  git archive "$REV" | tar -x -C "$SRC"
  cargo build --release --quiet --manifest-path "$SRC/Cargo.toml" --target-dir "$PWD/target/bench" ||
    die "cargo build --release of $REV failed"
  BIN=$PWD/target/bench/release/wmgwd2
  BUILT="(git $REV)"
elif [ -z "$BIN" ]; then
  build_release
else
  BUILT="(given as $BIN)"
fi
[[ $BIN == /* ]] || BIN=$CALLER_PWD/$BIN
[ -x "$BIN" ] || die "no executable at $BIN"
mkdir -p "$OUT"

# ---- state and cleanup ------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/wmgwd2-bench.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
MAC=distinct
B=1
EXTRA=()
LIVE_RULE=port       # ownership from the kernel's point of view (see measure.sh)
PING_INTERVAL=0.01
NAME=
DAEMON=
LAB_MADE=
declare -a DPID=() LIVE=() PORT=()
HELPERS=()

# keepalived's processes of gateway g: the parent and its children (the VRRP process).
gw_pids() {
  local p=${DPID[$1]:-}
  [ -n "$p" ] || return 0
  echo "$p"
  cat /proc/"$p"/task/*/children 2>/dev/null || true
}

# Stops this configuration's daemons (and any keepalived child left behind) and helpers.
stop_config() {
  local g p left=()
  for ((g = 1; g <= G; g++)); do
    # shellcheck disable=SC2207
    left+=($(gw_pids "$g"))
  done
  stop_all 2>/dev/null || true
  for p in "${left[@]}"; do running "$p" && kill -KILL "$p" 2>/dev/null; done
  HELPERS=()
  DPID=()
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_config
  lab_abort
  [ -z "$LAB_MADE" ] || lab_down "$NAME"
  echo "records: $RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- keepalived -------------------------------------------------------------------------------
# keepalived_conf G MS: the configuration of gateway G, advert interval MS.
keepalived_conf() {
  local g=$1 ms=$2 v rank adv
  adv=$(awk -v ms="$ms" 'BEGIN { printf "%g", ms / 1000 }')
  printf 'global_defs {\n  vrrp_version 3\n}\n'
  for ((v = B; v <= E; v++)); do
    # Rotating priorities: VNI v prefers gateway (v-1)%G+1, then the next one, ...
    rank=$((((g - 1 - (v - 1)) % G + G) % G))
    cat <<EOF
vrrp_instance vni$v {
  state BACKUP
  interface vrrp4-$v
  virtual_router_id $(((v - 1) % 255 + 1))
  priority $((200 - 50 * (rank < 3 ? rank : 3)))
  advert_int $adv
  virtual_ipaddress {
    $(lab_gateway_ip "$v")/24 dev vrrp4-$v
  }
}
EOF
  done
}

start_keepalived() {
  local g=$1
  # A killed keepalived leaves its pid files; a recycled PID in them makes it refuse to start.
  rm -f "$DIR/gw$g.pid" "$DIR/gw$g.vrrp.pid"
  ip netns exec "$(lab_ns "$NAME" "gw$g")" keepalived --dont-fork --log-console --no-syslog \
    --vrrp --use-file "$DIR/gw$g.conf" --pid "$DIR/gw$g.pid" --vrrp_pid "$DIR/gw$g.vrrp.pid" \
    </dev/null >>"$DIR/gw$g.log" 2>&1 &
  DPID[g]=$!
}

# measure.sh's hooks, per daemon.
start_gw() {
  if [ "$DAEMON" = keepalived ]; then start_keepalived "$1"; else start_daemon "$1"; fi
}
crash_gw() {
  local pids
  # Children first: keepalived's VRRP process must not see its parent go and clean up.
  pids=$(gw_pids "$1" | tac)
  # shellcheck disable=SC2086
  kill -KILL $pids
}

# ---- steady state -----------------------------------------------------------------------------
# CPU ticks (user + system) of the given PIDs, summed.
cpu_ticks() {
  local p s n=0 f
  for p in "$@"; do
    { read -r s <"/proc/$p/stat"; } 2>/dev/null || continue
    # shellcheck disable=SC2206
    f=(${s##*) })  # fields from 3 (state) on: utime is field 14, stime 15
    n=$((n + f[11] + f[12]))
  done
  echo "$n"
}

# RSS in KiB of the given PIDs, summed.
rss_kib() {
  local p n=0 k
  for p in "$@"; do
    k=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    n=$((n + ${k:-0}))
  done
  echo "$n"
}

# Sets CTL_PPS, CTL_DROP, CPU_S (per gateway, "a b c"), RSS_MIB (per gateway): control packets
# counted on the switch port towards the client (every heartbeat broadcast and every VRRP advert
# reaches the client's VTEP exactly once) over STEADY seconds, and the daemons' CPU time over
# the same window.
steady() {
  local sw pid t0 t1 g n drop c0=() c1=() rss=() filter
  sw=$(lab_ns "$NAME" sw)
  # wmgwd2 heartbeats (UDP 3000), or VRRP (IP protocol 112) inside VXLAN: the inner IPv4
  # header starts after UDP (8), VXLAN (8) and Ethernet (14) headers.
  filter='udp dst port 3000 or (udp dst port 4789 and udp[28:2] = 0x0800 and udp[39] = 112)'
  ip netns exec "$sw" tcpdump -i pcl -n -B 16384 -s 64 -w /dev/null "$filter" \
    2>"$DIR/ctl.err" &
  pid=$!
  HELPERS+=("$pid")
  t0=$(now_us)
  until grep -q "listening on" "$DIR/ctl.err" 2>/dev/null; do
    (($(now_us) - t0 < BOUND_US)) || die "tcpdump did not start: $(cat "$DIR/ctl.err")"
    sleep 0.05
  done
  t0=$(now_us)
  # shellcheck disable=SC2046
  for ((g = 1; g <= G; g++)); do c0[g]=$(cpu_ticks $(gw_pids "$g")); done
  sleep "$STEADY"
  t1=$(now_us)
  # shellcheck disable=SC2046
  for ((g = 1; g <= G; g++)); do
    c1[g]=$(cpu_ticks $(gw_pids "$g"))
    rss[g]=$(rss_kib $(gw_pids "$g"))
  done
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  n=$(awk '/packets received by filter/ { print $1 }' "$DIR/ctl.err")
  drop=$(awk '/packets dropped by kernel/ { print $1 }' "$DIR/ctl.err")
  CTL_PPS=$(awk -v n="${n:-0}" -v us=$((t1 - t0)) 'BEGIN { printf "%.1f", n / (us / 1e6) }')
  CTL_DROP=${drop:-0}
  CPU_S= RSS_MIB=
  for ((g = 1; g <= G; g++)); do
    CPU_S+="$(awk -v t=$((c1[g] - c0[g])) -v hz="$CLK_TCK" -v s="$STEADY" -v us=$((t1 - t0)) \
      'BEGIN { printf "%.2f", t / hz * s / (us / 1e6) }') "
    RSS_MIB+="$(awk -v k="${rss[g]}" 'BEGIN { printf "%.1f", k / 1024 }') "
  done
}

# ---- failures ---------------------------------------------------------------------------------
# settle T0 BACK: waits (bounded) after an event at T0 until the owner map is converged and
# still; with BACK=1 also until it is the starting map again (a gateway may hold back on
# purpose: wmgwd2's --uplink-hold-down after its port returns). Returns 1 when it never got there.
settle() {
  local t0=$1 back=$2
  while :; do
    if wait_converged "$t0" && { [ "$back" = 0 ] || [ -z "$(moved "$MAP0" "$MAP")" ]; }; then
      return 0
    fi
    (($(now_us) - t0 <= BOUND_US)) || return 1
  done
}

# Waits (bounded) until every sampled gateway IP answered the client's pings in the last 0.2 s,
# so that an outage left over from one event is not charged to the next one. Notes how long it
# took when that was more than the settling.
pings_back() {
  local why=$1 t0=$2 v t last ok
  while :; do
    t=$(now_us)
    ok=1
    for v in "${SAMPLES[@]}"; do
      last=$(awk '/bytes from/ { t = $1 } END { print substr(t, 2, length(t) - 2) }' "$DIR/ping$v.txt")
      awk -v l="${last:-0}" -v now="$(secs_exact "$t")" 'BEGIN { exit !(now - l < 0.2) }' || ok=0
    done
    [ "$ok" = 0 ] || return 0
    if ((t - t0 > BOUND_US)); then
      NOTES+=("after $why: a sampled gateway IP did not answer the client within $BOUND s")
      return 0
    fi
    sleep 0.1
  done
}

# failure MODE KIND G BACK: makes it happen, waits (settle), measures, appends a CSV row, and
# waits for the client's pings to be answered again.
failure() {
  local mode=$1 kind=$2 g=$3 back=$4 t0 conv
  t0=$(now_us)
  act "$kind" "$g" "$t0"
  if settle "$t0" "$back"; then
    conv=1
  else
    conv=0
    NOTES+=("$mode: no convergence$([ "$back" = 0 ] || echo " to the starting owner map") within $BOUND s")
  fi
  step_figures "$t0" "$DIR/moved-$mode.txt"
  if [ "$kind" = stop ]; then
    NOTES+=("stop: gw$g exited $(secs $((REAPED_US - t0))) s after SIGTERM, status $REAPED")
  fi
  echo "$DAEMON,$V,$IMS,$G,$CONV0,$CTL_PPS,$CTL_DROP,${CPU_S// /;},${RSS_MIB// /;},$mode,gw$g,$NMOV,$GA_N,$GA_MIN,$GA_MAX,$GA_EACH,$GP,$GPV,$AN_N,$AN_MAX,$AD_N,$AD_MAX,$OPEN,$LAST,$conv,$(
    IFS='|'
    echo "${NOTES[*]}" | tr ',' ';'
  )" >>"$CSV.new"
  printf '  %-7s gw%d moved %4d  GARP first %s last %s  gap %s s  ownerless %s VNIs %s s  duplicate %s VNIs %s s%s\n' \
    "$mode" "$g" "$NMOV" "$GA_MIN" "$GA_MAX" "$GP" "$AN_N" "$AN_MAX" "$AD_N" "$AD_MAX" \
    "$([ "$OPEN" = 0 ] || echo " ($OPEN still at the end)")"
  NOTES=()
  PREV=$MAP
  pings_back "$mode gw$g" "$t0"
}

# ---- one configuration ------------------------------------------------------------------------
CONFIGS=0
run_config() {
  local t
  DAEMON=$1 V=$2 INTERVAL=$3
  IMS=$(interval_ms "$INTERVAL")
  E=$((B + V - 1))
  CONFIGS=$((CONFIGS + 1))
  NAME="wb$(($$ % 1000))c$CONFIGS"
  DIR=$RUN/$DAEMON-$V-$INTERVAL
  mkdir -p "$DIR"
  STABLE_US=$((IMS * 5 * 1000))
  ((STABLE_US >= 1000000)) || STABLE_US=1000000
  BOUND_US=$((BOUND * 1000000))
  # Polls cost CPU beside the daemons (a dump of 7000 links at V = 1000): the settling moment
  # needs no precision (every figure is timed from the monitors), so poll slowly.
  POLL=0.1
  ((V < 1000)) || POLL=0.25
  NOTES=()
  DPID=() LIVE=() PORT=() HELPERS=()
  if [ "$DAEMON" = keepalived ]; then OWN=addr; else OWN=link; fi
  echo "== $DAEMON, V=$V, interval $INTERVAL ($(date +%T))"
  LAB_MADE=1
  if [ "$DAEMON" = keepalived ]; then
    lab_up "$NAME" "$G" "$V" --mac "$MAC" --gateway-ip vrrp || { LAB_MADE= && die "lab_up failed"; }
    for ((g = 1; g <= G; g++)); do keepalived_conf "$g" "$IMS" >"$DIR/gw$g.conf"; done
  else
    lab_up "$NAME" "$G" "$V" --mac "$MAC" || { LAB_MADE= && die "lab_up failed"; }
  fi
  start_watchers
  start_all_converge || die "$DAEMON V=$V $INTERVAL: no convergence within $BOUND s; see $DIR"
  MAP0=$MAP PREV=$MAP
  CONV0=$(secs $((CONV_US - DAEMONS_T0)))
  start_pings "$MAP0" 1 2 "$G"
  # The daemons' start-up (keepalived's second GARP burst 5 s after taking over) is over
  # before the window opens.
  sleep 1
  steady
  echo "  converged in $CONV0 s, owners $(owner_counts "$MAP0"); control $CTL_PPS pkt/s; CPU s per ${STEADY} s: $CPU_S; RSS MiB: $RSS_MIB"
  failure crash crash 1 0
  failure restart start 1 1
  failure node cut "$G" 0
  failure heal restore "$G" 1
  failure stop stop 2 0
  failure rejoin start 2 1
  stop_config
  lab_down "$NAME"
  LAB_MADE=
}

# ---- the run ----------------------------------------------------------------------------------
{
  echo "command=$COMMAND"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "wmgwd2=$("$BIN" --version) $BUILT"
  echo "keepalived=$(keepalived --version 2>&1 | head -1)"
  echo "iproute2=$(ip -V | sed 's/.*iproute2-//')"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "other_netns_start=$(ip netns list | wc -l)"
  echo "steady_s=$STEADY"
  echo "gateways=$G"
} >"$RUN/meta"
echo "daemon,vnis,interval_ms,gateways,converge_s,ctl_pps,ctl_drops,cpu_s,rss_mib,mode,target,moved,garped,garp_first_s,garp_last_s,garps_per_vni,max_gap_s,gap_vni,ownerless_vnis,ownerless_max_s,dup_vnis,dup_max_s,open_vnis,settled_s,converged,notes" >"$CSV.new"
T_START=$(now_us)
for i in $INTERVALS; do
  for v in $VNIS; do
    for d in $DAEMONS; do
      if [ "$d" = keepalived ] && (($(interval_ms "$i") < 100)); then continue; fi
      run_config "$d" "$v" "$i"
    done
  done
done
{
  cat "$RUN/meta"
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "duration_s=$((($(now_us) - T_START) / 1000000))"
} >"$CSV.meta"
mv "$CSV.new" "$CSV"
report
echo "wrote $OUT/benchmarks.md, $CSV, $OUT/bench.png"
