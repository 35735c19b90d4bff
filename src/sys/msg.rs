//! Translation between rtnetlink messages and the daemon's types: link messages to
//! [`LinkState`], address messages to IPv4 addresses, multicast messages to [`KernelEvent`]s, and
//! the requests we send (protodown, FDB and neighbour deletes). No sockets here.

use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkProtocolDownReason,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::kernel::KernelEvent;
use crate::links::LinkState;
use crate::reconcile::FdbFlush;
use crate::types::IfIndex;

/// A link message as [`LinkState`].
pub fn link_state(msg: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        ifindex: IfIndex(msg.header.index),
        ifname: String::new(),
        protodown: false,
        reason: 0,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        running: msg.header.flags.contains(LinkFlags::Running),
        mac: [0; 6],
        lower: None,
        master: None,
    };
    let mut other_netns = false;
    for a in &msg.attributes {
        match a {
            LinkAttribute::LinkNetNsId(_) => other_netns = true,
            LinkAttribute::IfName(n) => l.ifname.clone_from(n),
            LinkAttribute::ProtoDown(v) => l.protodown = *v != 0,
            LinkAttribute::ProtoDownReason(rs) => {
                for r in rs {
                    if let LinkProtocolDownReason::Value(v) = r {
                        l.reason = *v;
                    }
                }
            }
            LinkAttribute::Address(a) if a.len() == 6 => l.mac.copy_from_slice(a),
            LinkAttribute::Link(i) => l.lower = Some(IfIndex(*i)),
            LinkAttribute::Controller(i) => l.master = Some(IfIndex(*i)),
            _ => {}
        }
    }
    // IFLA_LINK then names a link of another namespace: an index that means nothing here.
    if other_netns {
        l.lower = None;
    }
    l
}

/// A link message's name and kind (IFLA_LINKINFO's IFLA_INFO_KIND), when it has both.
pub(super) fn link_kind(msg: &LinkMessage) -> Option<(String, String)> {
    let mut name = None;
    let mut kind = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let netlink_packet_route::link::LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some((name?, kind?))
}

/// The address of an address message (IPv4 or IPv6; the local one of a point-to-point pair),
/// and whether it is usable: an IPv6 address whose duplicate address detection still runs
/// (tentative) or failed is not, and must not be announced.
pub(super) fn address(msg: &AddressMessage) -> Option<(IpAddr, bool)> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    let unusable = AddressFlags::Tentative | AddressFlags::Dadfailed;
    let mut usable = !msg
        .header
        .flags
        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
    let mut local = None;
    let mut found = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => found = Some(*ip),
            // The 32-bit flags, when present, are the whole story (the header holds the low 8).
            AddressAttribute::Flags(f) => usable = !f.intersects(unusable),
            _ => {}
        }
    }
    let ip = local.or(found)?;
    let family_matches = match ip {
        IpAddr::V4(_) => msg.header.family == AddressFamily::Inet,
        IpAddr::V6(_) => msg.header.family == AddressFamily::Inet6,
    };
    family_matches.then_some((ip, usable))
}

/// What a message of the event socket means to the daemon, if anything.
pub(super) fn event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(m) => match m {
            RouteNetlinkMessage::NewLink(l) => Some(KernelEvent::Link(link_state(&l))),
            RouteNetlinkMessage::DelLink(l) => Some(KernelEvent::LinkGone {
                ifindex: IfIndex(l.header.index),
            }),
            // A tentative address is not there yet: its RTM_NEWADDR without the flag follows
            // when duplicate address detection is done.
            RouteNetlinkMessage::NewAddress(a) => {
                address(&a).map(|(addr, usable)| KernelEvent::Address {
                    ifindex: IfIndex(a.header.index),
                    addr,
                    added: usable,
                })
            }
            RouteNetlinkMessage::DelAddress(a) => {
                address(&a).map(|(addr, _)| KernelEvent::Address {
                    ifindex: IfIndex(a.header.index),
                    addr,
                    added: false,
                })
            }
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Lost),
        _ => None,
    }
}

/// RTM_GETLINK for a dump of every link, without the counters (RTEXT_FILTER_SKIP_STATS): they
/// are most of each link's message and never read here; at 1000 VNIs a resync costs about half as
/// much CPU without them.
pub(super) fn dump_links() -> RouteNetlinkMessage {
    let mut get = LinkMessage::default();
    get.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(get)
}

/// RTM_GETADDR for a dump of every address of one family (`Inet`, `Inet6`).
pub(super) fn dump_addresses(family: AddressFamily) -> RouteNetlinkMessage {
    let mut get = AddressMessage::default();
    get.header.family = family;
    RouteNetlinkMessage::GetAddress(get)
}

/// RTM_GETNEIGH for a dump of every neighbour entry of one family (`Inet`, `Inet6`).
pub(super) fn dump_neighbours(family: AddressFamily) -> RouteNetlinkMessage {
    let mut get = NeighbourMessage::default();
    get.header.family = family;
    RouteNetlinkMessage::GetNeighbour(get)
}

/// RTM_SETLINK: sets (`on`) or clears our protodown reason bit, and the protodown flag with it.
pub(super) fn protodown(ifindex: IfIndex, reason_bit: u8, on: bool) -> RouteNetlinkMessage {
    let bit = 1u32 << reason_bit;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex.0;
    msg.attributes.push(LinkAttribute::ProtoDownReason(vec![
        LinkProtocolDownReason::Mask(bit),
        LinkProtocolDownReason::Value(if on { bit } else { 0 }),
    ]));
    msg.attributes.push(LinkAttribute::ProtoDown(u8::from(on)));
    RouteNetlinkMessage::SetLink(msg)
}

/// RTM_SETLINK: clears our protodown reason bit and sets the protodown flag, in one message (the
/// kernel applies the reason first, then the flag; `--go-compat`'s stop, see
/// [`crate::kernel::Kernel::hand_back`]).
pub(super) fn hand_back(ifindex: IfIndex, reason_bit: u8) -> RouteNetlinkMessage {
    let bit = 1u32 << reason_bit;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex.0;
    msg.attributes.push(LinkAttribute::ProtoDownReason(vec![
        LinkProtocolDownReason::Mask(bit),
        LinkProtocolDownReason::Value(0),
    ]));
    msg.attributes.push(LinkAttribute::ProtoDown(1));
    RouteNetlinkMessage::SetLink(msg)
}

/// Whether a neighbour entry of the dump is a dynamic one of one of these links (the kind that
/// [`crate::kernel::Kernel::flush_neighbours`] deletes).
pub(super) fn flushable(n: &NeighbourMessage, ifindexes: &[IfIndex]) -> bool {
    let keep = matches!(
        n.header.state,
        NeighbourState::Permanent | NeighbourState::Noarp
    );
    !keep && ifindexes.contains(&IfIndex(n.header.ifindex))
}

/// RTM_DELNEIGH for an entry of the neighbour dump: its header and destination are what the
/// kernel needs to find it.
pub(super) fn neighbour_delete(mut entry: NeighbourMessage) -> RouteNetlinkMessage {
    entry
        .attributes
        .retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
    RouteNetlinkMessage::DelNeighbour(entry)
}

/// RTM_DELNEIGH (AF_BRIDGE, NTF_MASTER): removes a MAC from the FDB of the bridge above the port.
pub(super) fn fdb_delete(f: &FdbFlush) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = f.port.0;
    m.header.flags = NeighbourFlags::Controller;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
    RouteNetlinkMessage::DelNeighbour(m)
}

/// Messages captured from the kernel (src/sys/fixtures.rs, scripts/netlink-fixtures.py), parsed
/// and checked; and the messages we send, serialized and compared to requests built from the
/// UAPI layouts that the kernel accepted.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

    use super::super::fixtures as fx;
    use super::super::transport::{messages, serialize};
    use super::*;

    const GW_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x64];

    fn one(bytes: &[u8]) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = messages(bytes);
        assert_eq!(m.len(), 1, "{bytes:02x?}");
        m.remove(0)
    }

    fn inner(bytes: &[u8]) -> RouteNetlinkMessage {
        match one(bytes).payload {
            NetlinkPayload::InnerMessage(m) => m,
            p => panic!("not an rtnetlink message: {p:?}"),
        }
    }

    fn link(bytes: &[u8]) -> LinkState {
        match inner(bytes) {
            RouteNetlinkMessage::NewLink(l) => link_state(&l),
            m => panic!("not RTM_NEWLINK: {m:?}"),
        }
    }

    fn bytes(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        serialize(msg, flags, seq, &mut out);
        out
    }

    #[test]
    fn a_protodown_macvlan_of_the_link_dump() {
        let l = link(fx::DUMP_LINK_MACVLAN);
        assert_eq!(
            l,
            LinkState {
                ifindex: IfIndex(20),
                ifname: "vrrp4-100".into(),
                protodown: true,
                reason: 1 << 3,
                admin_up: true,
                carrier: false,
                running: false,
                mac: GW_MAC,
                lower: Some(IfIndex(10)),
                master: None,
            }
        );
        assert!(!l.active());
    }

    #[test]
    fn a_bridge_port_of_the_link_dump_names_its_bridge_and_its_veth_peer() {
        let l = link(fx::DUMP_LINK_PORT);
        assert_eq!((l.ifindex, l.ifname.as_str()), (IfIndex(11), "vethb"));
        assert_eq!(l.master, Some(IfIndex(12)));
        assert_eq!(l.lower, Some(IfIndex(10)));
        assert_eq!(l.mac, [0x02, 0, 0, 0, 0, 0x0b]);
        assert!(l.admin_up && !l.protodown && l.reason == 0);
    }

    #[test]
    fn a_veth_whose_peer_is_in_another_namespace_has_no_lower() {
        let l = link(fx::DUMP_LINK_FOREIGN_PEER);
        assert_eq!((l.ifindex, l.ifname.as_str()), (IfIndex(40), "vethx"));
        assert_eq!(l.lower, None);
    }

    #[test]
    fn link_and_address_events() {
        let Some(KernelEvent::Link(l)) = event(one(fx::EVENT_NEWLINK_PROTODOWN)) else {
            panic!("no link event");
        };
        assert_eq!((l.ifindex, l.ifname.as_str()), (IfIndex(20), "vrrp4-100"));
        assert!(l.protodown && l.reason == 1 << 3 && l.admin_up && !l.carrier);
        assert_eq!((l.mac, l.lower), (GW_MAC, Some(IfIndex(10))));

        let v4 = Ipv4Addr::new(10, 9, 1, 1);
        assert_eq!(
            event(one(fx::EVENT_NEWADDR)),
            Some(KernelEvent::Address {
                ifindex: IfIndex(20),
                addr: v4.into(),
                added: true
            })
        );
        assert_eq!(
            event(one(fx::EVENT_DELADDR)),
            Some(KernelEvent::Address {
                ifindex: IfIndex(20),
                addr: v4.into(),
                added: false
            })
        );
        assert_eq!(
            event(one(fx::EVENT_DELLINK)),
            Some(KernelEvent::LinkGone {
                ifindex: IfIndex(30)
            })
        );
    }

    #[test]
    fn ipv4_and_ipv6_addresses_are_read() {
        let RouteNetlinkMessage::NewAddress(a) = inner(fx::DUMP_ADDR_V4) else {
            panic!("not RTM_NEWADDR");
        };
        assert_eq!(a.header.index, 20);
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 9, 1, 1));
        assert_eq!(address(&a), Some((v4, true)));
        let RouteNetlinkMessage::NewAddress(a) = inner(fx::DUMP_ADDR_V6) else {
            panic!("not RTM_NEWADDR");
        };
        // Added `nodad` (flags 0x82: permanent, nodad): usable at once.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address(&a), Some((v6, true)));
        assert_eq!(
            event(one(fx::DUMP_ADDR_V6)),
            Some(KernelEvent::Address {
                ifindex: IfIndex(20),
                addr: v6,
                added: true
            })
        );
    }

    /// The same captured message with the kernel's tentative flag (0x40) in the header and in
    /// IFA_FLAGS (the last attribute's first byte), then with only the header's (no IFA_FLAGS
    /// attribute: a kernel before 3.14), and with DAD failed (0x08): not usable.
    #[test]
    fn a_tentative_or_dad_failed_ipv6_address_is_not_usable_yet() {
        let flags_attr = fx::DUMP_ADDR_V6.len() - 4;
        for bit in [0x40u8, 0x08] {
            let mut b = fx::DUMP_ADDR_V6.to_vec();
            b[18] |= bit;
            b[flags_attr] |= bit;
            let RouteNetlinkMessage::NewAddress(a) = inner(&b) else {
                panic!("not RTM_NEWADDR");
            };
            assert_eq!(address(&a).map(|(_, u)| u), Some(false), "flag {bit:#x}");
            assert!(matches!(
                event(one(&b)),
                Some(KernelEvent::Address { added: false, .. })
            ));
        }
        // Without IFA_FLAGS (the message shortened by that attribute): the header decides.
        let mut b = fx::DUMP_ADDR_V6[..fx::DUMP_ADDR_V6.len() - 8].to_vec();
        b[0] -= 8;
        b[18] |= 0x40;
        let RouteNetlinkMessage::NewAddress(a) = inner(&b) else {
            panic!("not RTM_NEWADDR");
        };
        assert_eq!(address(&a).map(|(_, u)| u), Some(false));
    }

    #[test]
    fn done_and_acks_are_no_events() {
        for b in [fx::DUMP_DONE, fx::ACK_OK, fx::ACK_EBUSY] {
            assert_eq!(event(one(b)), None);
        }
    }

    #[test]
    fn the_dump_requests_are_the_ones_the_kernel_answered() {
        let dump = NLM_F_REQUEST | NLM_F_DUMP;
        assert_eq!(bytes(dump_links(), dump, 100), fx::REQ_DUMP_LINKS);
        assert_eq!(
            bytes(dump_addresses(AddressFamily::Inet), dump, 101),
            fx::REQ_DUMP_ADDRS
        );
        assert_eq!(
            bytes(dump_neighbours(AddressFamily::Inet), dump, 103),
            fx::REQ_DUMP_NEIGHBOURS
        );
    }

    #[test]
    fn the_protodown_requests_are_the_ones_the_kernel_accepted() {
        let ack = NLM_F_REQUEST | NLM_F_ACK;
        assert_eq!(
            bytes(protodown(IfIndex(20), 3, false), ack, 400),
            fx::REQ_PROTODOWN_OFF
        );
        assert_eq!(
            bytes(protodown(IfIndex(20), 3, true), ack, 401),
            fx::REQ_PROTODOWN_ON
        );
    }

    #[test]
    fn dynamic_neighbours_of_the_given_links_are_flushed_by_header_and_destination() {
        let RouteNetlinkMessage::NewNeighbour(stale) = inner(fx::DUMP_NEIGH_STALE) else {
            panic!("not RTM_NEWNEIGH");
        };
        let RouteNetlinkMessage::NewNeighbour(permanent) = inner(fx::DUMP_NEIGH_PERMANENT) else {
            panic!("not RTM_NEWNEIGH");
        };
        assert!(flushable(&stale, &[IfIndex(7), IfIndex(20)]));
        assert!(!flushable(&stale, &[IfIndex(21)]), "another link's entry");
        assert!(!flushable(&permanent, &[IfIndex(20)]), "a permanent entry");
        assert_eq!(
            bytes(neighbour_delete(stale), NLM_F_REQUEST | NLM_F_ACK, 200),
            fx::REQ_NEIGH_DELETE
        );
    }

    #[test]
    fn the_fdb_delete_is_the_one_the_kernel_accepted() {
        let f = FdbFlush {
            vni: crate::types::Vni(100),
            family: crate::types::Family::V4,
            port: IfIndex(11),
            mac: GW_MAC,
        };
        assert_eq!(
            bytes(fdb_delete(&f), NLM_F_REQUEST | NLM_F_ACK, 300),
            fx::REQ_FDB_DELETE
        );
    }
}
