#!/bin/sh
# Example: the per-VNI interfaces of one EVPN gateway, as docs/operations.md describes them, for
# VNIs $1..$2 (run at boot, before wmgwd2 and FRR; adapt names, addresses and the VTEP address).
#
# Every gateway macvlan is created protodown on, with wmgwd2's reason bit (--protodown-reason,
# 3 by default): created up and active, it would answer for the gateway address on every gateway
# until each daemon's first reconcile. wmgwd2 clears it on the owner only.
#
# With ipv6=1, each VNI also gets its IPv6 gateway interface vrrp6-<VNI> (docs/operations.md, "IPv6
# gateways"): no link-local address of its own, the router's fixed link-local fe80::1 and the
# gateway address, both nodad, the same on every gateway.
set -eu
first=${1:?first VNI} last=${2:?last VNI}
vtep=192.0.2.11          # this gateway's underlay address
reason=3                 # wmgwd2 --protodown-reason
ipv6=${ipv6:-0}          # 1: the IPv6 gateway interfaces too
vni=$first
while [ "$vni" -le "$last" ]; do
  gw="10.$((100 + vni / 256)).$((vni % 256)).1/24"   # the gateway address of the VNI's subnet
  ip link add "br$vni" type bridge
  ip link add "vxlan$vni" master "br$vni" type vxlan id "$vni" local "$vtep" dstport 4789 nolearning
  bridge link set dev "vxlan$vni" learning off
  ip link add "gwp$vni" master "br$vni" type veth peer name "gwl$vni"
  # The lower devices up first: a protodown'd macvlan regains carrier when its lower device
  # comes up after it (the kernel's behaviour; the daemon would set protodown again, but only
  # once it runs).
  for dev in "gwl$vni" "gwp$vni" "vxlan$vni" "br$vni"; do ip link set "$dev" up; done
  ip link add "vrrp4-$vni" link "gwl$vni" type macvlan mode bridge
  ip link set "vrrp4-$vni" addrgenmode none   # no IPv6 autoconf: see docs/operations.md
  ip link set "vrrp4-$vni" protodown_reason "$reason" on protodown on
  ip addr add "$gw" dev "vrrp4-$vni"
  ip link set "vrrp4-$vni" up
  if [ "$ipv6" = 1 ]; then
    gw6="2001:db8:$(printf %x "$vni")::1/64"            # the IPv6 gateway address of the VNI
    ip link add "vrrp6-$vni" link "gwl$vni" type macvlan mode bridge
    ip link set "vrrp6-$vni" addrgenmode none
    ip link set "vrrp6-$vni" protodown_reason "$reason" on protodown on
    ip addr add fe80::1/64 dev "vrrp6-$vni" nodad
    ip addr add "$gw6" dev "vrrp6-$vni" nodad
    ip link set "vrrp6-$vni" up
  fi
  vni=$((vni + 1))
done
