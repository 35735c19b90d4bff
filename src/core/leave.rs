//! The graceful stop, make before break: announce LEAVING while still owning everything, wait
//! (at most `--leave-wait`) until every ready peer confirms with a heartbeat sent after it took
//! over, then put every managed interface down, verify that with a fresh read of the kernel (up to
//! [`STOP_ATTEMPTS`] times), say LEAVING once more and exit.

use std::time::Instant;

use tracing::{error, info};

use super::{Core, Effect, Exit, Notice, Phase};
use crate::reconcile::Protodown;
use crate::types::Slot;
use crate::wire::FLAG_LEAVING;

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
            waiting: self.live.ready_peers().collect(),
            exit: true,
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
            waiting: self.live.ready_peers().collect(),
            exit: false,
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

    /// Once every peer has confirmed (or the wait is over): release everything.
    pub(super) fn leave_if_confirmed(&mut self, now: Instant) {
        let Phase::Leaving {
            since,
            deadline,
            waiting,
            exit,
        } = &self.phase
        else {
            return;
        };
        if !waiting.is_empty() && now < *deadline {
            return;
        }
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

    /// At a stop: every managed interface down, whatever the backoff says (the last word).
    fn release_all(&mut self) {
        let plan = self.plan_changes();
        if plan.changes.is_empty() {
            // Verify with a fresh read all the same: the table may be behind the kernel.
            self.effects.push_back(Effect::Resync);
        } else {
            self.applying = true;
            self.effects.push_back(Effect::SetProtodown(plan.changes));
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
        let plan = self.plan_changes();
        if !plan.changes.is_empty() && attempts < STOP_ATTEMPTS {
            self.phase = Phase::Stopping {
                since,
                confirmed,
                attempts: attempts + 1,
            };
            self.release_all();
            return;
        }
        let still_up: Vec<Slot> = plan.changes.iter().map(Protodown::slot).collect();
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
