//! Membership as this gateway sees it, and what it makes of it: the log lines and counters of
//! each observation, who owns what (reassign), and the release after a local stall.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{Core, Effect, Notice, OwnershipChange, Phase, TRANSITIONS_KEPT};
use crate::liveness::{Observation, PeerState};
use crate::types::{vni_ranges, Uid, Vni};

/// A reason's kind, for the counter (the reason itself names peers).
fn reason_kind(why: &str) -> &'static str {
    for (word, kind) in [
        ("joined", "peer_joined"),
        ("ready", "peer_ready"),
        ("restarted", "peer_restarted"),
        ("left", "peer_left"),
        ("dead", "peer_dead"),
        ("after a LEAVING", "leave_refuted"),
        ("stepped back", "peer_stepped_back"),
        ("view of us", "one_way_loss"),
        ("duplicate uid", "duplicate_uid"),
        ("another reason bit", "blocked"),
        ("hold-down", "hold_down_over"),
        ("uplink", "uplink_down"),
        ("stalled", "local_stall"),
        ("drain", "drain"),
        ("stop", "stop"),
    ] {
        if why.contains(word) {
            return kind;
        }
    }
    "other"
}

impl Core {
    /// Logs and counts what one frame did to the liveness table.
    pub(super) fn note(&mut self, obs: Observation, from: SocketAddr, now: Instant) {
        let line = |core: &mut Core| core.logs.lines.allow(now, &mut core.stats);
        match obs {
            Observation::Joined { uid, starting } => {
                if starting && !self.readiness.ready() {
                    self.cold.insert(uid);
                }
                if line(self) {
                    info!(peer = %uid, %from, starting, "peer joined")
                }
            }
            Observation::Ready { uid } => {
                // Heard ready: a candidate in its own right from now on, no longer presumed (a
                // presumption outliving that would count it after it stepped back, a drain, say).
                self.presumed.remove(&uid);
                if line(self) {
                    info!(peer = %uid, "peer ready")
                }
            }
            Observation::Restarted { uid, starting } => {
                if starting && !self.readiness.ready() {
                    self.cold.insert(uid);
                }
                if line(self) {
                    info!(peer = %uid, starting, "peer restarted")
                }
            }
            Observation::Left { uid } => {
                if line(self) {
                    info!(peer = %uid, "peer left")
                }
            }
            Observation::Withdrew { uid } => {
                self.presumed.remove(&uid);
                if line(self) {
                    info!(peer = %uid, "peer stepped back (no longer a candidate)")
                }
            }
            Observation::LeaveRefuted { uid, starting } => {
                self.stats.leaves_refuted += 1;
                if self.logs.refuted.ready(now) {
                    warn!(
                        peer = %uid,
                        %from,
                        starting,
                        refuted = self.stats.leaves_refuted,
                        "peer alive after its LEAVING: that LEAVING was forged or replayed"
                    );
                }
            }
            Observation::Refused { uid, reason } => {
                *self.stats.frames_refused.entry(reason.kind()).or_default() += 1;
                if self.logs.refused.ready(now) {
                    warn!(
                        peer = %uid,
                        %from,
                        reason = reason.kind(),
                        max_peers = self.cfg.max_peers,
                        refused = self.stats.frames_refused.values().sum::<u64>(),
                        "frame of an unknown uid refused: peer table full or too many new uids"
                    );
                }
            }
            Observation::Stale { .. } => self.stats.frames_stale += 1,
            Observation::Conflict {
                uid,
                incarnation,
                addr,
            } => {
                self.stats.uid_conflicts += 1;
                if self.logs.conflict.ready(now) {
                    error!(
                        peer = %uid,
                        from = %addr,
                        incarnation = ?incarnation,
                        conflicts = self.stats.uid_conflicts,
                        "another gateway uses our uid: fix --uid on one of them"
                    );
                }
            }
            Observation::Refreshed { .. } | Observation::Echo => {}
        }
    }

    /// We were silent longer than our hold time. If a peer has expired us (the heartbeats it
    /// sent meanwhile, read before this, leave us out), it owns our VNIs: keeping them would make
    /// duplicates, and taking them back at once a second move, so release everything and rejoin
    /// through the hold-down, as a restarted gateway does. If every peer still counts us alive,
    /// the peers were held up too (the whole host, or every gateway's, was stalled; each gives
    /// the others the time it lost itself, see `Core::timer`): nothing moved, and releasing
    /// everything would be the outage.
    pub(super) fn local_stall(&mut self, silent: std::time::Duration, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.stats.local_stalls += 1;
        let expired_by: Vec<String> = self
            .live
            .peers()
            .iter()
            .filter(|(_, p)| {
                p.state == PeerState::Ready && p.about_us.echoes && p.about_us.missing_us > 0
            })
            .map(|(uid, _)| uid.to_string())
            .collect();
        if expired_by.is_empty() {
            warn!(
                silent_ms = silent.as_millis() as u64,
                hold_ms = self.cfg.hold().as_millis() as u64,
                owned = self.owned.len(),
                "this gateway sent no heartbeat for longer than its hold time (stalled), but every peer still counts it alive: keeping what it owns"
            );
            self.effects.push_back(Effect::HeartbeatNow);
            return;
        }
        warn!(
            silent_ms = silent.as_millis() as u64,
            hold_ms = self.cfg.hold().as_millis() as u64,
            owned = self.owned.len(),
            expired_by = ?expired_by,
            "this gateway sent no heartbeat for longer than its hold time (stalled) and peers have expired it: releasing everything, rejoining through the hold-down"
        );
        self.readiness.start(now, self.uplink_usable());
        self.effects.push_back(Effect::HeartbeatNow);
        self.reassign(now, "this gateway was stalled");
        self.reconcile(now);
    }

    /// Recomputes what we own and logs the change: one line for what we take, one per new owner
    /// for what we release, VNIs as ranges.
    /// At the end of our hold-down: if no peer is a candidate yet, or only peers that started
    /// with us, and some are still starting (a cold start of the fleet: every gateway started
    /// within moments of the others), count
    /// them as candidates for up to two of our hold times, so that we take only our share. Before,
    /// the first gateway ready took every VNI and released two thirds of them a moment later, and
    /// a released macvlan keeps running until the kernel's link-watch gets to it (seconds, at
    /// 1000 VNIs): it answered clients' ARP and drew them to a MAC that then went dead. Nothing is
    /// served before a cold start, so leaving the starting peers their shares costs at most the
    /// moments until they are ready.
    pub(super) fn presume_starting_peers(&mut self, now: Instant) {
        let cold = std::mem::take(&mut self.cold);
        // Every candidate peer started with us (we heard it starting during our hold-down): it
        // did the same when its hold-down ended, so all agree. One that was a candidate before
        // (a running fleet) serves every VNI, and a presumed peer's share would be nobody's.
        if !self.live.ready_peers().all(|u| cold.contains(&u)) {
            return;
        }
        self.presumed = self.live.starting_peers().collect();
        if self.presumed.is_empty() {
            self.presumed_until = None;
            return;
        }
        let until = self.cfg.hold() * 2;
        self.presumed_until = Some(now + until);
        info!(
            peers = ?self.presumed.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            wait_ms = until.as_millis() as u64,
            "cold start: leaving peers that start with us their shares until they are ready"
        );
    }

    pub(super) fn reassign(&mut self, now: Instant, why: &str) {
        let mut peers: BTreeSet<Uid> = self.live.ready_peers().collect();
        if self.presumed_until.is_some() {
            let starting: BTreeSet<Uid> = self.live.starting_peers().collect();
            peers.extend(self.presumed.intersection(&starting).copied());
        }
        let owned = if self.candidate() {
            self.owned_among(&peers)
        } else {
            BTreeSet::new()
        };
        self.advert_dirty = true;
        let mine = self.unservable();
        let taken: Vec<Vni> = owned.difference(&self.owned).copied().collect();
        if !taken.is_empty() && self.logs.lines.allow(now, &mut self.stats) {
            info!(vnis = %vni_ranges(taken.iter().copied()), count = taken.len(), "taking vnis");
        }
        let mut released: BTreeMap<Option<Uid>, Vec<Vni>> = BTreeMap::new();
        for &vni in self.owned.difference(&owned) {
            let to = self.owner_of(vni, &peers, &mine);
            released.entry(to).or_default().push(vni);
        }
        for (to, vnis) in released {
            if self.logs.lines.allow(now, &mut self.stats) {
                info!(
                    vnis = %vni_ranges(vnis.iter().copied()),
                    count = vnis.len(),
                    peer = %to.map(|u| u.to_string()).unwrap_or_else(|| "none".into()),
                    "releasing vnis"
                );
            }
        }
        let changed = owned != self.owned;
        if changed {
            *self
                .stats
                .ownership_changes
                .entry(reason_kind(why))
                .or_default() += 1;
            let released: Vec<Vni> = self.owned.difference(&owned).copied().collect();
            self.transitions.push_back(OwnershipChange {
                at: now,
                taken,
                released,
                reason: why.to_owned(),
            });
            while self.transitions.len() > TRANSITIONS_KEPT {
                self.transitions.pop_front();
            }
        }
        self.owned = owned;
        if changed && self.notified_ready {
            let status = self.status_line();
            self.effects
                .push_back(Effect::Notify(Notice::Status(status)));
        }
    }
}
