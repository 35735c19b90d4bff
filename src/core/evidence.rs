//! What the heartbeats' extensions carry, both ways (docs/protocol.md, "Evidence"):
//! - out: the [`Advert`] the heartbeat task puts in every frame (what we heard of each member,
//!   our view's digest, what we cannot serve, and our hold time, raised under measured loss);
//! - in: freshness of signed frames that would start a new entry, one-way loss both ways (a
//!   peer kept alive only by others; a peer that hears us only through others, or not at all:
//!   then we step back), split views, and a duplicate of our UID (the lower incarnation steps
//!   back).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::Core;
use crate::liveness::{EchoSource, PeerState};
use crate::types::{Uid, Vni};
use crate::wire::{self, Extensions, Frame, Heartbeat};

/// A peer's frames in a row that do not list us before we take it that it does not count us
/// alive (one alone may be the first frame after it heard us). They must also span our hold
/// time (see [`Core::unseen`]).
pub const UNSEEN_AFTER: u8 = 2;
/// Views that differ for this many of the peer's intervals are a split.
pub const SPLIT_AFTER_INTERVALS: u32 = 4;
/// The hold time is raised until this is the chance that one window of it loses every frame.
const TARGET_MISS: f64 = 1e-6;

/// What the heartbeat task puts in every heartbeat until told otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advert {
    pub echoes: Vec<EchoSource>,
    pub truncated: bool,
    pub view: wire::View,
    pub blocked: Vec<Vni>,
    /// Our hold time now (raised under loss; never below `--interval` × `--dead-after`).
    pub hold_ms: u32,
}

impl Advert {
    /// The extensions of a heartbeat sent at `at` (ages measured from then).
    pub fn extensions(&self, at: Instant) -> Extensions {
        Extensions {
            echo: Some(wire::Echoes {
                entries: self.echoes.iter().map(|e| e.at(at)).collect(),
                truncated: self.truncated,
            }),
            view: Some(self.view),
            blocked: self.blocked.clone(),
        }
    }
}

/// The hold time for a loss of `permille` of our frames at the worst receiver: the smallest
/// multiple `k` of the interval, from `dead_after` up to twice that, such that `loss^k` (every
/// frame of one window lost) is at most [`TARGET_MISS`].
pub fn adaptive_multiple(dead_after: u32, permille: u16) -> u32 {
    let p = f64::from(permille.min(1000)) / 1000.0;
    let most = dead_after.saturating_mul(2);
    if p <= 0.0 {
        return dead_after;
    }
    if p >= 1.0 {
        return most;
    }
    let k = (TARGET_MISS.ln() / p.ln()).ceil();
    // k is finite and positive here; the cast saturates.
    (k as u32).clamp(dead_after, most)
}

/// The hold time, in intervals, that a peer needs to keep us through our own heartbeats going out
/// `lag` late (the gap between two of them is then up to an interval plus the lag; twice the lag
/// leaves room for the next one): from `dead_after` up to twice that.
pub fn lag_multiple(
    dead_after: u32,
    interval: std::time::Duration,
    lag: std::time::Duration,
) -> u32 {
    let most = dead_after.saturating_mul(2);
    if interval.is_zero() {
        return most;
    }
    let need = (interval + lag.saturating_mul(2)).as_nanos();
    let k = need.div_ceil(interval.as_nanos());
    u32::try_from(k).unwrap_or(u32::MAX).clamp(dead_after, most)
}

impl Core {
    /// Are we a candidate owner now? Ready (hold-down over, not drained, uplink up), heard by
    /// every candidate peer, and not the lower incarnation of a duplicated UID.
    pub(super) fn candidate(&self) -> bool {
        self.readiness.ready() && self.unseen_by.is_empty() && self.yield_until.is_none()
    }

    /// A signed frame that would start a new entry (an unknown UID, a new incarnation, a
    /// duplicate of ours) must echo one of our own recent heartbeats: proof that it was made
    /// after we sent that one, so that a captured frame cannot revive anyone after the entry
    /// expired, after we restarted or after its sender restarted.
    pub(super) fn fresh(&self, frame: &Frame, ext: &Extensions, own_sequence: u64) -> bool {
        let Frame::Heartbeat(hb) = frame else {
            return true;
        };
        let new = if hb.uid == self.me {
            hb.incarnation != self.incarnation
        } else {
            self.live.is_new(hb.uid, hb.incarnation)
        };
        if !new {
            return true;
        }
        let window = self.freshness_window();
        ext.echo.as_ref().is_some_and(|echo| {
            echo.entries.iter().any(|e| {
                e.uid == self.me
                    && e.incarnation == self.incarnation
                    && e.sequence <= own_sequence
                    && own_sequence - e.sequence <= window
            })
        })
    }

    /// Remembers a verified frame that was not fresh, to echo it (see `Core::pending`).
    pub(super) fn heard_pending(&mut self, frame: &Frame, now: Instant) {
        let Frame::Heartbeat(hb) = frame else {
            return;
        };
        if hb.uid == self.me || hb.leaving() {
            return;
        }
        let longest = Duration::from_millis(u64::from(wire::MAX_HOLD_MS));
        self.pending
            .retain(|_, &mut (_, _, at)| now.saturating_duration_since(at) < longest);
        if self.pending.len() >= self.cfg.max_peers && !self.pending.contains_key(&hb.uid) {
            return;
        }
        self.pending
            .insert(hb.uid, (hb.incarnation, hb.sequence, now));
        self.advert_dirty = true;
    }

    /// How many of our own sequence numbers back an echo may be and still prove freshness: two
    /// of our longest hold times' worth of heartbeats, and a few sent at once on changes.
    pub(super) fn freshness_window(&self) -> u64 {
        2 * u64::from(self.cfg.dead_after) * 2 + 8
    }

    /// After `obs` counted a frame of `hb.uid`: its extensions.
    pub(super) fn evidence_in(&mut self, hb: &Heartbeat, ext: &Extensions, now: Instant) {
        let uid = hb.uid;
        self.pending.remove(&uid);
        if self.live.heard_directly(uid) {
            info!(peer = %uid, "peer heard directly again");
        }
        let relayed = self.live.observe_extensions(uid, ext, now);
        for p in relayed.now_indirect {
            self.stats.one_way_in += 1;
            warn!(peer = %p, "one-way loss: we do not hear peer, other members do (kept alive through them)");
        }
        let Some(peer) = self.live.peers().get(&uid) else {
            return;
        };
        let ready = peer.state == PeerState::Ready;
        let interval = peer.interval;
        let about = peer.about_us.clone();
        let mut changed = false;
        // Does it count us alive?
        if ready && self.unseen(&about, now) && self.readiness.ready() {
            if self.unseen_by.insert(uid) {
                self.stats.one_way_out += 1;
                warn!(peer = %uid, addr = %peer.addr, "one-way loss: peer does not hear us (it counts us dead): stepping back until it does");
                changed = true;
            }
        } else if about.missing_us == 0 && self.unseen_by.remove(&uid) {
            info!(peer = %uid, "peer hears us again");
            changed = true;
        }
        // It had listed us, then left us out (it expired us, and may have taken and announced
        // our VNIs), and lists us again: clients may have learnt its MAC meanwhile; announce what we serve.
        if about.dropped_us && about.missing_us == 0 {
            if let Some(a) = self.live.about_mut(uid) {
                a.dropped_us = false;
            }
            self.reannounce_ours(uid, now);
        }
        // Does it hear us itself?
        if about.echoes && about.missing_us == 0 && about.our_sequence.is_some() {
            if !about.direct {
                if self.heard_indirectly_by.insert(uid) {
                    self.stats.one_way_out += 1;
                    warn!(peer = %uid, "one-way loss: peer hears us only through other members");
                }
            } else if self.heard_indirectly_by.remove(&uid) {
                info!(peer = %uid, "peer hears us directly again");
            }
        }
        // Views.
        self.compare_view(uid, interval, now);
        if about.blocked != self.peer_blocked.get(&uid).cloned().unwrap_or_default() {
            if about.blocked.is_empty() {
                self.peer_blocked.remove(&uid);
            } else {
                self.peer_blocked.insert(uid, about.blocked.clone());
            }
            changed = ready;
        }
        self.adapt_hold();
        self.advert_dirty = true;
        if changed && self.phase == super::Phase::Running {
            self.effects.push_back(super::Effect::HeartbeatNow);
            self.reassign(now, &format!("peer {uid}'s view of us"));
            self.reconcile(now);
        }
    }

    /// Does a peer that said `about` in its frames not hear us? Its ECHO has left us out for
    /// [`UNSEEN_AFTER`] frames in a row, and for at least our hold time: it has dropped us and,
    /// for as long as it took it to drop us, heard none of the heartbeats we kept sending: the
    /// one-way loss it expired us for, not a late frame of ours that it has since heard (a peer
    /// that expired us over one delay lists us again one interval after our next frame; on a
    /// busy host at 10 ms, stepping back for that made every gateway step back in turn).
    fn unseen(&self, about: &crate::liveness::AboutUs, now: Instant) -> bool {
        about.echoes
            && about.missing_us >= UNSEEN_AFTER
            && about
                .missing_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.hold)
    }

    /// Compares `uid`'s VIEW with ours; a difference that lasts [`SPLIT_AFTER_INTERVALS`] of its
    /// intervals is logged and counted once, and its end logged.
    fn compare_view(&mut self, uid: Uid, interval: Duration, now: Instant) {
        let ours = self.view().digest;
        let Some(about) = self.live.about_mut(uid) else {
            return;
        };
        let Some(theirs) = about.view else {
            return;
        };
        if theirs.digest == ours {
            about.view_differs_since = None;
            if self.split_with.remove(&uid) {
                info!(peer = %uid, "views agree again");
            }
            return;
        }
        let since = *about.view_differs_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= interval * SPLIT_AFTER_INTERVALS
            && self.split_with.insert(uid)
        {
            self.stats.split_views += 1;
            let mine = self.view_members();
            warn!(
                peer = %uid,
                ours = ?mine.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                their_candidates = theirs.candidates,
                "split view: peer's candidate set differs from ours"
            );
        }
    }

    /// The VNIs we cannot serve: their interface is held down by another protodown reason bit
    /// (whether we own them or not, so that handing them over does not undo itself).
    pub(super) fn unservable(&self) -> Vec<Vni> {
        let ours = 1u32 << self.cfg.protodown_reason;
        self.cfg
            .vnis()
            .iter()
            .filter(|&v| self.links.of_vni(v).any(|(_, l)| l.reason & !ours != 0))
            .take(wire::MAX_BLOCKED)
            .collect()
    }

    /// Who serves `vni` among `candidates`: the rendezvous winner among those that can serve it
    /// (a candidate that says BLOCKED for it, or ourselves when we cannot, is passed over), or
    /// among all of them when none can.
    pub(super) fn owner_of(
        &self,
        vni: Vni,
        candidates: &BTreeSet<Uid>,
        mine: &[Vni],
    ) -> Option<Uid> {
        self.owner_by(self.rule(), vni, candidates, mine)
    }

    /// [`Core::owner_of`] under `rule`.
    fn owner_by(
        &self,
        rule: crate::assign::Rule,
        vni: Vni,
        candidates: &BTreeSet<Uid>,
        mine: &[Vni],
    ) -> Option<Uid> {
        let able = candidates.iter().copied().filter(|u| {
            if *u == self.me {
                !mine.contains(&vni)
            } else {
                self.peer_blocked.get(u).is_none_or(|b| !b.contains(&vni))
            }
        });
        rule.owner(vni, able)
            .or_else(|| rule.owner(vni, candidates.iter().copied()))
    }

    /// What we own among `peers` (ready peers) when we are a candidate: under both rules while
    /// leaving `--go-compat` (its phase 2, make before break).
    pub(super) fn owned_among(&self, peers: &BTreeSet<Uid>) -> BTreeSet<Vni> {
        if self.compat_phase == super::compat::UNION {
            let mut both = self.owned_by(crate::assign::Rule::GoCompat, peers);
            both.extend(self.owned_by(crate::assign::Rule::SipHash, peers));
            return both;
        }
        self.owned_by(self.rule(), peers)
    }

    fn owned_by(&self, rule: crate::assign::Rule, peers: &BTreeSet<Uid>) -> BTreeSet<Vni> {
        let mine = self.unservable();
        if mine.is_empty() && self.peer_blocked.is_empty() {
            return rule.owned(self.me, peers, self.cfg.vnis());
        }
        let mut all = peers.clone();
        all.insert(self.me);
        self.cfg
            .vnis()
            .iter()
            .filter(|&v| self.owner_by(rule, v, &all, &mine) == Some(self.me))
            .collect()
    }

    /// The candidates as we see them, ourselves included when we are one.
    pub(super) fn view_members(&self) -> BTreeSet<Uid> {
        let mut set: BTreeSet<Uid> = self.live.ready_peers().collect();
        if self.candidate() {
            set.insert(self.me);
        }
        set
    }

    pub(super) fn view(&self) -> wire::View {
        let members = self.view_members();
        wire::View {
            digest: wire::view_digest(members.iter().copied()),
            candidates: u16::try_from(members.len()).unwrap_or(u16::MAX),
        }
    }

    /// Raises our hold time under the loss our peers measure of our frames (the worst one).
    pub(super) fn adapt_hold(&mut self) {
        let worst = self
            .live
            .peers()
            .values()
            .filter(|p| p.state != PeerState::Left && p.about_us.our_sequence.is_some())
            .map(|p| p.about_us.our_loss_permille)
            .max()
            .unwrap_or(0);
        let k = adaptive_multiple(self.cfg.dead_after, worst).max(lag_multiple(
            self.cfg.dead_after,
            self.cfg.interval,
            self.send_lag,
        ));
        let hold = self.cfg.interval * k;
        if hold != self.hold {
            if k > self.cfg.dead_after || self.hold > self.cfg.hold() {
                info!(
                    loss_permille = worst,
                    send_lag_ms = self.send_lag.as_millis() as u64,
                    hold_ms = hold.as_millis() as u64,
                    "hold time adapted to the loss peers measure of our heartbeats and to how late they go out"
                );
            }
            self.hold = hold;
            self.advert_dirty = true;
        }
    }

    /// Another process sends with our UID. Peers follow the higher incarnation of a UID (a
    /// restart must replace its predecessor at once), so the lower one is invisible to them:
    /// if that is us, we step back (own nothing) until it has been silent for its hold time.
    pub(super) fn duplicate_uid(
        &mut self,
        incarnation: u64,
        from: std::net::SocketAddr,
        hold: Duration,
        now: Instant,
    ) {
        if incarnation <= self.incarnation {
            return;
        }
        let first = self.yield_until.is_none();
        self.yield_until =
            Some(now + hold.min(Duration::from_millis(u64::from(wire::MAX_HOLD_MS))));
        if first {
            error!(
                uid = %self.me,
                ours = ?self.my_addr,
                theirs = %from,
                our_incarnation = self.incarnation,
                their_incarnation = incarnation,
                "duplicate uid: the gateway at the other address has the same --uid and a later start: this one steps back (owns nothing) while it runs; fix --uid on one of them"
            );
            if self.phase == super::Phase::Running {
                self.effects.push_back(super::Effect::HeartbeatNow);
                self.reassign(now, "duplicate uid: stepping back");
                self.reconcile(now);
            }
        }
    }

    /// `uid` (re)started: it owned some of our VNIs before, and while it was down (a crash
    /// leaves its interfaces active) clients may have learnt its MAC for them; the restarted
    /// process puts them down at once. Announce those VNIs again now, so no client keeps sending
    /// to a MAC that is going down.
    pub(super) fn reannounce_for(&mut self, uid: Uid, now: Instant) {
        if !self.candidate() {
            return;
        }
        let mut all: BTreeSet<Uid> = self.live.ready_peers().collect();
        all.insert(self.me);
        all.insert(uid);
        let rule = self.rule();
        let theirs: Vec<crate::types::Slot> = self
            .garps
            .active()
            .keys()
            .copied()
            .filter(|s| rule.owner(s.vni, all.iter().copied()) == Some(uid))
            .collect();
        self.announce_again(
            uid,
            theirs,
            "peer (re)started: announcing the VNIs it had again",
            now,
        );
    }

    /// Announces again every slot we have active (a new burst): `uid` counted us dead for a
    /// while and may have announced some of them as its own.
    fn reannounce_ours(&mut self, uid: Uid, now: Instant) {
        let ours: Vec<crate::types::Slot> = self.garps.active().keys().copied().collect();
        self.announce_again(
            uid,
            ours,
            "peer lists us again after leaving us out: announcing our VNIs again",
            now,
        );
    }

    /// A new burst of announcements for `slots` now, said with `why` (naming `uid`).
    fn announce_again(
        &mut self,
        uid: Uid,
        slots: Vec<crate::types::Slot>,
        why: &str,
        now: Instant,
    ) {
        if slots.is_empty() {
            return;
        }
        info!(peer = %uid, vnis = %crate::types::vni_ranges(slots.iter().map(|s| s.vni)), "{why}");
        for s in slots {
            self.garps.again(s, now);
        }
        self.send_due_garps(now);
    }

    /// The advert for the heartbeat task, if it changed since the last call.
    pub fn take_advert(&mut self) -> Option<Advert> {
        if !std::mem::take(&mut self.advert_dirty) {
            return None;
        }
        let (mut echoes, mut truncated) = self.live.echo_sources(wire::MAX_ECHOES);
        for (&uid, &(incarnation, sequence, at)) in &self.pending {
            if !self.live.is_new(uid, incarnation) {
                continue;
            }
            if echoes.len() >= wire::MAX_ECHOES {
                truncated = true;
                break;
            }
            echoes.push(EchoSource {
                uid,
                incarnation,
                sequence,
                evidence: at,
                last_heard: at,
                direct_until: at,
                loss_permille: 0,
                pending: true,
            });
        }
        Some(Advert {
            echoes,
            truncated,
            view: self.view(),
            // As the last reconcile found it: not a scan of every VNI per heartbeat received.
            blocked: self.last_unservable.clone(),
            hold_ms: u32::try_from(self.hold.as_millis()).unwrap_or(wire::MAX_HOLD_MS),
        })
    }
}
