//! Leaving `--go-compat` without an outage (docs/operations.md, "Leaving compat mode"): every
//! gateway switches from the original's rule to SipHash at a point they agree on, a barrier in
//! the heartbeats' flags (bits 3–4, the phase), never by a clock.
//!
//! Phase 0: the original's rule. 1 (*ready*): `--go-compat-exit` allows it, and no frame of an
//! original has been heard for that long; still the original's rule. 2 (*union*): every member
//! said ≥ 1, so we own what we own under either rule (make before break: duplicates for a moment,
//! never a gap). 3 (*left*): every member said ≥ 2, so every VNI's SipHash owner holds it already;
//! SipHash alone, and no more 8-byte frames. An original heard again before phase 2 sends us back
//! to 0; after it, it is reported, not followed (the operator allowed the exit). A gateway that
//! starts among members that all say 3 takes 3 at once.

use std::time::Instant;

use tracing::{info, warn};

use super::{Core, Effect, Phase};
use crate::assign::Rule;
use crate::liveness::PeerState;

pub const READY: u8 = 1;
pub const UNION: u8 = 2;
pub const LEFT: u8 = 3;

impl Core {
    /// The rule that names owners now (in phase 2 both do: see `owned_among`).
    pub(super) fn rule(&self) -> Rule {
        if self.compat_phase == LEFT {
            Rule::SipHash
        } else {
            self.cfg.rule()
        }
    }

    fn legacy_alive(&self) -> bool {
        self.live.peers().values().any(|p| p.incarnation.is_none())
    }

    /// When the quiet period ends, if that is what we wait for.
    pub(super) fn compat_deadline(&self) -> Option<Instant> {
        let quiet = self.cfg.go_compat_exit?;
        if self.compat_phase != 0 || self.legacy_alive() {
            return None;
        }
        self.last_legacy.map(|t| t + quiet)
    }

    /// The next phase, as what we hear says.
    fn next_compat_phase(&self, now: Instant) -> u8 {
        let Some(quiet) = self.cfg.go_compat_exit else {
            return self.compat_phase;
        };
        let legacy = self.legacy_alive();
        let least = self
            .live
            .peers()
            .values()
            .filter(|p| p.state != PeerState::Left && p.incarnation.is_some())
            .map(|p| p.compat_phase)
            .min();
        let quiet_over = self.last_legacy.is_some_and(|t| now >= t + quiet);
        match self.compat_phase {
            0 | READY if !legacy && least == Some(LEFT) => LEFT,
            0 if !legacy && quiet_over => READY,
            READY if legacy => 0,
            READY if least.is_none_or(|l| l >= READY) => UNION,
            UNION if least.is_none_or(|l| l >= UNION) => LEFT,
            p => p,
        }
    }

    /// Moves through the phases as far as what we hear allows, reassigning at each step.
    pub(super) fn compat_step(&mut self, now: Instant) {
        if self.phase != Phase::Running || self.cfg.go_compat_exit.is_none() {
            return;
        }
        if self.compat_phase >= UNION && self.legacy_alive() && self.logs.conflict.ready(now) {
            warn!("a frame of the Go original after this fleet began to leave --go-compat: it assigns by its own rule, expect duplicates and gaps until it is stopped");
        }
        loop {
            let next = self.next_compat_phase(now);
            if next == self.compat_phase {
                return;
            }
            let what = match next {
                READY => "ready to leave go-compat (no original heard for the quiet period)",
                UNION => "every member ready: owning under both rules",
                LEFT => "every member owns under both rules: go-compat left, owners by siphash",
                _ => "an original heard again: back to go-compat",
            };
            info!(phase = next, "{what}");
            self.compat_phase = next;
            self.advert_dirty = true;
            self.effects.push_back(Effect::HeartbeatNow);
            self.reassign(now, &format!("go-compat exit phase {next}"));
            self.reconcile(now);
        }
    }
}
