//! The heartbeat interface (`--bind-interface`): without carrier on it this gateway is cut off
//! from its peers, so it owns nothing (and its peers, which stopped hearing it, own its VNIs); and
//! the heartbeat socket must be bound to it as it is now: SO_BINDTODEVICE binds to an ifindex, so
//! an interface deleted and created again under the same name leaves the socket deaf and mute
//! until it is bound again. Until then the uplink counts as down.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Core, Effect, Phase};
use crate::readiness::Transition;

/// A failed rebind is tried again after this long (or on the next change of the uplink).
pub const REBIND_RETRY: Duration = Duration::from_secs(1);

impl Core {
    /// Up with carrier, and the heartbeat socket bound to the interface of that name as it is now.
    pub(super) fn uplink_usable(&self) -> bool {
        self.links.uplink_up()
            && (self.links.uplink_name().is_none()
                || self.bound_uplink == self.links.uplink_index())
    }

    /// Acts on a change of the uplink: down → own nothing at once; up → a new hold-down; back
    /// under a new index → bind the socket to it first.
    pub(super) fn check_uplink(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(i) = self.links.uplink_index() {
            if self.bound_uplink != Some(i) && !self.rebinding && self.rebind_after.is_none() {
                info!(ifname = ?self.links.uplink_name(), ifindex = %i, "uplink has a new index: binding the heartbeat socket to it");
                self.rebinding = true;
                self.effects.push_back(Effect::RebindSocket);
            }
        }
        let ifname = self.links.uplink_name().unwrap_or_default().to_owned();
        match self.readiness.uplink(self.uplink_usable(), now) {
            Some(Transition::UplinkUp { hold }) => {
                info!(%ifname, ?hold, "uplink up: hold-down before taking ownership");
            }
            Some(Transition::UplinkDown) => {
                warn!(%ifname, owned = self.owned.len(), "uplink down: releasing every vni");
                self.reassign(now, "uplink down");
            }
            _ => return,
        }
        self.effects.push_back(Effect::HeartbeatNow);
    }

    /// The result of [`Effect::RebindSocket`].
    pub(super) fn rebound(&mut self, result: Result<(), String>, now: Instant) {
        self.rebinding = false;
        match result {
            Ok(()) => {
                self.bound_uplink = self.links.uplink_index();
                info!(ifname = ?self.links.uplink_name(), "heartbeat socket bound to the uplink again");
            }
            Err(e) => {
                warn!(ifname = ?self.links.uplink_name(), error = %e, "binding the heartbeat socket to the uplink failed; will retry");
                self.rebind_after = Some(now + REBIND_RETRY);
            }
        }
        self.check_uplink(now);
    }
}
