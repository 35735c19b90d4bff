//! Desired versus observed: what to change in the kernel. Pure.
//!
//! Level-triggered: the plan is rebuilt from scratch from (the VNIs we own, the managed range, the
//! links the kernel reports) every time anything changes, and never from what we did last.
//!
//! * A managed interface we do **not** own must have `protodown` on, our reason bit set, and no
//!   carrier. (A protodown'd macvlan regains carrier when its lower device does; setting protodown
//!   again drops it.)
//! * A managed interface we **own** must have our reason bit clear and `protodown` off. When another
//!   reason bit (FRR's zebra, say) holds it down, we clear ours and report it: the kernel refuses to
//!   clear protodown while any reason is set, and that is not ours to fight.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// What the kernel says about one managed interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub ifindex: u32,
    pub ifname: String,
    pub protodown: bool,
    /// IFLA_PROTO_DOWN_REASON value (the kernel omits it when 0).
    pub reason: u32,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_LOWER_UP: the kernel's carrier.
    pub carrier: bool,
    /// IFF_RUNNING: operationally up. It follows carrier by a moment (the kernel's link watch);
    /// frames sent in between are dropped, so GARPs wait for it.
    pub running: bool,
    pub mac: [u8; 6],
    /// IFLA_LINK: the lower device (for a veth: its peer), when it is in this namespace.
    pub lower: Option<u32>,
    /// IFLA_MASTER: the bridge (or other master) this link is a port of.
    pub master: Option<u32>,
}

impl LinkState {
    /// Can this interface carry traffic right now?
    pub fn active(&self) -> bool {
        !self.protodown && self.admin_up && self.carrier && self.running
    }
}

/// An effect on the kernel, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `on`: set our reason bit and protodown. `!on`: clear our reason bit and protodown.
    SetProtodown { vni: u32, ifindex: u32, on: bool },
}

/// Removal of a MAC from a bridge's forwarding database, learnt on one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbFlush {
    pub vni: u32,
    /// The bridge port the MAC was learnt on.
    pub port: u32,
    pub mac: [u8; 6],
}

/// The bridge port a managed interface's frames enter a bridge through: the macvlan's lower
/// device is a veth whose peer is a bridge port. `links` holds every link by ifindex.
pub fn bridge_port(link: &LinkState, links: &BTreeMap<u32, LinkState>) -> Option<u32> {
    let lower = links.get(&link.lower?)?;
    let peer = links.get(&lower.lower?)?;
    (peer.master.is_some() && peer.ifindex != lower.ifindex).then_some(peer.ifindex)
}

/// For every interface that `actions` put into protodown, the removal of its MAC from the bridge
/// it feeds (`ports`: VNI -> bridge port). A released gateway MAC left in the bridge keeps FRR
/// advertising it (EVPN type-2) from the old owner; with a shared virtual MAC that black-holes
/// traffic. Harmless with distinct MACs.
pub fn fdb_flushes(
    actions: &[Action],
    links: &BTreeMap<u32, LinkState>,
    ports: &BTreeMap<u32, u32>,
) -> Vec<FdbFlush> {
    actions
        .iter()
        .filter_map(|a| {
            let Action::SetProtodown { vni, on: true, .. } = *a else {
                return None;
            };
            Some(FdbFlush {
                vni,
                port: *ports.get(&vni)?,
                mac: links.get(&vni)?.mac,
            })
        })
        .collect()
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Managed VNIs with no interface.
    pub missing: Vec<u32>,
    /// Owned VNIs held down by other reason bits: (vni, the foreign bits).
    pub blocked: Vec<(u32, u32)>,
}

/// The observed links that are wrong, and what to do about them.
///
/// `owned` are the VNIs we own (empty during the hold-down and at shutdown), `managed` the
/// configured range, `links` the managed interfaces the kernel reports, by VNI.
pub fn plan(
    owned: &BTreeSet<u32>,
    managed: RangeInclusive<u32>,
    links: &BTreeMap<u32, LinkState>,
    reason_bit: u8,
) -> Plan {
    let ours = 1u32 << reason_bit;
    let mut p = Plan::default();
    for vni in managed {
        let Some(link) = links.get(&vni) else {
            p.missing.push(vni);
            continue;
        };
        let action = |on| Action::SetProtodown {
            vni,
            ifindex: link.ifindex,
            on,
        };
        if owned.contains(&vni) {
            let foreign = link.reason & !ours;
            if link.reason & ours != 0 || (link.protodown && foreign == 0) {
                p.actions.push(action(false));
            }
            if link.protodown && foreign != 0 {
                p.blocked.push((vni, foreign));
            }
        } else if !link.protodown || link.reason & ours == 0 || link.carrier {
            p.actions.push(action(true));
        }
    }
    p
}

/// Maps interface names to VNIs and back for a pattern such as `vrrp4-{vni}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    prefix: String,
    suffix: String,
}

impl NamePattern {
    /// The placeholder that stands for the VNI in decimal.
    pub const PLACEHOLDER: &'static str = "{vni}";

    /// `None` unless `pattern` holds the placeholder exactly once.
    pub fn new(pattern: &str) -> Option<Self> {
        let (prefix, suffix) = pattern.split_once(Self::PLACEHOLDER)?;
        if suffix.contains(Self::PLACEHOLDER) {
            return None;
        }
        Some(NamePattern {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    pub fn name(&self, vni: u32) -> String {
        format!("{}{}{}", self.prefix, vni, self.suffix)
    }

    /// The VNI an interface name stands for, if it matches the pattern in canonical decimal.
    pub fn vni(&self, name: &str) -> Option<u32> {
        let digits = name
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok()
    }
}

/// IPv4 addresses per interface index.
pub type Addresses = BTreeMap<u32, Vec<Ipv4Addr>>;
