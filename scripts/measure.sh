# measure.sh: measurement helpers of scripts/bench.sh (the drill's are in the lab crate,
# scripts/lab; this file goes once the benchmark is ported onto it). Sourced, runs
# nothing. It watches a lab built by scripts/lab.sh from the outside: the kernel's ownership state
# per gateway (ip monitor), gratuitous ARPs at the client (tcpdump), ping gaps, daemon processes.
#
# The caller sets these globals (the drill's names) before calling the functions:
#   NAME G B E V   lab name, gateways, VNIs B..E (V of them)
#   DIR            a directory for records (mon<g>.txt, own0.txt, live.txt, macs.txt, arp.txt,
#                  ping<v>.txt, gw<g>.log)
#   MAC            distinct | shared (the lab's --mac)
#   BIN INTERVAL EXTRA   wmgwd2 binary, --interval value, extra flags (start_daemon)
#   BOUND BOUND_US STABLE_US   longest wait (s, µs); how long the owner map must be still (µs)
#   DPID[g] PORT[g] LIVE[g]    daemon PID ("" = none), switch port up (1/0), live (set_live)
#   HELPERS        PIDs of monitors, tcpdump, pings (stop_all ends them)
#   SAMPLES        VNIs the client pings (start_pings sets it)
# Optional:
#   OWN=link       ownership = proto_down off on vrrp4-<v> (wmgwd2; default)
#   OWN=addr       ownership = the gateway IP lab_gateway_ip v is on vrrp4-<v> (a VRRP daemon
#                  such as keepalived adds and removes it)
#   LIVE_RULE=daemon   a gateway counts in the ownership record when its daemon runs and its
#                  switch port is up (default); port: when its port is up, whatever its daemon
#                  does (the kernel's point of view: a killed daemon's interfaces still answer)
#   POLL=0.05      seconds between two polls of the kernel state while waiting
#   PING_INTERVAL=0.02   seconds between two pings of one sampled gateway IP
# A function that fails calls die (the caller defines it).

OWN=${OWN:-link}
LIVE_RULE=${LIVE_RULE:-daemon}
POLL=${POLL:-0.05}
PING_INTERVAL=${PING_INTERVAL:-0.02}

# ---- script plumbing --------------------------------------------------------------------------
# usage_from_header FILE: prints FILE's header comment (line 2 up to `set -euo`) and exits 2.
usage_from_header() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$1" >&2
  exit 2
}

# interval_ms 1s -> 1000, 100ms -> 100; fails on anything else.
interval_ms() {
  if [[ $1 =~ ^([0-9]+)ms$ ]]; then
    echo "${BASH_REMATCH[1]}"
  elif [[ $1 =~ ^([0-9]+)s$ ]]; then
    echo $((BASH_REMATCH[1] * 1000))
  else
    return 1
  fi
}

# need_packages [PKG...]: apt-get installs the Debian packages for the lab's tools (ip, bridge,
# ping, tcpdump, stdbuf) that are missing, and the extra PKGs given.
need_packages() {
  local need=("$@")
  command -v ip >/dev/null || need+=(iproute2)
  command -v bridge >/dev/null || need+=(iproute2)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v tcpdump >/dev/null || need+=(tcpdump)
  command -v stdbuf >/dev/null || need+=(coreutils)
  [ ${#need[@]} -gt 0 ] || return 0
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
}

# build_release: cargo build --release of the work tree; sets BIN to target/release/wmgwd2.
build_release() {
  local t
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), then rerun"
  echo "building: cargo build --release"
  t=$(now_us)
  cargo build --release --quiet || die "cargo build --release failed"
  echo "built in $((($(now_us) - t) / 1000000)) s"
  BIN=$PWD/target/release/wmgwd2
}

# Stops the daemons (SIGTERM, then SIGKILL after 3 s) and the helpers, by PID.
# shellcheck disable=SC2317  # invoked by the caller's cleanup
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
# "g v owned" for every vrrp4-<v> on every gateway (owned: 1 = protodown off, or with OWN=addr
# the gateway IP is on the link).
snapshot() {
  local g
  for ((g = 1; g <= G; g++)); do
    if [ "$OWN" = addr ]; then
      # (stderr off: a dump racing with changes says "Dump was interrupted"; the next poll repeats it)
      ip -o -4 -n "$(lab_ns "$NAME" "gw$g")" addr show 2>/dev/null |
        awk -v g="$g" -v b="$B" -v e="$E" '
          $2 ~ /^vrrp4-[0-9]+$/ && $4 ~ /^10\.[0-9]+\.[0-9]+\.1\// { o[substr($2, 7)] = 1 }
          END { for (v = b; v <= e; v++) print g, v, (v in o) ? 1 : 0 }'
    else
      ip -o -n "$(lab_ns "$NAME" "gw$g")" link show type macvlan |
        awk -v g="$g" 'match($2, /^vrrp4-[0-9]+@/) {
          print g, substr($2, 7, RLENGTH - 7), ($0 ~ / protodown on/) ? 0 : 1 }'
    fi
  done
}

# Starts the ownership monitor of every gateway (DIR/mon<g>.txt), tcpdump for ARP in the client
# namespace (DIR/arp.txt), and records the starting state (DIR/own0.txt), the MAC of every
# vrrp4-<v> (DIR/macs.txt) and an empty liveness record (DIR/live.txt). Call before any daemon
# starts.
start_watchers() {
  local g ns t cl
  cl=$(lab_ns "$NAME" cl)
  for ((g = 1; g <= G; g++)); do
    ns=$(lab_ns "$NAME" "gw$g")
    if [ "$OWN" = addr ]; then
      stdbuf -oL ip -ts -o -4 -n "$ns" monitor address >"$DIR/mon$g.txt" 2>&1 &
    else
      stdbuf -oL ip -ts -o -n "$ns" monitor link >"$DIR/mon$g.txt" 2>&1 &
    fi
    HELPERS+=($!)
    PORT[g]=1
    LIVE[g]=0
    DPID[g]=
  done
  ip netns exec "$cl" tcpdump -i any -n -e -tt -l --time-stamp-precision=micro arp \
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
}

# start_pings MAP G...: picks up to 3 VNIs owned (in MAP) by each listed gateway, 8 at most, into
# SAMPLES, pings their gateway IPs from the client every PING_INTERVAL (DIR/ping<v>.txt), and
# waits (bounded) for a first reply from each.
start_pings() {
  local map=$1 g v t cl
  shift
  cl=$(lab_ns "$NAME" cl)
  SAMPLES=()
  for g in "$@"; do
    for v in $(awk -v g="$g" '$2 == g { print $1 }' <<<"$map" | awk 'NR % 7 == 1' | head -3); do
      [[ " ${SAMPLES[*]} " == *" $v "* ]] || SAMPLES+=("$v")
    done
  done
  SAMPLES=("${SAMPLES[@]:0:8}")
  for v in "${SAMPLES[@]}"; do
    ip netns exec "$cl" stdbuf -oL ping -D -n -i "$PING_INTERVAL" "$(lab_gateway_ip "$v")" \
      >"$DIR/ping$v.txt" 2>&1 &
    HELPERS+=($!)
  done
  t=$(now_us)
  for v in "${SAMPLES[@]}"; do
    until grep -qs "bytes from" "$DIR/ping$v.txt"; do
      (($(now_us) - t < BOUND_US)) || die "no ping reply from $(lab_gateway_ip "$v") (VNI $v)"
      sleep 0.05
    done
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
    sleep "$POLL"
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

# Hooks a caller may redefine for another daemon: start_gw G starts gateway G's daemon (sets
# DPID[G]); crash_gw G kills all of its processes with SIGKILL.
start_gw() { start_daemon "$1"; }
crash_gw() { kill -KILL "${DPID[$1]}"; }

# act KIND G T0: makes event KIND happen to gateway G at T0 (µs) and records G's liveness.
#   crash    SIGKILL (crash_gw), reaped          start    start_gw
#   stop     SIGTERM, waits (bounded) until it exits; sets REAPED and REAPED_US, and the
#            daemon counts as live until it exited (when its interfaces are all released)
#   cut      switch port p<G> down               restore  switch port p<G> up
act() {
  local kind=$1 g=$2 t0=$3 sw
  sw=$(lab_ns "$NAME" sw)
  case $kind in
    crash)
      # (stderr off: bash would print "Killed" when it reaps the daemon)
      {
        crash_gw "$g" || true
        reap_daemon "$g"
      } 2>/dev/null
      set_live "$g" "$t0"
      ;;
    start)
      start_gw "$g"
      set_live "$g" "$t0"
      ;;
    stop)
      kill -TERM "${DPID[g]}" 2>/dev/null || true
      reap_daemon "$g"
      set_live "$g" "$REAPED_US"
      ;;
    cut | restore)
      ip -n "$sw" link set "p$g" "$([ "$kind" = cut ] && echo down || echo up)"
      PORT[g]=$([ "$kind" = cut ] && echo 0 || echo 1)
      set_live "$g" "$t0"
      ;;
    *) die "act: unknown event '$kind'" ;;
  esac
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

# Sets LIVE[g] (daemon runs and port up: what wait_converged counts) and appends gateway g's
# liveness at time t (µs) under LIVE_RULE to the record the analysis replays.
set_live() {
  local g=$1 t=$2 rec
  if [ -n "${DPID[g]}" ] && [ "${PORT[g]}" = 1 ]; then LIVE[g]=1; else LIVE[g]=0; fi
  rec=${LIVE[g]}
  [ "$LIVE_RULE" = daemon ] || rec=${PORT[g]}
  echo "$(secs_exact "$t") L $g $rec" >>"$DIR/live.txt"
}

secs_exact() { echo "${1:0:${#1}-6}.${1: -6}"; }

# ---- analysis ---------------------------------------------------------------------------------
# "t O g v owned" records of gateway g's ownership changes, from its monitor (DIR/mon<g>.txt).
own_records() {
  awk -v g="$1" -v kind="$OWN" '
    function stamp(   ts, p, sec) {
      ts = substr($1, 2, length($1) - 2)      # 2026-11-23T00:38:55.887652
      split(ts, p, /[-T:]/)
      sec = p[6]
      return mktime(p[1] " " p[2] " " p[3] " " p[4] " " p[5] " " int(sec)) + sec - int(sec)
    }
    kind == "link" && /^\[/ && match($0, /vrrp4-[0-9]+@/) {
      v = substr($0, RSTART + 6, RLENGTH - 7)
      printf "%.6f O %d %s %d\n", stamp(), g, v, ($0 ~ / protodown on/) ? 0 : 1
    }
    # [ts] 4: vrrp4-1    inet 10.100.1.1/24 ...   or   [ts] Deleted 4: vrrp4-1    inet ...
    kind == "addr" && /^\[/ && match($0, / vrrp4-[0-9]+ +inet 10\.[0-9]+\.[0-9]+\.1\//) {
      split(substr($0, RSTART + 7), w, " ")
      printf "%.6f O %d %s %d\n", stamp(), g, w[1], ($2 == "Deleted") ? 0 : 1
    }' "$DIR/mon$1.txt"
}

# Ownership anomalies among live gateways in [t0, t1] (seconds). Replays the starting snapshot,
# every monitor record and every liveness change in time order. Prints:
#   ownerless_vnis ownerless_max_s double_vnis double_max_s last_change_s open_vnis
# (open_vnis: VNIs still without one owner at t1; their moments are counted up to t1.)
anomalies() {
  local t0=$1 t1=$2 g
  {
    cat "$DIR/own0.txt" "$DIR/live.txt"
    for ((g = 1; g <= G; g++)); do own_records "$g"; done
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
      for (v = b; v <= e; v++) if (st[v] != 1) { close_(v, t1); open++ }
      for (v in none) nn++
      for (v in dbl) nd++
      printf "%d %.3f %d %.3f %.3f %d\n", nn, nmax, nd, dmax, last, open
    }'
}

# Moved VNIs between two maps: "v new_owner" lines.
moved() {
  awk 'NR == FNR { before[$1] = $2; next } before[$1] != $2 { print $1, $2 }' \
    <(echo "$1") <(echo "$2")
}

# "count max_s per_vni min_s" for GARPs in [t0, t1]: moved VNIs (file of "v owner") announced by
# the MAC of their new owner's vrrp4-<v> (file macs.txt: "g v mac"), the latest first
# announcement, the average number of such GARPs per announced VNI, and the earliest one.
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
      if (min == "" || first[v] < min) min = first[v]
    }
    END { for (v in first) n++; printf "%d %.3f %.1f %.3f\n", n, max, n ? total / n : 0, min }' \
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

# step_figures T0_US MOVED_FILE: the figures of one step, from T0 (µs) to now, against the owner
# maps PREV (before) and MAP (after). Writes the moved VNIs to MOVED_FILE and sets T0S, T1S,
# NMOV; GA_N GA_MAX GA_EACH GA_MIN (garps); GP GPV (max_gap); AN_N AN_MAX AD_N AD_MAX LAST OPEN
# (anomalies).
step_figures() {
  T0S=$(secs_exact "$1")
  T1S=$(secs_exact "$(now_us)")
  moved "$PREV" "$MAP" >"$2"
  NMOV=$(wc -l <"$2")
  read -r GA_N GA_MAX GA_EACH GA_MIN < <(garps "$T0S" "$T1S" "$2")
  read -r GP GPV < <(max_gap "$T0S" "$T1S")
  read -r AN_N AN_MAX AD_N AD_MAX LAST OPEN < <(anomalies "$T0S" "$T1S")
}

# start_all_converge: starts the G gateways' daemons (start_gw), counts them live from now, and
# waits until the owner map converged (wait_converged: sets MAP and CONV_US). Sets DAEMONS_T0 (µs).
start_all_converge() {
  local g
  DAEMONS_T0=$(now_us)
  for ((g = 1; g <= G; g++)); do
    start_gw "$g"
    set_live "$g" "$DAEMONS_T0"
  done
  wait_converged "$DAEMONS_T0"
}
