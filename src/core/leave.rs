//! The graceful stop, make before break: announce LEAVING while still owning everything, wait
//! (at most `--leave-wait`) until every ready peer confirms with a heartbeat sent after it took
//! over, then put every managed interface down, verify that with a fresh read of the kernel (up to
//! [`STOP_ATTEMPTS`] times), say LEAVING once more and exit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::{Core, Effect, Exit, Notice, Phase};
use crate::liveness::LEGACY_HOLD;
use crate::reconcile::{self, Protodown};
use crate::types::{vni_ranges, Slot, Uid, Vni};
use crate::wire::FLAG_LEAVING;

/// `--go-compat`: how long after we stop sending the original's frames its gateways have taken
/// our VNIs over: it expires us 3 s after our last frame (at most now) and runs its assignment
/// then; 1 s more for its loop and the kernel.
pub const GO_TAKEOVER: Duration = Duration::from_secs(LEGACY_HOLD.as_secs() + 1);

/// At a stop, how many times the core asks the kernel to put every managed interface down (each
/// time verified by a fresh read) before it gives up and exits with an error.
pub const STOP_ATTEMPTS: u32 = 3;

impl Core {
    /// Graceful stop: LEAVING, wait for the peers' confirmation, protodown everything, LEAVING.
    pub(super) fn stop(&mut self, now: Instant) {
        match self.phase {
            Phase::Running => {}
            Phase::New => {
                self.phase = Phase::Done;
                self.effects
                    .push_back(Effect::Exit(Exit { still_up: vec![] }));
                return;
            }
            _ => return,
        }
        info!(owned = self.owned.len(), "stopping: announcing leave");
        self.readiness.stop();
        self.effects.push_back(Effect::Notify(Notice::Stopping));
        self.effects.push_back(Effect::StopBeacon);
        self.effects.push_back(Effect::SendHeartbeat {
            flags: FLAG_LEAVING,
        });
        self.phase = Phase::Leaving {
            since: now,
            deadline: now + self.cfg.leave_wait,
            waiting: self.version_1_peers(),
            exit: true,
            legacy_until: self.legacy_until(now),
        };
        self.leave_if_confirmed(now);
    }

    /// Drain: as a stop, make before break, but without exiting. Our heartbeats say STARTING
    /// from now on (not a candidate); once every ready peer has confirmed (or `--leave-wait` is
    /// over) we release everything and stay, heartbeating, until undrained.
    pub(super) fn drain(&mut self, now: Instant) {
        if self.phase != Phase::Running || self.readiness.drained() {
            return;
        }
        info!(owned = self.owned.len(), "draining: handing every vni over");
        self.readiness.drain();
        self.effects.push_back(Effect::HeartbeatNow);
        self.effects
            .push_back(Effect::Notify(Notice::Status("draining".into())));
        self.phase = Phase::Leaving {
            since: now,
            deadline: now + self.cfg.leave_wait,
            waiting: self.version_1_peers(),
            exit: false,
            legacy_until: self.legacy_until(now),
        };
        self.leave_if_confirmed(now);
    }

    /// Undrain: a candidate again after a hold-down, the same no-gap path as a rejoin.
    pub(super) fn undrain(&mut self, now: Instant) {
        if self.phase != Phase::Running || !self.readiness.drained() {
            return;
        }
        info!("undrained: hold-down before taking ownership");
        self.readiness.undrain(now, self.uplink_usable());
        self.effects.push_back(Effect::HeartbeatNow);
    }

    /// The ready peers that can confirm a takeover: those that speak version 1.
    fn version_1_peers(&self) -> BTreeSet<Uid> {
        let peers = self.live.peers();
        self.live
            .ready_peers()
            .filter(|u| peers.get(u).is_some_and(|p| p.incarnation.is_some()))
            .collect()
    }

    /// `--go-compat` with ready legacy peers: until when we keep what goes to them (they learn of
    /// our departure only by expiring us; our frames stopped when we stopped being a candidate).
    fn legacy_until(&self, now: Instant) -> Option<Instant> {
        let peers = self.live.peers();
        let legacy = self
            .live
            .ready_peers()
            .any(|u| peers.get(&u).is_some_and(|p| p.incarnation.is_none()));
        (self.cfg.go_compat && legacy).then_some(now + GO_TAKEOVER)
    }

    /// While legacy peers have yet to expire us: hand version-1 peers (which confirmed, or were
    /// waited for) their VNIs, keep those that go to legacy peers. Make before break both ways.
    fn hand_to_version_1(&mut self, now: Instant) {
        let peers: BTreeSet<Uid> = self.live.ready_peers().collect();
        let all = self.live.peers();
        let mine = self.unservable();
        let keep: BTreeSet<Vni> = self
            .owned
            .iter()
            .copied()
            .filter(|&v| {
                self.owner_of(v, &peers, &mine)
                    .is_some_and(|o| all.get(&o).is_some_and(|p| p.incarnation.is_none()))
            })
            .collect();
        if keep != self.owned {
            let released: Vec<Vni> = self.owned.difference(&keep).copied().collect();
            info!(
                vnis = %vni_ranges(released.iter().copied()),
                count = released.len(),
                kept = keep.len(),
                "releasing the vnis of version-1 peers; keeping the Go original's until it expires us"
            );
            self.owned = keep;
            self.advert_dirty = true;
            self.reconcile(now);
        }
    }

    /// Once every peer has confirmed (or the wait is over): release everything.
    pub(super) fn leave_if_confirmed(&mut self, now: Instant) {
        let Phase::Leaving {
            deadline,
            waiting,
            legacy_until,
            ..
        } = &self.phase
        else {
            return;
        };
        if !waiting.is_empty() && now < *deadline {
            return;
        }
        if let Some(until) = legacy_until.filter(|&t| now < t) {
            // The version-1 wait is over; what is left is the legacy peers' (no timer before).
            if let Phase::Leaving { deadline, .. } = &mut self.phase {
                *deadline = until;
            }
            self.hand_to_version_1(now);
            return;
        }
        let Phase::Leaving {
            since,
            waiting,
            exit,
            ..
        } = &self.phase
        else {
            return;
        };
        let confirmed = waiting.is_empty();
        if !confirmed {
            info!(
                unconfirmed = waiting.len(),
                "peers did not confirm the takeover in time"
            );
        }
        if !*exit {
            info!(confirmed, "drained: releasing every vni, staying a member");
            self.phase = Phase::Running;
            self.reassign(now, "drain");
            self.reconcile(now);
            let status = self.status_line();
            self.effects
                .push_back(Effect::Notify(Notice::Status(format!("drained; {status}"))));
            return;
        }
        self.phase = Phase::Stopping {
            since: *since,
            confirmed,
            attempts: 1,
        };
        self.reassign(now, "stop");
        self.release_all();
    }

    /// What a stop still has to change: every managed interface down (with `--go-compat`,
    /// down without our reason bit: [`reconcile::hand_back`]).
    fn stop_changes(&self) -> Vec<reconcile::Protodown> {
        if self.cfg.go_compat {
            reconcile::hand_back(
                self.cfg.vnis(),
                self.links.managed(),
                self.cfg.protodown_reason,
            )
        } else {
            self.plan_changes().changes
        }
    }

    /// At a stop: every managed interface down, whatever the backoff says (the last word).
    fn release_all(&mut self) {
        let changes = self.stop_changes();
        if changes.is_empty() {
            // Verify with a fresh read all the same: the table may be behind the kernel.
            self.effects.push_back(Effect::Resync);
        } else {
            self.applying = true;
            self.effects.push_back(if self.cfg.go_compat {
                Effect::HandBack(changes)
            } else {
                Effect::SetProtodown(changes)
            });
        }
    }

    /// The fresh read after a release: exit when every managed interface is down, or try again.
    pub(super) fn verify_stop(&mut self, now: Instant) {
        let Phase::Stopping {
            since,
            confirmed,
            attempts,
        } = self.phase
        else {
            return;
        };
        let changes = self.stop_changes();
        if !changes.is_empty() && attempts < STOP_ATTEMPTS {
            self.phase = Phase::Stopping {
                since,
                confirmed,
                attempts: attempts + 1,
            };
            self.release_all();
            return;
        }
        let still_up: Vec<Slot> = changes.iter().map(Protodown::slot).collect();
        self.effects.push_back(Effect::SendHeartbeat {
            flags: FLAG_LEAVING,
        });
        if still_up.is_empty() {
            info!(
                confirmed,
                elapsed_ms = now.duration_since(since).as_millis() as u64,
                frames_received = self.stats.frames_received,
                actions_failed = self.stats.actions_failed,
                garps_sent = self.stats.garps_sent,
                "stopped, all managed interfaces protodown"
            );
        } else {
            let names: Vec<String> = still_up.iter().map(|&s| self.cfg.ifname(s)).collect();
            error!(
                count = still_up.len(),
                interfaces = %names.join(","),
                "stopped, but these managed interfaces could not be put down"
            );
        }
        self.phase = Phase::Done;
        self.effects.push_back(Effect::Exit(Exit { still_up }));
    }
}
