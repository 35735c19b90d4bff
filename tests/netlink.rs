//! The kernel edge for real: `sys::NetlinkKernel` in a network namespace of its own, against
//! real macvlans, a real bridge and the kernel's own answers. Root only; without root each test
//! says it was skipped and why.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wmgwd2::kernel::{EventSource, Kernel, KernelError, KernelEvent, KernelOp};
use wmgwd2::links::{bridge_port, LinkState};
use wmgwd2::reconcile::FdbFlush;
use wmgwd2::sys::NetlinkKernel;
use wmgwd2::types::{Family, IfIndex, Vni};

const REASON_BIT: u8 = 3;
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(ns: &str, args: &str) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace())
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(test: &str) -> Option<Netns> {
        if !is_root() {
            eprintln!("SKIPPED {test}: netlink tests need root to create a network namespace");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wn{:05}{n}", std::process::id() % 100_000);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success());
        Some(Netns(name))
    }

    /// Runs `f` on a thread inside the namespace, with a current-thread tokio runtime.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let name = self.0.clone();
        std::thread::spawn(move || {
            let nsf = File::open(format!("/run/netns/{name}")).expect("netns");
            // SAFETY: setns on a valid namespace fd affects only this thread.
            assert_eq!(
                unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f(name))
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `ip -j -d link show DEV` as JSON.
fn link_json(ns: &str, dev: &str) -> serde_json::Value {
    let out = ip(ns, &format!("-j -d link show {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v[0].clone()
}

/// A veth pair with `n` macvlans `m1..mn` on one end, all up.
fn macvlans(ns: &str, n: u32) {
    ip(ns, "link add vetha type veth peer name vethb");
    ip(ns, "link set vetha up");
    ip(ns, "link set vethb up");
    for i in 1..=n {
        ip(
            ns,
            &format!("link add m{i} link vetha type macvlan mode bridge"),
        );
        ip(ns, &format!("addr add 10.9.{i}.1/24 dev m{i}"));
        ip(ns, &format!("link set m{i} up"));
    }
}

fn by_name(links: &[LinkState]) -> BTreeMap<String, LinkState> {
    links
        .iter()
        .map(|l| (l.ifname.clone(), l.clone()))
        .collect()
}

#[test]
fn protodown_batches_set_and_release_our_reason_bit() {
    let Some(ns) = Netns::new("protodown") else {
        return;
    };
    macvlans(&ns.0, 40);
    let snap = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let links = by_name(&snap.links);
            let on: Vec<(IfIndex, bool)> = (1..=40)
                .map(|i| (links[&format!("m{i}")].ifindex, true))
                .collect();
            for r in k.set_protodown(&on).await {
                r.expect("protodown on");
            }
            snap
        })
    });
    let links = by_name(&snap.links);
    // The snapshot saw every macvlan with its address, lower device and MAC.
    for i in 1..=40 {
        let l = &links[&format!("m{i}")];
        assert_eq!(l.lower, Some(links["vetha"].ifindex));
        assert!(l.admin_up && l.carrier && !l.protodown);
        assert_ne!(l.mac, [0; 6]);
        assert_eq!(
            snap.addrs[&l.ifindex],
            vec![format!("10.9.{i}.1").parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }
    // The kernel's own view: protodown on with reason bit 3, no carrier.
    for i in [1, 17, 40] {
        let j = link_json(&ns.0, &format!("m{i}"));
        assert_eq!(j["proto_down"], true, "m{i}: {j}");
        assert_eq!(j["proto_down_reason"], serde_json::json!(["3"]), "m{i}");
        assert!(
            !j["flags"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("LOWER_UP")),
            "m{i} still has carrier"
        );
    }
    // Release them all again.
    ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let off: Vec<(IfIndex, bool)> = snap
                .links
                .iter()
                .filter(|l| l.ifname.starts_with('m'))
                .map(|l| {
                    assert!(l.protodown && l.reason == 1 << REASON_BIT, "{l:?}");
                    (l.ifindex, false)
                })
                .collect();
            assert_eq!(off.len(), 40);
            for r in k.set_protodown(&off).await {
                r.expect("protodown off");
            }
        })
    });
    let j = link_json(&ns.0, "m23");
    assert_ne!(j["proto_down"], true, "{j}");
}

#[test]
fn a_foreign_reason_bit_is_reported_busy_and_ours_is_still_cleared() {
    let Some(ns) = Netns::new("busy") else {
        return;
    };
    macvlans(&ns.0, 1);
    // Someone else (FRR's zebra uses bit 7 by default) holds m1 down too.
    ip(&ns.0, "link set m1 protodown_reason 7 on protodown on");
    let (busy, missing) = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let m1 = by_name(&snap.links)["m1"].ifindex;
            k.set_protodown(&[(m1, true)]).await.remove(0).expect("on");
            let busy = k.set_protodown(&[(m1, false)]).await.remove(0);
            let missing = k.set_protodown(&[(IfIndex(999_999), true)]).await.remove(0);
            (busy, missing)
        })
    });
    assert!(matches!(busy, Err(KernelError::Busy { .. })), "{busy:?}");
    assert!(
        matches!(missing, Err(KernelError::NoDevice { .. })),
        "{missing:?}"
    );
    let j = link_json(&ns.0, "m1");
    assert_eq!(j["proto_down"], true);
    assert_eq!(j["proto_down_reason"], serde_json::json!(["7"]), "{j}");
}

/// `--go-compat`'s stop: protodown on with our reason bit cleared, so that a program that never
/// sends a reason (the Go original: a plain IFLA_PROTO_DOWN 0) can clear protodown afterwards;
/// another program's bit is left as it was.
#[test]
fn hand_back_leaves_protodown_on_without_our_reason_bit() {
    let Some(ns) = Netns::new("handback") else {
        return;
    };
    macvlans(&ns.0, 2);
    ip(&ns.0, "link set m2 protodown_reason 7 on");
    let results = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let names = by_name(&snap.links);
            let (m1, m2) = (names["m1"].ifindex, names["m2"].ifindex);
            // As the daemon leaves them while running: down with our bit; m1 also owned (up) once.
            for r in k.set_protodown(&[(m1, true), (m2, true)]).await {
                r.expect("on");
            }
            k.hand_back(&[m1, m2, IfIndex(999_999)]).await
        })
    });
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        matches!(results[2], Err(KernelError::NoDevice { .. })),
        "{results:?}"
    );
    let j = link_json(&ns.0, "m1");
    assert_eq!(j["proto_down"], true, "{j}");
    assert!(j.get("proto_down_reason").is_none(), "{j}");
    let j = link_json(&ns.0, "m2");
    assert_eq!(j["proto_down"], true, "{j}");
    assert_eq!(j["proto_down_reason"], serde_json::json!(["7"]), "{j}");
    // What the original does to take it over: a plain clear, no reason. It works on m1.
    ip(&ns.0, "link set m1 protodown off");
    let j = link_json(&ns.0, "m1");
    assert_ne!(j["proto_down"], true, "{j}");
}

#[test]
fn fdb_flush_removes_the_gateway_mac_learnt_on_the_bridge_port() {
    let Some(ns) = Netns::new("fdb") else {
        return;
    };
    let n = &ns.0;
    // br100 <- b (veth) ... a -> macvlan vrrp4-100, as on an EVPN gateway.
    ip(n, "link add br100 type bridge");
    ip(n, "link set br100 up");
    ip(n, "link add vetha type veth peer name vethb");
    ip(n, "link set vethb master br100");
    ip(n, "link set vetha up");
    ip(n, "link set vethb up");
    ip(n, "link add vrrp4-100 link vetha type macvlan mode bridge");
    ip(n, "link set vrrp4-100 up");
    let mac = link_json(n, "vrrp4-100")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    // Teach the bridge the MAC: a static entry stands in for one learnt from traffic, so the test
    // does not depend on timing (the bridge may also have learnt it already from the macvlan's own
    // IPv6 traffic, hence `replace`).
    let st = Command::new("bridge")
        .args(["-n", n, "fdb", "replace", &mac, "dev", "vethb", "master"])
        .status()
        .expect("bridge");
    assert!(st.success());
    let fdb = || {
        let out = Command::new("bridge")
            .args(["-n", n, "fdb", "show", "br", "br100"])
            .output()
            .expect("bridge fdb");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(fdb().contains(&mac), "{}", fdb());
    // As the daemon does: protodown first, so the macvlan's own traffic (IPv6 autoconf, say)
    // cannot teach the bridge its MAC again right after the flush.
    ip(n, "link set vrrp4-100 protodown on");

    let (port, b, again) = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let all: BTreeMap<IfIndex, LinkState> =
                snap.links.iter().map(|l| (l.ifindex, l.clone())).collect();
            let names = by_name(&snap.links);
            let gw = &names["vrrp4-100"];
            let port = bridge_port(gw, &all);
            let f = FdbFlush {
                vni: Vni(100),
                family: Family::V4,
                port: port.expect("port"),
                mac: gw.mac,
            };
            k.flush_fdb(&[f]).await.remove(0).expect("flush");
            // Flushing what is not there is fine.
            let again = k.flush_fdb(&[f]).await.remove(0);
            (port, names["vethb"].ifindex, again)
        })
    });
    assert_eq!(
        port,
        Some(b),
        "the bridge port is the peer of the macvlan's lower veth"
    );
    assert!(again.is_ok(), "{again:?}");
    assert!(!fdb().contains(&mac), "{}", fdb());
}

#[test]
fn a_refused_fdb_flush_names_the_operation_the_port_and_the_errno() {
    let Some(ns) = Netns::new("fdb_error") else {
        return;
    };
    let gone = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let f = FdbFlush {
                vni: Vni(100),
                family: Family::V4,
                port: IfIndex(999_999),
                mac: [0x02, 0, 0, 0, 0, 1],
            };
            k.flush_fdb(&[f]).await.remove(0)
        })
    });
    let e = gone.expect_err("a port that does not exist");
    assert!(
        matches!(
            e,
            KernelError::Errno {
                op: KernelOp::FdbFlush,
                ifindex: IfIndex(999_999),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("fdb flush on interface 999999"),
        "{e}"
    );
    let source = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the io::Error is the source");
    assert_eq!(source.raw_os_error(), Some(libc::ENODEV));
}

#[test]
fn events_report_changes_made_by_others() {
    let Some(ns) = Netns::new("events") else {
        return;
    };
    macvlans(&ns.0, 1);
    let name = ns.0.clone();
    let seen = ns.run(move |_| {
        Box::pin(async move {
            let (_k, mut ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            ip(&name, "link set m1 protodown on");
            ip(&name, "addr add 10.8.0.1/24 dev m1");
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !(seen
                .iter()
                .any(|e| matches!(e, KernelEvent::Link(l) if l.ifname == "m1" && l.protodown))
                && seen
                    .iter()
                    .any(|e| matches!(e, KernelEvent::Address { added: true, .. })))
            {
                match tokio::time::timeout_at(deadline, ev.next_batch()).await {
                    Ok(Some(b)) => seen.extend(b),
                    _ => break,
                }
            }
            seen
        })
    });
    assert!(
        seen.iter()
            .any(|e| matches!(e, KernelEvent::Link(l) if l.ifname == "m1" && l.protodown)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, KernelEvent::Address { addr, added: true, .. } if *addr == std::net::Ipv4Addr::new(10, 8, 0, 1))),
        "{seen:?}"
    );
}

#[test]
fn neighbour_flush_deletes_dynamic_entries_of_the_given_links_only() {
    let Some(ns) = Netns::new("neigh") else {
        return;
    };
    let n = &ns.0;
    macvlans(n, 2);
    ip(
        n,
        "neigh add 10.9.1.50 dev m1 lladdr 02:00:00:00:00:50 nud stale",
    );
    ip(
        n,
        "neigh add 10.9.1.51 dev m1 lladdr 02:00:00:00:00:51 nud permanent",
    );
    ip(
        n,
        "neigh add 10.9.2.50 dev m2 lladdr 02:00:00:00:00:52 nud stale",
    );
    // IPv6 (an IPv6 gateway interface's clients) alike.
    ip(
        n,
        "neigh add 2001:db8:1::50 dev m1 lladdr 02:00:00:00:00:53 nud stale",
    );
    ip(
        n,
        "neigh add 2001:db8:2::50 dev m2 lladdr 02:00:00:00:00:54 nud stale",
    );
    let deleted = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            let m1 = by_name(&snap.links)["m1"].ifindex;
            k.flush_neighbours(&[m1]).await.expect("flush")
        })
    });
    assert_eq!(deleted, 2);
    let m1 = ip(n, "neigh show dev m1");
    assert!(!m1.contains("10.9.1.50"), "{m1}");
    let m1v6 = ip(n, "-6 neigh show dev m1");
    assert!(!m1v6.contains("2001:db8:1::50"), "{m1v6}");
    let m2v6 = ip(n, "-6 neigh show dev m2");
    assert!(m2v6.contains("2001:db8:2::50"), "another link's: {m2v6}");
    assert!(m1.contains("10.9.1.51"), "permanent entry deleted: {m1}");
    let m2 = ip(n, "neigh show dev m2");
    assert!(
        m2.contains("10.9.2.50"),
        "another link's entry deleted: {m2}"
    );
}

#[test]
fn a_veth_whose_peer_is_in_another_namespace_has_no_lower_here() {
    let Some(ns) = Netns::new("peerns") else {
        return;
    };
    let Some(other) = Netns::new("peerns2") else {
        return;
    };
    ip(
        &ns.0,
        &format!("link add vetha type veth peer name vethb netns {}", other.0),
    );
    ip(
        &ns.0,
        "link add vrrp4-7 link vetha type macvlan mode bridge",
    );
    let links = ns.run(|_| {
        Box::pin(async {
            let (k, _ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            by_name(&k.snapshot().await.expect("snapshot").links)
        })
    });
    // IFLA_LINK of vetha is an index in the other namespace: following it could reach an
    // unrelated local link and flush the MAC on the wrong bridge port.
    assert_eq!(links["vetha"].lower, None, "{:?}", links["vetha"]);
    assert_eq!(links["vrrp4-7"].lower, Some(links["vetha"].ifindex));
    let all: BTreeMap<IfIndex, LinkState> =
        links.values().map(|l| (l.ifindex, l.clone())).collect();
    assert_eq!(bridge_port(&links["vrrp4-7"], &all), None);
}

/// The heartbeat socket for real: it sends with TTL 255, and reports every datagram's TTL and
/// the interface it came in on, which is what the core's GTSM and ingress checks read.
#[test]
fn heartbeat_socket_sends_with_ttl_255_and_reports_ttl_and_ingress() {
    let Some(ns) = Netns::new("heartbeat_socket") else {
        return;
    };
    ip(&ns.0, "link set lo up");
    let (ours, theirs, lo) = ns.run(|_| {
        Box::pin(async {
            let lo = IfIndex(1);
            let sock = wmgwd2::announce::heartbeat_socket(&v4_socket(3999, None)).expect("socket");
            let mut buf = [0u8; 64];
            // Our own frame, looped back: TTL 255.
            sock.send_to(b"ours", "127.0.0.1:3999").await.expect("send");
            let ours = wmgwd2::announce::recv(&sock, &mut buf).await.expect("recv");
            // Someone else's, with the default TTL.
            let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            other.set_ttl(64).expect("ttl");
            other.send_to(b"theirs!", "127.0.0.1:3999").expect("send");
            let theirs = wmgwd2::announce::recv(&sock, &mut buf).await.expect("recv");
            (ours, theirs, lo)
        })
    });
    assert_eq!((ours.len, ours.ttl, ours.ifindex), (4, Some(255), Some(lo)));
    assert_eq!(
        (theirs.len, theirs.ttl, theirs.ifindex),
        (7, Some(64), Some(lo))
    );
    assert_eq!(ours.from.ip(), std::net::Ipv4Addr::LOCALHOST);
}

/// IPv6 addresses, in the snapshot and as events: one added `nodad` is usable at once; one added
/// with duplicate address detection on a link without carrier stays tentative, and is neither in
/// the snapshot nor reported added (it must not be announced); `addrgenmode none` leaves the link
/// no link-local address of its own; the IPv4 address is there as before.
#[test]
fn ipv6_addresses_are_read_once_usable() {
    let Some(ns) = Netns::new("ipv6_addresses") else {
        return;
    };
    macvlans(&ns.0, 2);
    let name = ns.0.clone();
    ip(&name, "link set m1 addrgenmode none");
    ip(&name, "addr add 2001:db8:1::1/64 dev m1 nodad");
    ip(&name, "addr add fe80::1/64 dev m1 nodad");
    // m2 without carrier (its protodown): an address with DAD stays tentative.
    ip(&name, "link set m2 protodown on");
    ip(&name, "addr add 2001:db8:2::1/64 dev m2");
    let (snap, seen) = ns.run(move |_| {
        Box::pin(async move {
            let (k, mut ev) = NetlinkKernel::open(REASON_BIT).expect("open");
            let snap = k.snapshot().await.expect("snapshot");
            ip(&name, "addr add 2001:db8:1::2/64 dev m1 nodad");
            ip(&name, "addr add 2001:db8:2::2/64 dev m2");
            ip(&name, "addr del 2001:db8:1::1/64 dev m1");
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
            let want = [
                (v6("2001:db8:1::2"), true),
                (v6("2001:db8:2::2"), false),
                (v6("2001:db8:1::1"), false),
            ];
            while !want.iter().all(|(a, added)| {
                seen.iter().any(|e| {
                    matches!(e, KernelEvent::Address { addr, added: x, .. } if addr == a && x == added)
                })
            }) {
                match tokio::time::timeout_at(deadline, ev.next_batch()).await {
                    Ok(Some(b)) => seen.extend(b),
                    _ => break,
                }
            }
            (snap, seen)
        })
    });
    let names = by_name(&snap.links);
    let m1 = names["m1"].ifindex;
    let m2 = names["m2"].ifindex;
    let mut got1: Vec<String> = snap.addrs[&m1].iter().map(|a| a.to_string()).collect();
    got1.sort();
    assert_eq!(got1, ["10.9.1.1", "2001:db8:1::1", "fe80::1"], "{snap:?}");
    let got2: Vec<String> = snap.addrs[&m2].iter().map(|a| a.to_string()).collect();
    assert_eq!(
        got2,
        ["10.9.2.1"],
        "the tentative address is not usable: {snap:?}"
    );
    let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let has = |a: &str, added: bool, i: IfIndex| {
        seen.iter().any(|e| {
            matches!(e, KernelEvent::Address { ifindex, addr, added: x } if *addr == v6(a) && *x == added && *ifindex == i)
        })
    };
    assert!(has("2001:db8:1::2", true, m1), "{seen:?}");
    assert!(has("2001:db8:1::1", false, m1), "{seen:?}");
    assert!(has("2001:db8:2::2", false, m2), "tentative: {seen:?}");
    assert!(!has("2001:db8:2::2", true, m2), "tentative: {seen:?}");
}

fn v4_socket(port: u16, device: Option<&str>) -> wmgwd2::announce::SocketSpec {
    wmgwd2::announce::SocketSpec {
        port,
        device: device.map(str::to_owned),
        v6: false,
        group: None,
    }
}

/// The IPv6 heartbeat socket for real: dual-stack for a peer list (an IPv4 sender is reported
/// as IPv4, with its TTL; an IPv6 one with its hop limit), and on a group, joined on its
/// interface, hop limit 255 out, each frame read with its hop limit and ingress interface.
#[test]
fn ipv6_heartbeat_socket_is_dual_stack_and_joins_its_group_with_hop_limit_255() {
    use std::net::{IpAddr, SocketAddr};
    use wmgwd2::announce::{destination, heartbeat_socket, recv, SocketSpec};
    let Some(ns) = Netns::new("heartbeat_socket_v6") else {
        return;
    };
    let n = &ns.0;
    // No duplicate address detection: the link-local addresses are usable at once.
    let st = Command::new("ip")
        .args(["netns", "exec", n, "sh", "-ec"])
        .arg("echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad")
        .status()
        .expect("sysctl");
    assert!(st.success());
    ip(n, "link set lo up");
    ip(n, "link add va type veth peer name vb");
    ip(n, "link set va up");
    ip(n, "link set vb up");
    let group: std::net::Ipv6Addr = "ff02::6d67".parse().unwrap();
    let (peers, got) = ns.run(move |_| {
        Box::pin(async move {
            let mut buf = [0u8; 64];
            // A peer list: dual-stack.
            let dual = SocketSpec {
                port: 3997,
                device: None,
                v6: true,
                group: None,
            };
            let sock = heartbeat_socket(&dual).expect("dual-stack socket");
            let v4 = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            v4.set_ttl(64).expect("ttl");
            v4.send_to(b"four", "127.0.0.1:3997").expect("send");
            let four = recv(&sock, &mut buf).await.expect("recv");
            let to = destination("127.0.0.1:3997".parse().unwrap(), true);
            sock.send_to(b"mapped", to)
                .await
                .expect("send to a mapped address");
            let mapped = recv(&sock, &mut buf).await.expect("recv");
            sock.send_to(b"six", "[::1]:3997").await.expect("send");
            let six = recv(&sock, &mut buf).await.expect("recv");
            // The group on va and on vb: what one sends, the other reads.
            let spec = |dev: &str| SocketSpec {
                port: 3998,
                device: Some(dev.into()),
                v6: true,
                group: Some(group),
            };
            let a = heartbeat_socket(&spec("va")).expect("socket on va");
            let b = heartbeat_socket(&spec("vb")).expect("socket on vb");
            let mut sent = 0;
            let got = loop {
                a.send_to(b"hello", SocketAddr::new(IpAddr::V6(group), 3998))
                    .await
                    .expect("send to the group");
                sent += 1;
                match tokio::time::timeout(Duration::from_millis(200), recv(&b, &mut buf)).await {
                    Ok(r) => break r.expect("recv"),
                    Err(_) if sent < 25 => continue,
                    Err(_) => panic!("nothing arrived on vb"),
                }
            };
            let vb = nix::net::if_::if_nametoindex("vb").expect("vb");
            ((four, mapped, six), (got, vb))
        })
    });
    let (four, mapped, six) = peers;
    assert_eq!((four.len, four.ttl), (4, Some(64)));
    assert!(four.from.is_ipv4(), "{:?}", four.from);
    assert_eq!((mapped.len, mapped.ttl), (6, Some(255)));
    assert_eq!(mapped.from.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!((six.len, six.ttl), (3, Some(255)));
    assert_eq!(six.from.ip(), "::1".parse::<IpAddr>().unwrap());
    let (got, vb) = got;
    assert_eq!(
        (got.len, got.ttl, got.ifindex),
        (5, Some(255), Some(IfIndex(vb)))
    );
    match got.from {
        SocketAddr::V6(a) => {
            assert_eq!(a.ip().segments()[0], 0xfe80, "{a}");
            assert_eq!(a.port(), 3998);
        }
        other => panic!("from {other}"),
    }
}
