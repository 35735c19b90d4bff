//! Desired versus observed: what to change in the kernel, and when it may be changed again. Pure.
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
//!
//! [`Backoff`] keeps a VNI that was just acted on from being acted on again at once (a kernel, or
//! another program, that keeps undoing what we set must not make a hot loop), and schedules the
//! retry of a failed request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::links::LinkState;
use crate::types::{Family, IfIndex, Slot, Vni, VniRange};

/// A VNI acted on less than this long ago waits before the next action.
pub const ACTION_BACKOFF: Duration = Duration::from_millis(50);
/// A failed kernel request is retried after this long (or sooner, on the next event).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One protodown change, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protodown {
    pub vni: Vni,
    /// Which of the VNI's interfaces.
    pub family: Family,
    pub ifindex: IfIndex,
    /// `true`: set our reason bit and protodown. `false`: clear our reason bit and protodown.
    pub on: bool,
}

/// Removal of a MAC from a bridge's forwarding database, learnt on one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbFlush {
    pub vni: Vni,
    pub family: Family,
    /// The bridge port the MAC was learnt on.
    pub port: IfIndex,
    pub mac: [u8; 6],
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Protodown>,
    /// Managed VNIs with no interface of either family.
    pub missing: Vec<Vni>,
    /// Owned VNIs held down by other reason bits: (vni, the foreign bits of its interfaces).
    pub blocked: Vec<(Vni, u32)>,
}

/// The observed links that are wrong, and what to do about them.
///
/// `owned` are the VNIs we own (empty during the hold-down and at shutdown), `managed` the
/// configured range, `links` the managed interfaces the kernel reports, by slot. A VNI's
/// interfaces (IPv4, IPv6, either or both) follow its ownership together.
pub fn plan(
    owned: &BTreeSet<Vni>,
    managed: VniRange,
    links: &BTreeMap<Slot, LinkState>,
    reason_bit: u8,
) -> Plan {
    let ours = 1u32 << reason_bit;
    let mut p = Plan::default();
    for vni in managed.iter() {
        let mut any = false;
        let mut blocked = 0u32;
        for (slot, link) in links.range(Slot::both(vni)) {
            any = true;
            let change = |on| Protodown {
                vni,
                family: slot.family,
                ifindex: link.ifindex,
                on,
            };
            if owned.contains(&vni) {
                let foreign = link.reason & !ours;
                if link.reason & ours != 0 || (link.protodown && foreign == 0) {
                    p.changes.push(change(false));
                }
                if link.protodown && foreign != 0 {
                    blocked |= foreign;
                }
            } else if !link.protodown || link.reason & ours == 0 || link.carrier {
                p.changes.push(change(true));
            }
        }
        if !any {
            p.missing.push(vni);
        }
        if blocked != 0 {
            p.blocked.push((vni, blocked));
        }
    }
    p
}

/// `--go-compat`'s stop: every managed interface that is not yet protodown **without** our reason
/// bit, as changes with `on` (carried out with [`crate::kernel::Kernel::hand_back`]). The Go
/// original never sends a reason, and the kernel refuses to clear protodown while any reason bit
/// is set: one of ours left behind would keep it from serving this gateway's VNIs after a
/// rollback. Other programs' bits are theirs, left alone.
pub fn hand_back(
    managed: VniRange,
    links: &BTreeMap<Slot, LinkState>,
    reason_bit: u8,
) -> Vec<Protodown> {
    let ours = 1u32 << reason_bit;
    links
        .iter()
        .filter(|(slot, _)| managed.contains(slot.vni))
        .filter_map(|(slot, link)| {
            (!link.protodown || link.reason & ours != 0).then_some(Protodown {
                vni: slot.vni,
                family: slot.family,
                ifindex: link.ifindex,
                on: true,
            })
        })
        .collect()
}

/// For every interface that `done` put into protodown, the removal of its MAC from the bridge it
/// feeds (`port_of`: the bridge port of a VNI's link). A released gateway MAC left in the bridge
/// keeps FRR advertising it (EVPN type-2) from the old owner; with a shared virtual MAC that
/// black-holes traffic. Harmless with distinct MACs.
pub fn fdb_flushes(
    done: &[Protodown],
    links: &BTreeMap<Slot, LinkState>,
    port_of: impl Fn(Slot) -> Option<IfIndex>,
) -> Vec<FdbFlush> {
    done.iter()
        .filter(|c| c.on)
        .filter_map(|c| {
            let slot = c.slot();
            Some(FdbFlush {
                vni: c.vni,
                family: c.family,
                port: port_of(slot)?,
                mac: links.get(&slot)?.mac,
            })
        })
        .collect()
}

impl Protodown {
    /// The managed interface's place.
    pub fn slot(&self) -> Slot {
        Slot {
            vni: self.vni,
            family: self.family,
        }
    }
}

impl FdbFlush {
    pub fn slot(&self) -> Slot {
        Slot {
            vni: self.vni,
            family: self.family,
        }
    }
}

/// When each managed interface (by slot) was last acted on, and when a deferred or failed action
/// may run again.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    acted: HashMap<Slot, Instant>,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Splits `changes` into those that may run at `now` and defers the others (their VNI was
    /// acted on less than [`ACTION_BACKOFF`] ago), remembering when to try again.
    pub fn admit(&mut self, changes: Vec<Protodown>, now: Instant) -> Vec<Protodown> {
        let mut todo = Vec::with_capacity(changes.len());
        for c in changes {
            match self.acted.get(&c.slot()) {
                Some(&last) if now < last + ACTION_BACKOFF => self.retry(last + ACTION_BACKOFF),
                _ => todo.push(c),
            }
        }
        todo
    }

    /// These interfaces were acted on at `now`.
    pub fn acted(&mut self, slots: impl IntoIterator<Item = Slot>, now: Instant) {
        for v in slots {
            self.acted.insert(v, now);
        }
    }

    /// Try again no later than `at`.
    pub fn retry(&mut self, at: Instant) {
        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
    }

    /// When a deferred action is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// True (once) when the deferred actions are due at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.retry_at {
            Some(t) if t <= now => {
                self.retry_at = None;
                true
            }
            _ => false,
        }
    }

    /// Forgets every past action: the next plan runs whole (the last word at a stop).
    pub fn clear(&mut self) {
        self.acted.clear();
    }
}
