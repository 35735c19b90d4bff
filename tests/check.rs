//! `check::judge` on facts written here: what `wmgwd2 check` says of a host. No root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wmgwd2::check::{judge, parse_if_inet6, Finding, Host, IfAddr, Level};
use wmgwd2::cli::Config;
use wmgwd2::links::{LinkState, Snapshot};
use wmgwd2::types::IfIndex;

fn link(ifindex: u32, name: &str, lower: Option<u32>) -> LinkState {
    LinkState {
        ifindex: IfIndex(ifindex),
        ifname: name.into(),
        protodown: true,
        reason: 1 << 3,
        admin_up: true,
        carrier: true,
        running: true,
        mac: [2, 0, 0, 0, 0, ifindex as u8],
        lower: lower.map(IfIndex),
        master: None,
    }
}

fn cfg() -> Config {
    Config::parse_from([
        "wmgwd2",
        "--minvni",
        "1",
        "--maxvni",
        "4",
        "--bind-interface",
        "eth0",
    ])
    .unwrap()
}

/// A gateway as docs/operations.md describes it.
fn good() -> Host {
    let mut links = vec![link(2, "eth0", None), link(3, "gwl", None)];
    let mut addrs = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for v in 1..=4u32 {
        links.push(link(100 + v, &format!("vrrp4-{v}"), Some(3)));
        addrs.insert(
            IfIndex(100 + v),
            vec![Ipv4Addr::new(10, 100, v as u8, 1).into()],
        );
        kinds.insert(format!("vrrp4-{v}"), "macvlan".to_owned());
    }
    let mut sysctls = BTreeMap::new();
    sysctls.insert(("all".to_owned(), "arp_ignore".to_owned()), 1);
    sysctls.insert(("all".to_owned(), "arp_announce".to_owned()), 2);
    Host {
        snapshot: Snapshot { links, addrs },
        kinds,
        sysctls,
        addrs: vec![IfAddr {
            ifname: "eth0".into(),
            addr: Ipv4Addr::new(10, 0, 1, 7),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        }],
        port_free: true,
        peer_routes: vec![],
        keyed: false,
        inet6: vec![],
    }
}

fn errors(f: &[Finding]) -> Vec<&str> {
    f.iter()
        .filter(|f| f.level == Level::Error)
        .map(|f| f.text.as_str())
        .collect()
}

#[test]
fn a_good_gateway_has_no_error_and_no_warning() {
    let f = judge(&cfg(), &good());
    assert!(f.iter().all(|f| f.level == Level::Ok), "{f:#?}");
}

#[test]
fn each_fault_is_named() {
    let mut h = good();
    h.snapshot.links.retain(|l| l.ifname != "vrrp4-2");
    h.kinds.insert("vrrp4-3".into(), "veth".into());
    h.snapshot.addrs.remove(&IfIndex(104));
    h.snapshot
        .links
        .iter_mut()
        .find(|l| l.ifname == "vrrp4-1")
        .unwrap()
        .reason |= 1 << 7;
    h.sysctls.insert(("all".into(), "arp_ignore".into()), 0);
    h.sysctls.insert(("all".into(), "arp_announce".into()), 0);
    h.sysctls.insert(("eth0".into(), "rp_filter".into()), 1);
    h.addrs[0].addr = Ipv4Addr::new(192, 0, 2, 7);
    h.port_free = false;
    let f = judge(&cfg(), &h);
    let text: Vec<String> = f.iter().map(|f| f.to_string()).collect();
    let all = text.join("\n");
    for want in [
        "warn  1 managed interfaces missing (VNIs 2)",
        "ERROR 1 of 3 managed interfaces are not macvlans",
        "warn  1 of 3 managed interfaces hold no address of their family",
        "warn  1 of 3 managed interfaces are held down by another program's protodown reason bit",
        "ERROR net.ipv4.conf.all.arp_ignore is 0",
        "ERROR net.ipv4.conf.all.arp_announce is 0",
        "ERROR no interface (eth0) holds an address whose broadcast is --broadcast 10.0.1.255",
        "warn  rp_filter is strict (1) on eth0",
        "warn  UDP port 3000 is already bound",
    ] {
        assert!(all.contains(want), "no {want:?} in\n{all}");
    }
    assert_eq!(errors(&f).len(), 4, "{all}");
}

#[test]
fn no_managed_interface_at_all_is_an_error_and_a_missing_uplink_too() {
    let mut h = good();
    h.snapshot.links.retain(|l| !l.ifname.starts_with("vrrp4-"));
    h.snapshot.links.retain(|l| l.ifname != "eth0");
    let f = judge(&cfg(), &h);
    let e = errors(&f);
    assert!(
        e.iter()
            .any(|t| t.starts_with("no managed interface exists")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|t| t.contains("--bind-interface eth0 does not exist")),
        "{e:?}"
    );
}

/// IPv6 gateways: a VNI with only its `vrrp6-<V>` is not missing; an IPv6 interface needs an IPv6
/// address (an IPv4 one on it announces nothing), and is judged like the IPv4 one (a macvlan).
#[test]
fn ipv6_interfaces_count_and_need_an_ipv6_address() {
    let mut h = good();
    // VNI 2: IPv6 only, as it should be.
    h.snapshot.links.retain(|l| l.ifname != "vrrp4-2");
    h.snapshot.links.push(link(202, "vrrp6-2", Some(3)));
    h.kinds.insert("vrrp6-2".into(), "macvlan".into());
    h.snapshot.addrs.insert(
        IfIndex(202),
        vec!["2001:db8:2::1".parse().unwrap(), "fe80::1".parse().unwrap()],
    );
    let f = judge(&cfg(), &h);
    assert!(errors(&f).is_empty(), "{f:?}");
    assert!(f.iter().all(|x| x.level == Level::Ok), "{f:?}");
    // VNI 3: both, the IPv6 one with only an IPv4 address and not a macvlan.
    h.snapshot.links.push(link(203, "vrrp6-3", Some(3)));
    h.kinds.insert("vrrp6-3".into(), "veth".into());
    h.snapshot
        .addrs
        .insert(IfIndex(203), vec![Ipv4Addr::new(10, 9, 9, 9).into()]);
    let text: Vec<String> = judge(&cfg(), &h).iter().map(|x| x.to_string()).collect();
    let has = |s: &str| text.iter().any(|t| t.contains(s));
    assert!(
        has("hold no address of their family (nothing to announce when owned): VNIs 3"),
        "{text:#?}"
    );
    assert!(
        has("are not macvlans (protodown on them may not take them off the segment): VNIs 3"),
        "{text:#?}"
    );
    assert!(!has("missing"), "{text:#?}");
}

fn with(args: &[&str]) -> Config {
    Config::parse_from(
        ["wmgwd2", "--minvni", "1", "--maxvni", "4"]
            .iter()
            .chain(args),
    )
    .unwrap()
}

#[test]
fn peers_need_a_route_each_and_a_key() {
    let cfg = with(&[
        "--peer", "10.0.2.2", "--peer", "10.0.3.2", "--peer", "10.0.1.7",
    ]);
    let mut h = good();
    // The broadcast segment does not matter with peers: eth0 has no address on it.
    h.addrs[0].addr = Ipv4Addr::new(192, 0, 2, 7);
    h.peer_routes = vec![
        (
            "10.0.2.2:3000".parse().unwrap(),
            Ok(("10.0.1.7".parse().unwrap(), Some("eth0".into()))),
        ),
        (
            "10.0.3.2:3000".parse().unwrap(),
            Err("Network is unreachable (os error 101)".into()),
        ),
        (
            "10.0.1.7:3000".parse().unwrap(),
            Ok(("10.0.1.7".parse().unwrap(), Some("eth0".into()))),
        ),
    ];
    let f = judge(&cfg, &h);
    let all: Vec<String> = f.iter().map(|f| f.to_string()).collect();
    let all = all.join("\n");
    for want in [
        "ok    --peer 10.0.2.2:3000 is routed, from 10.0.1.7",
        "ERROR --peer 10.0.3.2:3000 has no route: Network is unreachable",
        "ok    --peer 10.0.1.7:3000 is this gateway's own address",
        "warn  --peer without --key-file",
        "ok    no --bind-interface: the peers' frames are accepted on any interface",
    ] {
        assert!(all.contains(want), "no {want:?} in\n{all}");
    }
    assert!(!all.contains("--broadcast"), "{all}");
    assert_eq!(errors(&f).len(), 1, "{all}");

    // Routed everywhere, keyed: nothing to say but ok.
    let _unrouted = h.peer_routes.remove(1);
    h.keyed = true;
    let bound = with(&[
        "--peer",
        "10.0.2.2",
        "--peer",
        "10.0.1.7",
        "--bind-interface",
        "eth0",
    ]);
    let f = judge(&bound, &h);
    assert!(f.iter().all(|f| f.level == Level::Ok), "{f:#?}");
    // The routes reach a peer from another interface than the heartbeat one: said.
    h.peer_routes[0].1 = Ok(("192.0.2.1".parse().unwrap(), Some("eth1".into())));
    let f = judge(&bound, &h);
    let all: Vec<String> = f.iter().map(|f| f.to_string()).collect();
    let want = "warn  --peer 10.0.2.2:3000 is routed from 192.0.2.1 on eth1, not on --bind-interface eth0: heartbeats leave through the latter";
    assert!(all.iter().any(|l| l == want), "{all:#?}");
}

#[test]
fn ipv6_group_heartbeats_need_no_ipv4_segment() {
    let mut h = good();
    h.addrs.clear();
    h.sysctls
        .insert(("eth0".into(), "ipv6.disable_ipv6".into()), 0);
    let v6 = with(&["--ipv6", "--bind-interface", "eth0"]);
    let f = judge(&v6, &h);
    assert!(f.iter().all(|f| f.level == Level::Ok), "{f:#?}");
    assert!(
        f.iter()
            .any(|f| f.text == "heartbeats to IPv6 group ff02::6d67 on eth0"),
        "{f:#?}"
    ); // IPv6 off on the interface, or on the host: the daemon could not join the group.
    h.sysctls
        .insert(("eth0".into(), "ipv6.disable_ipv6".into()), 1);
    let e = errors(&judge(&v6, &h)).join("\n");
    assert!(e.starts_with("IPv6 is disabled on eth0"), "{e}");
    h.sysctls
        .remove(&("eth0".to_owned(), "ipv6.disable_ipv6".to_owned()));
    let e = errors(&judge(&v6, &h)).join("\n");
    assert!(e.starts_with("no IPv6 on eth0"), "{e}");
}

/// `/proc/net/if_inet6` as this kernel writes it (address, ifindex, prefix length, scope, flags,
/// name), with a line that does not parse.
#[test]
fn if_inet6_is_read_with_the_flags() {
    let text = "20010db8000000020000000000000001 0c 40 00 82  vrrp6-2\n\
                fe800000000000000000000000000001 0c 40 20 c2  vrrp6-2\n\
                20010db8000000030000000000000001 0d 40 00 08  vrrp6-3\n\
                fe80 0d 40 20 80 vrrp6-3\n\
                00000000000000000000000000000001 01 80 10 80       lo\n";
    let got = parse_if_inet6(text);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].ifname, "vrrp6-2");
    assert_eq!(
        got[0].addr,
        "2001:db8:0:2::1".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(got[0].flags, 0x82);
    assert_eq!(
        got[1].addr,
        "fe80::1".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(got[2].flags, 0x08);
    assert_eq!(got[3].ifname, "lo");
}

/// The IPv6 host setup of docs/operations.md ("IPv6 gateways"), judged per interface: IPv6
/// disabled and a failed DAD are errors; an address without `nodad` while `accept_dad` is on,
/// and a link-local address of the interface's own (`addr_gen_mode` not none), are warnings. A
/// gateway set up as the docs say has none of them.
#[test]
fn ipv6_interfaces_set_up_otherwise_than_documented_are_named() {
    let mut h = good();
    for v in 1..=4u32 {
        let name = format!("vrrp6-{v}");
        h.snapshot.links.push(link(200 + v, &name, Some(3)));
        h.kinds.insert(name.clone(), "macvlan".into());
        h.snapshot.addrs.insert(
            IfIndex(200 + v),
            vec![
                format!("2001:db8:{v}::1").parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ],
        );
        for (key, value) in [("disable_ipv6", 0), ("accept_dad", 1), ("addr_gen_mode", 1)] {
            h.sysctls
                .insert((name.clone(), format!("ipv6.{key}")), value);
        }
        let line = format!(
            "20010db800{v:02x}0000000000000000000001 0c 40 00 82 {name}\n\
             fe800000000000000000000000000001 0c 40 20 82 {name}\n"
        );
        h.inet6.extend(parse_if_inet6(&line));
    }
    let f = judge(&cfg(), &h);
    assert!(f.iter().all(|x| x.level == Level::Ok), "{f:#?}");

    // VNI 1: IPv6 disabled; 2: DAD failed; 3: added without nodad; 4: its own link-local.
    h.sysctls
        .insert(("vrrp6-1".into(), "ipv6.disable_ipv6".into()), 1);
    h.inet6
        .iter_mut()
        .filter(|a| a.ifname == "vrrp6-2")
        .for_each(|a| a.flags |= wmgwd2::check::IFA_F_DADFAILED);
    h.inet6
        .iter_mut()
        .filter(|a| a.ifname == "vrrp6-3")
        .for_each(|a| a.flags &= !wmgwd2::check::IFA_F_NODAD);
    h.sysctls
        .insert(("vrrp6-4".into(), "ipv6.addr_gen_mode".into()), 0);
    let f = judge(&cfg(), &h);
    let all = f
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "ERROR 1 of 4 managed interfaces have IPv6 disabled",
        "ERROR 1 of 4 managed interfaces hold an IPv6 address that failed duplicate address detection",
        "warn  1 of 4 managed interfaces hold IPv6 addresses added without `nodad` while accept_dad is on",
        "warn  1 of 4 managed interfaces make a link-local address of their own",
    ] {
        assert!(all.contains(want), "no {want:?} in\n{all}");
    }
    for (want, vni) in [
        ("have IPv6 disabled", 1),
        ("failed duplicate address", 2),
        ("without `nodad`", 3),
        ("link-local address of their own", 4),
    ] {
        let line = all.lines().find(|l| l.contains(want)).unwrap();
        assert!(line.ends_with(&format!("VNIs {vni}")), "{line}");
    }
    // accept_dad off covers addresses added without nodad.
    h.sysctls
        .insert(("vrrp6-3".into(), "ipv6.accept_dad".into()), 0);
    let all = judge(&cfg(), &h)
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!all.contains("without `nodad`"), "{all}");
}
