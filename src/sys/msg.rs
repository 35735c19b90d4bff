//! Translation between rtnetlink messages and the daemon's types: link messages to
//! [`LinkState`], address messages to IPv4 addresses, multicast messages to [`KernelEvent`]s, and
//! the requests we send (protodown, FDB and neighbour deletes). No sockets here.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkProtocolDownReason};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::kernel::KernelEvent;
use crate::reconcile::{FdbFlush, LinkState};

/// A link message as [`LinkState`].
pub fn link_state(msg: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        ifindex: msg.header.index,
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
            LinkAttribute::Link(i) => l.lower = Some(*i),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            _ => {}
        }
    }
    // IFLA_LINK then names a link of another namespace: an index that means nothing here.
    if other_netns {
        l.lower = None;
    }
    l
}

/// The IPv4 address of an address message, if it is one.
pub(super) fn ipv4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut found = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => return Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => found = Some(*v),
            _ => {}
        }
    }
    found
}

/// What a message of the event socket means to the daemon, if anything.
pub(super) fn event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(m) => match m {
            RouteNetlinkMessage::NewLink(l) => Some(KernelEvent::Link(link_state(&l))),
            RouteNetlinkMessage::DelLink(l) => Some(KernelEvent::LinkGone {
                ifindex: l.header.index,
            }),
            RouteNetlinkMessage::NewAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: a.header.index,
                addr,
                added: true,
            }),
            RouteNetlinkMessage::DelAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: a.header.index,
                addr,
                added: false,
            }),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Lost),
        _ => None,
    }
}

/// RTM_SETLINK: sets (`on`) or clears our protodown reason bit, and the protodown flag with it.
pub(super) fn protodown(ifindex: u32, reason_bit: u8, on: bool) -> RouteNetlinkMessage {
    let bit = 1u32 << reason_bit;
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::ProtoDownReason(vec![
        LinkProtocolDownReason::Mask(bit),
        LinkProtocolDownReason::Value(if on { bit } else { 0 }),
    ]));
    msg.attributes.push(LinkAttribute::ProtoDown(u8::from(on)));
    RouteNetlinkMessage::SetLink(msg)
}

/// Whether a neighbour entry of the dump is a dynamic one of one of these links (the kind that
/// [`crate::kernel::Kernel::flush_neighbours`] deletes).
pub(super) fn flushable(n: &NeighbourMessage, ifindexes: &[u32]) -> bool {
    let keep = matches!(
        n.header.state,
        NeighbourState::Permanent | NeighbourState::Noarp
    );
    !keep && ifindexes.contains(&n.header.ifindex)
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
    m.header.ifindex = f.port;
    m.header.flags = NeighbourFlags::Controller;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
    RouteNetlinkMessage::DelNeighbour(m)
}
