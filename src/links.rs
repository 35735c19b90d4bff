//! The kernel's links as the daemon last heard of them. Pure.
//!
//! [`LinkState`] is one link as the kernel reports it; [`Snapshot`] and [`KernelEvent`] are how
//! it reports them (a full read, or one change); [`LinkTable`] keeps the managed links by slot
//! (a VNI and a family: `vrrp4-<VNI>` and `vrrp6-<VNI>`), every other link by index (the topology
//! around them: lower devices, bridge ports) and the heartbeat uplink, through renames, deletions
//! and re-creations. [`NamePattern`] maps interface names to VNIs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::types::{Family, IfIndex, Slot, Vni, VniRange};

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub ifindex: IfIndex,
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
    pub lower: Option<IfIndex>,
    /// IFLA_MASTER: the bridge (or other master) this link is a port of.
    pub master: Option<IfIndex>,
}

impl LinkState {
    /// Can this interface carry traffic right now?
    pub fn active(&self) -> bool {
        !self.protodown && self.admin_up && self.carrier && self.running
    }
}

/// IPv4 and IPv6 addresses per interface index (IPv6 ones only once usable: not tentative, DAD
/// not failed).
pub type Addresses = BTreeMap<IfIndex, Vec<IpAddr>>;

/// Every link and every address, read at one time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<LinkState>,
    pub addrs: Addresses,
}

/// What the kernel reports between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A link appeared or changed (RTM_NEWLINK).
    Link(LinkState),
    /// A link is gone (RTM_DELLINK).
    LinkGone { ifindex: IfIndex },
    /// An address was added to or removed from a link (an IPv6 address still tentative counts
    /// as removed).
    Address {
        ifindex: IfIndex,
        addr: IpAddr,
        added: bool,
    },
    /// Events were lost (the event stream overran): take a new snapshot.
    Lost,
}

/// What one event meant for the managed links, beyond updating the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// Events were lost: only a snapshot brings the table back.
    Lost,
    /// A managed link was reported unable to carry traffic (it may be back in the same batch: a
    /// flap; the caller treats it as newly active then, and announces it again).
    Inactive(Slot),
    /// An address was added to a managed link.
    AddressAdded(Slot, IfIndex),
    /// A managed link, not protodown, was renamed out of the pattern: no longer managed. If it
    /// was serving its VNI, the caller makes it an orphan ([`LinkTable::orphan`]) so that it is
    /// put down.
    RenamedOut(Slot, IfIndex),
}

/// The bridge port a managed interface's frames enter a bridge through: the macvlan's lower
/// device is a veth whose peer is a bridge port. `links` holds every link by ifindex.
pub fn bridge_port(link: &LinkState, links: &BTreeMap<IfIndex, LinkState>) -> Option<IfIndex> {
    let lower = links.get(&link.lower?)?;
    let peer = links.get(&lower.lower?)?;
    (peer.master.is_some() && peer.ifindex != lower.ifindex).then_some(peer.ifindex)
}

/// The managed links, the topology around them and the uplink, kept current from snapshots and
/// events.
#[derive(Debug, Clone)]
pub struct LinkTable {
    pattern: NamePattern,
    /// The IPv6 interfaces' pattern.
    pattern6: NamePattern,
    vnis: VniRange,
    /// `--bind-interface`: tracked by name, so a re-created uplink is found again.
    uplink_name: Option<String>,
    uplink: Option<IfIndex>,
    /// Managed links by slot.
    managed: BTreeMap<Slot, LinkState>,
    /// ifindex -> slot for the managed links.
    index: HashMap<IfIndex, Slot>,
    /// Every link by ifindex.
    all: BTreeMap<IfIndex, LinkState>,
    /// Addresses of every link (a link renamed into the pattern brings its addresses).
    addrs: Addresses,
    /// Links renamed out of the pattern while serving their VNI, with their slot: unmanaged now,
    /// they must be put down once (left up, a renamed gateway interface would keep answering
    /// for the gateway address beside the next owner).
    orphans: BTreeMap<IfIndex, Slot>,
}

impl LinkTable {
    pub fn new(
        pattern: NamePattern,
        pattern6: NamePattern,
        vnis: VniRange,
        uplink: Option<String>,
    ) -> LinkTable {
        LinkTable {
            pattern,
            pattern6,
            vnis,
            uplink_name: uplink,
            uplink: None,
            managed: BTreeMap::new(),
            index: HashMap::new(),
            all: BTreeMap::new(),
            addrs: Addresses::new(),
            orphans: BTreeMap::new(),
        }
    }

    /// Replaces everything with a snapshot.
    pub fn load(&mut self, snap: Snapshot) {
        self.managed.clear();
        self.index.clear();
        self.all.clear();
        self.uplink = None;
        // A link renamed out of the pattern is still one after a re-read; keep what is still
        // there and still up.
        let orphans = std::mem::take(&mut self.orphans);
        self.orphans = orphans
            .into_iter()
            .filter(|(i, _)| snap.links.iter().any(|l| l.ifindex == *i && !l.protodown))
            .collect();
        for l in snap.links {
            self.put(l);
        }
        self.addrs = snap.addrs;
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: KernelEvent) -> Change {
        match ev {
            KernelEvent::Link(l) => {
                let inactive = (!l.active()).then_some(l.ifindex);
                let ifindex = l.ifindex;
                if let Some(slot) = self.put(l) {
                    return Change::RenamedOut(slot, ifindex);
                }
                match inactive.and_then(|i| self.index.get(&i)) {
                    Some(&slot) => Change::Inactive(slot),
                    None => Change::Nothing,
                }
            }
            KernelEvent::LinkGone { ifindex } => {
                self.all.remove(&ifindex);
                if self.uplink == Some(ifindex) {
                    self.uplink = None;
                }
                if let Some(slot) = self.index.remove(&ifindex) {
                    tracing::debug!(vni = %slot.vni, family = %slot.family, %ifindex, "managed interface deleted");
                    self.managed.remove(&slot);
                }
                self.addrs.remove(&ifindex);
                self.orphans.remove(&ifindex);
                Change::Nothing
            }
            KernelEvent::Address {
                ifindex,
                addr,
                added,
            } => {
                let list = self.addrs.entry(ifindex).or_default();
                list.retain(|a| *a != addr);
                if added {
                    list.push(addr);
                }
                match self.index.get(&ifindex) {
                    Some(&slot) if added => Change::AddressAdded(slot, ifindex),
                    _ => Change::Nothing,
                }
            }
            KernelEvent::Lost => Change::Lost,
        }
    }

    /// Takes a link's new state; returns the slot it was managed for if it was just renamed out
    /// of the patterns while not protodown.
    fn put(&mut self, l: LinkState) -> Option<Slot> {
        if self.uplink_name.as_deref() == Some(l.ifname.as_str()) {
            self.uplink = Some(l.ifindex);
        } else if self.uplink == Some(l.ifindex) {
            // Renamed away.
            self.uplink = None;
        }
        let was = self.index.remove(&l.ifindex);
        if let Some(old) = was {
            // Renamed (or reported again): forget the old name's entry.
            if self.managed.get(&old).map(|x| x.ifindex) == Some(l.ifindex) {
                self.managed.remove(&old);
            }
        }
        let slot = self
            .slot_of(&l.ifname)
            .filter(|s| self.vnis.contains(s.vni));
        let renamed_out = match (was, slot) {
            (Some(old), None) if !l.protodown => Some(old),
            _ => None,
        };
        if l.protodown || slot.is_some() {
            self.orphans.remove(&l.ifindex);
        }
        if let Some(slot) = slot {
            if let Some(prev) = self.managed.get(&slot) {
                if prev.ifindex != l.ifindex {
                    self.index.remove(&prev.ifindex);
                }
            }
            self.index.insert(l.ifindex, slot);
            self.managed.insert(slot, l.clone());
        }
        self.all.insert(l.ifindex, l);
        renamed_out
    }

    /// The slot an interface name stands for: the IPv4 pattern first, then the IPv6 one.
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.pattern
            .vni(name)
            .map(Slot::v4)
            .or_else(|| self.pattern6.vni(name).map(Slot::v6))
    }

    /// `ifindex`, renamed out of the pattern, was serving `slot`: it is to be put down, once.
    pub fn orphan(&mut self, ifindex: IfIndex, slot: Slot) {
        if self.all.get(&ifindex).is_some_and(|l| !l.protodown) {
            self.orphans.insert(ifindex, slot);
        }
    }

    /// Links renamed out of the pattern that are still to be put down, with their old slot.
    pub fn orphans(&self) -> &BTreeMap<IfIndex, Slot> {
        &self.orphans
    }

    /// The uplink's current ifindex, when it exists.
    pub fn uplink_index(&self) -> Option<IfIndex> {
        self.uplink
    }

    /// The managed links by slot.
    pub fn managed(&self) -> &BTreeMap<Slot, LinkState> {
        &self.managed
    }

    /// How many VNIs have a managed interface (one or both families).
    pub fn managed_vnis(&self) -> usize {
        crate::types::count_vnis(self.managed.keys())
    }

    pub fn get(&self, slot: Slot) -> Option<&LinkState> {
        self.managed.get(&slot)
    }

    /// The managed links of one VNI (none, one or both families), IPv4 first.
    pub fn of_vni(&self, vni: Vni) -> impl Iterator<Item = (Slot, &LinkState)> {
        self.managed.range(Slot::both(vni)).map(|(&s, l)| (s, l))
    }

    /// Is `ifindex` a managed link? (A lookup, not a scan: every received heartbeat asks.)
    pub fn is_managed(&self, ifindex: IfIndex) -> bool {
        self.index.contains_key(&ifindex)
    }

    /// Every address of a link.
    pub fn addrs(&self, ifindex: IfIndex) -> &[IpAddr] {
        self.addrs.get(&ifindex).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The bridge port the managed link of `slot` feeds, if any (see [`bridge_port`]).
    pub fn bridge_port(&self, slot: Slot) -> Option<IfIndex> {
        bridge_port(self.managed.get(&slot)?, &self.all)
    }

    /// Is the heartbeat interface up with carrier? Always true when none is tracked.
    pub fn uplink_up(&self) -> bool {
        if self.uplink_name.is_none() {
            return true;
        }
        self.uplink
            .and_then(|i| self.all.get(&i))
            .is_some_and(|l| l.admin_up && l.carrier)
    }

    pub fn uplink_name(&self) -> Option<&str> {
        self.uplink_name.as_deref()
    }

    /// The name pattern of a family's interfaces.
    pub fn pattern(&self, family: Family) -> &NamePattern {
        match family {
            Family::V4 => &self.pattern,
            Family::V6 => &self.pattern6,
        }
    }
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

    pub fn name(&self, vni: Vni) -> String {
        format!("{}{}{}", self.prefix, vni.0, self.suffix)
    }

    /// The VNI an interface name stands for, if it matches the pattern in canonical decimal.
    pub fn vni(&self, name: &str) -> Option<Vni> {
        let digits = name
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok().map(Vni)
    }
}
