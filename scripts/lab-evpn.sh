#!/usr/bin/env bash
# lab-evpn.sh: the BGP EVPN lab: wmgwd2's gateways beside real FRR, seen from a remote leaf.
#
# Usage (as root):
#   scripts/lab-evpn.sh up NAME [--gateways G] [--mac shared|distinct]
#   scripts/lab-evpn.sh down NAME
#   scripts/lab-evpn.sh vtysh NAME ROLE 'show ...'   (ROLE: rr, lf, gw1, gw2, ...)
#
#   NAME  per-run prefix, 1-8 of [a-z0-9] starting with a letter (as scripts/lab.sh)
#   G     gateways, 2-9 (default 2);  --mac: the gateway MAC convention (default shared)
#   up    builds the namespaces, starts FRR (zebra + bgpd) in rr, lf and every gw, and returns
#         once every BGP session is up and the leaf knows every gateway as a VTEP of each VNI.
#         It starts no wmgwd2: the caller does (scripts/evpn-drill.sh, tests/evpn.rs). A failure
#         half-way stops what it started and removes what it built.
#   down  stops FRR by its pid files, deletes every NAME-* namespace and the state directory
#         (idempotent). Stop your wmgwd2 processes by PID first.
#
# Topology (namespaces NAME-*; nothing touches the root namespace):
#
#   NAME-sw    underlay switch: bridge br0 (mtu 1600), ports p1..pG, prr, plf. It also carries
#              wmgwd2's heartbeats (10.0.1.0/24, broadcast 10.0.1.255).
#   NAME-rr    eth0 10.0.1.254: FRR route reflector (iBGP, AS 65000, l2vpn evpn).
#   NAME-gwg   eth0 (mtu 1600) 10.0.1.g/24; per VNI V in 100 101:
#                br<V> (mtu 1500) with ports
#                  vxlan<V>  id V, local 10.0.1.g, dstport 4789, nolearning, mtu 1500,
#                            bridge port learning off (zebra installs the remote MACs)
#                  gwp<V>    veth, its peer gwl<V> is the lower device of
#                vrrp4-<V>   macvlan mode bridge, gateway IP 10.100.<V-256>.1/24 (lab_gateway_ip),
#                            the same on every gateway; --mac shared: 00:00:5e:00:01:<V%256>
#                            (VRRP style) on every gateway, --mac distinct: the kernel's random MAC
#              sysctls arp_ignore=1, arp_announce=2 (lab.sh's gateway sysctls); FRR from
#              deploy/frr.conf.example (advertise-all-vni, advertise-svi-ip, timers 1 3, connect 1).
#   NAME-lf    the remote leaf: eth0 10.0.1.200; per VNI br<V>, vxlan<V> (as above), and a veth
#              h<V> to the host of that VNI. FRR from the same example file.
#   NAME-h<V>  a host in VNI V: eth0 lab_client_ip V (10.100.<V-256>.100/24), default route via
#              the VNI's gateway IP.
#   State: $EVPN_RUN/NAME/ROLE (default /run/lab-evpn/NAME/rr, .../lf, .../gw1): frr.conf, pid
#   files, vty sockets, frr.log; owned by frr:frr.
#
# Sourcing: `source scripts/lab-evpn.sh` (it sources scripts/lab.sh) defines, runs nothing:
#   evpn_up NAME [--gateways G] [--mac M] / evpn_down NAME    as above
#   evpn_abort                       for a caller's INT/TERM trap: undo an evpn_up under way
#   evpn_dir NAME ROLE               the FRR state directory of a namespace
#   evpn_vtysh NAME ROLE CMD...      vtysh -c CMD ... against that namespace's FRR
#   evpn_mac_json NAME ROLE V MAC    `show evpn mac vni V mac MAC json` (zebra's view)
#   evpn_mac_where NAME ROLE V MAC   prints "local", the remote VTEP address, or "none"
#   evpn_shared_mac V                the shared gateway MAC of VNI V
#   evpn_gateway_underlay G          10.0.1.G;  EVPN_LEAF_IP, EVPN_RR_IP, EVPN_VNIS
#   evpn_need_tools                  apt-get install frr jq iputils-ping when missing
#   evpn_wait WHAT SECONDS CMD...    run CMD every 0.1 s until it succeeds; fails after SECONDS

EVPN_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lab.sh
source "$EVPN_SCRIPTS/lab.sh"

EVPN_VNIS=(100 101)
EVPN_RR_IP=10.0.1.254
EVPN_LEAF_IP=10.0.1.200
EVPN_RUN=${EVPN_RUN:-/run/lab-evpn}
EVPN_EXAMPLE=$EVPN_SCRIPTS/../deploy/frr.conf.example
EVPN_FRR=/usr/lib/frr
EVPN_BUILDING= # NAME while evpn_up builds it

evpn_err() { echo "lab-evpn.sh: $*" >&2; }

evpn_gateway_underlay() { lab_underlay_ip "$1"; }

evpn_shared_mac() { printf '00:00:5e:00:01:%02x\n' $(($1 & 255)); }

evpn_dir() { echo "$EVPN_RUN/$1/$2"; }

evpn_need_tools() {
  local need=()
  [ -x "$EVPN_FRR/zebra" ] && [ -x "$EVPN_FRR/bgpd" ] && command -v vtysh >/dev/null || need+=(frr)
  command -v jq >/dev/null || need+=(jq)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v ip >/dev/null && command -v bridge >/dev/null || need+=(iproute2)
  [ ${#need[@]} -eq 0 ] && return 0
  evpn_err "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The frr package's own service is not used (on a systemd host it starts in the root
  # namespace with bgpd off; the lab never talks to it).
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
}

evpn_wait() {
  local what=$1 bound=$2 t0=$SECONDS
  shift 2
  until "$@"; do
    if ((SECONDS - t0 >= bound)); then
      evpn_err "timed out after ${bound}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

evpn_vtysh() {
  local dir
  dir=$(evpn_dir "$1" "$2")
  shift 2
  local args=() c
  for c in "$@"; do args+=(-c "$c"); done
  vtysh --vty_socket "$dir" --config_dir "$dir" "${args[@]}"
}

evpn_mac_json() {
  evpn_vtysh "$1" "$2" "show evpn mac vni $3 mac $4 json"
}

evpn_mac_where() {
  evpn_mac_json "$@" 2>/dev/null | jq -r '
    (.[keys[0]] // {}) as $m
    | if $m.type == "local" then "local"
      elif $m.type == "remote" then ($m.remoteVtep // "none")
      else "none" end' 2>/dev/null || echo none
}

# Stops the FRR daemons whose pid files are in DIR: SIGTERM, then SIGKILL after 5 s. Only a
# process whose command line names this pid file is signalled (a stale file never hits another).
evpn_frr_stop() {
  local dir=$1 d pid i
  for d in bgpd zebra; do
    [ -f "$dir/$d.pid" ] || continue
    pid=$(cat "$dir/$d.pid" 2>/dev/null) || continue
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-i $dir/$d.pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [ -d "/proc/$pid" ] || break
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
        sleep 0.1
      done
      if [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        evpn_err "$d ($pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$dir/$d.pid"
  done
}

evpn_down() {
  local name=${1:?evpn_down NAME} dir
  lab_check_name "$name" || return 1
  for dir in "$EVPN_RUN/$name"/*/; do
    [ -d "$dir" ] || continue
    evpn_frr_stop "${dir%/}"
    # FRR's -N pathspace creates an empty /var/run/frr/NS even when every path is given.
    rmdir "/var/run/frr/$(lab_ns "$name" "$(basename "$dir")")" 2>/dev/null || true
  done
  lab_down "$name"
  rm -rf "${EVPN_RUN:?}/$name"
  return 0
}

evpn_abort() {
  lab_abort
  [ -z "$EVPN_BUILDING" ] || evpn_down "$EVPN_BUILDING"
  EVPN_BUILDING=
}

# evpn_write_vtep FILE LOCAL_IP ROLE MAC_MODE NAME: the ip batch of a gateway or the leaf.
evpn_write_vtep() {
  local file=$1 local_ip=$2 role=$3 mac=$4 name=$5 v
  {
    echo "link set lo up"
    echo "link set eth0 up"
    echo "addr add $local_ip/24 brd 10.0.1.255 dev eth0"
    for v in "${EVPN_VNIS[@]}"; do
      echo "link add br$v mtu 1500 type bridge stp_state 0 forward_delay 0"
      echo "link add vxlan$v mtu 1500 master br$v type vxlan id $v local $local_ip dstport 4789 nolearning dev eth0"
      if [ "$role" = gw ]; then
        echo "link add gwp$v mtu 1500 master br$v type veth peer name gwl$v mtu 1500"
        echo "link set gwl$v up"
        if [ "$mac" = shared ]; then
          echo "link add link gwl$v name vrrp4-$v address $(evpn_shared_mac "$v") type macvlan mode bridge"
        else
          echo "link add link gwl$v name vrrp4-$v type macvlan mode bridge"
        fi
        echo "addr add $(lab_gateway_ip "$v")/24 dev vrrp4-$v"
        echo "link set gwp$v up"
        echo "link set vrrp4-$v up"
      else
        echo "link add h$v mtu 1500 master br$v up type veth peer name eth0 mtu 1500 netns $(lab_ns "$name" "h$v")"
      fi
      echo "link set vxlan$v up"
      echo "link set br$v up"
    done
  } >"$file"
}

# evpn_frr_conf NAME ROLE IP: writes the namespace's frr.conf (and empty per-daemon files).
evpn_frr_conf() {
  local name=$1 role=$2 ip=$3 dir peers=() g
  dir=$(evpn_dir "$name" "$role")
  mkdir -p "$dir"
  if [ "$role" = rr ]; then
    for g in $(evpn_vteps "$name"); do peers+=("$g"); done
    {
      echo "frr defaults datacenter"
      echo "log file $dir/frr.log informational"
      echo "!"
      echo "router bgp 65000"
      echo " bgp router-id $ip"
      echo " bgp cluster-id $ip"
      echo " no bgp default ipv4-unicast"
      echo " neighbor vteps peer-group"
      echo " neighbor vteps remote-as internal"
      echo " neighbor vteps timers 1 3"
      echo " neighbor vteps timers connect 1"
      for g in "${peers[@]}"; do echo " neighbor $g peer-group vteps"; done
      echo " !"
      echo " address-family l2vpn evpn"
      echo "  neighbor vteps activate"
      echo "  neighbor vteps route-reflector-client"
      echo " exit-address-family"
      echo "exit"
    } >"$dir/frr.conf"
  else
    sed -e "s/192\.0\.2\.11/$ip/g" -e "s/192\.0\.2\.254/$EVPN_RR_IP/g" \
      -e "s|^log syslog.*|log file $dir/frr.log informational|" "$EVPN_EXAMPLE" >"$dir/frr.conf"
  fi
  : >"$dir/zebra.conf"
  : >"$dir/bgpd.conf"
  : >"$dir/vtysh.conf"
  chown -R frr:frr "$dir"
}

# The VTEP addresses the route reflector peers with: the gateways and the leaf.
evpn_vteps() {
  local name=$1 ns
  for ns in $(lab_namespaces "$name"); do
    case $ns in "$name"-gw*) evpn_gateway_underlay "${ns#"$name"-gw}" ;; esac
  done
  echo "$EVPN_LEAF_IP"
}

# evpn_frr_start NAME ROLE: zebra, then bgpd, then `vtysh -b` loads frr.conf into both.
evpn_frr_start() {
  local name=$1 role=$2 dir ns d
  dir=$(evpn_dir "$name" "$role")
  ns=$(lab_ns "$name" "$role")
  for d in zebra bgpd; do
    # -N: the pathspace (any default path FRR still derives lands in a per-namespace place);
    # -P 0: no TCP vty; -F datacenter: the profile is read at start, not from frr.conf.
    ip netns exec "$ns" "$EVPN_FRR/$d" -d -F datacenter -N "$ns" -P 0 \
      --vty_socket "$dir" -z "$dir/zserv.api" -i "$dir/$d.pid" -f "$dir/$d.conf" \
      >>"$dir/start.log" 2>&1 || {
      evpn_err "$d in $ns did not start:" && sed 's/^/  /' "$dir/start.log" >&2 && return 1
    }
    evpn_wait "$d's vty socket in $ns" 10 test -S "$dir/$d.vty" || return 1
  done
  evpn_wait "zebra's zserv socket in $ns" 10 test -S "$dir/zserv.api" || return 1
  if ! vtysh --vty_socket "$dir" --config_dir "$dir" -b >>"$dir/start.log" 2>&1; then
    evpn_err "loading $dir/frr.conf failed:" && sed 's/^/  /' "$dir/start.log" >&2 && return 1
  fi
}

# Every BGP session at the route reflector is up, and the leaf and every gateway know every other
# VTEP for every VNI (type-3 routes).
evpn_ready() {
  local name=$1 n role v g
  n=$(evpn_vteps "$name" | wc -l)
  [ "$(evpn_vtysh "$name" rr 'show bgp l2vpn evpn summary json' 2>/dev/null |
    jq '[.peers[]? | select(.state == "Established")] | length' 2>/dev/null)" = "$n" ] || return 1
  for role in lf $(for ((g = 1; g < n; g++)); do echo "gw$g"; done); do
    for v in "${EVPN_VNIS[@]}"; do
      [ "$(evpn_vtysh "$name" "$role" "show evpn vni $v json" 2>/dev/null |
        jq '.numRemoteVteps | if type == "array" then length else . end' 2>/dev/null)" = $((n - 1)) ] || return 1
    done
  done
}

evpn_up() {
  local name=${1:-} gws=2 mac=shared
  [ $# -ge 1 ] || { evpn_err "usage: evpn_up NAME [--gateways G] [--mac shared|distinct]" && return 1; }
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --gateways) gws=${2:-} && shift 2 ;;
      --mac) mac=${2:-} && shift 2 ;;
      *) evpn_err "unknown option '$1'" && return 1 ;;
    esac
  done
  lab_check_name "$name" || return 1
  [[ $gws =~ ^[2-9]$ ]] || { evpn_err "--gateways must be 2-9, got '$gws'" && return 1; }
  case $mac in shared | distinct) ;; *) evpn_err "--mac must be shared or distinct, got '$mac'" && return 1 ;; esac
  [ "$(id -u)" -eq 0 ] || { evpn_err "must run as root (namespaces, FRR)" && return 1; }
  evpn_need_tools || return 1
  if [ -n "$(lab_namespaces "$name")" ] || [ -e "$EVPN_RUN/$name" ]; then
    evpn_err "$name-* namespaces or $EVPN_RUN/$name exist; pick another NAME or: lab-evpn.sh down $name"
    return 1
  fi
  local rc=0 dir
  EVPN_BUILDING=$name
  LAB_BUILDING=$name
  dir=$(mktemp -d "${TMPDIR:-/tmp}/lab-evpn-$name.XXXXXX") || { evpn_abort && return 1; }
  LAB_TMP=$dir
  evpn_build "$dir" "$name" "$gws" "$mac" || rc=$?
  rm -rf "$dir"
  LAB_TMP=
  LAB_BUILDING=
  if [ $rc -eq 0 ]; then
    evpn_wait "BGP sessions and EVPN VTEPs in $name" 60 evpn_ready "$name" || rc=1
  fi
  if [ $rc -ne 0 ]; then
    evpn_down "$name"
  fi
  EVPN_BUILDING=
  return $rc
}

evpn_build() {
  local dir=$1 name=$2 gws=$3 mac=$4 g v ns gwns=()
  local sw rr lf
  sw=$(lab_ns "$name" sw)
  rr=$(lab_ns "$name" rr)
  lf=$(lab_ns "$name" lf)
  for ((g = 1; g <= gws; g++)); do gwns+=("$(lab_ns "$name" "gw$g")"); done
  for ns in "$sw" "$rr" "$lf" "${gwns[@]}" $(for v in "${EVPN_VNIS[@]}"; do lab_ns "$name" "h$v"; done); do
    ip netns add "$ns" || return 1
    case $ns in *-gw*) lab_sysctls "$ns" gw ;; *) lab_sysctls "$ns" other ;; esac || return 1
  done

  {
    echo "link set lo up"
    echo "link add br0 mtu 1600 type bridge stp_state 0 forward_delay 0"
    for ((g = 1; g <= gws; g++)); do
      echo "link add p$g mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns ${gwns[g - 1]}"
    done
    echo "link add prr mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns $rr"
    echo "link add plf mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns $lf"
    echo "link set br0 up"
  } >"$dir/$sw.ip"
  : >"$dir/$sw.bridge"
  lab_apply "$dir" "$sw" || return 1

  printf 'link set lo up\nlink set eth0 up\naddr add %s/24 brd 10.0.1.255 dev eth0\n' "$EVPN_RR_IP" >"$dir/$rr.ip"
  : >"$dir/$rr.bridge"
  for ((g = 1; g <= gws; g++)); do
    evpn_write_vtep "$dir/${gwns[g - 1]}.ip" "$(evpn_gateway_underlay "$g")" gw "$mac" "$name"
  done
  evpn_write_vtep "$dir/$lf.ip" "$EVPN_LEAF_IP" leaf "$mac" "$name"
  for ns in "$lf" "${gwns[@]}"; do
    for v in "${EVPN_VNIS[@]}"; do echo "link set dev vxlan$v learning off"; done >"$dir/$ns.bridge"
  done
  lab_apply_parallel "$dir" "$rr" "$lf" "${gwns[@]}" || return 1

  # The hosts: their eth0 came from the leaf's batch.
  for v in "${EVPN_VNIS[@]}"; do
    ns=$(lab_ns "$name" "h$v")
    printf 'link set lo up\nlink set eth0 up\naddr add %s/24 dev eth0\nroute add default via %s\n' \
      "$(lab_client_ip "$v")" "$(lab_gateway_ip "$v")" >"$dir/$ns.ip"
    : >"$dir/$ns.bridge"
    lab_apply "$dir" "$ns" || return 1
  done

  # FRR: the route reflector first, so the VTEPs' first connects find it listening.
  evpn_frr_conf "$name" rr "$EVPN_RR_IP" || return 1
  evpn_frr_conf "$name" lf "$EVPN_LEAF_IP" || return 1
  for ((g = 1; g <= gws; g++)); do
    evpn_frr_conf "$name" "gw$g" "$(evpn_gateway_underlay "$g")" || return 1
  done
  evpn_frr_start "$name" rr || return 1
  evpn_frr_start "$name" lf || return 1
  for ((g = 1; g <= gws; g++)); do
    evpn_frr_start "$name" "gw$g" || return 1
  done
}

evpn_main() {
  set -euo pipefail
  local cmd=${1:-}
  case $cmd in
    up)
      shift
      trap 'trap - INT TERM; evpn_abort; exit 130' INT TERM
      evpn_up "$@"
      ;;
    down)
      [ $# -eq 2 ] || { evpn_err "usage: lab-evpn.sh down NAME" && exit 2; }
      evpn_down "$2"
      ;;
    vtysh)
      [ $# -ge 4 ] || { evpn_err "usage: lab-evpn.sh vtysh NAME ROLE CMD..." && exit 2; }
      shift
      evpn_vtysh "$@"
      ;;
    *) lab_usage "${BASH_SOURCE[0]}" ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  evpn_main "$@"
fi
