//! `wmgwd2 check`: what would make the daemon fail or misbehave on this host, found without
//! changing anything. The facts are gathered by `main` (netlink dump, sysctls, interface
//! addresses, a trial bind of the port); this module judges them. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cli::Config;
use crate::links::{LinkState, Snapshot};
use crate::types::{vni_ranges, Family, Slot, Vni};

/// How bad a finding is: an error makes `check` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok   ",
            Level::Warn => "warn ",
            Level::Error => "ERROR",
        };
        write!(f, "{tag} {}", self.text)
    }
}

/// An IPv4 address on an interface, with its netmask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

/// An IPv6 address on an interface, with the kernel's flags for it (`IFA_F_*`), as
/// `/proc/net/if_inet6` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inet6Addr {
    pub ifname: String,
    pub addr: Ipv6Addr,
    pub flags: u32,
}

/// `IFA_F_NODAD`: added without duplicate address detection.
pub const IFA_F_NODAD: u32 = 0x02;
/// `IFA_F_DADFAILED`: duplicate address detection found the address in use; the kernel does not
/// use it.
pub const IFA_F_DADFAILED: u32 = 0x08;

/// Reads `/proc/net/if_inet6` (address, ifindex, prefix length, scope, flags, name; hex but the
/// name). Lines that do not parse are skipped.
pub fn parse_if_inet6(text: &str) -> Vec<Inet6Addr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [hex, _, _, _, flags, ifname] = f.as_slice() else {
                return None;
            };
            let bits = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some(Inet6Addr {
                ifname: (*ifname).to_owned(),
                addr: Ipv6Addr::from(bits),
                flags: u32::from_str_radix(flags, 16).ok()?,
            })
        })
        .collect()
}

/// The source address the routes would send to a peer from and the interface holding it, or
/// why nothing would be sent.
pub type PeerRoute = Result<(IpAddr, Option<String>), String>;

/// What `main` found on the host.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The kernel's links and their addresses (a netlink dump).
    pub snapshot: Snapshot,
    /// The link kind of each interface by name (IFLA_LINKINFO: `macvlan`, …).
    pub kinds: BTreeMap<String, String>,
    /// `net.ipv4.conf.<name>.<key>` values read, by (name, key); name `all` included. For IPv6
    /// heartbeats also `net.ipv6.conf.<bind interface>.disable_ipv6`, as key `ipv6.disable_ipv6`
    /// (missing: the host has no IPv6).
    pub sysctls: BTreeMap<(String, String), i64>,
    /// Every IPv4 address with its netmask.
    pub addrs: Vec<IfAddr>,
    /// Whether a UDP socket could bind the heartbeat port without SO_REUSEADDR (false: something
    /// holds it already, maybe a running daemon).
    pub port_free: bool,
    /// For each `--peer`: the source address the kernel's routing would send from (a UDP
    /// `connect`, nothing sent) and the interface holding it, or why it would not send at all.
    pub peer_routes: Vec<(SocketAddr, PeerRoute)>,
    /// Whether `--key-file` was given (its content is checked when the daemon starts).
    pub keyed: bool,
    /// Every IPv6 address with its flags. With the IPv6 managed interfaces' sysctls
    /// `net.ipv6.conf.<name>.{disable_ipv6,accept_dad,addr_gen_mode}` in `sysctls`, as keys
    /// `ipv6.<key>`.
    pub inet6: Vec<Inet6Addr>,
}

fn finding(level: Level, text: impl Into<String>) -> Finding {
    Finding {
        level,
        text: text.into(),
    }
}

/// The findings for `cfg` on `host`, in a fixed order.
pub fn judge(cfg: &Config, host: &Host) -> Vec<Finding> {
    let mut out = Vec::new();
    let links = &host.snapshot.links;
    let by_name: BTreeMap<&str, _> = links.iter().map(|l| (l.ifname.as_str(), l)).collect();
    let by_index: BTreeMap<_, _> = links.iter().map(|l| (l.ifindex, l)).collect();

    // The managed interfaces.
    let mut missing: Vec<Vni> = vec![];
    let mut not_macvlan: Vec<Vni> = vec![];
    let mut no_lower: Vec<Vni> = vec![];
    let mut no_addr: Vec<Vni> = vec![];
    let mut foreign: Vec<Vni> = vec![];
    let mut v6 = V6Setup::default();
    let mut inet6: BTreeMap<&str, Vec<&Inet6Addr>> = BTreeMap::new();
    for a in &host.inet6 {
        inet6.entry(a.ifname.as_str()).or_default().push(a);
    }
    let ours = 1u32 << cfg.protodown_reason;
    for vni in cfg.vnis().iter() {
        // A VNI has an IPv4 interface, an IPv6 one, or both; it is missing with neither.
        let present: Vec<(Family, String, &&LinkState)> = [Slot::v4(vni), Slot::v6(vni)]
            .into_iter()
            .filter_map(|s| {
                let name = cfg.ifname(s);
                let l = by_name.get(name.as_str())?;
                Some((s.family, name, l))
            })
            .collect();
        if present.is_empty() {
            missing.push(vni);
            continue;
        }
        let flag = |list: &mut Vec<Vni>| {
            if list.last() != Some(&vni) {
                list.push(vni);
            }
        };
        for (family, name, l) in present {
            if host.kinds.get(&name).map(String::as_str) != Some("macvlan") {
                flag(&mut not_macvlan);
            }
            if l.lower.is_none_or(|i| !by_index.contains_key(&i)) {
                flag(&mut no_lower);
            }
            let addrs = host.snapshot.addrs.get(&l.ifindex);
            if !addrs.is_some_and(|a| a.iter().any(|ip| crate::garp::family(ip) == family)) {
                flag(&mut no_addr);
            }
            if l.reason & !ours != 0 {
                flag(&mut foreign);
            }
            if family == Family::V6 {
                let addrs = inet6.get(name.as_str()).map_or(&[][..], Vec::as_slice);
                ipv6_setup(&name, vni, addrs, host, &mut v6);
            }
        }
    }
    let n = cfg.vnis().len();
    if missing.len() == n {
        out.push(finding(
            Level::Error,
            format!(
                "no managed interface exists ({} or {} for VNIs {}): check --interface-pattern, --interface6-pattern and --minvni/--maxvni",
                cfg.pattern.name(cfg.vnis().first()),
                cfg.pattern6.name(cfg.vnis().first()),
                cfg.vnis()
            ),
        ));
    } else if !missing.is_empty() {
        out.push(finding(
            Level::Warn,
            format!(
                "{} managed interfaces missing (VNIs {}): they are managed once they appear",
                missing.len(),
                vni_ranges(missing.iter().copied())
            ),
        ));
    } else {
        out.push(finding(
            Level::Ok,
            format!("all {n} managed interfaces exist"),
        ));
    }
    let present = n - missing.len();
    for (list, what, level) in [
        (
            &not_macvlan,
            "are not macvlans (protodown on them may not take them off the segment)",
            Level::Error,
        ),
        (
            &no_lower,
            "have no lower device in this namespace",
            Level::Warn,
        ),
        (
            &no_addr,
            "hold no address of their family (nothing to announce when owned)",
            Level::Warn,
        ),
        (
            &foreign,
            "are held down by another program's protodown reason bit (owned, they stay down)",
            Level::Warn,
        ),
        (
            &v6.disabled,
            "have IPv6 disabled (net.ipv6.conf.<name>.disable_ipv6=1): no IPv6 gateway address to serve",
            Level::Error,
        ),
        (
            &v6.dad_failed,
            "hold an IPv6 address that failed duplicate address detection (the kernel does not use it: delete it and add it again `nodad`)",
            Level::Error,
        ),
        (
            &v6.dad_on,
            "hold IPv6 addresses added without `nodad` while accept_dad is on (after every takeover the address is tentative and not announced, and it fails for good if another gateway still answers for it)",
            Level::Warn,
        ),
        (
            &v6.own_link_local,
            "make a link-local address of their own (addr_gen_mode is not none, 1): clients may take it for their router, and it differs between gateways",
            Level::Warn,
        ),
    ] {
        if !list.is_empty() {
            out.push(finding(
                level,
                format!(
                    "{} of {present} managed interfaces {what}: VNIs {}",
                    list.len(),
                    vni_ranges(list.iter().copied())
                ),
            ));
        }
    }

    // ARP: a backup's lower device must not answer for the gateway address.
    let sysctl = |name: &str, key: &str| {
        host.sysctls
            .get(&(name.to_owned(), key.to_owned()))
            .copied()
    };
    let ignore = sysctl("all", "arp_ignore").unwrap_or(0);
    let announce = sysctl("all", "arp_announce").unwrap_or(0);
    if ignore >= 1 {
        out.push(finding(Level::Ok, format!("arp_ignore is {ignore}")));
    } else {
        out.push(finding(
            Level::Error,
            format!("net.ipv4.conf.all.arp_ignore is {ignore}: a protodown'd macvlan's lower device answers ARP for the gateway address; set it to 1"),
        ));
    }
    if announce >= 2 {
        out.push(finding(Level::Ok, format!("arp_announce is {announce}")));
    } else {
        out.push(finding(
            Level::Error,
            format!("net.ipv4.conf.all.arp_announce is {announce}: ARP requests may carry the gateway address from a backup; set it to 2"),
        ));
    }

    // The heartbeat segment.
    match &cfg.bind_interface {
        Some(dev) => match by_name.get(dev.as_str()) {
            None => out.push(finding(
                Level::Error,
                format!("--bind-interface {dev} does not exist"),
            )),
            Some(l) if !(l.admin_up && l.carrier) => out.push(finding(
                Level::Warn,
                format!("--bind-interface {dev} is down or has no carrier: the daemon owns nothing until it is up"),
            )),
            Some(_) => out.push(finding(Level::Ok, format!("--bind-interface {dev} is up"))),
        },
        // A routed underlay may reach the peers over several uplinks (ECMP, BGP unnumbered).
        None if !cfg.peers.is_empty() => out.push(finding(
            Level::Ok,
            "no --bind-interface: the peers' frames are accepted on any interface but the gateway interfaces",
        )),
        None => out.push(finding(
            Level::Warn,
            "no --bind-interface: heartbeats are accepted on any interface but the gateway interfaces",
        )),
    }
    if !cfg.peers.is_empty() {
        peers(cfg, host, &mut out);
    } else if let Some(group) = cfg.group() {
        let dev = cfg.bind_interface.as_deref().unwrap_or("?");
        match sysctl(dev, "ipv6.disable_ipv6") {
            Some(0) => out.push(finding(
                Level::Ok,
                format!("heartbeats to IPv6 group {group} on {dev}"),
            )),
            Some(_) => out.push(finding(
                Level::Error,
                format!("IPv6 is disabled on {dev} (net.ipv6.conf.{dev}.disable_ipv6): --ipv6 heartbeats need its link-local address"),
            )),
            None => out.push(finding(
                Level::Error,
                format!("no IPv6 on {dev} (no net.ipv6.conf.{dev}): --ipv6 heartbeats need it"),
            )),
        }
    } else {
        let on_segment: Vec<&IfAddr> = host
            .addrs
            .iter()
            .filter(|a| broadcast_of(a) == cfg.broadcast || a.addr == cfg.broadcast)
            .filter(|a| cfg.bind_interface.as_deref().is_none_or(|d| d == a.ifname))
            .collect();
        match on_segment.first() {
            Some(a) => out.push(finding(
                Level::Ok,
                format!(
                    "{} ({}) is on the segment of --broadcast {}",
                    a.addr, a.ifname, cfg.broadcast
                ),
            )),
            None => out.push(finding(
                Level::Error,
                format!(
                    "no interface{} holds an address whose broadcast is --broadcast {}: heartbeats would reach no peer",
                    cfg.bind_interface
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                    cfg.broadcast
                ),
            )),
        }
    }
    if let Some(dev) = &cfg.bind_interface {
        let rp = sysctl(dev, "rp_filter")
            .unwrap_or(0)
            .max(sysctl("all", "rp_filter").unwrap_or(0));
        if rp == 1 {
            out.push(finding(
                Level::Warn,
                format!("rp_filter is strict (1) on {dev}: heartbeats from a peer whose address is routed elsewhere are dropped"),
            ));
        }
    }
    if host.port_free {
        out.push(finding(Level::Ok, format!("UDP port {} is free", cfg.port)));
    } else {
        out.push(finding(
            Level::Warn,
            format!("UDP port {} is already bound (a running wmgwd2? another program would share it and read heartbeats)", cfg.port),
        ));
    }
    out
}

/// The IPv6 managed interfaces set up otherwise than docs/operations.md ("IPv6 gateways") says,
/// by VNI.
#[derive(Debug, Default)]
struct V6Setup {
    disabled: Vec<Vni>,
    dad_failed: Vec<Vni>,
    dad_on: Vec<Vni>,
    own_link_local: Vec<Vni>,
}

/// Judges the IPv6 managed interface `name` of `vni`, holding `addrs` (what was not read is not
/// judged).
fn ipv6_setup(name: &str, vni: Vni, addrs: &[&Inet6Addr], host: &Host, out: &mut V6Setup) {
    let sysctl = |key: &str| {
        host.sysctls
            .get(&(name.to_owned(), format!("ipv6.{key}")))
            .copied()
    };
    if sysctl("disable_ipv6").is_some_and(|v| v != 0) {
        out.disabled.push(vni);
        return;
    }
    if addrs.iter().any(|a| a.flags & IFA_F_DADFAILED != 0) {
        out.dad_failed.push(vni);
    }
    if sysctl("accept_dad").is_some_and(|v| v > 0)
        && addrs.iter().any(|a| a.flags & IFA_F_NODAD == 0)
    {
        out.dad_on.push(vni);
    }
    if sysctl("addr_gen_mode").is_some_and(|v| v != 1) {
        out.own_link_local.push(vni);
    }
}

/// With `--peer`: a route to each peer (this gateway's own address may be listed), and a key.
fn peers(cfg: &Config, host: &Host, out: &mut Vec<Finding>) {
    for (peer, route) in &host.peer_routes {
        match route {
            Ok((src, _)) if *src == peer.ip() => out.push(finding(
                Level::Ok,
                format!("--peer {peer} is this gateway's own address (its frames to itself come back and are ignored)"),
            )),
            // With SO_BINDTODEVICE the heartbeats leave through that interface whatever the
            // routes say: a source elsewhere means the routes reach the peer another way.
            Ok((src, Some(dev)))
                if cfg.bind_interface.as_deref().is_some_and(|d| d != dev) =>
            {
                out.push(finding(
                    Level::Warn,
                    format!(
                        "--peer {peer} is routed from {src} on {dev}, not on --bind-interface {}: heartbeats leave through the latter",
                        cfg.bind_interface.as_deref().unwrap_or_default()
                    ),
                ))
            }
            Ok((src, _)) => out.push(finding(
                Level::Ok,
                format!("--peer {peer} is routed, from {src}"),
            )),
            Err(e) => out.push(finding(
                Level::Error,
                format!("--peer {peer} has no route: {e}"),
            )),
        }
    }
    if host.keyed {
        out.push(finding(
            Level::Ok,
            "--peer with --key-file: routed frames are proven by the key",
        ));
    } else {
        out.push(finding(
            Level::Warn,
            "--peer without --key-file: a routed frame carries no TTL proof; anyone who can send with a peer's source address can move VNIs (docs/security.md)",
        ));
    }
}

/// The broadcast address of an interface address.
fn broadcast_of(a: &IfAddr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a.addr) | !u32::from(a.netmask))
}
