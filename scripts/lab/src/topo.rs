//! The topology: namespaces built with one `ip -batch` and one `bridge -batch` per namespace
//! (gateways in parallel), deleted by [`Topology`]'s `Drop`, also on a panic or a failed build.
//!
//! ```text
//!  NAME-sw   br0 ── p1 ... pG, pcl (veths; the other end is eth0 in each host namespace)
//!  NAME-gwG  eth0 10.0.1.G/24; per VNI v: vxlan<v> (id v, dstport 4789, head-end replication to
//!            every other VTEP) and the macvlan vrrp4-<v> (mode bridge) with the gateway IP;
//!            admin-up, protodown off (the daemon sets it). arp_ignore=1, arp_announce=2.
//!  NAME-cl   eth0 10.0.1.250/24; per VNI: vxlan<v> with 10.(100+v/256).(v%256).100/24
//!  IPv6 is disabled in every namespace (thousands of links doing DAD/MLD would only add flood
//!  traffic), unless the spec asks for IPv6 gateways: then each gateway also has per VNI the
//!  macvlan vrrp6-<v> with the IPv6 gateway addresses (added nodad; no link generates a
//!  link-local address of its own: addr_gen_mode 1), and the client its IPv6 address on vxlan<v>,
//!  with neighbour entries that stay reachable for an hour (`ip ntable`: so that only an
//!  advertisement, not neighbour unreachability detection, moves one within a test's bounds).
//! ```
//! The sysctls are written before any interface but lo exists, so `default` applies to all.
//!
//! Routed ([`Underlay::Routed`], issue 11): `NAME-sw` is a router (ip_forward on), its `p<g>`
//! holds `10.2.g.1/24` and gateway g's eth0 `10.2.g.2/24` with a default route through it (the
//! client: `10.2.250.0/24`); VXLAN goes from VTEP to VTEP through the router; each gateway's
//! nftables table `ip wmgwd2route` drops broadcast and multicast heartbeats it receives.
//! IPv6 heartbeats ([`Underlay::Ipv6`]): the segment, IPv6 enabled on each gateway's eth0 (a
//! link-local address, and `2001:db8:1::g/64` for IPv6 peers), and a table `inet wmgwd2v6`
//! dropping IPv4 heartbeats.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::thread;

use crate::netns;
use crate::plan::{self, GatewayIp, MacMode, Spec, Underlay};
use crate::{LabError, Result};

/// The namespaces of one lab; dropping it deletes them.
#[derive(Debug)]
pub struct Topology {
    pub name: String,
    pub spec: Spec,
    created: Vec<String>,
}

/// The sysctl script of a namespace (run by `sh` inside it).
pub fn sysctl_script(gateway: bool) -> String {
    let mut s = String::from(
        "for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done\n",
    );
    if gateway {
        s.push_str("for f in all default; do echo 1 > /proc/sys/net/ipv4/conf/$f/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$f/arp_announce; done\n");
    }
    s
}

/// The sysctl script of a namespace of a lab with IPv6 gateways: IPv6 on, and no automatic
/// link-local addresses on a gateway (docs/operations.md: `addrgenmode none`; the vrrp6
/// interfaces get fe80::1 by hand).
pub fn sysctl_script6(gateway: bool) -> String {
    let mut s = String::new();
    if gateway {
        s.push_str(
            "for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/addr_gen_mode; done\n",
        );
        s.push_str("for f in all default; do echo 1 > /proc/sys/net/ipv4/conf/$f/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$f/arp_announce; done\n");
    }
    s
}

/// The router namespace's `ip -batch` script (routed labs): a veth per host, the router's
/// address in each host's subnet.
pub fn router_batch(spec: &Spec, name: &str) -> String {
    let mut s = String::from("link set lo up\n");
    let hosts = (1..=spec.gateways)
        .map(|g| (format!("p{g}"), format!("gw{g}"), Some(g)))
        .chain([("pcl".to_owned(), "cl".to_owned(), None)]);
    for (port, role, g) in hosts {
        let _ = writeln!(
            s,
            "link add {port} mtu 1600 up type veth peer name eth0 mtu 1600 netns {}",
            ns_name(name, &role)
        );
        let _ = writeln!(s, "addr add {}/24 dev {port}", spec.router_of(g));
    }
    s
}

/// The switch namespace's `ip -batch` script.
pub fn switch_batch(spec: &Spec, name: &str) -> String {
    let mut s = String::from(
        "link set lo up\nlink add br0 mtu 1600 type bridge stp_state 0 forward_delay 0\n",
    );
    for g in 1..=spec.gateways {
        let _ = writeln!(
            s,
            "link add p{g} mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns {}",
            ns_name(name, &format!("gw{g}"))
        );
    }
    let _ = writeln!(
        s,
        "link add pcl mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns {}",
        ns_name(name, "cl")
    );
    s.push_str("link set br0 up\n");
    s
}

/// The `ip -batch` script of a VTEP: gateway `Some(g)` or the client (`None`).
pub fn vtep_batch(spec: &Spec, gateway: Option<usize>) -> String {
    let local = spec.underlay_of(gateway);
    let mut s = match spec.underlay {
        Underlay::Segment | Underlay::Ipv6 => eth0_batch(&local.to_string()),
        Underlay::Routed => format!(
            "link set lo up\nlink set eth0 up\naddr add {local}/24 dev eth0\nroute add default via {}\n",
            spec.router_of(gateway)
        ),
    };
    for v in spec.vni_range() {
        let _ = writeln!(
            s,
            "link add vxlan{v} mtu 1500 up type vxlan id {v} local {local} dstport 4789 dev eth0"
        );
        match gateway {
            Some(g) => {
                let mac = match spec.mac {
                    MacMode::Shared => format!(" address {}", plan::shared_mac(v)),
                    MacMode::Distinct => String::new(),
                };
                let _ = writeln!(
                    s,
                    "link add link vxlan{v} name {}{mac} up type macvlan mode bridge",
                    plan::ifname(v)
                );
                let addr = match spec.gateway_ip {
                    GatewayIp::Shared => plan::gateway_ip(v),
                    GatewayIp::Vrrp => plan::own_ip(v, g),
                };
                let _ = writeln!(s, "addr add {addr}/24 dev {}", plan::ifname(v));
                if spec.ipv6 {
                    let mac = match spec.mac {
                        MacMode::Shared => format!(" address {}", plan::shared6_mac(v)),
                        MacMode::Distinct => String::new(),
                    };
                    let name = plan::ifname6(v);
                    let _ = writeln!(
                        s,
                        "link add link vxlan{v} name {name}{mac} up type macvlan mode bridge\n\
                         addr add {}/64 dev {name} nodad\n\
                         addr add {}/64 dev {name} nodad",
                        plan::gateway6_ip(v),
                        plan::GATEWAY6_LL
                    );
                }
            }
            None => {
                let _ = writeln!(s, "addr add {}/24 dev vxlan{v}", plan::client_ip(v));
                if spec.ipv6 {
                    // Neighbour entries stay reachable for an hour, and a stale one is probed
                    // an hour later (a namespace has no `neigh/default` sysctls to set this).
                    let _ = writeln!(
                        s,
                        "addr add {}/64 dev vxlan{v} nodad\n\
                         ntable change name ndisc_cache dev vxlan{v} base_reachable 3600000 delay_probe 3600000",
                        plan::client6_ip(v)
                    );
                }
            }
        }
    }
    s
}

/// The start of every host's `ip -batch` script: lo and eth0 up, its underlay address on eth0
/// (the heartbeat segment's broadcast address).
pub fn eth0_batch(local: &str) -> String {
    format!(
        "link set lo up\nlink set eth0 up\naddr add {local}/24 brd {} dev eth0\n",
        plan::BROADCAST
    )
}

/// The `bridge -batch` script of a VTEP: flood every VNI to every other VTEP.
pub fn fdb_batch(spec: &Spec, gateway: Option<usize>) -> String {
    let local = spec.underlay_of(gateway);
    let peers: Vec<Ipv4Addr> = (1..=spec.gateways)
        .map(|g| spec.underlay_of(Some(g)))
        .chain([spec.underlay_of(None)])
        .filter(|&p| p != local)
        .collect();
    let mut s = String::new();
    for v in spec.vni_range() {
        for p in &peers {
            let _ = writeln!(s, "fdb append 00:00:00:00:00:00 dev vxlan{v} dst {p}");
        }
    }
    s
}

pub fn ns_name(name: &str, role: &str) -> String {
    format!("{name}-{role}")
}

/// A per-run prefix: `stem` (a few letters) + the PID + a per-process counter, at most 12
/// characters, so two runs and two labs of one run never share a namespace.
pub fn unique_name(stem: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{stem}{}{}", std::process::id() % 100_000, n % 1000)
}

impl Topology {
    /// An empty lab `name` (a fresh prefix, see [`unique_name`]): no namespace yet, those
    /// [`Topology::add`] creates are deleted on drop. Refuses a name whose namespaces exist.
    pub fn empty(name: &str, spec: &Spec) -> Result<Topology> {
        let prefix = format!("{name}-");
        if netns::list().iter().any(|n| n.starts_with(&prefix)) {
            return Err(LabError::Spec(format!("namespaces {name}-* exist already")));
        }
        Ok(Topology {
            name: name.to_owned(),
            spec: spec.clone(),
            created: Vec::new(),
        })
    }

    /// Creates namespace `NAME-role` with its sysctls (a gateway's: also the ARP ones).
    pub fn add(&mut self, role: &str, gateway: bool) -> Result<String> {
        let ns = ns_name(&self.name, role);
        netns::add(&ns)?;
        self.created.push(ns.clone());
        netns::run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sh",
            "-ec",
            &if self.spec.ipv6 && role != "sw" {
                sysctl_script6(gateway)
            } else {
                sysctl_script(gateway)
            },
        ]))?;
        Ok(ns)
    }

    /// Builds the lab `name` (a fresh prefix, see [`unique_name`]). Refuses a name whose
    /// namespaces exist; a failure half-way removes what was built.
    pub fn up(name: &str, spec: &Spec) -> Result<Topology> {
        spec.check()?;
        // From here on, Drop removes whatever was built.
        let mut topo = Topology::empty(name, spec)?;
        topo.add("sw", false)?;
        topo.add("cl", false)?;
        for g in 1..=spec.gateways {
            topo.add(&format!("gw{g}"), true)?;
        }
        match spec.underlay {
            Underlay::Segment | Underlay::Ipv6 => {
                netns::batch("ip", &topo.switch(), &switch_batch(spec, name))?
            }
            Underlay::Routed => {
                netns::run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &topo.switch(),
                    "sh",
                    "-ec",
                    "echo 1 > /proc/sys/net/ipv4/ip_forward",
                ]))?;
                netns::batch("ip", &topo.switch(), &router_batch(spec, name))?
            }
        }
        // The hosts in parallel: one ip and one bridge process per namespace.
        let jobs: Vec<_> = (1..=spec.gateways)
            .map(Some)
            .chain([None])
            .map(|gw| {
                let ns = match gw {
                    Some(g) => topo.gw(g),
                    None => topo.client(),
                };
                let (ipb, fdb) = (vtep_batch(spec, gw), fdb_batch(spec, gw));
                let underlay = gw.map(|_| spec.underlay);
                thread::spawn(move || {
                    netns::batch("ip", &ns, &ipb)?;
                    netns::batch("bridge", &ns, &fdb)?;
                    match underlay {
                        Some(Underlay::Routed) => crate::nft::block_broadcast_heartbeats(&ns)?,
                        Some(Underlay::Ipv6) => {
                            netns::run(Command::new("ip").args([
                                "netns",
                                "exec",
                                &ns,
                                "sh",
                                "-ec",
                                "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
                            ]))?;
                            // A global address too, for IPv6 unicast peers.
                            let g = gw.unwrap_or_default();
                            let v6 = plan::underlay_ip6(g).to_string();
                            netns::ip(
                                &ns,
                                &[
                                    "-6",
                                    "addr",
                                    "add",
                                    &format!("{v6}/64"),
                                    "dev",
                                    "eth0",
                                    "nodad",
                                ],
                            )?;
                            crate::nft::block_ipv4_heartbeats(&ns)?
                        }
                        _ => {}
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for j in jobs {
            let r = j
                .join()
                .unwrap_or_else(|_| Err(LabError::Spec("a build thread panicked".into())));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(topo),
        }
    }

    pub fn gw(&self, g: usize) -> String {
        ns_name(&self.name, &format!("gw{g}"))
    }

    pub fn client(&self) -> String {
        ns_name(&self.name, "cl")
    }

    pub fn switch(&self) -> String {
        ns_name(&self.name, "sw")
    }

    /// Sets gateway g's switch port (p<g>) up or down: its link to the segment.
    pub fn set_port(&self, g: usize, up: bool) -> Result<()> {
        netns::ip(
            &self.switch(),
            &[
                "link",
                "set",
                &format!("p{g}"),
                if up { "up" } else { "down" },
            ],
        )
        .map(drop)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            netns::delete(&ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_script_builds_vxlan_and_macvlan_per_vni() {
        let mut spec = Spec::new(2, 2);
        spec.mac = MacMode::Shared;
        let s = vtep_batch(&spec, Some(2));
        assert_eq!(
            s,
            "link set lo up\nlink set eth0 up\naddr add 10.0.1.2/24 brd 10.0.1.255 dev eth0\n\
             link add vxlan1 mtu 1500 up type vxlan id 1 local 10.0.1.2 dstport 4789 dev eth0\n\
             link add link vxlan1 name vrrp4-1 address 02:00:5e:00:00:01 up type macvlan mode bridge\n\
             addr add 10.100.1.1/24 dev vrrp4-1\n\
             link add vxlan2 mtu 1500 up type vxlan id 2 local 10.0.1.2 dstport 4789 dev eth0\n\
             link add link vxlan2 name vrrp4-2 address 02:00:5e:00:00:02 up type macvlan mode bridge\n\
             addr add 10.100.2.1/24 dev vrrp4-2\n"
        );
        spec.gateway_ip = GatewayIp::Vrrp;
        spec.mac = MacMode::Distinct;
        let s = vtep_batch(&spec, Some(2));
        assert!(s.contains("link add link vxlan1 name vrrp4-1 up type macvlan mode bridge\naddr add 10.100.1.130/24 dev vrrp4-1\n"));
    }

    #[test]
    fn ipv6_gateways_and_client() {
        let mut spec = Spec::new(2, 1);
        spec.ipv6 = true;
        spec.mac = MacMode::Shared;
        let s = vtep_batch(&spec, Some(1));
        assert!(s.ends_with(
            "link add link vxlan1 name vrrp6-1 address 02:00:5f:00:00:01 up type macvlan mode bridge\n\
             addr add 2001:db8:0:1::1/64 dev vrrp6-1 nodad\n\
             addr add fe80::1/64 dev vrrp6-1 nodad\n"
        ), "{s}");
        assert!(
            vtep_batch(&spec, None).contains("addr add 2001:db8:0:1::100/64 dev vxlan1 nodad\n")
        );
        assert!(sysctl_script6(true).contains("addr_gen_mode"));
        assert!(!sysctl_script6(false).contains("disable_ipv6"));
        spec.ipv6 = false;
        assert!(!vtep_batch(&spec, Some(1)).contains("vrrp6"));
    }

    #[test]
    fn client_script_and_flooding() {
        let spec = Spec::new(2, 1);
        assert!(vtep_batch(&spec, None).ends_with("addr add 10.100.1.100/24 dev vxlan1\n"));
        assert_eq!(
            fdb_batch(&spec, Some(1)),
            "fdb append 00:00:00:00:00:00 dev vxlan1 dst 10.0.1.2\n\
             fdb append 00:00:00:00:00:00 dev vxlan1 dst 10.0.1.250\n"
        );
        assert_eq!(fdb_batch(&spec, None).lines().count(), 2);
        let sw = switch_batch(&spec, "wl1");
        assert!(sw.contains(
            "link add p2 mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns wl1-gw2\n"
        ));
        assert!(sw.contains("netns wl1-cl\n"));
    }

    #[test]
    fn routed_lab_puts_every_host_in_its_own_subnet_behind_the_router() {
        let spec = Spec::new(2, 1).routed();
        assert_eq!(
            router_batch(&spec, "wr1"),
            "link set lo up\n\
             link add p1 mtu 1600 up type veth peer name eth0 mtu 1600 netns wr1-gw1\n\
             addr add 10.2.1.1/24 dev p1\n\
             link add p2 mtu 1600 up type veth peer name eth0 mtu 1600 netns wr1-gw2\n\
             addr add 10.2.2.1/24 dev p2\n\
             link add pcl mtu 1600 up type veth peer name eth0 mtu 1600 netns wr1-cl\n\
             addr add 10.2.250.1/24 dev pcl\n"
        );
        assert!(vtep_batch(&spec, Some(2)).starts_with(
            "link set lo up\nlink set eth0 up\naddr add 10.2.2.2/24 dev eth0\nroute add default via 10.2.2.1\n\
             link add vxlan1 mtu 1500 up type vxlan id 1 local 10.2.2.2 dstport 4789 dev eth0\n"
        ));
        assert_eq!(
            fdb_batch(&spec, Some(1)),
            "fdb append 00:00:00:00:00:00 dev vxlan1 dst 10.2.2.2\n\
             fdb append 00:00:00:00:00:00 dev vxlan1 dst 10.2.250.2\n"
        );
    }
}
