//! Gratuitous ARP: the frame as bytes, and the schedule that says when to announce which VNI,
//! paced. Pure.
//!
//! Form: an ARP **request** (opcode 1) broadcast to `ff:ff:ff:ff:ff:ff`, sender MAC = the
//! interface's MAC, sender IP = target IP = the gateway address, target MAC
//! `ff:ff:ff:ff:ff:ff`. This is what keepalived, FRR's vrrpd and iputils' `arping -U` send.
//! Linux updates an existing neighbour entry from such a request whatever `arp_accept` says, every
//! bridge learns the source MAC from it, and hosts that ignore unsolicited replies (the Go
//! original sends op=2 with a zero target MAC) still process requests. See docs/protocol.md.
//!
//! IPv6's counterpart is an unsolicited neighbour advertisement ([`na_frame`]), in the form Linux
//! itself sends one (`ndisc_notify`) from a router: to all nodes (`ff02::1`, `33:33:00:00:00:01`)
//! from the address itself, hop limit 255, router and override flags set, solicited clear, and the
//! target link-layer address option. A host updates its existing neighbour entry from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pnet::packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet::packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet::util::MacAddr;

use crate::types::{Family, IfIndex, Slot};

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;

/// The gratuitous ARP announcing `ip` at `mac`.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    let src = MacAddr::from(mac);
    let bcast = MacAddr::broadcast();
    {
        // Both buffers are sized by construction, so `new` cannot fail; stay panic-free anyway.
        let Some(mut eth) = MutableEthernetPacket::new(&mut frame) else {
            return frame;
        };
        eth.set_destination(bcast);
        eth.set_source(src);
        eth.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[14..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(src);
        arp.set_sender_proto_addr(ip);
        arp.set_target_hw_addr(bcast);
        arp.set_target_proto_addr(ip);
    }
    frame
}

/// Ethernet header (14) + IPv6 header (40) + ICMPv6 neighbour advertisement (24) + the target
/// link-layer address option (8).
pub const NA_FRAME_LEN: usize = 86;

/// The unsolicited neighbour advertisement announcing `ip` at `mac` (RFC 4861 4.4 and 7.2.6).
pub fn na_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; NA_FRAME_LEN];
    // Ethernet: to the all-nodes group's MAC (33:33 + the group's last 32 bits), IPv6.
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    // IPv6: version 6, traffic class and flow label 0, payload 32, next header ICMPv6 (58),
    // hop limit 255 (a receiver drops neighbour discovery with any other), from the target.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 type 136 (neighbour advertisement), code 0, checksum (below), flags R|O, the target,
    // then option 2 (target link-layer address), length 1 (8 bytes), the MAC.
    f[54] = 136;
    f[58] = 0xa0;
    f[62..78].copy_from_slice(&ip.octets());
    f[78] = 2;
    f[79] = 1;
    f[80..86].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&f[22..38], &f[38..54], &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum (RFC 4443 2.3): the ones' complement of the ones' complement sum over the
/// pseudo-header (source, destination, upper-layer length, next header 58) and the message, whose
/// checksum field is zero.
fn icmpv6_checksum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
    let len = msg.len() as u32;
    let pseudo = [
        (len >> 24) as u8,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0,
        0,
        0,
        58,
    ];
    let mut sum: u32 = 0;
    for part in [src, dst, &pseudo[..], msg] {
        for pair in part.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&b| u32::from(b));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// GARP frames sent per wake-up at most; the rest follow after [`PACE`].
pub const BATCH: usize = 128;
/// The pause between two batches, and before retrying on a full socket.
pub const PACE: Duration = Duration::from_millis(2);

/// One announcement frame: a gratuitous ARP or an unsolicited neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Arp([u8; FRAME_LEN]),
    Na([u8; NA_FRAME_LEN]),
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        match self {
            Frame::Arp(f) => f,
            Frame::Na(f) => f,
        }
    }
}

/// The frame announcing `ip` at `mac`: a gratuitous ARP for IPv4, a neighbour advertisement for
/// IPv6.
pub fn announcement(mac: [u8; 6], ip: IpAddr) -> Frame {
    match ip {
        IpAddr::V4(v4) => Frame::Arp(frame(mac, v4)),
        IpAddr::V6(v6) => Frame::Na(na_frame(mac, v6)),
    }
}

/// The family of an address.
pub fn family(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// One owned, active slot's announcement: a frame for each of its addresses of the slot's family
/// (gratuitous ARPs on the IPv4 interface, neighbour advertisements on the IPv6 one), sent out of
/// `ifindex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub slot: Slot,
    pub ifindex: IfIndex,
    pub mac: [u8; 6],
    pub ips: Vec<IpAddr>,
    /// How many announcements of the takeover burst remain, this one included.
    pub remaining: u32,
}

/// How slots are announced: a burst of `count` spaced `spacing` apart when a slot becomes active,
/// then one every `refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub count: u32,
    pub spacing: Duration,
    pub refresh: Option<Duration>,
}

/// The GARP schedule: which owned slots are active (and so announced), and when each is due next.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: Policy,
    /// Owned slots whose interface was active at the last [`Schedule::update`]. A slot that enters
    /// (or changes ifindex) starts a burst.
    active: BTreeMap<Slot, IfIndex>,
    due: BTreeSet<(Instant, Slot)>,
    by_slot: HashMap<Slot, (Instant, u32)>,
}

impl Schedule {
    pub fn new(policy: Policy) -> Schedule {
        Schedule {
            policy,
            active: BTreeMap::new(),
            due: BTreeSet::new(),
            by_slot: HashMap::new(),
        }
    }

    fn put(&mut self, slot: Slot, at: Instant, remaining: u32) {
        self.remove(slot);
        self.due.insert((at, slot));
        self.by_slot.insert(slot, (at, remaining));
    }

    fn remove(&mut self, slot: Slot) {
        if let Some((at, _)) = self.by_slot.remove(&slot) {
            self.due.remove(&(at, slot));
        }
    }

    /// When the next announcement is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|&(t, _)| t)
    }

    /// The owned slots that are active now (`active_links`: slot -> ifindex): a newly active one
    /// starts a burst at `now`, one no longer active is no longer announced.
    pub fn update(&mut self, active_links: BTreeMap<Slot, IfIndex>, now: Instant) {
        for (&slot, &ifindex) in &active_links {
            if self.active.get(&slot) != Some(&ifindex) {
                self.put(slot, now, self.policy.count);
            }
        }
        let gone: Vec<Slot> = self
            .active
            .keys()
            .filter(|v| !active_links.contains_key(v))
            .copied()
            .collect();
        for slot in gone {
            self.remove(slot);
        }
        self.active = active_links;
    }

    /// The kernel reported the slot's link unable to carry traffic: forget it, so that when it is
    /// back (maybe in the same batch of events: a flap) it counts as newly active and announces
    /// itself again.
    pub fn inactive(&mut self, slot: Slot) {
        if self.active.remove(&slot).is_some() {
            self.remove(slot);
        }
    }

    /// An address was added to a link: if it is an active one, announce it (a new burst).
    pub fn address_added(&mut self, slot: Slot, ifindex: IfIndex, now: Instant) {
        if self.active.get(&slot) == Some(&ifindex) {
            self.put(slot, now, self.policy.count);
        }
    }

    /// Announce an active slot again (a new burst from `now`): a peer that owned it before came
    /// back, and clients may have learnt its MAC meanwhile.
    pub fn again(&mut self, slot: Slot, now: Instant) {
        if self.active.contains_key(&slot) {
            self.put(slot, now, self.policy.count);
        }
    }

    /// Every active slot (what a status shows).
    pub fn active(&self) -> &BTreeMap<Slot, IfIndex> {
        &self.active
    }

    /// The announcements due at `now`, at most [`BATCH`] frames of them (the rest are put off by
    /// [`PACE`]), each already followed in the schedule by its next one. `link` gives a slot's MAC
    /// and its link's addresses, of which those of the slot's family are announced.
    pub fn take_due<'a>(
        &mut self,
        now: Instant,
        link: impl Fn(Slot) -> Option<([u8; 6], &'a [IpAddr])>,
    ) -> Vec<Announcement> {
        let mut out = Vec::new();
        let mut frames = 0usize;
        while let Some(&(t, slot)) = self.due.first() {
            if t > now {
                break;
            }
            if frames >= BATCH {
                // Pace: this one and the rest a moment later.
                let later = now + PACE;
                let rest: Vec<Slot> = self
                    .due
                    .iter()
                    .take_while(|&&(t2, _)| t2 <= now)
                    .map(|&(_, v)| v)
                    .collect();
                for v in rest {
                    if let Some(&(_, rem)) = self.by_slot.get(&v) {
                        self.put(v, later, rem);
                    }
                }
                break;
            }
            self.due.pop_first();
            let Some((_, remaining)) = self.by_slot.remove(&slot) else {
                continue;
            };
            let (Some(&ifindex), Some((mac, ips))) = (self.active.get(&slot), link(slot)) else {
                continue;
            };
            let ips: Vec<IpAddr> = ips
                .iter()
                .filter(|ip| family(ip) == slot.family)
                .copied()
                .collect();
            frames += ips.len();
            out.push(Announcement {
                slot,
                ifindex,
                mac,
                ips,
                remaining,
            });
            if remaining > 1 {
                self.put(slot, now + self.policy.spacing, remaining - 1);
            } else if let Some(r) = self.policy.refresh {
                self.put(slot, now + r, 1);
            }
        }
        out
    }

    /// Announcements that could not be sent at `now` (the socket was full): again after [`PACE`],
    /// with the burst they were part of.
    pub fn defer(&mut self, unsent: &[Announcement], now: Instant) {
        for a in unsent {
            if self.active.get(&a.slot) == Some(&a.ifindex) {
                self.put(a.slot, now + PACE, a.remaining);
            }
        }
    }
}
