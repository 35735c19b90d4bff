//! Carrying the plan out: ask for the protodown changes, take their results (backoff and retry,
//! FDB and neighbour flushes after a success), keep the GARP schedule in step with what is active,
//! and report interfaces that are missing or held down by someone else.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::{Core, Effect, GarpReport, Phase};
use crate::kernel::KernelError;
use crate::reconcile::{self, FdbFlush, Protodown, RETRY_AFTER_FAILURE};
use crate::types::{IfIndex, Vni};

impl Core {
    /// The plan against the kernel's links as last reported: what `owned` asks of them.
    pub(super) fn plan_changes(&self) -> reconcile::Plan {
        reconcile::plan(
            &self.owned,
            self.cfg.vnis(),
            self.links.managed(),
            self.cfg.protodown_reason,
        )
    }

    /// Plans against the kernel's reported state and asks for the difference; with nothing to
    /// change, brings the GARP schedule up to date.
    pub(super) fn reconcile(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Done) {
            return;
        }
        if self.applying {
            self.replan = true;
            return;
        }
        if self.phase == Phase::Running {
            let unservable = self.unservable();
            if unservable != self.last_unservable {
                self.last_unservable = unservable;
                self.advert_dirty = true;
                self.effects.push_back(Effect::HeartbeatNow);
                self.reassign(now, "vnis held down by another reason bit changed");
            }
        }
        let plan = self.plan_changes();
        self.report_missing(&plan.missing);
        self.report_blocked(&plan.blocked);
        let mut changes = plan.changes;
        changes.extend(
            self.links
                .orphans()
                .iter()
                .map(|(&ifindex, &slot)| Protodown {
                    vni: slot.vni,
                    family: slot.family,
                    ifindex,
                    on: true,
                }),
        );
        let todo = self.backoff.admit(changes, now);
        if todo.is_empty() {
            self.update_active(now);
            return;
        }
        self.applying = true;
        self.effects.push_back(Effect::SetProtodown(todo));
    }

    pub(super) fn applied(
        &mut self,
        changes: Vec<Protodown>,
        results: Vec<Result<(), KernelError>>,
        now: Instant,
    ) {
        self.applying = false;
        self.backoff.acted(changes.iter().map(Protodown::slot), now);
        let mut done = Vec::with_capacity(changes.len());
        let mut failed = 0u64;
        let n = changes.len() as u64;
        for (c, r) in changes.into_iter().zip(results) {
            let ifname = self.cfg.ifname(c.slot());
            match r {
                Ok(()) => {
                    debug!(vni = %c.vni, %ifname, protodown = c.on, action = "set_protodown", "applied");
                    done.push(c);
                }
                // Another reason holds it down: reported as blocked, not an error here.
                Err(KernelError::Busy { .. }) => {}
                Err(e) => {
                    failed += 1;
                    if self.logs.apply.ready(now) {
                        warn!(vni = %c.vni, %ifname, protodown = c.on, error = %e, kind = e.kind(), "protodown failed; will retry");
                    }
                    self.backoff.retry(now + RETRY_AFTER_FAILURE);
                }
            }
        }
        self.stats.actions_applied += n - failed;
        self.stats.actions_failed += failed;
        let links = &self.links;
        let flushes = reconcile::fdb_flushes(&done, links.managed(), |v| links.bridge_port(v));
        if !flushes.is_empty() {
            self.effects.push_back(Effect::FlushFdb(flushes));
        }
        let taken: Vec<IfIndex> = done.iter().filter(|c| !c.on).map(|c| c.ifindex).collect();
        if !taken.is_empty() {
            self.effects.push_back(Effect::FlushNeighbours(taken));
        }
        self.update_active(now);
        if std::mem::take(&mut self.replan) {
            self.reconcile(now);
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            // Verify with a fresh read of the kernel (the events of our own change may still be
            // on their way).
            self.effects.push_back(Effect::Resync);
        }
    }

    pub(super) fn fdb_flushed(
        &mut self,
        flushes: &[FdbFlush],
        results: Vec<Result<(), KernelError>>,
        now: Instant,
    ) {
        for (f, r) in flushes.iter().zip(results) {
            let ifname = self.cfg.ifname(f.slot());
            match r {
                Ok(()) => {
                    debug!(vni = %f.vni, %ifname, port = %f.port, action = "flush_fdb", "applied")
                }
                Err(e) => {
                    self.stats.actions_failed += 1;
                    if self.logs.apply.ready(now) {
                        warn!(vni = %f.vni, %ifname, port = %f.port, error = %e, "fdb flush failed");
                    }
                }
            }
        }
    }

    /// Starts a burst of announcements for every interface of an owned VNI that just became
    /// active (takeover, or carrier back), drops the schedule of the others, and sends what is
    /// due.
    pub(super) fn update_active(&mut self, now: Instant) {
        let active = self
            .owned
            .iter()
            .flat_map(|&vni| self.links.of_vni(vni))
            .filter(|(_, l)| l.active())
            .map(|(slot, l)| (slot, l.ifindex))
            .collect();
        self.garps.update(active, now);
        self.send_due_garps(now);
    }

    pub(super) fn send_due_garps(&mut self, now: Instant) {
        let links = &self.links;
        let due = self.garps.take_due(now, |slot| {
            let l = links.get(slot)?;
            Some((l.mac, links.addrs(l.ifindex)))
        });
        for a in due.iter().filter(|a| a.ips.is_empty()) {
            debug!(vni = %a.slot.vni, ifname = %self.cfg.ifname(a.slot), family = %a.slot.family, "no address to announce");
        }
        if due.iter().any(|a| !a.ips.is_empty()) {
            self.effects.push_back(Effect::SendGarps(due));
        }
    }

    pub(super) fn garps_sent(&mut self, report: GarpReport, now: Instant) {
        self.stats.garps_sent += report.sent;
        self.stats.garp_errors += report.failed.len() as u64;
        if let Some((slot, ip, e)) = report.failed.first() {
            if self.logs.garp.ready(now) {
                warn!(vni = %slot.vni, ifname = %self.cfg.ifname(*slot), %ip, error = %e, failed = report.failed.len(), "garp failed");
            }
        }
        self.garps.defer(&report.unsent, now);
    }

    pub(super) fn report_missing(&mut self, missing: &[Vni]) {
        let now_missing: BTreeSet<Vni> = missing.iter().copied().collect();
        if let Some(&first) = now_missing.difference(&self.missing).next() {
            let count = now_missing.difference(&self.missing).count();
            warn!(
                count,
                vni = %first,
                ifname = %self.cfg.pattern.name(first),
                "managed interfaces missing; will manage them when they appear"
            );
        }
        for &vni in self.missing.difference(&now_missing) {
            info!(%vni, ifname = %self.cfg.pattern.name(vni), "managed interface appeared");
        }
        self.missing = now_missing;
    }

    pub(super) fn report_blocked(&mut self, blocked: &[(Vni, u32)]) {
        let now_blocked: BTreeMap<Vni, u32> = blocked.iter().copied().collect();
        for (&vni, &bits) in &now_blocked {
            if self.blocked.get(&vni) != Some(&bits) {
                warn!(
                    %vni,
                    ifname = %self.cfg.pattern.name(vni),
                    reason_bits = %format_args!("{bits:#x}"),
                    "owned, but protodown is held by another reason; not clearing it"
                );
            }
        }
        self.blocked = now_blocked;
    }
}
