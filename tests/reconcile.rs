//! `reconcile::plan` as data: observed link state in, expected actions out. Also the interface
//! name pattern and the gratuitous ARP frame.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;
use wmgwd2::garp::{frame as garp, na_frame as na, FRAME_LEN as GARP_LEN, NA_FRAME_LEN as NA_LEN};
use wmgwd2::links::{bridge_port, LinkState, NamePattern};
use wmgwd2::reconcile::{self, fdb_flushes, FdbFlush, Plan, Protodown};
use wmgwd2::types::{Family, IfIndex, Slot, Vni, VniRange};

/// `reconcile::plan` over plain integers: the tables below are easier to read that way.
fn plan(
    owned: &BTreeSet<u32>,
    vnis: std::ops::RangeInclusive<u32>,
    links: &BTreeMap<u32, LinkState>,
    bit: u8,
) -> Plan {
    let owned = owned.iter().map(|&v| Vni(v)).collect();
    let links = links
        .iter()
        .map(|(&v, l)| (Slot::v4(Vni(v)), l.clone()))
        .collect();
    reconcile::plan(
        &owned,
        VniRange::spanning(*vnis.start(), *vnis.end()),
        &links,
        bit,
    )
}

fn vnis(v: &[u32]) -> Vec<Vni> {
    v.iter().map(|&v| Vni(v)).collect()
}

/// Our reason bit in these tests (the default, 3), and its mask.
const BIT: u8 = 3;
const OURS: u32 = 1 << 3;
/// Another daemon's reason bit (FRR's zebra uses its own).
const FOREIGN: u32 = 1 << 0;

fn link(vni: u32, protodown: bool, reason: u32, carrier: bool) -> LinkState {
    LinkState {
        ifindex: IfIndex(1000 + vni),
        ifname: format!("vrrp4-{vni}"),
        protodown,
        reason,
        admin_up: true,
        carrier,
        running: carrier,
        mac: [0x02, 0, 0, 0, (vni >> 8) as u8, vni as u8],
        lower: Some(IfIndex(2)),
        master: None,
    }
}

fn on(vni: u32) -> Protodown {
    Protodown {
        vni: Vni(vni),
        family: Family::V4,
        ifindex: IfIndex(1000 + vni),
        on: true,
    }
}

fn off(vni: u32) -> Protodown {
    Protodown {
        vni: Vni(vni),
        family: Family::V4,
        ifindex: IfIndex(1000 + vni),
        on: false,
    }
}

struct Case {
    name: &'static str,
    owned: bool,
    protodown: bool,
    reason: u32,
    carrier: bool,
    /// Expected: Some(true) protodown on, Some(false) off, None nothing.
    action: Option<bool>,
    /// Expected foreign bits reported as blocking.
    blocked: Option<u32>,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "non-owner, protodown off", owned: false, protodown: false, reason: 0, carrier: true, action: Some(true), blocked: None },
    Case { name: "non-owner, protodown off with a stale bit", owned: false, protodown: false, reason: OURS, carrier: true, action: Some(true), blocked: None },
    Case { name: "non-owner, ours, but carrier back (lower device came back)", owned: false, protodown: true, reason: OURS, carrier: true, action: Some(true), blocked: None },
    Case { name: "non-owner, protodown on without our bit", owned: false, protodown: true, reason: 0, carrier: false, action: Some(true), blocked: None },
    Case { name: "non-owner, protodown on by a foreign bit only", owned: false, protodown: true, reason: FOREIGN, carrier: false, action: Some(true), blocked: None },
    Case { name: "non-owner, correct", owned: false, protodown: true, reason: OURS, carrier: false, action: None, blocked: None },
    Case { name: "non-owner, correct, foreign bit too", owned: false, protodown: true, reason: OURS | FOREIGN, carrier: false, action: None, blocked: None },
    Case { name: "owner, ours", owned: true, protodown: true, reason: OURS, carrier: false, action: Some(false), blocked: None },
    Case { name: "owner, protodown on without any bit", owned: true, protodown: true, reason: 0, carrier: false, action: Some(false), blocked: None },
    Case { name: "owner, protodown off but our bit left over", owned: true, protodown: false, reason: OURS, carrier: true, action: Some(false), blocked: None },
    Case { name: "owner, only a foreign bit", owned: true, protodown: true, reason: FOREIGN, carrier: false, action: None, blocked: Some(FOREIGN) },
    Case { name: "owner, ours and a foreign bit", owned: true, protodown: true, reason: OURS | FOREIGN, carrier: false, action: Some(false), blocked: Some(FOREIGN) },
    Case { name: "owner, correct", owned: true, protodown: false, reason: 0, carrier: true, action: None, blocked: None },
    Case { name: "owner, correct, no carrier (not ours to fix)", owned: true, protodown: false, reason: 0, carrier: false, action: None, blocked: None },
    Case { name: "owner, protodown off, foreign bit set", owned: true, protodown: false, reason: FOREIGN, carrier: true, action: None, blocked: None },
];

#[test]
fn plan_cases() {
    const VNI: u32 = 42;
    for c in CASES {
        let links = BTreeMap::from([(VNI, link(VNI, c.protodown, c.reason, c.carrier))]);
        let owned = if c.owned {
            BTreeSet::from([VNI])
        } else {
            BTreeSet::new()
        };
        let p = plan(&owned, VNI..=VNI, &links, BIT);
        let expected = Plan {
            changes: c
                .action
                .map(|o| if o { on(VNI) } else { off(VNI) })
                .into_iter()
                .collect(),
            missing: vec![],
            blocked: c.blocked.map(|b| (Vni(VNI), b)).into_iter().collect(),
        };
        assert_eq!(p, expected, "case: {}", c.name);
    }
}

#[test]
fn reason_bit_is_the_configured_one() {
    // Bit 31: the mask must not overflow or sign-extend.
    let top = 1u32 << 31;
    let links = BTreeMap::from([
        (1, link(1, true, top, false)),
        (2, link(2, true, OURS, false)),
    ]);
    let p = plan(&BTreeSet::new(), 1..=2, &links, 31);
    // VNI 1 is correct for bit 31; VNI 2 carries bit 3, which is not ours with bit 31.
    assert_eq!(p.changes, vec![on(2)]);
    let p = plan(&BTreeSet::from([1, 2]), 1..=2, &links, 31);
    assert_eq!(p.changes, vec![off(1)]);
    assert_eq!(p.blocked, vec![(Vni(2), OURS)]);
}

#[test]
fn missing_interfaces_are_reported() {
    let links = BTreeMap::from([
        (1, link(1, true, OURS, false)),
        (3, link(3, false, 0, true)),
        (5, link(5, true, OURS, false)),
        // Outside the managed range: never touched, never reported.
        (9, link(9, false, 0, true)),
    ]);
    let p = plan(&BTreeSet::from([5]), 1..=6, &links, BIT);
    assert_eq!(
        p,
        Plan {
            changes: vec![on(3), off(5)],
            missing: vnis(&[2, 4, 6]),
            blocked: vec![],
        }
    );
}

#[test]
fn no_links_at_all() {
    let p = plan(&BTreeSet::from([1, 2]), 1..=3, &BTreeMap::new(), BIT);
    assert_eq!(p.changes, vec![]);
    assert_eq!(p.missing, vnis(&[1, 2, 3]));
}

fn settled(owned: &BTreeSet<u32>, vnis: std::ops::RangeInclusive<u32>) -> BTreeMap<u32, LinkState> {
    vnis.map(|v| {
        let l = if owned.contains(&v) {
            link(v, false, 0, true)
        } else {
            link(v, true, OURS, false)
        };
        (v, l)
    })
    .collect()
}

#[test]
fn a_settled_thousand_vnis_need_nothing() {
    let owned: BTreeSet<u32> = (1..=1000).filter(|v| v % 3 == 0).collect();
    let mut links = settled(&owned, 1..=1000);
    assert_eq!(plan(&owned, 1..=1000, &links, BIT), Plan::default());

    // One drifted link (someone ran `ip link set vrrp4-500 protodown off`): one action.
    links.get_mut(&500).unwrap().protodown = false;
    links.get_mut(&500).unwrap().carrier = true;
    assert_eq!(plan(&owned, 1..=1000, &links, BIT).changes, vec![on(500)]);

    // Taking everything over: one action per VNI not owned before, in VNI order.
    let all: BTreeSet<u32> = (1..=1000).collect();
    let p = plan(&all, 1..=1000, &settled(&owned, 1..=1000), BIT);
    let expected: Vec<Protodown> = (1..=1000).filter(|v| v % 3 != 0).map(off).collect();
    assert_eq!(p.changes, expected);
}

/// A plain link for the topology around a managed interface.
fn dev(ifindex: u32, lower: Option<u32>, master: Option<u32>) -> LinkState {
    LinkState {
        ifindex: IfIndex(ifindex),
        ifname: format!("dev{ifindex}"),
        protodown: false,
        reason: 0,
        admin_up: true,
        carrier: true,
        running: true,
        mac: [0x02, 0xff, 0, 0, 0, ifindex as u8],
        lower: lower.map(IfIndex),
        master: master.map(IfIndex),
    }
}

/// macvlan vrrp4-1 (1001) on veth 10, whose peer veth 11 is a port of bridge 3.
fn topology() -> BTreeMap<IfIndex, LinkState> {
    let mut mv = link(1, false, 0, true);
    mv.lower = Some(IfIndex(10));
    BTreeMap::from([
        (IfIndex(1001), mv),
        (IfIndex(10), dev(10, Some(11), None)),
        (IfIndex(11), dev(11, Some(10), Some(3))),
        (IfIndex(3), dev(3, None, None)),
    ])
}

#[test]
fn bridge_port_is_the_veth_peer_on_the_bridge() {
    let all = topology();
    assert_eq!(bridge_port(&all[&IfIndex(1001)], &all), Some(IfIndex(11)));

    // The peer is not enslaved to a bridge.
    let mut t = topology();
    t.get_mut(&IfIndex(11)).unwrap().master = None;
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
    // The lower device has no peer (a physical NIC).
    let mut t = topology();
    t.get_mut(&IfIndex(10)).unwrap().lower = None;
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
    // The lower device, or its peer, is not known.
    let mut t = topology();
    t.remove(&IfIndex(11));
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
    let mut t = topology();
    t.remove(&IfIndex(10));
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
    // No lower device at all.
    let mut t = topology();
    t.get_mut(&IfIndex(1001)).unwrap().lower = None;
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
    // A lower device that names itself (and is a bridge port) is not a veth pair.
    let mut t = topology();
    t.insert(IfIndex(10), dev(10, Some(10), Some(3)));
    assert_eq!(bridge_port(&t[&IfIndex(1001)], &t), None);
}

#[test]
fn fdb_flushes_only_for_interfaces_put_down_with_a_port() {
    let links = BTreeMap::from([
        (Slot::v4(Vni(1)), link(1, false, 0, true)),
        (Slot::v4(Vni(2)), link(2, false, 0, true)),
        (Slot::v4(Vni(3)), link(3, false, 0, true)),
    ]);
    let ports = BTreeMap::from([
        (Slot::v4(Vni(1)), IfIndex(11)),
        (Slot::v4(Vni(2)), IfIndex(12)),
        (Slot::v4(Vni(4)), IfIndex(14)),
    ]);
    let port_of = |s: Slot| ports.get(&s).copied();
    let actions = [on(1), off(2), on(3), on(4)];
    assert_eq!(
        fdb_flushes(&actions, &links, port_of),
        vec![FdbFlush {
            vni: Vni(1),
            family: Family::V4,
            port: IfIndex(11),
            mac: links[&Slot::v4(Vni(1))].mac,
        }]
    );
    assert_eq!(fdb_flushes(&[], &links, port_of), vec![]);
}

proptest! {
    /// Applying a plan to the links (as the kernel would, with no foreign bits) settles them: the
    /// next plan is empty. This is what keeps the daemon from acting twice.
    #[test]
    fn applying_a_plan_settles(
        states in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 1..50),
    ) {
        let n = states.len() as u32;
        let mut links = BTreeMap::new();
        let mut owned = BTreeSet::new();
        for (i, &(own, pd, ours, carrier)) in states.iter().enumerate() {
            let vni = i as u32 + 1;
            if own {
                owned.insert(vni);
            }
            links.insert(vni, link(vni, pd, if ours { OURS } else { 0 }, carrier));
        }
        let p = plan(&owned, 1..=n, &links, BIT);
        prop_assert!(p.missing.is_empty() && p.blocked.is_empty());
        for a in &p.changes {
            let Protodown { vni: Vni(vni), on, .. } = *a;
            prop_assert_eq!(on, !owned.contains(&vni));
            let l = links.get_mut(&vni).unwrap();
            l.protodown = on;
            l.reason = if on { OURS } else { 0 };
            l.carrier = !on;
            l.running = !on;
        }
        prop_assert_eq!(plan(&owned, 1..=n, &links, BIT), Plan::default());
    }
}

#[test]
fn name_pattern_maps_both_ways() {
    let p = NamePattern::new("vrrp4-{vni}").unwrap();
    assert_eq!(p.name(Vni(1)), "vrrp4-1");
    assert_eq!(p.name(Vni(16_777_215)), "vrrp4-16777215");
    assert_eq!(p.vni("vrrp4-1"), Some(Vni(1)));
    assert_eq!(p.vni("vrrp4-0"), Some(Vni(0)));
    assert_eq!(p.vni("vrrp4-100"), Some(Vni(100)));
    assert_eq!(p.vni("vrrp4-16777215"), Some(Vni(16_777_215)));
    for bad in [
        "vrrp4-007",
        "vrrp4-00",
        "vrrp4-",
        "vrrp4-1x",
        "xvrrp4-1",
        "vrrp4--1",
        "vrrp4-+1",
        "vrrp4- 1",
        "vrrp6-1",
        "vrrp4-99999999999",
        "",
    ] {
        assert_eq!(p.vni(bad), None, "{bad:?}");
    }
}

#[test]
fn name_pattern_with_prefix_and_suffix() {
    let p = NamePattern::new("gw{vni}.v4").unwrap();
    assert_eq!(p.name(Vni(12)), "gw12.v4");
    assert_eq!(p.vni("gw12.v4"), Some(Vni(12)));
    assert_eq!(p.vni("gw12.v6"), None);
    assert_eq!(p.vni("gw12"), None);
    assert_eq!(p.vni("gw.v4"), None);
    let bare = NamePattern::new("{vni}").unwrap();
    assert_eq!(bare.name(Vni(5)), "5");
    assert_eq!(bare.vni("5"), Some(Vni(5)));
    assert_eq!(bare.vni("05"), None);
}

#[test]
fn name_pattern_needs_exactly_one_placeholder() {
    for bad in [
        "vrrp4-",
        "vrrp4-{VNI}",
        "vrrp4-{vni",
        "",
        "{vni}{vni}",
        "a{vni}b{vni}",
    ] {
        assert_eq!(NamePattern::new(bad), None, "{bad:?}");
    }
}

proptest! {
    #[test]
    fn name_pattern_round_trips(vni in 0u32..=16_777_215) {
        let p = NamePattern::new("vrrp4-{vni}").unwrap();
        prop_assert_eq!(p.vni(&p.name(Vni(vni))), Some(Vni(vni)));
    }

    #[test]
    fn name_pattern_accepts_only_canonical_names(s in "vrrp4-[0-9a-z+-]{0,9}") {
        let p = NamePattern::new("vrrp4-{vni}").unwrap();
        if let Some(vni) = p.vni(&s) {
            prop_assert_eq!(p.name(vni), s);
        }
    }
}

#[test]
fn garp_is_the_documented_frame() {
    let f = garp(
        [0x02, 0x42, 0xac, 0x11, 0x00, 0x07],
        Ipv4Addr::new(10, 100, 1, 1),
    );
    assert_eq!(GARP_LEN, 42);
    #[rustfmt::skip]
    let expected: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
        0x02, 0x42, 0xac, 0x11, 0x00, 0x07, // Ethernet source: the interface's MAC
        0x08, 0x06,                         // EtherType ARP
        0x00, 0x01,                         // hardware type Ethernet
        0x08, 0x00,                         // protocol type IPv4
        0x06, 0x04,                         // address lengths 6 and 4
        0x00, 0x01,                         // opcode 1: request
        0x02, 0x42, 0xac, 0x11, 0x00, 0x07, // sender MAC
        0x0a, 0x64, 0x01, 0x01,             // sender IP 10.100.1.1
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target MAC: broadcast
        0x0a, 0x64, 0x01, 0x01,             // target IP = sender IP
    ];
    assert_eq!(f, expected);
}

#[test]
fn garp_differs_per_address_and_mac() {
    let a = garp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 1));
    let b = garp([2, 0, 0, 0, 0, 2], Ipv4Addr::new(192, 0, 2, 1));
    let c = garp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 254));
    assert_eq!(&a[6..12], &[2, 0, 0, 0, 0, 1]);
    assert_eq!(&b[22..28], &[2, 0, 0, 0, 0, 2]);
    assert_eq!(&c[28..32], &[192, 0, 2, 254]);
    assert_eq!(&c[38..42], &[192, 0, 2, 254]);
    assert_ne!(a, b);
    assert_ne!(a, c);
}

/// An unsolicited neighbour advertisement the kernel itself sent (Linux 6.x, `ndisc_notify=1`,
/// forwarding on, `2001:db8:1::1` added `nodad` to a link with MAC 02:00:00:00:00:01, captured
/// with tcpdump on its veth peer): ours must be the same bytes.
#[rustfmt::skip]
const KERNEL_NA: [u8; 86] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x00, 0x79, 0x28, 0xa0, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
];

#[test]
fn na_is_the_frame_linux_sends() {
    let ip: std::net::Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    assert_eq!(NA_LEN, 86);
    assert_eq!(na([0x02, 0, 0, 0, 0, 0x01], ip), KERNEL_NA);
}

#[test]
fn na_is_the_documented_frame() {
    let ip: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let f = na([0x02, 0x42, 0xac, 0x11, 0x00, 0x07], ip);
    #[rustfmt::skip]
    let expected: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: all nodes (ff02::1)
        0x02, 0x42, 0xac, 0x11, 0x00, 0x07, // Ethernet source: the interface's MAC
        0x86, 0xdd,                         // EtherType IPv6
        0x60, 0x00, 0x00, 0x00,             // version 6, traffic class 0, flow label 0
        0x00, 0x20, 0x3a, 0xff,             // payload 32, next header ICMPv6, hop limit 255
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source: the target itself
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination ff02::1
        0x88, 0x00,                         // type 136 (neighbour advertisement), code 0
        0x2b, 0x41,                         // checksum (computed apart, over the pseudo-header)
        0xa0, 0x00, 0x00, 0x00,             // flags: router, override (not solicited)
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // target
        0x02, 0x01,                         // option: target link-layer address, 8 bytes
        0x02, 0x42, 0xac, 0x11, 0x00, 0x07, // the MAC
    ];
    assert_eq!(f, expected);
}

/// The checksum as a receiver checks it: the ones' complement sum over the pseudo-header and the
/// whole message, checksum included, is 0xffff; for any address and MAC.
#[test]
fn na_checksums_verify() {
    proptest!(|(mac in any::<[u8; 6]>(), ip in any::<u128>())| {
        let f = na(mac, std::net::Ipv6Addr::from(ip));
        let mut sum: u32 = 0;
        let mut words = |b: &[u8]| for p in b.chunks(2) { sum += u32::from(p[0]) << 8 | u32::from(p[1]); };
        words(&f[22..54]);
        words(&[0, 0, 0, 32, 0, 0, 0, 58]);
        words(&f[54..]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        prop_assert_eq!(sum, 0xffff);
        prop_assert_eq!(&f[6..12], &mac);
        prop_assert_eq!(&f[80..86], &mac);
    });
}
