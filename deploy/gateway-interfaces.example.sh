#!/bin/sh
# Example: the per-VNI interfaces of one EVPN gateway, as docs/operations.md describes them, for
# VNIs $1..$2 (run at boot, before wmgwd2 and FRR; adapt names, addresses and the VTEP address).
#
# Every gateway macvlan is created protodown on, with wmgwd2's reason bit (--protodown-reason,
# 3 by default): created up and active, it would answer for the gateway address on every gateway
# until each daemon's first reconcile. wmgwd2 clears it on the owner only.
set -eu
first=${1:?first VNI} last=${2:?last VNI}
vtep=192.0.2.11          # this gateway's underlay address
reason=3                 # wmgwd2 --protodown-reason
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
  vni=$((vni + 1))
done
