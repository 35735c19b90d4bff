//! The gratuitous ARP frame, as bytes. Pure.
//!
//! Form: an ARP **request** (opcode 1) broadcast to `ff:ff:ff:ff:ff:ff`, sender MAC = the
//! interface's MAC, sender IP = target IP = the gateway address, target MAC
//! `ff:ff:ff:ff:ff:ff`. This is what keepalived, FRR's vrrpd and iputils' `arping -U` send.
//! Linux updates an existing neighbour entry from such a request whatever `arp_accept` says, every
//! bridge learns the source MAC from it, and hosts that ignore unsolicited replies (the Go
//! original sends op=2 with a zero target MAC) still process requests. See docs/protocol.md.

use std::net::Ipv4Addr;

use pnet::packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet::packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet::util::MacAddr;

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const GARP_LEN: usize = 42;

/// The gratuitous ARP announcing `ip` at `mac`.
pub fn garp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut frame = [0u8; GARP_LEN];
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
