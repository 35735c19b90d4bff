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

G=3
V=100
INTERVAL=100ms
MAC=distinct
BOUND=${DRILL_BOUND:-30}
EXTRA=()
B=1
BIN=

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

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
if [[ $INTERVAL =~ ^([0-9]+)ms$ ]]; then
  INTERVAL_MS=${BASH_REMATCH[1]}
elif [[ $INTERVAL =~ ^([0-9]+)s$ ]]; then
  INTERVAL_MS=$((BASH_REMATCH[1] * 1000))
else
  die "-i takes a whole number of ms or s, e.g. 100ms or 1s"
fi
((INTERVAL_MS >= 10)) || die "-i must be at least 10ms"
E=$((B + V - 1))
# The owner map must be still this long (µs) to count as converged.
STABLE_US=$((INTERVAL_MS * 10 * 1000))
((STABLE_US >= 1000000)) || STABLE_US=1000000
((BOUND * 1000 >= INTERVAL_MS * 40)) || BOUND=$(((INTERVAL_MS * 40 + 999) / 1000))
BOUND_US=$((BOUND * 1000000))

[ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces)"

# ---- tools and binary -------------------------------------------------------------------------
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v bridge >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v stdbuf >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "$BIN" ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), then rerun"
  echo "building: cargo build --release"
  t=${EPOCHREALTIME/./}
  cargo build --release --quiet || die "cargo build --release failed"
  echo "built in $(((${EPOCHREALTIME/./} - t) / 1000000)) s"
  BIN=$PWD/target/release/wmgwd2
fi
[[ $BIN == /* ]] || BIN=$CALLER_PWD/$BIN
[ -x "$BIN" ] || die "no executable at $BIN"

# ---- state and cleanup ------------------------------------------------------------------------
NAME="wmd$(($$ % 100000))"
DIR=$(mktemp -d /tmp/wmgwd2-drill.XXXXXX)
SW=$(lab_ns "$NAME" sw)
CL=$(lab_ns "$NAME" cl)
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

# Stops the daemons (SIGTERM, then SIGKILL after 3 s) and the helpers, by PID.
# shellcheck disable=SC2317  # invoked by cleanup
stop_all() {
  local g p i
  for ((g = 1; g <= G; g++)); do
    p=${DPID[g]:-}
    [ -z "$p" ] || kill -TERM "$p" 2>/dev/null
  done
  for ((g = 1; g <= G; g++)); do
    p=${DPID[g]:-}
    [ -n "$p" ] || continue
    for ((i = 0; i < 300; i++)); do running "$p" || break; sleep 0.01; done
    running "$p" && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  for p in "${HELPERS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${HELPERS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Is PID still running (not exited, not a zombie waiting to be reaped)?
running() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}

# Packets the kernel dropped because a CPU's input backlog was full (netdev_max_backlog), summed
# over CPUs. Machine-wide (not per namespace): other traffic on the host counts too.
backlog_drops() {
  local line f n=0
  while read -r line; do
    f=${line#* }
    n=$((n + 16#${f%% *}))
  done </proc/net/softnet_stat
  echo "$n"
}

now_us() { echo "${EPOCHREALTIME/./}"; }
# µs -> seconds with 2 decimals.
secs() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1e6 }'; }

# ---- kernel state -----------------------------------------------------------------------------
# "g v owned" for every vrrp4-<v> on every gateway (owned: 1 = protodown off).
snapshot() {
  local g
  for ((g = 1; g <= G; g++)); do
    ip -o -n "$(lab_ns "$NAME" "gw$g")" link show type macvlan |
      awk -v g="$g" 'match($2, /^vrrp4-[0-9]+@/) {
        print g, substr($2, 7, RLENGTH - 7), ($0 ~ / protodown on/) ? 0 : 1 }'
  done
}

live_list() {
  local g out=
  for ((g = 1; g <= G; g++)); do out+="${LIVE[g]} "; done
  echo "$out"
}

# "v owners" for v in B..E: owners = comma list of live gateways with the link owned, or "-".
owner_map() {
  snapshot | awk -v live="$(live_list)" -v b="$B" -v e="$E" '
    BEGIN { split(live, L, " ") }
    $3 == 1 && L[$1] == 1 { o[$2] = (o[$2] == "" ? "" : o[$2] ",") $1 }
    END { for (v = b; v <= e; v++) print v, (o[v] == "" ? "-" : o[v]) }'
}

# Is MAP (owner_map output) converged: one owner each, every live gateway owns something (when
# there are enough VNIs for that to be certain in practice)?
converged() {
  awk -v live="$(live_list)" -v g="$G" -v vnis="$V" '
    BEGIN { split(live, L, " ") }
    $2 == "-" || $2 ~ /,/ { bad = 1 }
    { n[$2]++ }
    END {
      if (bad) exit 1
      if (vnis >= 8 * g) for (i = 1; i <= g; i++) if (L[i] == 1 && !n[i]) exit 1
      exit 0
    }' <<<"$1"
}

# Counts per gateway from a map: "33/34/33", "-" for gateways not live.
owner_counts() {
  awk -v live="$(live_list)" -v g="$G" '
    BEGIN { split(live, L, " ") }
    { n[$2]++ }
    END { for (i = 1; i <= g; i++) printf "%s%s", (i > 1 ? "/" : ""), (L[i] == 1 ? n[i] + 0 : "-") }' <<<"$1"
}

# Waits until the owner map is converged and unchanged for STABLE_US. Sets MAP and CONV_US (time
# of the last change). Returns 1 after BOUND.
wait_converged() {
  local start=$1 last="" m t changed
  changed=$(now_us)
  while :; do
    m=$(owner_map)
    t=$(now_us)
    if [ "$m" != "$last" ]; then
      last=$m
      changed=$t
    fi
    if converged "$m" && ((t - changed >= STABLE_US)); then
      MAP=$m
      CONV_US=$changed
      return 0
    fi
    if ((t - start > BOUND_US)); then
      MAP=$m
      CONV_US=$t
      return 1
    fi
    sleep 0.05
  done
}

# ---- processes --------------------------------------------------------------------------------
start_daemon() {
  local g=$1
  NO_COLOR=1 ip netns exec "$(lab_ns "$NAME" "gw$g")" "$BIN" \
    --uid "$(printf '0x%x' $((0x1000 + g)))" --minvni "$B" --maxvni "$E" \
    --interval "$INTERVAL" --broadcast 10.0.1.255 --bind-interface eth0 "${EXTRA[@]}" \
    </dev/null >/dev/null 2>>"$DIR/gw$g.log" &
  DPID[g]=$!
}

# Waits (bounded) for daemon g to exit; sets REAPED to its exit status, or "hung" (then kills it)
# and REAPED_US to when it was seen gone.
reap_daemon() {
  local g=$1 p=${DPID[$1]} i rc=0
  if [ -z "$p" ]; then
    REAPED_US=$(now_us) REAPED="not running"
    return
  fi
  for ((i = 0; i < BOUND * 200; i++)); do running "$p" || break; sleep 0.005; done
  REAPED_US=$(now_us)
  if running "$p"; then
    kill -KILL "$p"
    wait "$p" 2>/dev/null || true
    DPID[g]=
    REAPED=hung
    return
  fi
  wait "$p" 2>/dev/null || rc=$?
  DPID[g]=
  REAPED=$rc
}

# Appends a liveness change of gateway g at time t (µs) to the record the analysis replays.
set_live() {
  local g=$1 t=$2
  if [ -n "${DPID[g]}" ] && [ "${PORT[g]}" = 1 ]; then LIVE[g]=1; else LIVE[g]=0; fi
  echo "$(secs_exact "$t") L $g ${LIVE[g]}" >>"$DIR/live.txt"
}

secs_exact() { echo "${1:0:${#1}-6}.${1: -6}"; }

# ---- analysis ---------------------------------------------------------------------------------
# Ownership anomalies among live gateways in [t0, t1] (seconds). Replays the starting snapshot,
# every monitor record and every liveness change in time order. Prints:
#   ownerless_vnis ownerless_max_s double_vnis double_max_s last_change_s
anomalies() {
  local t0=$1 t1=$2 g
  {
    cat "$DIR/own0.txt" "$DIR/live.txt"
    for ((g = 1; g <= G; g++)); do
      awk -v g="$g" '
        /^\[/ && match($0, /vrrp4-[0-9]+@/) {
          ts = substr($1, 2, length($1) - 2)      # 2026-11-23T00:38:55.887652
          split(ts, p, /[-T:]/)
          sec = p[6]; frac = sec - int(sec)
          t = mktime(p[1] " " p[2] " " p[3] " " p[4] " " p[5] " " int(sec)) + frac
          v = substr($0, RSTART + 6, RLENGTH - 7)
          printf "%.6f O %d %s %d\n", t, g, v, ($0 ~ / protodown on/) ? 0 : 1
        }' "$DIR/mon$g.txt"
    done
  } | sort -s -n -k1,1 | awk -v t0="$t0" -v t1="$t1" -v g="$G" -v b="$B" -v e="$E" '
    function state(v,   i, c) {
      c = 0
      for (i = 1; i <= g; i++) if (live[i] && own[i, v]) c++
      return c == 0 ? 0 : (c == 1 ? 1 : 2)
    }
    function update(v, t,   s) {
      s = state(v)
      if (s == st[v]) return
      if (st[v] != 1) close_(v, t)
      st[v] = s
      if (s != 1) since[v] = t
    }
    # Moments under 1 ms are not counted: each namespace has its own monitor process, which
    # stamps a record when it reads it, so records of two gateways are ordered only to ~1 ms.
    function close_(v, t,   d) {
      d = t - since[v]
      if (d < 0.001) return
      if (st[v] == 0) { none[v] = 1; if (d > nmax) nmax = d }
      if (st[v] == 2) { dbl[v] = 1; if (d > dmax) dmax = d }
    }
    function begin_(   v) {
      started = 1
      for (v = b; v <= e; v++) { st[v] = state(v); if (st[v] != 1) since[v] = t0 }
    }
    $1 > t1 { exit }
    {
      if (!started && $1 >= t0) begin_()
      if ($2 == "L") {
        live[$3] = $4
        if (started) for (v = b; v <= e; v++) update(v, $1)
      } else {
        # The last ownership change of a live gateway: when the map took its final form.
        if (started && live[$3] && own[$3, $4] != $5) last = $1 - t0
        own[$3, $4] = $5
        if (started) update($4 + 0, $1)
      }
    }
    END {
      if (!started) begin_()
      for (v = b; v <= e; v++) if (st[v] != 1) close_(v, t1)
      for (v in none) nn++
      for (v in dbl) nd++
      printf "%d %.3f %d %.3f %.3f\n", nn, nmax, nd, dmax, last
    }'
}

# Moved VNIs between two maps: "v new_owner" lines.
moved() {
  awk 'NR == FNR { before[$1] = $2; next } before[$1] != $2 { print $1, $2 }' \
    <(echo "$1") <(echo "$2")
}

# "count max_s per_vni" for GARPs in [t0, t1]: moved VNIs (file of "v owner") announced by the MAC
# of their new owner's vrrp4-<v> (file macs.txt: "g v mac"), the latest first announcement, and
# the average number of such GARPs per announced VNI.
garps() {
  local t0=$1 t1=$2 movedf=$3
  awk -v t0="$t0" -v t1="$t1" -v shared="$([ "$MAC" = shared ] && echo 1 || echo 0)" '
    FILENAME == ARGV[1] { mac[$1, $2] = tolower($3); next }
    FILENAME == ARGV[2] { want[$1] = $2; next }
    $1 < t0 || $1 > t1 { next }
    {
      w = ""; tl = ""; src = ""
      for (i = 1; i < NF; i++) {
        if ($i == "who-has") w = $(i + 1)
        if ($i == "tell") tl = $(i + 1)
        if ($i == "ifindex") src = tolower($(i + 2))
      }
      sub(/,$/, "", tl)
      if (w == "" || w != tl) next
      split(w, a, ".")
      if (a[1] != 10 || a[4] != 1) next
      v = (a[2] - 100) * 256 + a[3]
      if (!(v in want)) next
      if (!shared && src != mac[want[v], v]) next
      total++
      if (v in first) next
      first[v] = $1 - t0
      if (first[v] > max) max = first[v]
    }
    END { for (v in first) n++; printf "%d %.3f %.1f\n", n, max, n ? total / n : 0 }' \
    "$DIR/macs.txt" "$movedf" "$DIR/arp.txt"
}

# Longest gap between ping replies around [t0, t1] over the sampled VNIs: "gap_s vni".
max_gap() {
  local t0=$1 t1=$2 v best=0 bestv=- g
  for v in "${SAMPLES[@]}"; do
    g=$(awk -v t0="$t0" -v t1="$t1" '
      /bytes from/ {
        t = substr($1, 2, length($1) - 2) + 0
        if (t > t1) exit
        if (t < t0) { prev = t; next }
        if (prev == "") prev = t0
        if (t - prev > m) m = t - prev
        prev = t
      }
      END { if (prev == "") prev = t0; if (t1 - prev > m) m = t1 - prev; printf "%.3f\n", m }' \
      "$DIR/ping$v.txt")
    if awk -v a="$g" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$g bestv=$v; fi
  done
  echo "$best $bestv"
}

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

for ((g = 1; g <= G; g++)); do
  ns=$(lab_ns "$NAME" "gw$g")
  stdbuf -oL ip -ts -o -n "$ns" monitor link >"$DIR/mon$g.txt" 2>&1 &
  HELPERS+=($!)
  PORT[g]=1
  LIVE[g]=0
  DPID[g]=
done
ip netns exec "$CL" tcpdump -i any -n -e -tt -l --time-stamp-precision=micro arp \
  >"$DIR/arp.txt" 2>"$DIR/tcpdump.err" &
HELPERS+=($!)
t=$(now_us)
until grep -q "listening on" "$DIR/tcpdump.err" 2>/dev/null; do
  (($(now_us) - t < BOUND_US)) || die "tcpdump did not start: $(cat "$DIR/tcpdump.err")"
  sleep 0.05
done
# ip monitor has no "ready" message: give it a moment, then take the starting state. Nothing
# changes the macvlans before the daemons start, so the snapshot and the monitor agree.
sleep 0.3
t=$(now_us)
snapshot | awk -v t="$(secs_exact "$t")" '{ print t, "O", $0 }' >"$DIR/own0.txt"
for ((g = 1; g <= G; g++)); do
  ip -o -n "$(lab_ns "$NAME" "gw$g")" link show type macvlan |
    awk -v g="$g" 'match($2, /^vrrp4-[0-9]+@/) {
      for (i = 1; i < NF; i++) if ($i == "link/ether") m = $(i + 1)
      print g, substr($2, 7, RLENGTH - 7), m }'
done >"$DIR/macs.txt"
: >"$DIR/live.txt"

echo "starting $G daemons"
t=$(now_us)
for ((g = 1; g <= G; g++)); do
  start_daemon "$g"
  set_live "$g" "$t"
done
wait_converged "$t" || die "no convergence within $BOUND s after start; see $DIR/gw*.log"
MAP0=$MAP
echo "converged in $(secs $((CONV_US - t))) s; VNIs owned: $(owner_counts "$MAP0" | tr / '\n' | awk '{ printf "%sgw%d %s", (NR > 1 ? ", " : ""), NR, $1 }')"

# Sampled VNIs for pings: spread over the gateways the steps target.
CRASH=1 STOP=2 CUT=3
((G >= 3)) || CUT=1
SAMPLES=()
for g in $CRASH $STOP $CUT; do
  for v in $(awk -v g="$g" '$2 == g { print $1 }' <<<"$MAP0" | awk 'NR % 7 == 1' | head -3); do
    [[ " ${SAMPLES[*]} " == *" $v "* ]] || SAMPLES+=("$v")
  done
done
SAMPLES=("${SAMPLES[@]:0:8}")
for v in "${SAMPLES[@]}"; do
  ip netns exec "$CL" stdbuf -oL ping -D -n -i 0.02 "$(lab_gateway_ip "$v")" \
    >"$DIR/ping$v.txt" 2>&1 &
  HELPERS+=($!)
done
t=$(now_us)
for v in "${SAMPLES[@]}"; do
  until grep -q "bytes from" "$DIR/ping$v.txt"; do
    (($(now_us) - t < BOUND_US)) || die "no ping reply from $(lab_gateway_ip "$v") (VNI $v)"
    sleep 0.05
  done
done
echo "pinging gateway IPs of VNIs ${SAMPLES[*]} every 20 ms from the client"
echo

# ---- steps ------------------------------------------------------------------------------------
ROWS=()
NOTES=()
FAILED=0
PREV=$MAP0

# run_step N LABEL KIND G: performs the event, waits, measures, appends a table row.
run_step() {
  local n=$1 label=$2 kind=$3 g=$4 t0 t0s t1s result=ok why=() conv m i gp gpv ga ga_n ga_max nmov
  local drops0 drops
  local an_n an_max ad_n ad_max last ga_each
  drops0=$(backlog_drops)
  t0=$(now_us)
  case $kind in
    crash)
      # (stderr off: bash would print "Killed" when it reaps the daemon)
      {
        kill -KILL "${DPID[g]}" || true
        reap_daemon "$g"
      } 2>/dev/null
      set_live "$g" "$t0"
      ;;
    start)
      [ -z "${DPID[g]}" ] || why+=("gw$g was still running")
      start_daemon "$g"
      set_live "$g" "$t0"
      ;;
    stop)
      kill -TERM "${DPID[g]}" 2>/dev/null || true
      reap_daemon "$g"
      # The daemon is live until it exits: that is when its interfaces are all protodown.
      set_live "$g" "$REAPED_US"
      NOTES+=("step $n: gw$g exited $(secs $((REAPED_US - t0))) s after SIGTERM, status $REAPED")
      [ "$REAPED" = 0 ] || why+=("exit status $REAPED after SIGTERM")
      ;;
    cut | restore)
      ip -n "$SW" link set "p$g" "$([ "$kind" = cut ] && echo down || echo up)"
      PORT[g]=$([ "$kind" = cut ] && echo 0 || echo 1)
      set_live "$g" "$t0"
      ;;
  esac
  if wait_converged "$t0"; then conv=ok; else conv=timeout; fi
  t0s=$(secs_exact "$t0")
  t1s=$(secs_exact "$(now_us)")
  drops=$(($(backlog_drops) - drops0))
  if ((drops > 0)); then
    NOTES+=("step $n: the kernel dropped $drops packets machine-wide for a full input backlog (net.core.netdev_max_backlog=$(cat /proc/sys/net/core/netdev_max_backlog)); lost GARPs or pings may be among them")
  fi
  moved "$PREV" "$MAP" >"$DIR/moved$n.txt"
  nmov=$(wc -l <"$DIR/moved$n.txt")
  read -r ga_n ga_max ga_each < <(garps "$t0s" "$t1s" "$DIR/moved$n.txt")
  read -r gp gpv < <(max_gap "$t0s" "$t1s")
  read -r an_n an_max ad_n ad_max last < <(anomalies "$t0s" "$t1s")
  if [ "$conv" = ok ]; then
    conv="$last s"
  else
    why+=("no convergence in ${BOUND}s")
  fi
  ((ga_n == nmov)) || why+=("$((nmov - ga_n)) moved VNIs got no GARP from their new owner")
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
  ga=$([ "$ga_n" -gt 0 ] && echo "$ga_max s" || echo "-")
  ROWS+=("$(printf '%-2s %-22s %5s %9s %9s %11s %13s %15s %15s %-11s %s' \
    "$n" "$label" "$nmov" "$conv" "$ga" "$ga_n/$nmov x$ga_each" "$gp s v$gpv" \
    "$(fmt_anom "$an_n" "$an_max")" "$(fmt_anom "$ad_n" "$ad_max")" "$(owner_counts "$MAP")" "$result")")
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
