//! IPv6 gateways in the lab: 3 gateways × 4 VNIs on the lab crate, each VNI with a `vrrp4-<v>`
//! and a `vrrp6-<v>` (`2001:db8:0:<v>::1/64` and `fe80::1/64`, added `nodad`, no automatic
//! link-local: docs/operations.md), the real binary, real protodown, real neighbour discovery.
//! Root only; without it each test says it was skipped and why.
//!
//! What is asserted, from the kernel's own state: every live gateway's `vrrp6-<v>` has the same
//! protodown state as its `vrrp4-<v>` (one owner per VNI, both families); the client's IPv6
//! neighbour entry for each gateway address holds the owner's MAC (distinct MACs), or the shared
//! MAC and the client's VXLAN forwarding entry for it points at the owner's VTEP (shared MAC);
//! and the client's `ping -6` to every gateway address is answered again after a crash, a
//! SIGTERM, a rejoin and a link cut. The client keeps its neighbour entries reachable for an
//! hour (the lab's IPv6 sysctls), so within these bounds only the new owner's unsolicited
//! neighbour advertisement can move an entry: that it moves shows Linux accepts our frame.
//!
//! Each event's longest gap between ping replies, IPv4 and IPv6, is printed (the figures of
//! docs/benchmarks.md); nothing asserts on its size.

use std::time::{Duration, Instant};

use wmgwd2_lab::analysis::max_gap;
use wmgwd2_lab::netns;
use wmgwd2_lab::oracle;
use wmgwd2_lab::plan::{self, MacMode, Spec};
use wmgwd2_lab::probe::{Pinger, Pinger6};
use wmgwd2_lab::{DaemonConfig, Event, Lab, OwnerMap};

const G: usize = 3;
const V: u32 = 4;
const BIN: &str = env!("CARGO_BIN_EXE_wmgwd2");
/// Bound for anything that should take well under a second (or a hold-down).
const BOUND: Duration = Duration::from_secs(20);
const PING_EVERY: Duration = Duration::from_millis(10);

fn spec(mac: MacMode) -> Spec {
    let mut s = Spec::new(G, V);
    s.ipv6 = true;
    s.mac = mac;
    s
}

fn expected(spec: &Spec, gws: &[usize]) -> OwnerMap {
    oracle::expected(spec, gws)
}

/// Every live gateway's `vrrp6-<v>` is in the protodown state of its `vrrp4-<v>`.
fn families_agree(lab: &Lab, live: &[usize]) -> bool {
    live.iter().all(|&g| {
        let (v4, v6) = (
            lab.ifaces(g).expect("links"),
            lab.ifaces6(g).expect("links"),
        );
        v6.len() == V as usize
            && v4
                .iter()
                .all(|(v, i)| v6.get(v).is_some_and(|j| j.protodown == i.protodown))
    })
}

/// The client's IPv6 neighbour entry for VNI v's gateway address: its MAC.
fn neighbour6(lab: &Lab, v: u32) -> Option<String> {
    let out = netns::ip(
        &lab.client(),
        &[
            "-6",
            "-j",
            "neigh",
            "show",
            "to",
            &plan::gateway6_ip(v).to_string(),
            "dev",
            &format!("vxlan{v}"),
        ],
    )
    .ok()?;
    let j: serde_json::Value = serde_json::from_str(&out).ok()?;
    j.as_array()?
        .iter()
        .find_map(|e| e["lladdr"].as_str().map(str::to_owned))
}

/// Where the client's VXLAN sends frames for `mac` in VNI v (the VTEP it learnt it behind).
fn vtep_of(lab: &Lab, v: u32, mac: &str) -> Option<String> {
    let out = netns::run(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client(),
                "bridge",
                "-j",
                "fdb",
                "show",
            ])
            .args(["dev", &format!("vxlan{v}")]),
    )
    .ok()?;
    let j: serde_json::Value = serde_json::from_str(&out).ok()?;
    j.as_array()?
        .iter()
        .find(|e| e["mac"].as_str() == Some(mac))
        .and_then(|e| e["dst"].as_str().map(str::to_owned))
}

/// Does the client's view of every VNI's IPv6 gateway follow the owners `want`?
fn client_follows(lab: &Lab, spec: &Spec, want: &OwnerMap) -> bool {
    want.iter().all(|(&v, o)| {
        let Some(&g) = o.first() else { return false };
        match spec.mac {
            MacMode::Distinct => {
                let mac = lab.ifaces6(g).expect("links")[&v].mac.clone();
                neighbour6(lab, v).as_deref() == Some(mac.as_str())
            }
            MacMode::Shared => {
                let mac = plan::shared6_mac(v);
                neighbour6(lab, v).as_deref() == Some(mac.as_str())
                    && vtep_of(lab, v, &mac) == Some(plan::underlay_ip(g).to_string())
            }
        }
    })
}

struct Pings {
    v4: Pinger,
    v6: Pinger6,
}

impl Pings {
    fn start(lab: &Lab) -> Pings {
        let t4: Vec<_> = (1..=V).map(plan::gateway_ip).collect();
        let t6: Vec<_> = (1..=V).map(plan::gateway6_ip).collect();
        Pings {
            v4: Pinger::start(&lab.client(), &t4, PING_EVERY, lab.epoch).expect("pinger"),
            v6: Pinger6::start(&lab.client(), &t6, PING_EVERY, lab.epoch).expect("pinger6"),
        }
    }

    /// Has every VNI answered, on both families, since `t` (lab time)?
    fn all_answered_since(&self, t: Duration) -> bool {
        (1..=V).all(|v| {
            self.v4
                .replies(plan::gateway_ip(v))
                .last()
                .is_some_and(|&r| r > t)
                && self
                    .v6
                    .replies(plan::gateway6_ip(v))
                    .last()
                    .is_some_and(|&r| r > t)
        })
    }

    /// The longest gap between replies over `[t0, t1]` among `vnis`: (IPv4, IPv6).
    fn gaps(&self, vnis: &[u32], t0: Duration, t1: Duration) -> (Duration, Duration) {
        let mut g = (Duration::ZERO, Duration::ZERO);
        for &v in vnis {
            g.0 =
                g.0.max(max_gap(&self.v4.replies(plan::gateway_ip(v)), t0, t1));
            g.1 =
                g.1.max(max_gap(&self.v6.replies(plan::gateway6_ip(v)), t0, t1));
        }
        g
    }
}

/// One event to gateway `g`, then: the live gateways converge (both families agree), the
/// client's view follows the owners, every gateway address answers pings again. Prints the gaps.
#[allow(clippy::too_many_arguments)]
fn step(
    lab: &mut Lab,
    spec: &Spec,
    pings: &Pings,
    what: &str,
    event: Event,
    g: usize,
    live: &[usize],
    moved_from: &OwnerMap,
) {
    let at = lab.act(event, g).expect(what).at;
    if event == Event::Stop {
        // The stopped gateway ends with both families down.
        let v6 = lab.ifaces6(g).expect("links");
        assert!(v6.values().all(|i| i.protodown), "{what}: {v6:?}");
    }
    let want = expected(spec, live);
    lab.wait(&format!("{what}: convergence"), BOUND, || {
        Ok(lab.owners(live)? == want && families_agree(lab, live))
    })
    .expect("convergence with both families");
    lab.wait(
        &format!("{what}: the client's IPv6 neighbours follow the owners"),
        BOUND,
        || Ok(client_follows(lab, spec, &want)),
    )
    .expect("neighbour entries follow the owner");
    let t0 = lab.since_epoch(at);
    lab.wait(&format!("{what}: pings answered again"), BOUND, || {
        Ok(pings.all_answered_since(lab.since_epoch(Instant::now()) - PING_EVERY * 20))
    })
    .expect("pings answered");
    let moved: Vec<u32> = want
        .iter()
        .filter(|(v, o)| moved_from.get(v) != Some(o))
        .map(|(&v, _)| v)
        .collect();
    let t1 = lab.since_epoch(Instant::now());
    let (g4, g6) = pings.gaps(&moved, t0, t1);
    eprintln!(
        "FIGURE mac={} event={what} moved={moved:?} ipv4_gap_ms={} ipv6_gap_ms={}",
        spec.mac,
        g4.as_millis(),
        g6.as_millis()
    );
}

fn failover(test: &str, mac: MacMode) {
    if !wmgwd2_lab::root_or_skip(test) {
        return;
    }
    let spec = spec(mac);
    let mut cfg = DaemonConfig::wmgwd2(BIN, "100ms", &["--uplink-hold-down", "2s"]);
    cfg.extra.insert(0, "-v".into());
    let mut lab = Lab::up("w6", &spec, cfg).expect("lab up");
    let all = [1, 2, 3];
    for g in all {
        lab.start(g).expect("start");
    }
    let start = expected(&spec, &all);
    lab.wait("convergence", BOUND, || {
        Ok(lab.owners(&all)? == start && families_agree(&lab, &all))
    })
    .expect("convergence with both families");
    let pings = Pings::start(&lab);
    lab.wait("first replies", BOUND, || {
        Ok(pings.all_answered_since(Duration::ZERO))
    })
    .expect("every gateway address answers, IPv4 and IPv6");
    lab.wait("the client's IPv6 neighbours", BOUND, || {
        Ok(client_follows(&lab, &spec, &start))
    })
    .expect("neighbour entries of the owners");

    // The owner of VNI 1 fails in each way; the others take its VNIs, then it comes back.
    let g = start[&1][0];
    let rest: Vec<usize> = all.iter().copied().filter(|&x| x != g).collect();
    let without = expected(&spec, &rest);
    let cases = [
        ("crash", Event::Crash, "rejoin after crash", Event::Start),
        ("sigterm", Event::Stop, "rejoin after sigterm", Event::Start),
        ("link cut", Event::Cut, "link back", Event::Restore),
    ];
    for (out, ev_out, back, ev_back) in cases {
        step(&mut lab, &spec, &pings, out, ev_out, g, &rest, &start);
        step(&mut lab, &spec, &pings, back, ev_back, g, &all, &without);
    }
    for g in all {
        assert!(lab.daemons.alive(g), "gw{g} died");
    }
}

#[test]
fn ipv6_gateways_follow_the_owner_with_distinct_macs() {
    failover("ipv6 distinct", MacMode::Distinct);
}

#[test]
fn ipv6_gateways_follow_the_owner_with_a_shared_mac() {
    failover("ipv6 shared", MacMode::Shared);
}
