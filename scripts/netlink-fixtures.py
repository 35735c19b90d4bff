#!/usr/bin/env python3
"""Captures the rtnetlink messages that the unit tests of src/sys/msg.rs and
src/sys/transport.rs parse, from the running kernel, and writes them as Rust
consts to src/sys/fixtures.rs (stdout with --print).

Root only. Everything happens in network namespaces this script creates
(wfix<pid>, wfix<pid>b) and deletes on the way out, also on failure: no link of
the root namespace is touched.

The requests (protodown, FDB delete, neighbour delete, the three dumps) are
built here byte by byte from the UAPI layouts (linux/netlink.h, rtnetlink.h,
if_link.h, neighbour.h), independently of netlink-packet-route; the kernel's
answer to each is captured too, so the tests can show that what we serialize
is exactly a request the kernel accepted.

Usage: sudo scripts/netlink-fixtures.py [--print]
"""

import os
import select
import socket
import struct
import subprocess
import sys

NS = f"wfix{os.getpid()}"
NS_OTHER = f"wfix{os.getpid()}b"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "sys", "fixtures.rs")

# linux/netlink.h, linux/rtnetlink.h
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_DUMP = 1, 2, 4, 0x10, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NETLINK_CAP_ACK = 10
SOL_NETLINK = 270
RTMGRP_LINK, RTMGRP_IPV4_IFADDR = 0x1, 0x10
# linux/if_link.h
IFLA_PROTO_DOWN, IFLA_EXT_MASK, IFLA_PROTO_DOWN_REASON = 39, 29, 55
IFLA_PROTO_DOWN_REASON_MASK, IFLA_PROTO_DOWN_REASON_VALUE = 1, 2
RTEXT_FILTER_SKIP_STATS = 1 << 3
# linux/neighbour.h
NDA_DST, NDA_LLADDR = 1, 2
NTF_MASTER = 0x04
AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7

MACVLAN = 20  # ifindex of vrrp4-100
VETHA, VETHB, BRIDGE, GONE, FOREIGN = 10, 11, 12, 30, 40
GW_MAC = "00:00:5e:00:01:64"
REASON_BIT = 3


def sh(cmd):
    subprocess.run(cmd.split(), check=True)


def nla(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def nlmsg(kind, flags, seq, body):
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ifinfomsg(index):
    # family, pad, type, index, flags, change
    return struct.pack("=BBHiII", 0, 0, 0, index, 0, 0)


def ndmsg(family, ifindex, state, flags, kind):
    return struct.pack("=BBHiHBB", family, 0, 0, ifindex, state, flags, kind)


def protodown(seq, ifindex, on):
    bit = 1 << REASON_BIT
    reason = nla(IFLA_PROTO_DOWN_REASON,
                 nla(IFLA_PROTO_DOWN_REASON_MASK, struct.pack("=I", bit))
                 + nla(IFLA_PROTO_DOWN_REASON_VALUE, struct.pack("=I", bit if on else 0)))
    return nlmsg(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq,
                 ifinfomsg(ifindex) + reason + nla(IFLA_PROTO_DOWN, bytes([int(on)])))


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def split(datagram):
    """The messages of one datagram, as (type, flags, seq, bytes)."""
    out = []
    while len(datagram) >= 16:
        n, kind, flags, seq, _ = struct.unpack_from("=IHHII", datagram)
        out.append((kind, flags, seq, datagram[:n]))
        datagram = datagram[(n + 3) & ~3:]
    return out


class Nl:
    def __init__(self, groups=0):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.s.bind((0, groups))

    def request(self, msg):
        """Sends one acknowledged request; returns the ack message."""
        self.s.send(msg)
        return split(self.s.recv(65536))[0][3]

    def dump_datagrams(self, msg):
        self.s.send(msg)
        while True:
            d = self.s.recv(65536)
            yield d
            if any(k in (NLMSG_DONE, NLMSG_ERROR) for k, *_ in split(d)):
                return

    def dump(self, msg):
        return [m for d in self.dump_datagrams(msg) for m in split(d)]

    def pending(self):
        out = []
        while select.select([self.s], [], [], 0.2)[0]:
            out.extend(split(self.s.recv(1 << 20)))
        return out


def ifindex_of(m):
    return struct.unpack_from("=i", m, 16 + 4)[0]


def addr_index(m):
    return struct.unpack_from("=I", m, 16 + 4)[0]


def capture():
    f = {}  # name -> (doc, bytes)

    sh(f"ip link add vetha index {VETHA} address 02:00:00:00:00:0a type veth"
       f" peer name vethb index {VETHB} address 02:00:00:00:00:0b")
    sh(f"ip link add br100 index {BRIDGE} address 02:00:00:00:00:0c type bridge")
    sh("ip link set vethb master br100")
    for d in ("vetha", "vethb", "br100"):
        sh(f"ip link set {d} up")
    sh(f"ip link add gone0 index {GONE} type bridge")
    sh(f"ip netns add {NS_OTHER}")
    sh(f"ip link add vethx index {FOREIGN} type veth peer name vethy netns {NS_OTHER}")

    ev = Nl(RTMGRP_LINK | RTMGRP_IPV4_IFADDR)
    sh(f"ip link add vrrp4-100 index {MACVLAN} link vetha address {GW_MAC}"
       " type macvlan mode bridge")
    sh("ip link set vrrp4-100 up")
    sh("ip addr add 10.9.1.1/24 dev vrrp4-100")
    sh(f"ip link set vrrp4-100 protodown_reason {REASON_BIT} on protodown on")
    sh("ip addr del 10.9.1.1/24 dev vrrp4-100")
    sh("ip link del gone0")
    events = ev.pending()

    def last(kind, pred):
        return [m for k, _, _, m in events if k == kind and pred(m)][-1]

    f["EVENT_NEWLINK_PROTODOWN"] = (
        "RTM_NEWLINK multicast: vrrp4-100 (ifindex 20, macvlan on vetha 10, MAC "
        f"{GW_MAC}) after `protodown_reason {REASON_BIT} on protodown on`.",
        last(RTM_NEWLINK, lambda m: ifindex_of(m) == MACVLAN))
    f["EVENT_NEWADDR"] = ("RTM_NEWADDR multicast: 10.9.1.1/24 added to ifindex 20.",
                          last(RTM_NEWADDR, lambda m: addr_index(m) == MACVLAN))
    f["EVENT_DELADDR"] = ("RTM_DELADDR multicast: 10.9.1.1/24 removed from ifindex 20.",
                          last(RTM_DELADDR, lambda m: addr_index(m) == MACVLAN))
    f["EVENT_DELLINK"] = ("RTM_DELLINK multicast: bridge gone0 (ifindex 30) deleted.",
                          last(RTM_DELLINK, lambda m: ifindex_of(m) == GONE))

    sh("ip addr add 10.9.1.1/24 dev vrrp4-100")
    sh("ip -6 addr add 2001:db8::1/64 dev vrrp4-100 nodad")
    sh(f"ip neigh add 10.9.1.50 dev vrrp4-100 lladdr 02:00:00:00:00:50 nud stale")
    sh(f"ip neigh add 10.9.1.51 dev vrrp4-100 lladdr 02:00:00:00:00:51 nud permanent")

    nl = Nl()
    req = nlmsg(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 100,
                ifinfomsg(0) + nla(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS)))
    f["REQ_DUMP_LINKS"] = ("RTM_GETLINK dump request, seq 100, without the counters "
                           "(IFLA_EXT_MASK = RTEXT_FILTER_SKIP_STATS).", req)
    links = nl.dump(req)
    by_index = {ifindex_of(m): m for k, _, _, m in links if k == RTM_NEWLINK}
    f["DUMP_LINK_MACVLAN"] = ("RTM_NEWLINK of the link dump (NLM_F_MULTI, seq 100): "
                              "vrrp4-100, ifindex 20, protodown with reason bit 3, up, no "
                              f"carrier, lower vetha (10), MAC {GW_MAC}.", by_index[MACVLAN])
    f["DUMP_LINK_PORT"] = ("RTM_NEWLINK of the link dump: vethb, ifindex 11, bridge port of "
                           "br100 (12), peer vetha (10), MAC 02:00:00:00:00:0b.", by_index[VETHB])
    f["DUMP_LINK_FOREIGN_PEER"] = ("RTM_NEWLINK of the link dump: vethx, ifindex 40, whose peer "
                                   "is in another namespace (IFLA_LINK_NETNSID).",
                                   by_index[FOREIGN])
    f["DUMP_DONE"] = ("NLMSG_DONE that ends the link dump (seq 100).",
                      [m for k, _, _, m in links if k == NLMSG_DONE][0])

    req = nlmsg(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 101,
                struct.pack("=BBBBI", AF_INET, 0, 0, 0, 0))
    f["REQ_DUMP_ADDRS"] = ("RTM_GETADDR dump request for AF_INET, seq 101.", req)
    addrs = nl.dump(req)
    f["DUMP_ADDR_V4"] = ("RTM_NEWADDR of the AF_INET address dump: 10.9.1.1/24 on ifindex 20.",
                         [m for k, _, _, m in addrs if k == RTM_NEWADDR
                          and addr_index(m) == MACVLAN][0])
    addrs6 = nl.dump(nlmsg(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 102,
                           struct.pack("=BBBBI", AF_INET6, 0, 0, 0, 0)))
    f["DUMP_ADDR_V6"] = ("RTM_NEWADDR of an AF_INET6 address dump: 2001:db8::1/64 on ifindex "
                         "20 (not ours to read).",
                         [m for k, _, _, m in addrs6 if k == RTM_NEWADDR
                          and addr_index(m) == MACVLAN][0])

    req = nlmsg(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 103, ndmsg(AF_INET, 0, 0, 0, 0))
    f["REQ_DUMP_NEIGHBOURS"] = ("RTM_GETNEIGH dump request for AF_INET, seq 103.", req)
    neigh = [m for k, _, _, m in nl.dump(req) if k == RTM_NEWNEIGH and ifindex_of(m) == MACVLAN]

    def dst(m):
        return socket.inet_ntoa(m[16 + 12 + 4:16 + 12 + 8])
    f["DUMP_NEIGH_STALE"] = ("RTM_NEWNEIGH of the neighbour dump: 10.9.1.50 on ifindex 20, "
                             "NUD_STALE.", [m for m in neigh if dst(m) == "10.9.1.50"][0])
    f["DUMP_NEIGH_PERMANENT"] = ("RTM_NEWNEIGH of the neighbour dump: 10.9.1.51 on ifindex 20, "
                                 "NUD_PERMANENT.", [m for m in neigh if dst(m) == "10.9.1.51"][0])
    stale = f["DUMP_NEIGH_STALE"][1]
    family, _, _, ifindex, state, flags, kind = struct.unpack_from("=BBHiHBB", stale, 16)
    req = nlmsg(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, 200,
                ndmsg(family, ifindex, state, flags, kind)
                + nla(NDA_DST, socket.inet_aton("10.9.1.50")))
    f["REQ_NEIGH_DELETE"] = ("RTM_DELNEIGH for the stale entry 10.9.1.50 on ifindex 20: its "
                             "header and NDA_DST only, seq 200, acknowledged.", req)
    f["ACK_OK"] = ("NLMSG_ERROR with error 0 (an ack, capped: NETLINK_CAP_ACK) to that "
                   "delete, seq 200.", nl.request(req))
    f["ACK_ENOENT"] = ("NLMSG_ERROR -ENOENT to the same delete sent again (seq 201).",
                       nl.request(req[:8] + struct.pack("=I", 201) + req[12:]))

    # The FDB entry that a gateway MAC leaves on a bridge port.
    sh(f"bridge fdb replace {GW_MAC} dev vethb master static")
    req = nlmsg(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, 300,
                ndmsg(AF_BRIDGE, VETHB, 0, NTF_MASTER, 0) + nla(NDA_LLADDR, mac(GW_MAC)))
    f["REQ_FDB_DELETE"] = (f"RTM_DELNEIGH (AF_BRIDGE, NTF_MASTER) of {GW_MAC} on bridge port "
                           "vethb (11), seq 300, acknowledged.", req)
    ack = nl.request(req)
    assert struct.unpack_from("=i", ack, 16)[0] == 0, ack

    req = protodown(400, MACVLAN, False)
    f["REQ_PROTODOWN_OFF"] = (f"RTM_SETLINK releasing reason bit {REASON_BIT} and protodown of "
                              "ifindex 20, seq 400, acknowledged.", req)
    ack = nl.request(req)
    assert struct.unpack_from("=i", ack, 16)[0] == 0, ack
    req = protodown(401, MACVLAN, True)
    f["REQ_PROTODOWN_ON"] = (f"RTM_SETLINK setting reason bit {REASON_BIT} and protodown of "
                             "ifindex 20, seq 401, acknowledged.", req)
    ack = nl.request(req)
    assert struct.unpack_from("=i", ack, 16)[0] == 0, ack
    sh("ip link set vrrp4-100 protodown_reason 7 on")
    f["ACK_EBUSY"] = ("NLMSG_ERROR -EBUSY: releasing our bit (seq 402) while reason bit 7 "
                      "still holds ifindex 20 down.", nl.request(protodown(402, MACVLAN, False)))
    f["ACK_ENODEV"] = ("NLMSG_ERROR -ENODEV: protodown of ifindex 999, which does not exist "
                       "(seq 403).", nl.request(protodown(403, 999, True)))

    # An interrupted dump: the links change between two datagrams of a dump.
    for i in range(60):
        sh(f"ip link add d{i} index {1000 + i} type bridge")
    req = nlmsg(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 500,
                ifinfomsg(0) + nla(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS)))
    msgs = []
    for n, d in enumerate(nl.dump_datagrams(req)):
        if n == 0:
            sh("ip link add late type bridge")
        msgs.extend(split(d))
    intr = [(k, fl, m) for k, fl, _, m in msgs if fl & NLM_F_DUMP_INTR]
    if intr:
        f["DUMP_INTR_LINK"] = ("RTM_NEWLINK of a link dump (seq 500) flagged NLM_F_DUMP_INTR: "
                               "a link was added between two datagrams.",
                               [m for k, _, m in intr if k == RTM_NEWLINK][0])
        done = [m for k, _, m in intr if k == NLMSG_DONE]
        if done:
            f["DUMP_INTR_DONE"] = ("NLMSG_DONE of that dump, flagged NLM_F_DUMP_INTR too.", done[0])
    else:
        print("no NLM_F_DUMP_INTR seen on the link dump", file=sys.stderr)
    return f


def rust(fixtures):
    release = os.uname().release
    lines = [
        "//! Raw rtnetlink messages captured from Linux " + release + " (x86_64, little-endian)",
        "//! by scripts/netlink-fixtures.py, in a network namespace of its own. Generated: rerun",
        "//! the script rather than editing.",
        "",
        "#![allow(dead_code)]",
        "",
    ]
    for name, (doc, data) in fixtures.items():
        lines.append(f"/// {doc}")
        lines.append(f"pub(super) const {name}: &[u8] = &[")
        for i in range(0, len(data), 16):
            lines.append("    " + " ".join(f"0x{b:02x}," for b in data[i:i + 16]))
        lines.append("];")
        lines.append("")
    return "\n".join(lines)


def main():
    if os.geteuid() != 0:
        print("SKIPPED netlink-fixtures: needs root to create a network namespace")
        return 0
    if "WMGWD2_FIXTURE_NS" not in os.environ:
        sh(f"ip netns add {NS}")
        try:
            env = dict(os.environ, WMGWD2_FIXTURE_NS=NS)
            r = subprocess.run(["ip", "netns", "exec", NS, sys.executable,
                                os.path.abspath(__file__)] + sys.argv[1:], env=env)
        finally:
            subprocess.run(["ip", "netns", "del", NS])
        return r.returncode
    # Inside the namespace (its name was passed down by the parent).
    global NS_OTHER
    NS_OTHER = os.environ["WMGWD2_FIXTURE_NS"] + "b"
    try:
        text = rust(capture())
    finally:
        subprocess.run(["ip", "netns", "del", NS_OTHER], stderr=subprocess.DEVNULL)
    if "--print" in sys.argv:
        print(text)
    else:
        with open(OUT, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
