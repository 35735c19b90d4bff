//! EVPN lab test: the real binary beside real FRR (zebra + bgpd per namespace, a route
//! reflector, a remote leaf with a host), built by the lab crate (`wmgwd2_lab::evpn`). It checks
//! what a remote host sees: when wmgwd2 hands a gateway over, BGP EVPN moves the gateway MAC to
//! the new owner's VTEP, the host's ARP entry names the owner's MAC and its ping to the gateway IP
//! recovers. Both conventions: the shared MAC (the same MAC on every gateway's vrrp4-<V>, VRRP
//! style), where only EVPN can tell the leaf that the gateway moved, and a distinct MAC per
//! gateway, where the GARP must move the host's ARP entry. Cases: planned stop both ways, crash,
//! the underlay link cut (BGP and heartbeats die together), and the rejoin after each.
//!
//! Needs root and FRR (`apt-get install frr`, `/usr/lib/frr/zebra`); without either it says it
//! was skipped and why. Every wait is on a condition with a generous bound; nothing asserts on
//! how long a step took (`scripts/evpn-drill.sh` measures that).

use std::thread;
use std::time::{Duration, Instant};

use wmgwd2_lab::evpn::{self, EvpnLab};
use wmgwd2_lab::plan::{self, MacMode};
use wmgwd2_lab::probe::{Pinger, Pinger6};
use wmgwd2_lab::DaemonConfig;

const BIN: &str = env!("CARGO_BIN_EXE_wmgwd2");
/// Bound for anything EVPN should do in well under a few seconds (BGP hold time is 3 s).
const BOUND: Duration = Duration::from_secs(60);

fn vtep(g: usize) -> String {
    plan::underlay_ip(g).to_string()
}

/// The EVPN lab with two gateways (gw1 owns VNI 100 and gw2 owns 101 while both run:
/// rendezvous hashing over the lab's UIDs); torn down on drop.
struct Evpn {
    lab: EvpnLab,
    /// IPv6 gateways too (`vrrp6-<V>`), checked beside the IPv4 ones.
    ipv6: bool,
    mac: MacMode,
}

impl Evpn {
    fn up(test: &str, mac: MacMode) -> Option<Evpn> {
        Evpn::up_with(test, mac, false)
    }

    fn up_with(test: &str, mac: MacMode, ipv6: bool) -> Option<Evpn> {
        if let Err(why) = evpn::available() {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let cfg = DaemonConfig::wmgwd2(BIN, "100ms", &["-v"]);
        Some(Evpn {
            lab: EvpnLab::up_with("we", 2, mac, ipv6, cfg).expect("EVPN lab up"),
            ipv6,
            mac,
        })
    }

    fn start(&mut self, g: usize) {
        self.lab.start(g).expect("start wmgwd2");
    }

    /// SIGTERM: the graceful handover; waits for the exit and checks its status.
    fn stop(&mut self, g: usize) {
        let (exit, _) = self.lab.daemons.stop(g, BOUND);
        assert!(exit.success(), "gw{g} exited with {exit} on SIGTERM");
    }

    /// kill -9: the daemon cannot hand anything over; its interfaces stay as they were.
    fn crash(&mut self, g: usize) {
        self.lab.daemons.kill(g);
    }

    fn link(&self, g: usize, up: bool) {
        self.lab.link(g, up).expect("switch port");
    }

    /// The gateway whose vrrp4-<v> is active, when exactly one gateway whose daemon runs has it
    /// so (a crashed daemon leaves its interfaces as they were).
    fn owner(&self, v: u32) -> Option<usize> {
        let running: Vec<usize> = (1..=2)
            .filter(|&g| self.lab.daemons.pid(g).is_some())
            .collect();
        self.lab.owner_among(v, &running)
    }

    /// A ping from the host of VNI `v` to its gateway IP, answered within a second (the lab
    /// crate's pinger: one echo request every 100 ms until then).
    fn ping(&self, v: u32) -> bool {
        let target = plan::gateway_ip(v);
        let ns = self.lab.ns(&format!("h{v}"));
        let Ok(p) = Pinger::start(&ns, &[target], Duration::from_millis(100), Instant::now())
        else {
            return false;
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            if !p.replies(target).is_empty() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A ping from the host of VNI `v` to its IPv6 gateway address, answered within a second.
    fn ping6(&self, v: u32) -> bool {
        let target = plan::gateway6_ip(v);
        let ns = self.lab.ns(&format!("h{v}"));
        let Ok(p) = Pinger6::start(&ns, &[target], Duration::from_millis(100), Instant::now())
        else {
            return false;
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            if !p.replies(target).is_empty() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            if t0.elapsed() >= BOUND {
                self.explain();
                panic!("timed out after {BOUND:?} waiting for {what}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the leaf and the hosts see, for a failure's message.
    fn explain(&self) {
        for v in evpn::VNIS {
            for g in 1..=2 {
                let Some(mac) = self.lab.gw_mac(g, v) else {
                    continue;
                };
                let view = self.lab.leaf_view(v, &mac);
                eprintln!("--- leaf: vni {v}, gw{g}'s {mac} goes to (bgp, zebra, kernel) {view:?}");
            }
            eprintln!("--- host h{v}: ARP entry {:?}", self.lab.host_arp(v));
            if self.ipv6 {
                for g in 1..=2 {
                    if let Some(mac) = self.lab.gw6_mac(g, v) {
                        let view = self.lab.leaf_view(v, &mac);
                        eprintln!("--- leaf: vni {v}, gw{g}'s IPv6 {mac} goes to {view:?}");
                    }
                }
                eprintln!("--- host h{v}: IPv6 neighbour {:?}", self.lab.host_nd(v));
            }
        }
    }

    /// Waits until gateway `g` owns VNI `v`, the host's ping to the gateway IP gets an answer,
    /// the host's ARP entry names g's MAC, and the leaf's best route, zebra and kernel send that
    /// MAC to g's VTEP.
    fn wait_moved(&self, v: u32, g: usize, why: &str) {
        self.wait(&format!("gw{g} to own vni {v} ({why})"), || {
            self.owner(v) == Some(g)
        });
        let mac = self.lab.gw_mac(g, v).expect("the owner's MAC");
        self.wait(&format!("the host's ping in vni {v} ({why})"), || {
            self.ping(v)
        });
        self.wait(
            &format!("the host's ARP entry in vni {v} to name gw{g}'s {mac} ({why})"),
            || self.lab.host_arp(v).as_deref() == Some(mac.as_str()),
        );
        let want = Some(vtep(g));
        self.wait(
            &format!("the leaf to send vni {v}'s {mac} to gw{g} ({why})"),
            || self.lab.leaf_view(v, &mac).iter().all(|s| *s == want),
        );
        if self.ipv6 {
            // The IPv6 gateway: its MAC advertised by EVPN from the owner's VTEP (learnt by the
            // owner's bridge from its neighbour advertisements), the host's neighbour entry and
            // its ping -6.
            let mac6 = self.lab.gw6_mac(g, v).expect("the owner's IPv6 MAC");
            if self.mac == MacMode::Shared {
                assert_eq!(mac6, evpn::shared6_mac(v));
            }
            self.wait(&format!("the host's ping -6 in vni {v} ({why})"), || {
                self.ping6(v)
            });
            self.wait(
                &format!("the host's IPv6 neighbour in vni {v} to name gw{g}'s {mac6} ({why})"),
                || self.lab.host_nd(v).as_deref() == Some(mac6.as_str()),
            );
            self.wait(
                &format!("the leaf to send vni {v}'s IPv6 {mac6} to gw{g} ({why})"),
                || self.lab.leaf_view(v, &mac6).iter().all(|s| *s == want),
            );
        }
    }
}

/// Planned stops both ways, a crash, a link cut, and the rejoin after each: the host's gateway
/// follows the owner every time.
fn handovers(lab: &mut Evpn) {
    lab.start(1);
    lab.start(2);
    lab.wait_moved(100, 1, "start");
    lab.wait_moved(101, 2, "start");

    // Planned stop of gw1: VNI 100 moves gw1 -> gw2, and EVPN follows.
    lab.stop(1);
    lab.wait_moved(100, 2, "SIGTERM of gw1");
    lab.wait_moved(101, 2, "SIGTERM of gw1, untouched");

    // gw1 rejoins: VNI 100 moves back gw2 -> gw1 (the same MAC, the other direction).
    lab.start(1);
    lab.wait_moved(100, 1, "gw1 rejoined");

    // Planned stop of gw2: VNI 101 moves gw2 -> gw1.
    lab.stop(2);
    lab.wait_moved(101, 1, "SIGTERM of gw2");
    lab.wait_moved(100, 1, "SIGTERM of gw2, untouched");
    lab.start(2);
    lab.wait_moved(101, 2, "gw2 rejoined");

    // Crash of gw1: its vrrp4-100 stays active; gw2 takes 100 after the dead interval, and the
    // restarted gw1 (protodown on everything first) takes it back after its hold-down.
    lab.crash(1);
    lab.wait_moved(100, 2, "kill -9 of gw1");
    lab.start(1);
    lab.wait_moved(100, 1, "gw1 restarted");

    // gw1 cut off from the underlay: it releases everything, gw2 takes over; when the link
    // returns, gw1 waits its uplink hold-down (BGP back first) and takes 100 back.
    lab.link(1, false);
    lab.wait("gw1 to release vni 100 (link cut)", || {
        lab.owner(100) == Some(2)
    });
    lab.wait_moved(100, 2, "gw1's link cut");
    lab.link(1, true);
    lab.wait_moved(100, 1, "gw1's link back");
    lab.wait_moved(101, 2, "gw1's link back, untouched");
}

#[test]
fn evpn_moves_the_shared_gateway_mac_with_the_owner() {
    let Some(mut lab) = Evpn::up("evpn shared MAC", MacMode::Shared) else {
        return;
    };
    handovers(&mut lab);
}

#[test]
fn evpn_and_garp_move_a_distinct_gateway_mac_with_the_owner() {
    let Some(mut lab) = Evpn::up("evpn distinct MAC", MacMode::Distinct) else {
        return;
    };
    handovers(&mut lab);
}

/// The same handovers with IPv6 gateways beside the IPv4 ones (`vrrp6-<V>` on the same veth,
/// `fe80::1` and the gateway address `nodad`, the host's default route via `fe80::1`): EVPN
/// advertises the IPv6 gateway's MAC from the owner's VTEP, and the host's neighbour entry and
/// `ping -6` follow the owner, in both MAC conventions.
#[test]
fn evpn_moves_the_ipv6_gateway_with_the_owner_shared_mac() {
    let Some(mut lab) = Evpn::up_with("evpn IPv6 shared MAC", MacMode::Shared, true) else {
        return;
    };
    handovers(&mut lab);
}

#[test]
fn evpn_moves_the_ipv6_gateway_with_the_owner_distinct_mac() {
    let Some(mut lab) = Evpn::up_with("evpn IPv6 distinct MAC", MacMode::Distinct, true) else {
        return;
    };
    handovers(&mut lab);
}
