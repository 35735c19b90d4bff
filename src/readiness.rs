//! Whether this gateway may own anything: the start-up hold-down and the uplink. Pure.
//!
//! A gateway owns nothing until it has listened for `--hold-down` intervals (so that it knows the
//! members before it takes their VNIs), nothing while its heartbeat interface (`--bind-interface`)
//! has no carrier (it is cut off from the segment, and the peers have taken over), and nothing for
//! `--uplink-hold-down` after that interface comes back (BGP EVPN needs that long to bring the
//! gateway's sessions back; the peers keep its VNIs meanwhile). At a stop it owns nothing again.

use std::time::{Duration, Instant};

/// What changed in [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The hold-down is over: candidate owner from now on.
    Ready,
    /// The uplink lost carrier: release everything.
    UplinkDown,
    /// The uplink is back: a hold-down starts.
    UplinkUp { hold: Duration },
}

#[derive(Debug, Clone)]
pub struct Readiness {
    hold_down: Duration,
    uplink_hold_down: Duration,
    ready: bool,
    /// When the current hold-down ends (`None`: not in one).
    hold_until: Option<Instant>,
    /// The uplink state the last [`Readiness::uplink`] call saw.
    uplink_was: bool,
    /// The running hold-down was started by the uplink's return.
    uplink_hold: bool,
    /// Drained by the operator (`wmgwd2 drain`, `--start-drained`): owns nothing, whatever else
    /// happens, until undrained.
    drained: bool,
}

impl Readiness {
    /// `uplink_hold_down` is the longer of the two when the uplink comes back.
    pub fn new(hold_down: Duration, uplink_hold_down: Duration) -> Readiness {
        Readiness {
            hold_down,
            uplink_hold_down: uplink_hold_down.max(hold_down),
            ready: false,
            hold_until: None,
            uplink_was: true,
            uplink_hold: false,
            drained: false,
        }
    }

    /// Drained: own nothing until [`Readiness::undrain`].
    pub fn drain(&mut self) {
        self.drained = true;
        self.ready = false;
        self.hold_until = None;
    }

    /// Undrained at `now`: a hold-down, as at start, before owning again.
    pub fn undrain(&mut self, now: Instant, uplink_up: bool) {
        self.drained = false;
        self.start(now, uplink_up);
    }

    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Is the running hold-down the one after the uplink came back?
    pub fn uplink_holding(&self) -> bool {
        self.hold_until.is_some() && self.uplink_hold
    }

    /// Starts at `now`: the hold-down begins if the uplink is up; otherwise we wait for it.
    pub fn start(&mut self, now: Instant, uplink_up: bool) {
        self.ready = false;
        self.uplink_was = uplink_up;
        self.uplink_hold = false;
        self.hold_until = (uplink_up && !self.drained).then(|| now + self.hold_down);
    }

    /// May this gateway own VNIs now?
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Is a hold-down running?
    pub fn holding(&self) -> bool {
        self.hold_until.is_some()
    }

    /// When the running hold-down ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hold_until
    }

    /// Ends the hold-down if it is over at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        match self.hold_until {
            Some(t) if t <= now => {
                self.hold_until = None;
                self.ready = true;
                Some(Transition::Ready)
            }
            _ => None,
        }
    }

    /// Takes the uplink's state at `now`; acts only when it changed.
    pub fn uplink(&mut self, up: bool, now: Instant) -> Option<Transition> {
        if up == self.uplink_was {
            return None;
        }
        self.uplink_was = up;
        if up {
            if self.drained {
                return None;
            }
            self.hold_until = Some(now + self.uplink_hold_down);
            self.uplink_hold = true;
            Some(Transition::UplinkUp {
                hold: self.uplink_hold_down,
            })
        } else {
            self.ready = false;
            self.hold_until = None;
            Some(Transition::UplinkDown)
        }
    }

    /// A stop: own nothing, and no hold-down will end.
    pub fn stop(&mut self) {
        self.ready = false;
        self.hold_until = None;
    }
}
