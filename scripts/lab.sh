#!/usr/bin/env bash
# lab.sh: the topology builder under the EVPN lab (scripts/lab-evpn.sh sources it). Everything
# else (tests/lab.rs, the drill, stall-check, the benchmark) uses the lab crate
# (scripts/lab/src/topo.rs), which builds the same topology; this file goes once the EVPN lab is
# ported onto it.
#
# Usage (as root):
#   scripts/lab.sh up NAME G V [--mac distinct|shared] [--vni-base B] [--gateway-ip shared|vrrp]
#   scripts/lab.sh down NAME
#
#   NAME  per-run prefix chosen by the caller, 1-8 of [a-z0-9] starting with a letter (wmt1234a)
#   G     gateways (1-200), V VNIs (1-...), B first VNI (default 1): VNIs B..B+V-1
#   up    exits 0 when every namespace, link and address is in place; a failure half-way removes
#         what it built. It refuses a NAME whose namespaces already exist.
#   down  deletes every namespace whose name starts with NAME- (idempotent, never fails when
#         absent). It kills nothing: stop your daemons by PID first.
#
# Topology (everything lives in namespaces named NAME-*, nothing touches the root namespace):
#
#   NAME-sw   bridge br0 (mtu 1600), ports p1..pG and pcl
#   NAME-gwg  eth0 (veth to p<g>, mtu 1600) 10.0.1.g/24: underlay and heartbeat segment
#             (broadcast 10.0.1.255); per VNI v: vxlan<v> (id v, local 10.0.1.g, dstport 4789,
#             dev eth0, mtu 1500) with head-end replication to every other VTEP, and on top
#             the macvlan vrrp4-<v> (mode bridge) holding 10.(100+v/256).(v%256).1/24, the same
#             gateway IP on every gateway; admin-up, protodown off (the daemon sets it).
#             --mac shared: every gateway's vrrp4-<v> has MAC 02:00:5e:HH:MM:LL (v, 24-bit hex);
#             --mac distinct (default): the kernel's random MAC.
#             --gateway-ip vrrp: vrrp4-<v> holds this gateway's own address 10.(100+v/256).(v%256).(128+g)/24
#             (lab_gateway_own_ip v g) instead of the gateway IP, which is left to a VRRP daemon
#             (keepalived) to add as its virtual address; G is then at most 126. Default: shared.
#             sysctls arp_ignore=1 and arp_announce=2 (all, default: set before any interface
#             exists) so a protodown'd macvlan's lower vxlan never answers ARP for the gateway IP.
#   NAME-cl   eth0 (veth to pcl) 10.0.1.250/24; per VNI: vxlan<v> holding
#             10.(100+v/256).(v%256).100/24, flooding to every gateway.
#   IPv6 is disabled in every lab namespace (all + default, before interfaces exist): the daemon
#   is IPv4-only, and thousands of links doing DAD/MLD would only add flood traffic and time.
#
# Sourcing: `source scripts/lab.sh` defines the functions below and runs nothing.
#   lab_up NAME G V [--mac distinct|shared] [--vni-base B] [--gateway-ip shared|vrrp]   build (as `up` above)
#   lab_down NAME                  delete NAME-* namespaces (as `down` above)
#   lab_ns NAME ROLE               echo the namespace name: lab_ns wmd1 gw2 -> wmd1-gw2, lab_ns wmd1 cl
#   lab_namespaces NAME            echo the existing NAME-* namespaces, one a line
#   lab_underlay_ip G              echo gateway G's underlay address (10.0.1.G); client is 10.0.1.250
#   lab_gateway_ip V               echo the gateway IP of VNI V (10.(100+V/256).(V%256).1)
#   lab_client_ip V                echo the client's address in VNI V (...100)
#   lab_gateway_own_ip V G         echo gateway G's own address in VNI V (...128+G; --gateway-ip vrrp)
#   lab_shared_mac V               echo the shared MAC of VNI V (02:00:5e:HH:MM:LL)
#   lab_need_tools                 apt-get install iproute2 when ip/bridge are missing
#   lab_abort                      for the caller's INT/TERM trap: undo a lab_up under way
#   LAB_CLIENT_UNDERLAY_IP         10.0.1.250
# The functions return non-zero on error instead of exiting, and say why on stderr.
#
# Speed: every namespace's links, addresses and fdb entries are written to a command file and
# applied with one `ip -n NS -batch` and one `bridge -n NS -batch` per namespace (gateways in
# parallel), never one process per interface. Measured on 2 cores, kernel 6.18, iproute2 6.1:
#   up G=3 V=1000 (7000 links, 12000 fdb entries): 1.8-2.1 s idle, 3.8 s beside other labs;
#   G=3 V=100: 0.25-0.5 s;  G=3 V=16: 0.1 s.
#   Right after a large lab was torn down, expect up to ~2 s more: the kernel frees namespaces in
#   the background, so `down` returns at once while the next `up` competes with that cleanup.

LAB_CLIENT_UNDERLAY_IP=10.0.1.250
LAB_BUILDING=  # NAME while lab_up builds it; lab_abort cleans up after it
LAB_TMP=       # lab_up's temporary directory
LAB_JOBS=()    # PIDs of lab_up's background batch jobs
LAB_CHILD=     # PID of the command lab_child runs
LAB_MAX_GATEWAYS=200
# 10.(100 + v/256) must stay <= 10.255: v <= 155*256 + 255.
LAB_MAX_VNI=39935

lab_err() { echo "lab.sh: $*" >&2; }

# lab_usage FILE: prints FILE's header comment (its usage) to stderr and exits 2.
lab_usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$1" >&2
  exit 2
}

lab_ns() { echo "$1-$2"; }

lab_underlay_ip() { echo "10.0.1.$1"; }

lab_gateway_ip() { echo "10.$((100 + $1 / 256)).$(($1 % 256)).1"; }

lab_client_ip() { echo "10.$((100 + $1 / 256)).$(($1 % 256)).100"; }

lab_gateway_own_ip() { echo "10.$((100 + $1 / 256)).$(($1 % 256)).$((128 + $2))"; }

lab_shared_mac() {
  printf '02:00:5e:%02x:%02x:%02x\n' $((($1 >> 16) & 255)) $((($1 >> 8) & 255)) $(($1 & 255))
}

lab_namespaces() {
  local name=$1 ns
  # `ip netns list` prints "name (id: N)"; keep the first word.
  ip netns list 2>/dev/null | while read -r ns _; do
    [[ $ns == "$name"-* ]] && echo "$ns"
  done
  return 0
}

lab_need_tools() {
  local need=()
  command -v ip >/dev/null || need+=(iproute2)
  command -v bridge >/dev/null || need+=(iproute2)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "lab.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
}

lab_check_name() {
  if [[ ! $1 =~ ^[a-z][a-z0-9]{0,7}$ ]]; then
    lab_err "NAME must be 1-8 characters of [a-z0-9] starting with a letter, got '$1'"
    return 1
  fi
}

lab_down() {
  local name=${1:?lab_down NAME} ns
  lab_check_name "$name" || return 1
  for ns in $(lab_namespaces "$name"); do
    ip netns del "$ns" 2>/dev/null || [ ! -e "/run/netns/$ns" ] || lab_err "could not delete $ns"
  done
  return 0
}

# Writes the namespace's sysctls: IPv6 off, and for gateways the ARP settings. Runs before any
# interface other than lo exists, so the `default` values apply to all of them.
# shellcheck disable=SC2016  # $f is expanded by the sh inside the namespace
lab_sysctls() {
  local ns=$1 role=$2
  local script='
    for f in all default; do
      echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6
    done'
  if [ "$role" = gw ]; then
    script+='
    for f in all default; do
      echo 1 > /proc/sys/net/ipv4/conf/$f/arp_ignore
      echo 2 > /proc/sys/net/ipv4/conf/$f/arp_announce
    done'
  fi
  ip netns exec "$ns" sh -ec "$script"
}

# lab_write_vtep DIR NS LOCAL_IP ROLE MAC_MODE HOST_OCTET B V PEER_IPS...
# Writes DIR/NS.ip and DIR/NS.bridge for one VTEP (a gateway or the client). HOST_OCTET is the
# last octet of the gateway's address on vrrp4-<v> (1: the shared gateway IP).
lab_write_vtep() {
  local dir=$1 ns=$2 local_ip=$3 role=$4 mac=$5 host=$6 base=$7 count=$8
  shift 8
  local peers=("$@") v last=$((base + count - 1)) p a b
  {
    echo "link set lo up"
    echo "link set eth0 up"
    echo "addr add $local_ip/24 brd 10.0.1.255 dev eth0"
    for ((v = base; v <= last; v++)); do
      a=$((100 + v / 256)) b=$((v % 256))
      echo "link add vxlan$v mtu 1500 up type vxlan id $v local $local_ip dstport 4789 dev eth0"
      if [ "$role" = gw ]; then
        if [ "$mac" = shared ]; then
          printf 'link add link vxlan%d name vrrp4-%d address 02:00:5e:%02x:%02x:%02x up type macvlan mode bridge\n' \
            "$v" "$v" $(((v >> 16) & 255)) $(((v >> 8) & 255)) $((v & 255))
        else
          echo "link add link vxlan$v name vrrp4-$v up type macvlan mode bridge"
        fi
        echo "addr add 10.$a.$b.$host/24 dev vrrp4-$v"
      else
        echo "addr add 10.$a.$b.100/24 dev vxlan$v"
      fi
    done
  } >"$dir/$ns.ip"
  {
    for ((v = base; v <= last; v++)); do
      for p in "${peers[@]}"; do
        echo "fdb append 00:00:00:00:00:00 dev vxlan$v dst $p"
      done
    done
  } >"$dir/$ns.bridge"
}

# Runs a command as a child whose PID is in LAB_CHILD while it runs, so a trap can end it.
lab_child() {
  local rc=0
  "$@" &
  LAB_CHILD=$!
  wait "$LAB_CHILD" || rc=$?
  LAB_CHILD=
  return $rc
}

# Applies DIR/NS.ip then DIR/NS.bridge; output goes to DIR/NS.log.
lab_apply() {
  local dir=$1 ns=$2
  if ! { lab_child ip -n "$ns" -batch "$dir/$ns.ip" &&
    lab_child bridge -n "$ns" -batch "$dir/$ns.bridge"; } >"$dir/$ns.log" 2>&1; then
    lab_err "building $ns failed:"
    sed 's/^/  /' "$dir/$ns.log" >&2
    return 1
  fi
}

lab_up() {
  local name=${1:-} gws=${2:-} vnis=${3:-} mac=distinct base=1 gwip=shared
  if [ $# -lt 3 ]; then
    lab_err "usage: lab_up NAME G V [--mac distinct|shared] [--vni-base B] [--gateway-ip shared|vrrp]"
    return 1
  fi
  shift 3
  while [ $# -gt 0 ]; do
    case $1 in
      --mac) mac=${2:-} && shift 2 ;;
      --mac=*) mac=${1#--mac=} && shift ;;
      --vni-base) base=${2:-} && shift 2 ;;
      --vni-base=*) base=${1#--vni-base=} && shift ;;
      --gateway-ip) gwip=${2:-} && shift 2 ;;
      --gateway-ip=*) gwip=${1#--gateway-ip=} && shift ;;
      *) lab_err "unknown option '$1'" && return 1 ;;
    esac
  done
  lab_check_name "$name" || return 1
  if [[ ! $gws =~ ^[0-9]+$ ]] || ((gws < 1 || gws > LAB_MAX_GATEWAYS)); then
    lab_err "G must be 1-$LAB_MAX_GATEWAYS, got '$gws'" && return 1
  fi
  if [[ ! $vnis =~ ^[0-9]+$ ]] || [[ ! $base =~ ^[0-9]+$ ]] || ((vnis < 1 || base < 1)) ||
    ((base + vnis - 1 > LAB_MAX_VNI)); then
    lab_err "need V >= 1, B >= 1 and B+V-1 <= $LAB_MAX_VNI, got V='$vnis' B='$base'" && return 1
  fi
  case $mac in distinct | shared) ;; *) lab_err "--mac must be distinct or shared, got '$mac'" && return 1 ;; esac
  case $gwip in shared | vrrp) ;; *) lab_err "--gateway-ip must be shared or vrrp, got '$gwip'" && return 1 ;; esac
  if [ "$gwip" = vrrp ] && ((gws > 126)); then
    lab_err "--gateway-ip vrrp allows at most 126 gateways" && return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    lab_err "must run as root (it creates network namespaces)" && return 1
  fi
  lab_need_tools || return 1
  if [ -n "$(lab_namespaces "$name")" ]; then
    lab_err "namespaces $name-* exist already; pick another NAME or run: lab.sh down $name"
    return 1
  fi

  local dir rc=0
  # From here on the NAME-* namespaces are ours: lab_main's Ctrl-C trap may delete them.
  LAB_BUILDING=$name
  dir=$(mktemp -d "${TMPDIR:-/tmp}/lab-$name.XXXXXX") || { LAB_BUILDING= && return 1; }
  LAB_TMP=$dir
  lab_build "$dir" "$name" "$gws" "$vnis" "$mac" "$base" "$gwip" || rc=$?
  rm -rf "$dir"
  LAB_TMP=
  if [ $rc -ne 0 ]; then
    lab_down "$name"
  fi
  LAB_BUILDING=
  return $rc
}

# For a signal trap of a script that calls lab_up: stops lab_up's batch jobs (by PID), removes
# its temporary files and the half-built namespaces. Does nothing when no lab_up is under way.
lab_abort() {
  local p
  for p in "${LAB_JOBS[@]}" $LAB_CHILD; do kill "$p" 2>/dev/null || true; done
  LAB_JOBS=()
  [ -z "$LAB_TMP" ] || rm -rf "$LAB_TMP"
  LAB_TMP=
  [ -z "$LAB_BUILDING" ] || lab_down "$LAB_BUILDING"
  LAB_BUILDING=
}

lab_build() {
  local dir=$1 name=$2 gws=$3 vnis=$4 mac=$5 base=$6 gwip=$7
  local sw cl g ns vteps=() others=() p host
  sw=$(lab_ns "$name" sw)
  cl=$(lab_ns "$name" cl)
  for ((g = 1; g <= gws; g++)); do vteps+=("$(lab_underlay_ip "$g")"); done

  for ns in "$sw" "$cl" $(for ((g = 1; g <= gws; g++)); do lab_ns "$name" "gw$g"; done); do
    ip netns add "$ns" || return 1
  done
  lab_sysctls "$sw" sw || return 1
  lab_sysctls "$cl" cl || return 1
  for ((g = 1; g <= gws; g++)); do
    lab_sysctls "$(lab_ns "$name" "gw$g")" gw || return 1
  done

  # The switch: br0 and one veth per host, the peer end created straight in the host's namespace.
  {
    echo "link set lo up"
    echo "link add br0 mtu 1600 type bridge stp_state 0 forward_delay 0"
    for ((g = 1; g <= gws; g++)); do
      echo "link add p$g mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns $(lab_ns "$name" "gw$g")"
    done
    echo "link add pcl mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns $cl"
    echo "link set br0 up"
  } >"$dir/$sw.ip"
  : >"$dir/$sw.bridge"
  lab_apply "$dir" "$sw" || return 1

  # The hosts, in parallel: every VTEP floods to every other VTEP.
  for ((g = 1; g <= gws; g++)); do
    others=()
    for p in "${vteps[@]}" "$LAB_CLIENT_UNDERLAY_IP"; do
      [ "$p" = "$(lab_underlay_ip "$g")" ] || others+=("$p")
    done
    ns=$(lab_ns "$name" "gw$g")
    host=1
    [ "$gwip" = shared ] || host=$((128 + g))
    lab_write_vtep "$dir" "$ns" "$(lab_underlay_ip "$g")" gw "$mac" "$host" "$base" "$vnis" "${others[@]}"
  done
  lab_write_vtep "$dir" "$cl" "$LAB_CLIENT_UNDERLAY_IP" cl "$mac" 100 "$base" "$vnis" "${vteps[@]}"
  lab_apply_parallel "$dir" "$cl" $(for ((g = 1; g <= gws; g++)); do lab_ns "$name" "gw$g"; done)
}

# lab_apply_parallel DIR NS...: lab_apply for every NS at once (one ip -batch each); fails when
# one of them failed. lab_abort stops them.
lab_apply_parallel() {
  local dir=$1 ns p rc=0
  shift
  for ns in "$@"; do
    (
      trap '[ -z "$LAB_CHILD" ] || kill "$LAB_CHILD" 2>/dev/null; exit 143' TERM
      lab_apply "$dir" "$ns"
    ) &
    LAB_JOBS+=($!)
  done
  for p in "${LAB_JOBS[@]}"; do wait "$p" || rc=1; done
  LAB_JOBS=()
  return $rc
}

lab_main() {
  set -euo pipefail
  local cmd=${1:-}
  case $cmd in
    up)
      shift
      # Ctrl-C or a kill during the build: remove what was built (lab_up already does on error).
      # LAB_BUILDING is set only after lab_up checked that NAME was free, so a clash never
      # deletes another run's namespaces.
      trap 'trap - INT TERM; lab_abort; exit 130' INT TERM
      lab_up "$@"
      ;;
    down)
      [ $# -eq 2 ] || { lab_err "usage: lab.sh down NAME" && exit 2; }
      lab_down "$2"
      ;;
    *) lab_usage "${BASH_SOURCE[0]}" ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  lab_main "$@"
fi
