#!/usr/bin/env bash
# evpn-drill.sh: does BGP EVPN (real FRR) move the gateway when wmgwd2 does, as a remote host
# sees it? Builds scripts/lab-evpn.sh's lab for each MAC convention, runs the failover cases, and
# prints one table: case, convention, host outage, whether the leaf's route follows the owner, and
# the EVPN MAC moves each handover cost. Then a duplicate-address-detection drill.
#
# Usage (as root): scripts/evpn-drill.sh [--mac shared|distinct|both] [--cycles N] [--pause S]
#                                        [--bin PATH] [--logs DIR] [--frr-debug] [--doc FILE]
#                                        [-- WMGWD2 ARGS]
#   --mac     the conventions to run (default both)
#   --cycles  stop/start cycles of the DAD drill per convention (default 4; 0 skips it)
#   --pause   seconds between the drill's handovers (default 2)
#   --bin     the wmgwd2 binary (default: cargo build --release, target/release/wmgwd2)
#   --logs    keep the daemons' logs, the ping and leaf traces here (default: a temp dir, removed)
#   --frr-debug  FRR's EVPN debug logs (zebra vxlan/kernel, bgp zebra/updates), copied to --logs
#   --doc FILE   also write the report, with the command and the machine, into FILE between the
#             lines <!-- evpn:begin --> and <!-- evpn:end --> (appended when FILE has none; the
#             rest of FILE is kept). docs/benchmarks.md's EVPN section is written this way.
#   -- ARGS   more wmgwd2 flags for every gateway (e.g. -- --hold-down 40)
#
# The lab (per convention, namespaces ed<5 digits><s|d>-*): 2 gateways (uid 0x1001, 0x1002),
# VNIs 100 and 101; gw1 owns 100 and gw2 owns 101 while both run, so "sigterm gw1" moves 100
# gw1->gw2 and "sigterm gw2" moves 101 gw2->gw1. Hosts h100, h101 behind the remote leaf ping
# their gateway IP every 10 ms (ping -D -i 0.01) the whole time.
#
# Columns:
#   outage   the longest gap between two ping replies of the moved VNI's host, from 1 s before
#            the event until the case is over (leaf follows + 2 s, or 20 s), in ms
#   leaf     yes when the leaf's kernel FDB entry for the MAC the host uses points at the new
#            owner's VTEP and zebra's MAC table agrees; then the ms from the event to the last
#            change of that entry (from the leaf's `bridge -timestamp monitor fdb`)
#   leaf fdb changes  how often that entry changed destination (or went away) in the case
#   seq+     EVPN MAC mobility sequence increase at the leaf (it restarts at 0 when a MAC is
#            withdrawn everywhere before it is advertised again)
#   dad      FRR duplicate-address detection: "dup@ROLE" where it flags the MAC, else "-"; then
#            n=N, the highest move count FRR holds for the MAC on any node (it flags at 5)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab-evpn.sh
source scripts/lab-evpn.sh

MACS=both CYCLES=4 PAUSE=2 BIN= LOGS= KEEP_LOGS= FRR_DEBUG= DOC= DAEMON_ARGS=()
COMMAND="scripts/evpn-drill.sh $*"
while [ $# -gt 0 ]; do
  case $1 in
    --mac) MACS=${2:?} && shift 2 ;;
    --cycles) CYCLES=${2:?} && shift 2 ;;
    --pause) PAUSE=${2:?} && shift 2 ;;
    --bin) BIN=${2:?} && shift 2 ;;
    --logs) LOGS=${2:?} && KEEP_LOGS=1 && shift 2 ;;
    --frr-debug) FRR_DEBUG=1 && shift ;;
    --doc) DOC=${2:?} && shift 2 ;;
    --) shift && DAEMON_ARGS=("$@") && break ;;
    -h | --help) sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0" | sed '$d' && exit 0 ;;
    *) echo "evpn-drill.sh: unknown option '$1' (try -h)" >&2 && exit 2 ;;
  esac
done
case $MACS in both) CONVENTIONS=(shared distinct) ;; shared | distinct) CONVENTIONS=("$MACS") ;; *)
  echo "evpn-drill.sh: --mac must be shared, distinct or both" >&2 && exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "evpn-drill.sh: must run as root" >&2 && exit 1; }
evpn_need_tools
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/wmgwd2
fi
[ -x "$BIN" ] || { echo "evpn-drill.sh: no binary at $BIN" >&2 && exit 1; }
[ -n "$LOGS" ] || LOGS=$(mktemp -d "${TMPDIR:-/tmp}/evpn-drill.XXXXXX")
mkdir -p "$LOGS"

NAME=              # the lab of the convention being run
declare -A DAEMON  # gateway -> PID of its wmgwd2
declare -A PINGER  # vni -> PID of its ping
RESULTS=()         # table rows
DRILL=()           # DAD drill rows
STARTS=()          # conventions whose leaf did not follow at start

log() { printf '%s %s\n' "$(date +%T.%3N)" "$*" >&2; }

stop_all() {
  local k
  for k in "${!DAEMON[@]}"; do kill -KILL "${DAEMON[$k]}" 2>/dev/null || true; done
  for k in "${!PINGER[@]}"; do kill -TERM "${PINGER[$k]}" 2>/dev/null || true; done
  for k in "${!DAEMON[@]}" ; do wait "${DAEMON[$k]}" 2>/dev/null || true; done
  for k in "${!PINGER[@]}" ; do wait "${PINGER[$k]}" 2>/dev/null || true; done
  DAEMON=() PINGER=()
}

cleanup() {
  stop_all
  evpn_abort
  [ -z "$NAME" ] || evpn_down "$NAME"
  NAME=
  [ -n "$KEEP_LOGS" ] || rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'trap - INT TERM; exit 130' INT TERM

uid() { printf '0x%x' $((0x1000 + $1)); }

start_gw() {
  local g=$1
  ip netns exec "$(lab_ns "$NAME" "gw$g")" "$BIN" --uid "$(uid "$g")" --minvni 100 --maxvni 101 \
    --interval 100ms --broadcast 10.0.1.255 --bind-interface eth0 -v "${DAEMON_ARGS[@]}" \
    >>"$LOGS/$NAME-gw$g.log" 2>&1 &
  DAEMON[$g]=$!
}

signal_gw() {
  local g=$1 sig=$2 pid=${DAEMON[$1]}
  kill "-$sig" "$pid"
  wait "$pid" 2>/dev/null || true
  unset "DAEMON[$g]"
}

# protodown state of vrrp4-V on gateway G: "false" when active.
protodown() {
  ip -n "$(lab_ns "$NAME" "gw$1")" -j -d link show "vrrp4-$2" 2>/dev/null | jq -r '.[0].proto_down // false'
}

# The gateway whose vrrp4-V is active, when exactly one is.
owner_of() {
  local v=$1 g owners=()
  for g in 1 2; do [ "$(protodown "$g" "$v")" = false ] && owners+=("$g"); done
  [ ${#owners[@]} -eq 1 ] && echo "${owners[0]}"
}

is_owner() { [ "$(owner_of "$2")" = "$1" ]; }

gw_mac() { ip -n "$(lab_ns "$NAME" "gw$1")" -j link show "vrrp4-$2" | jq -r '.[0].address'; }

# The MAC the host of VNI V uses for its gateway (its neighbour entry), or the owner's MAC.
host_mac() {
  ip -n "$(lab_ns "$NAME" "h$1")" -j neigh show "$(lab_gateway_ip "$1")" 2>/dev/null | jq -r '.[0].lladdr // empty'
}

# The VTEP the leaf's kernel forwards MAC to in VNI V ("" when it has no entry).
leaf_fdb_dst() {
  bridge -n "$(lab_ns "$NAME" lf)" -j fdb show dev "vxlan$1" 2>/dev/null |
    jq -r --arg m "$2" '[.[] | select(.mac == $m and .dst != null)][0].dst // empty'
}

# The leaf's mobility sequence number for MAC in VNI V (0 when unknown).
leaf_seq() {
  evpn_mac_json "$NAME" lf "$1" "$2" 2>/dev/null |
    jq -r '[.[]? | (.remoteSequence // 0), (.localSequence // 0)] | max // 0' 2>/dev/null || echo 0
}

# "dup@ROLE ..." for every node where FRR flags MAC as a duplicate, else "-", then "n=N": the
# highest move count FRR's duplicate-address detection holds for MAC on any node (it flags the MAC
# when this reaches max-moves, 5 by default, within its 180 s window).
dad_state() {
  local v=$1 mac=$2 role out=() j n max=0
  for role in lf gw1 gw2; do
    j=$(evpn_mac_json "$NAME" "$role" "$v" "$mac" 2>/dev/null) || continue
    if [ "$(jq -r '[.[]?.isDuplicate] | any' <<<"$j")" = true ]; then out+=("dup@$role"); fi
    n=$(jq -r '[.[]?.detectionCount // 0] | max // 0' <<<"$j" 2>/dev/null) || n=0
    [[ $n =~ ^[0-9]+$ ]] && ((n > max)) && max=$n
  done
  [ ${#out[@]} -gt 0 ] || out=("-")
  echo "${out[*]} n=$max"
}

# The gateway MACs of VNI V: one (shared) or one per gateway (distinct).
vni_macs() { { gw_mac 1 "$1" && gw_mac 2 "$1"; } | sort -u; }

seq_sum() {
  local v=$1 m s=0
  for m in $(vni_macs "$v"); do s=$((s + $(leaf_seq "$v" "$m"))); done
  echo "$s"
}

# Longest gap between ping replies in FILE within [FROM, TO] (epoch seconds), in ms; a window
# that ends without a reply counts up to TO.
max_gap_ms() {
  sed -n 's/^\[\([0-9.]*\)\] [0-9]* bytes from.*/\1/p' "$1" |
    awk -v from="$2" -v to="$3" '
      { t = $1 + 0 }
      t < from { p = t; next }
      t > to { exit }
      { if (p && t - p > g) g = t - p; p = t }
      END { if (to - p > g) g = to - p; printf "%d\n", g * 1000 }'
}

now() { date +%s.%N; }

# The leaf's kernel FDB events, time-stamped by the kernel side (`bridge -timestamp monitor fdb`),
# as "EPOCH DST" lines for MAC in VNI V between FROM and TO; DST is "none" when the entry went away.
leaf_events() {
  local v=$1 mac=$2 from=$3 to=$4
  awk -v mac="$mac" -v dev="vxlan$v" -v from="$from" -v to="$to" '
    BEGIN { split("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec", mn, " "); for (i in mn) mon[mn[i]] = i }
    /^Timestamp:/ { split($5, hms, ":"); ts = mktime($6 " " mon[$3] " " $4 " " hms[1] " " hms[2] " " hms[3]) + $7 / 1e6; next }
    ts < from || ts > to { next }
    {
      del = ($1 == "Deleted"); if (del) $0 = substr($0, 9)
      if ($1 != mac || $3 != dev || $4 != "dst") next
      printf "%.6f %s\n", ts, (del ? "none" : $5)
    }' "$LOGS/$NAME-leaf-fdb.txt"
}

fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a - b }'; }

leaf_follows() { [ "$(leaf_fdb_dst "$1" "$(host_mac "$1")")" = "$(evpn_gateway_underlay "$2")" ]; }

# run_case CASE VNI FROM TO ACTION...: runs ACTION, waits until TO owns VNI and the leaf forwards
# the host's gateway MAC to TO, lets 2 s pass, and records the row.
run_case() {
  local case=$1 v=$2 from=$3 to=$4 t0 t_end follows seq0 seq1 gap mac ms bound=20 want changes last
  shift 4
  log "case: $case (vni $v: gw$from -> gw$to)"
  seq0=$(seq_sum "$v")
  t0=$(now)
  "$@"
  local start=$SECONDS
  until is_owner "$to" "$v" && leaf_follows "$v" "$to"; do
    ((SECONDS - start < bound)) || break
    sleep 0.05
  done
  sleep 2
  t_end=$(now)
  record_case "$case" "$v" "$from" "$to" "$t0" "$t_end" "$seq0"
}

# record_case CASE VNI FROM TO T0 T_END SEQ0: measures the window [T0, T_END] and adds the row.
record_case() {
  local case=$1 v=$2 from=$3 to=$4 t0=$5 t_end=$6 seq0=$7 want mac gap follows ev changes last ms seq1
  want=$(evpn_gateway_underlay "$to")
  mac=$(host_mac "$v")
  gap=$(max_gap_ms "$LOGS/$NAME-ping$v.txt" "$(fsub "$t0" 1)" "$t_end")
  ev=$(leaf_events "$v" "$mac" "$t0" "$t_end")
  changes=$(awk 'BEGIN { n = 0 } $2 != prev { n++ } { prev = $2 } END { print n }' <<<"$ev")
  last=$(tail -n 1 <<<"$ev")
  if [ "$(leaf_fdb_dst "$v" "$mac")" = "$want" ] && [ "$(evpn_mac_where "$NAME" lf "$v" "$mac")" = "$want" ]; then
    if [ -n "$last" ] && [ "${last#* }" = "$want" ]; then
      ms=$(awk -v a="${last% *}" -v b="$t0" 'BEGIN { printf "%d", (a - b) * 1000 }')
      follows="yes ${ms}"
    else
      follows="yes"
    fi
  else
    follows="no ($(leaf_fdb_dst "$v" "$mac"))"
  fi
  seq1=$(seq_sum "$v")
  RESULTS+=("$(printf '%-16s %-9s %-4s %-8s %-7s %-16s %-8s %-5s %s' "$case" "$CONV" "$v" "$from>$to" \
    "$gap" "$follows" "$changes" "$((seq1 - seq0))" "$(dad_state "$v" "$mac")")")
  log "  outage ${gap} ms, leaf follows: $follows, leaf fdb changes $changes, seq $seq0 -> $seq1"
  [ -z "$ev" ] || log "  leaf fdb: $(tr '\n' ' ' <<<"$ev")"
}

# Both gateways started: gw1 should own 100 and gw2 101, and the leaf should follow. Not fatal
# when the leaf does not (that is a finding): the rows below show it.
wait_converged() {
  local start=$SECONDS
  until is_owner 1 100 && is_owner 2 101 && leaf_follows 100 1 && leaf_follows 101 2; do
    if ((SECONDS - start >= 30)); then
      log "WARNING: after 30 s: owners of 100/101: gw$(owner_of 100)/gw$(owner_of 101); the leaf sends 100 to $(leaf_fdb_dst 100 "$(host_mac 100)"), 101 to $(leaf_fdb_dst 101 "$(host_mac 101)")"
      STARTS+=("$CONV: leaf not following at start: vni 100 -> $(leaf_fdb_dst 100 "$(host_mac 100)"), vni 101 -> $(leaf_fdb_dst 101 "$(host_mac 101)")")
      return 0
    fi
    sleep 0.1
  done
}

run_convention() {
  CONV=$1
  NAME=ed$(printf '%05d' $((RANDOM % 100000)))${CONV:0:1}
  log "convention $CONV: lab $NAME"
  evpn_up "$NAME" --gateways 2 --mac "$CONV"
  start_gw 1
  start_gw 2
  local v
  for v in "${EVPN_VNIS[@]}"; do
    ip netns exec "$(lab_ns "$NAME" "h$v")" ping -D -i 0.01 -W 1 "$(lab_gateway_ip "$v")" \
      >"$LOGS/$NAME-ping$v.txt" 2>&1 &
    PINGER[$v]=$!
  done
  bridge -n "$(lab_ns "$NAME" lf)" -timestamp monitor fdb >"$LOGS/$NAME-leaf-fdb.txt" 2>&1 &
  PINGER[mon]=$!
  [ -z "$FRR_DEBUG" ] || frr_debug
  wait_converged
  sleep 2
  # No event: the noise floor of the 10 ms ping on this machine.
  local t0
  t0=$(now)
  sleep 5
  record_case "baseline" 100 1 1 "$t0" "$(now)" "$(seq_sum 100)"

  run_case "sigterm gw1" 100 1 2 signal_gw 1 TERM
  run_case "rejoin gw1" 100 2 1 start_gw 1
  sleep 1
  run_case "sigterm gw2" 101 2 1 signal_gw 2 TERM
  run_case "rejoin gw2" 101 1 2 start_gw 2
  sleep 1
  run_case "kill -9 gw1" 100 1 2 signal_gw 1 KILL
  run_case "restart gw1" 100 2 1 start_gw 1
  sleep 1
  run_case "link cut gw1" 100 1 2 ip -n "$(lab_ns "$NAME" sw)" link set p1 down
  run_case "link back gw1" 100 2 1 ip -n "$(lab_ns "$NAME" sw)" link set p1 up

  dad_drill
  [ -z "$KEEP_LOGS" ] || save_frr_logs
  stop_all
  evpn_down "$NAME"
  NAME=
}

# Repeated planned stop/start of gw1 every PAUSE seconds: does FRR's duplicate detection trip,
# and does the leaf still follow when it has?
frr_debug() {
  local role
  for role in lf gw1 gw2; do
    evpn_vtysh "$NAME" "$role" 'configure terminal' 'debug zebra vxlan' 'debug zebra kernel' \
      'debug bgp zebra' 'debug bgp updates' \
      "log file $(evpn_dir "$NAME" "$role")/frr.log debugging" 'log timestamp precision 3' >/dev/null
  done
}

save_frr_logs() {
  local role
  for role in rr lf gw1 gw2; do
    cp "$(evpn_dir "$NAME" "$role")/frr.log" "$LOGS/$NAME-frr-$role.log" 2>/dev/null || true
  done
}

dad_drill() {
  ((CYCLES > 0)) || return 0
  local c t0 row mac
  mac=$(host_mac 100)
  for ((c = 1; c <= CYCLES; c++)); do
    for step in stop start; do
      sleep "$PAUSE"
      t0=$(now)
      if [ $step = stop ]; then signal_gw 1 TERM; else start_gw 1; fi
      local to=2
      [ $step = start ] && to=1
      local start=$SECONDS ok=no
      until leaf_follows 100 "$to" && is_owner "$to" 100; do
        ((SECONDS - start < 10)) || break
        sleep 0.02
      done
      leaf_follows 100 "$to" && ok=yes
      sleep 1
      row=$(printf '%-9s %-6s %-6s %-5s %-8s %-6s %s' "$CONV" "$c" "$step" "$ok" \
        "$(max_gap_ms "$LOGS/$NAME-ping100.txt" "$(fsub "$t0" 1)" "$(now)")" \
        "$(leaf_seq 100 "$(host_mac 100)")" "$(dad_state 100 "$(host_mac 100)")")
      DRILL+=("$row")
      log "  drill $row"
    done
  done
}

for c in "${CONVENTIONS[@]}"; do run_convention "$c"; done

report() {
  echo "wmgwd2 EVPN drill: FRR $(dpkg-query -W -f '${Version}' frr 2>/dev/null), kernel $(uname -r), wmgwd2 --interval 100ms ${DAEMON_ARGS[*]}, BGP timers 1 3"
  printf '%-16s %-9s %-4s %-8s %-7s %-16s %-8s %-5s %s\n' case mac vni gw "outage" "leaf follows" "leaf fdb" "seq+" dad
  printf '%-16s %-9s %-4s %-8s %-7s %-16s %-8s %-5s %s\n' "" "" "" "from>to" "ms" "(ms to last chg)" changes "" ""
  for r in "${RESULTS[@]}"; do echo "$r"; done
  for r in "${STARTS[@]}"; do echo "WARNING $r"; done
  if ((CYCLES > 0)); then
    echo
    echo "duplicate-address detection drill: gw1 stopped/started every ${PAUSE}s (VNI 100; FRR default 5 moves in 180 s)"
    printf '%-9s %-6s %-6s %-5s %-8s %-6s %s\n' mac cycle step leaf "gap(ms)" seq dad
    for r in "${DRILL[@]}"; do echo "$r"; done
  fi
}

# The markdown section for --doc: how it was measured, then the report as printed.
doc_section() {
  echo "<!-- evpn:begin -->"
  echo "<!-- Written by scripts/evpn-drill.sh --doc; rerun it rather than editing this section. -->"
  echo "## BGP EVPN handover (real FRR)"
  echo
  echo "What a host behind a remote leaf lives through when wmgwd2 hands its gateway over, with real"
  echo "FRR (zebra + bgpd per namespace, a route reflector) in the lab of scripts/lab-evpn.sh: 2"
  echo "gateways, VNIs 100 and 101, each host pinging its gateway IP every 10 ms. The columns are"
  echo "explained in \`scripts/evpn-drill.sh -h\`; [evpn.md](evpn.md) reads them and recommends a"
  echo "MAC convention. outage = the longest gap between ping replies of the moved VNI's host."
  echo
  echo "- Command (as root): \`$COMMAND\`"
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); wmgwd2 $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r), FRR $(dpkg-query -W -f '${Version}' frr 2>/dev/null)"
  echo
  echo '```'
  report
  echo '```'
  echo "<!-- evpn:end -->"
}

# Replaces the evpn section of FILE (or appends one) with doc_section's output.
write_doc() {
  local file=$1 new
  new=$(mktemp)
  doc_section >"$new.sec"
  if [ -f "$file" ] && grep -q '^<!-- evpn:begin -->$' "$file"; then
    awk -v sec="$new.sec" '
      /^<!-- evpn:begin -->$/ { while ((getline l < sec) > 0) print l; skip = 1; next }
      /^<!-- evpn:end -->$/ { skip = 0; next }
      !skip' "$file" >"$new"
  else
    { [ ! -f "$file" ] || { cat "$file" && echo; }; cat "$new.sec"; } >"$new"
  fi
  cat "$new" >"$file"
  rm -f "$new" "$new.sec"
  echo "wrote the EVPN section of $file"
}

echo
report
[ -z "$DOC" ] || write_doc "$DOC"
[ -z "$KEEP_LOGS" ] || echo "logs: $LOGS"
