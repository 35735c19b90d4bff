//! The liveness table: which gateways are alive, and which of them are candidate owners.
//! Pure: time is an argument (`now`), nothing here reads a clock or a socket.
//!
//! A peer is kept until the deadline its last frame set (`now + hold time`, the hold time chosen
//! by the *sender*, so every receiver expires it at the same moment; clamped to
//! [`wire::MAX_HOLD_MS`], so no frame can keep a phantom alive for longer). A `LEAVING` frame drops
//! it at once and leaves a tombstone for one hold time, so a reordered older frame cannot bring it
//! back; a later heartbeat of the same process, or any heartbeat of another one, ends the
//! tombstone (a live peer is never kept out by a LEAVING it did not send). A `STARTING` peer is
//! alive but not a candidate: today's owners keep its future VNIs until it says it is ready.
//!
//! The table is bounded: at most `max_peers` entries, and new UIDs are admitted at a bounded rate
//! (a burst of `max_peers`, then `max_peers` per [`JOIN_REFILL`]); what is refused is reported, so
//! that it can be counted. A legacy (8-byte) frame never speaks for a version-1 peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::types::Uid;
use crate::wire::{self, Frame, Heartbeat};

/// How long a legacy (Go wmgwd2) peer lives after a frame: the original's 3 × 1 s.
pub const LEGACY_HOLD: Duration = Duration::from_secs(3);
/// How long after its first frame a new legacy peer starts serving: the original's 3 s start-up
/// less the 1 s before its first frame, plus up to 1 s until its next `Assign()` (see
/// [`Liveness::with_legacy_start`]).
pub const GO_START: Duration = Duration::from_secs(3);
/// The default cap on the peer table (`--max-peers`): far above any real gateway fleet on one
/// segment, far below what a flood could make of an unbounded table.
pub const DEFAULT_MAX_PEERS: usize = 64;
/// New UIDs are admitted at most `max_peers` per this period (after a burst of `max_peers`).
pub const JOIN_REFILL: Duration = Duration::from_secs(10);

/// Why a frame of an unknown UID was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The table holds `max_peers` entries already.
    TableFull,
    /// Too many new UIDs lately.
    JoinRate,
}

impl Refusal {
    /// A constant label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::TableFull => "table_full",
            Refusal::JoinRate => "join_rate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// In its start-up hold-down: alive, owns nothing.
    Starting,
    /// A candidate owner.
    Ready,
    /// Said LEAVING; kept only as a tombstone until `deadline`.
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `None` for a legacy peer.
    pub incarnation: Option<u64>,
    /// The highest sequence number seen of this incarnation.
    pub sequence: u64,
    /// The highest sequence number of a frame that was not `LEAVING` (what a tombstone compares
    /// later frames with), and how many such later frames a tombstone has seen.
    pub alive_sequence: u64,
    pub refutations: u8,
    pub state: PeerState,
    pub deadline: Instant,
    pub addr: SocketAddr,
    pub interval: Duration,
    /// The hold time its last frame asked for (clamped).
    pub hold: Duration,
    /// When its last frame that counted arrived.
    pub last_heard: Instant,
    /// Frames of this incarnation that counted, and the sequence numbers skipped between them
    /// (heartbeats lost on the way, or never sent: a stalled sender skips ticks).
    pub frames: u64,
    pub lost: u64,
    /// The latest moment this peer is known to have been alive: its last frame heard by us, or
    /// by a member that said so in its ECHO (what keeps a peer whose frames we lose alive).
    pub evidence: Instant,
    /// The share of its frames we lost lately (sequence gaps).
    pub loss: LossMeter,
    /// Not heard by us within its hold time, kept alive by what other members heard.
    pub indirect: bool,
    /// What its last frame's extensions said about us and about the membership.
    pub about_us: AboutUs,
    /// A legacy peer in its start-up (see [`Liveness::with_legacy_start`]): a candidate from
    /// then on.
    pub ready_at: Option<Instant>,
    /// Its phase of leaving `--go-compat`, as its last frame said (0 for a legacy peer).
    pub compat_phase: u8,
}

/// What a peer's last frame said about us and about the membership (its extensions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AboutUs {
    /// It speaks ECHO (it says what it hears).
    pub echoes: bool,
    /// Its frames in a row (up to 255) whose ECHO did not list us: it does not count us alive.
    pub missing_us: u8,
    /// When the first of those frames came in.
    pub missing_since: Option<Instant>,
    /// Its ECHO listed us: heard by it directly (not only through others), the share of our
    /// frames it lost, and the sequence number of ours it knows.
    pub direct: bool,
    pub our_loss_permille: u16,
    pub our_sequence: Option<(u64, u64)>,
    /// Its candidate set's digest and size (VIEW), and since when it differs from ours.
    pub view: Option<wire::View>,
    pub view_differs_since: Option<Instant>,
    /// The VNIs it cannot serve (BLOCKED).
    pub blocked: Vec<crate::types::Vni>,
    /// Its ECHO has listed us since this entry began.
    pub listed_us: bool,
    /// It listed us, then left us out (it expired us), and has not listed us again since.
    pub dropped_us: bool,
}

/// The share of a peer's frames lost lately, from its sequence numbers: counts halved whenever
/// they reach [`LossMeter::WINDOW`], so the share follows the last few hundred frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossMeter {
    received: u32,
    lost: u32,
}

impl LossMeter {
    pub const WINDOW: u32 = 256;

    /// One frame received after `gap` lost ones.
    pub fn record(&mut self, gap: u64) {
        self.received += 1;
        self.lost = self.lost.saturating_add(
            u32::try_from(gap.min(u64::from(Self::WINDOW))).unwrap_or(Self::WINDOW),
        );
        while self.received + self.lost >= Self::WINDOW {
            self.received /= 2;
            self.lost /= 2;
        }
    }

    /// Lost frames per thousand sent, lately.
    pub fn permille(&self) -> u16 {
        let all = self.received + self.lost;
        if all == 0 {
            return 0;
        }
        u16::try_from(u64::from(self.lost) * 1000 / u64::from(all)).unwrap_or(1000)
    }
}

/// One ECHO entry before its age is known (that depends on when the heartbeat goes out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoSource {
    pub uid: Uid,
    pub incarnation: u64,
    pub sequence: u64,
    /// When it was last known alive (see [`Peer::evidence`]).
    pub evidence: Instant,
    /// When we last heard it ourselves.
    pub last_heard: Instant,
    /// Until when we heard it ourselves within its hold time.
    pub direct_until: Instant,
    pub loss_permille: u16,
    /// Heard (a signed frame that verified) but not a member yet: it had not proven itself
    /// fresh. Listed with age `u32::MAX`, so that its sender can prove freshness to us with its
    /// next frame, while nobody takes it as evidence that it is alive.
    pub pending: bool,
}

impl EchoSource {
    /// The entry of a heartbeat sent at `at`.
    pub fn at(&self, at: Instant) -> wire::Echo {
        // A direct entry states when *we* heard it: only that counts as evidence for others
        // (what others told us is never passed on, or each hop would push it later by one
        // delivery, and two members relaying to each other would keep a dead peer alive).
        let direct = !self.pending && at < self.direct_until;
        let since = if direct {
            self.last_heard
        } else {
            self.evidence
        };
        let age = at.saturating_duration_since(since).as_millis();
        wire::Echo {
            uid: self.uid,
            incarnation: self.incarnation,
            sequence: self.sequence,
            age_ms: if self.pending {
                u32::MAX
            } else {
                u32::try_from(age).unwrap_or(u32::MAX - 1)
            },
            loss_permille: self.loss_permille,
            direct,
        }
    }
}

/// What a frame's extensions did to the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Peers now alive only through what others heard (we have not heard them within their hold
    /// time): one-way loss from them to us.
    pub now_indirect: Vec<Uid>,
}

/// What one frame did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A peer we did not know (or had expired).
    Joined { uid: Uid, starting: bool },
    /// A known peer left its hold-down and is now a candidate.
    Ready { uid: Uid },
    /// A known peer came back with a new incarnation (a restart).
    Restarted { uid: Uid, starting: bool },
    /// A peer announced that it is stopping.
    Left { uid: Uid },
    /// A ready peer says it is no longer a candidate (it stepped back: drained, stalled, not
    /// heard by a member, a duplicate of its UID), same process.
    Withdrew { uid: Uid },
    /// A known peer, nothing changed but its deadline.
    Refreshed { uid: Uid },
    /// An older or repeated frame of a known incarnation, or one from before a restart.
    Stale { uid: Uid },
    /// Our own frame, looped back.
    Echo,
    /// Another sender uses our UID.
    Conflict {
        uid: Uid,
        incarnation: Option<u64>,
        addr: SocketAddr,
    },
    /// A heartbeat of a peer we keep a tombstone for, sent after the LEAVING by the same process:
    /// the LEAVING was not its own (forged, or replayed). The peer is alive again.
    LeaveRefuted { uid: Uid, starting: bool },
    /// An unknown UID that the table's bounds kept out.
    Refused { uid: Uid, reason: Refusal },
}

impl Observation {
    /// Why the candidates changed, in words (for the ownership transitions a status shows).
    pub fn reason(&self) -> String {
        match self {
            Observation::Joined { uid, .. } => format!("peer {uid} joined"),
            Observation::Ready { uid } => format!("peer {uid} ready"),
            Observation::Restarted { uid, .. } => format!("peer {uid} restarted"),
            Observation::Left { uid } => format!("peer {uid} left"),
            Observation::Withdrew { uid } => format!("peer {uid} stepped back"),
            Observation::LeaveRefuted { uid, .. } => format!("peer {uid} alive after a LEAVING"),
            _ => "heartbeat".into(),
        }
    }

    /// Did the set of candidate owners change?
    pub fn changes_candidates(&self) -> bool {
        match self {
            Observation::Joined { starting, .. } | Observation::LeaveRefuted { starting, .. } => {
                !starting
            }
            Observation::Ready { .. } | Observation::Left { .. } | Observation::Withdrew { .. } => {
                true
            }
            // A restart of a ready peer (or a ready peer seen starting again) may change things.
            Observation::Restarted { .. } => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Liveness {
    me: Uid,
    my_incarnation: u64,
    peers: BTreeMap<Uid, Peer>,
    max_peers: usize,
    /// How long a new legacy peer is kept as starting (0: a candidate at once).
    legacy_start: Duration,
    /// Until then a legacy peer heard for the first time is presumed to have run before (we
    /// had no chance to hear its earlier frames): a candidate at once.
    legacy_presumed_until: Option<Instant>,
    /// New UIDs that may still be admitted now, and when the last token was added.
    join_tokens: usize,
    refilled: Option<Instant>,
    /// The last incarnation and sequence number seen of peers that were dropped (expired, or
    /// their tombstone ended), at most `max_peers`: a replay of a frame seen before cannot
    /// bring them back.
    gone: BTreeMap<Uid, (u64, u64)>,
}

impl Liveness {
    /// A table with the default cap ([`DEFAULT_MAX_PEERS`]).
    pub fn new(me: Uid, my_incarnation: u64) -> Self {
        Self::with_max_peers(me, my_incarnation, DEFAULT_MAX_PEERS)
    }

    /// A table of at most `max_peers` (at least 1) entries.
    pub fn with_max_peers(me: Uid, my_incarnation: u64, max_peers: usize) -> Self {
        let max_peers = max_peers.max(1);
        Liveness {
            me,
            my_incarnation,
            peers: BTreeMap::new(),
            max_peers,
            legacy_start: Duration::ZERO,
            legacy_presumed_until: None,
            join_tokens: max_peers,
            refilled: None,
            gone: BTreeMap::new(),
        }
    }

    /// A new legacy (Go original) peer is alive but not a candidate for `start` after its first
    /// frame: the original sends its first frame 1 s after it starts and owns nothing for its
    /// first 3 s, so a receiver that counted it at once would hand it VNIs it does not serve yet.
    /// `--go-compat` uses [`GO_START`]; without it, legacy peers are candidates at once.
    pub fn with_legacy_start(mut self, start: Duration) -> Self {
        self.legacy_start = start;
        self
    }

    /// Legacy peers first heard before `t` are candidates at once: we started just now, so a
    /// first frame tells nothing of when its sender started (the core passes its start plus 1.5
    /// of the original's intervals, by which it has heard every running original once).
    pub fn presume_legacy_running_until(&mut self, t: Instant) {
        self.legacy_presumed_until = Some(t);
    }

    /// Legacy peers whose start-up is over at `now`: candidates from now on.
    pub fn promote(&mut self, now: Instant) -> Vec<Uid> {
        let mut ready = Vec::new();
        for (&uid, p) in self.peers.iter_mut() {
            if p.state == PeerState::Starting && p.ready_at.is_some_and(|t| t <= now) {
                p.state = PeerState::Ready;
                p.ready_at = None;
                ready.push(uid);
            }
        }
        ready
    }

    /// May a new UID enter the table at `now`? Takes a token if so.
    fn admit(&mut self, uid: Uid, now: Instant) -> Result<(), Observation> {
        if self.peers.len() >= self.max_peers {
            return Err(Observation::Refused {
                uid,
                reason: Refusal::TableFull,
            });
        }
        let per_token = JOIN_REFILL / self.max_peers as u32;
        let since = self.refilled.get_or_insert(now);
        if !per_token.is_zero() {
            let earned = now.saturating_duration_since(*since).as_nanos() / per_token.as_nanos();
            if earned > 0 {
                let earned = usize::try_from(earned).unwrap_or(usize::MAX);
                self.join_tokens = self.join_tokens.saturating_add(earned).min(self.max_peers);
                *since = now;
            }
        }
        if self.join_tokens == 0 {
            return Err(Observation::Refused {
                uid,
                reason: Refusal::JoinRate,
            });
        }
        self.join_tokens -= 1;
        Ok(())
    }

    /// Takes one decoded frame received from `addr` at `now`.
    pub fn observe(&mut self, frame: &Frame, addr: SocketAddr, now: Instant) -> Observation {
        match *frame {
            Frame::Legacy { uid } => self.observe_legacy(uid, addr, now),
            Frame::Heartbeat(hb) => self.observe_heartbeat(&hb, addr, now),
        }
    }

    fn observe_legacy(&mut self, uid: Uid, addr: SocketAddr, now: Instant) -> Observation {
        if uid == self.me {
            return Observation::Conflict {
                uid,
                incarnation: None,
                addr,
            };
        }
        let deadline = now + LEGACY_HOLD;
        match self.peers.get_mut(&uid) {
            Some(p) if p.incarnation.is_none() => {
                p.deadline = deadline;
                p.evidence = now;
                p.addr = addr;
                p.last_heard = now;
                p.frames += 1;
                Observation::Refreshed { uid }
            }
            // A version-1 peer (or its tombstone): an 8-byte frame cannot speak for it.
            Some(_) => Observation::Stale { uid },
            None => {
                if let Err(refused) = self.admit(uid, now) {
                    return refused;
                }
                let starting = !self.legacy_start.is_zero()
                    && self.legacy_presumed_until.is_none_or(|t| now >= t);
                self.peers.insert(
                    uid,
                    Peer {
                        incarnation: None,
                        sequence: 0,
                        alive_sequence: 0,
                        refutations: 0,
                        state: if starting {
                            PeerState::Starting
                        } else {
                            PeerState::Ready
                        },
                        deadline,
                        addr,
                        interval: Duration::from_secs(1),
                        hold: LEGACY_HOLD,
                        last_heard: now,
                        frames: 1,
                        lost: 0,
                        evidence: now,
                        loss: LossMeter::default(),
                        indirect: false,
                        about_us: AboutUs::default(),
                        ready_at: starting.then_some(now + self.legacy_start),
                        compat_phase: 0,
                    },
                );
                Observation::Joined { uid, starting }
            }
        }
    }

    fn observe_heartbeat(&mut self, hb: &Heartbeat, addr: SocketAddr, now: Instant) -> Observation {
        let uid = hb.uid;
        if uid == self.me {
            if hb.incarnation == self.my_incarnation {
                return Observation::Echo;
            }
            return Observation::Conflict {
                uid,
                incarnation: Some(hb.incarnation),
                addr,
            };
        }
        let hold = Duration::from_millis(u64::from(hb.hold_ms.min(wire::MAX_HOLD_MS)));
        let state = if hb.leaving() {
            PeerState::Left
        } else if hb.starting() {
            PeerState::Starting
        } else {
            PeerState::Ready
        };
        let fresh = Peer {
            incarnation: Some(hb.incarnation),
            sequence: hb.sequence,
            alive_sequence: if state == PeerState::Left {
                0
            } else {
                hb.sequence
            },
            refutations: 0,
            state,
            deadline: now + hold,
            addr,
            hold,
            last_heard: now,
            frames: 1,
            lost: 0,
            interval: Duration::from_millis(u64::from(hb.interval_ms.min(wire::MAX_INTERVAL_MS))),
            evidence: now,
            loss: LossMeter::default(),
            indirect: false,
            about_us: AboutUs::default(),
            ready_at: None,
            compat_phase: hb.compat_phase(),
        };
        if !self.peers.contains_key(&uid) {
            // A frame the table already saw, of a peer it has since dropped: a replay.
            if self
                .gone
                .get(&uid)
                .is_some_and(|&(inc, seq)| inc == hb.incarnation && hb.sequence <= seq)
            {
                return Observation::Stale { uid };
            }
            if let Err(refused) = self.admit(uid, now) {
                return refused;
            }
        }
        let Some(p) = self.peers.get_mut(&uid) else {
            self.gone.remove(&uid);
            if state == PeerState::Left {
                // A goodbye from a peer we never knew: remember it so its older frames stay out.
                self.peers.insert(uid, fresh);
                return Observation::Stale { uid };
            }
            self.peers.insert(uid, fresh);
            return Observation::Joined {
                uid,
                starting: state == PeerState::Starting,
            };
        };
        match p.incarnation {
            // A tombstone yields to any other process's heartbeat: a restart (or, without a key,
            // anyone's word; see docs/security.md).
            Some(inc)
                if p.state == PeerState::Left
                    && hb.incarnation != inc
                    && state != PeerState::Left =>
            {
                *p = fresh;
                return Observation::Joined {
                    uid,
                    starting: state == PeerState::Starting,
                };
            }
            // The same process after its LEAVING: it sends nothing but LEAVING then. Two frames
            // that are not, each newer than any before the LEAVING, mean that the LEAVING was not
            // its own (forged or replayed, whatever sequence number it claimed); one alone may be a
            // frame sent before the LEAVING and reordered behind it.
            Some(inc) if p.state == PeerState::Left && hb.incarnation == inc => {
                if state == PeerState::Left || hb.sequence <= p.alive_sequence {
                    return Observation::Stale { uid };
                }
                p.alive_sequence = hb.sequence;
                p.refutations += 1;
                if p.refutations < 2 {
                    return Observation::Stale { uid };
                }
                *p = fresh;
                return Observation::LeaveRefuted {
                    uid,
                    starting: state == PeerState::Starting,
                };
            }
            Some(inc) if hb.incarnation < inc => return Observation::Stale { uid },
            Some(inc) if hb.incarnation == inc && hb.sequence <= p.sequence => {
                return Observation::Stale { uid }
            }
            Some(inc) if hb.incarnation == inc => {}
            // A new incarnation, or a legacy peer now speaking version 1.
            _ => {
                let was = p.state;
                *p = fresh;
                return match (was, state) {
                    (_, PeerState::Left) => Observation::Left { uid },
                    (PeerState::Left, s) => Observation::Joined {
                        uid,
                        starting: s == PeerState::Starting,
                    },
                    (_, s) => Observation::Restarted {
                        uid,
                        starting: s == PeerState::Starting,
                    },
                };
            }
        }
        // Same incarnation, newer sequence, not a tombstone.
        let was = p.state;
        let alive = p.alive_sequence;
        let frames = p.frames + 1;
        let gap = hb.sequence.saturating_sub(p.sequence).saturating_sub(1);
        let lost = p.lost + gap;
        let mut loss = p.loss;
        loss.record(gap);
        let about_us = std::mem::take(&mut p.about_us);
        let evidence = p.evidence.max(now);
        *p = Peer {
            frames,
            lost,
            loss,
            about_us,
            evidence,
            ..fresh
        };
        match (was, state) {
            (_, PeerState::Left) => {
                p.alive_sequence = alive;
                Observation::Left { uid }
            }
            (PeerState::Starting, PeerState::Ready) => Observation::Ready { uid },
            (PeerState::Ready, PeerState::Starting) => Observation::Withdrew { uid },
            _ => Observation::Refreshed { uid },
        }
    }

    /// Every live member counts as heard at `now` (its deadline at least `now` plus its own hold
    /// time): what the receiver does when it lost datagrams it cannot attribute. Tombstones are
    /// left as they are.
    pub fn heard_all(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.state != PeerState::Left {
                let hold = p.hold;
                p.deadline = p.deadline.max(now + hold);
            }
        }
    }

    /// Removes every peer whose deadline is at or before `now`; returns the candidates among them.
    pub fn expire(&mut self, now: Instant) -> Vec<Uid> {
        let mut dead = Vec::new();
        let mut buried = Vec::new();
        self.peers.retain(|&uid, p| {
            if p.deadline <= now {
                if p.state == PeerState::Ready {
                    dead.push(uid);
                }
                if let Some(inc) = p.incarnation {
                    buried.push((uid, (inc, p.sequence)));
                }
                false
            } else {
                true
            }
        });
        for (uid, last) in buried {
            if self.gone.len() >= self.max_peers && !self.gone.contains_key(&uid) {
                self.gone.pop_first();
            }
            self.gone.insert(uid, last);
        }
        dead
    }

    /// Takes the extensions of a frame of `from` that [`Liveness::observe`] just counted: what
    /// `from` heard of the other members keeps them alive here too (a peer is dead only when
    /// nobody heard it within its hold time); what it says of us and of its view is kept on its
    /// entry.
    pub fn observe_extensions(
        &mut self,
        from: Uid,
        ext: &wire::Extensions,
        now: Instant,
    ) -> Relayed {
        let mut out = Relayed::default();
        let me = self.me;
        let my_incarnation = self.my_incarnation;
        let Some(sender) = self.peers.get_mut(&from) else {
            return out;
        };
        if sender.state == PeerState::Left {
            return out;
        }
        let about = &mut sender.about_us;
        about.blocked = ext.blocked.clone();
        if about.view.map(|v| v.digest) != ext.view.map(|v| v.digest) {
            about.view_differs_since = None;
        }
        about.view = ext.view;
        let Some(echo) = &ext.echo else {
            about.echoes = false;
            about.missing_us = 0;
            about.missing_since = None;
            return out;
        };
        about.echoes = true;
        match echo
            .entries
            .iter()
            .find(|e| e.uid == me && e.incarnation == my_incarnation)
        {
            // Heard, not a member there yet (it waits for our proof of freshness).
            Some(e) if e.age_ms == u32::MAX => {
                about.missing_us = 0;
                about.missing_since = None;
                about.direct = false;
                about.our_sequence = None;
            }
            Some(e) => {
                about.missing_us = 0;
                about.missing_since = None;
                about.listed_us = true;
                about.direct = e.direct;
                about.our_loss_permille = e.loss_permille;
                about.our_sequence = Some((e.incarnation, e.sequence));
            }
            None if !echo.truncated => {
                about.dropped_us |= about.listed_us;
                about.missing_us = about.missing_us.saturating_add(1);
                about.missing_since.get_or_insert(now);
                about.direct = false;
                about.our_sequence = None;
            }
            None => {}
        }
        for e in &echo.entries {
            if e.uid == me || e.uid == from {
                continue;
            }
            let Some(p) = self.peers.get_mut(&e.uid) else {
                continue;
            };
            if p.state == PeerState::Left || p.incarnation != Some(e.incarnation) {
                continue;
            }
            // Only what the sender heard itself is evidence (see `EchoSource::at`).
            if !e.direct {
                continue;
            }
            let age = Duration::from_millis(u64::from(e.age_ms));
            if age >= p.hold {
                continue;
            }
            let Some(heard) = now.checked_sub(age) else {
                continue;
            };
            if heard > p.evidence {
                p.evidence = heard;
                p.deadline = p.deadline.max(heard + p.hold);
            }
            let direct_until = p.last_heard + p.hold;
            if now >= direct_until && !p.indirect {
                p.indirect = true;
                out.now_indirect.push(e.uid);
            }
        }
        out
    }

    /// Would this frame of `uid` with `incarnation` start a new entry (an unknown UID, a new
    /// incarnation, or one we keep only a tombstone of)? Such a frame, signed, must prove it is
    /// fresh (see `Core`).
    pub fn is_new(&self, uid: Uid, incarnation: u64) -> bool {
        self.peers
            .get(&uid)
            .is_none_or(|p| p.incarnation != Some(incarnation) || p.state == PeerState::Left)
    }

    /// Ends `uid`'s indirect mark once heard directly again; true if it was marked.
    pub fn heard_directly(&mut self, uid: Uid) -> bool {
        match self.peers.get_mut(&uid) {
            Some(p) if p.indirect => {
                p.indirect = false;
                true
            }
            _ => false,
        }
    }

    /// What we say we heard (the ECHO we send): every live version-1 peer, at most `max` of
    /// them (the most recently heard), and whether some were left out.
    pub fn echo_sources(&self, max: usize) -> (Vec<EchoSource>, bool) {
        let mut all: Vec<EchoSource> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state != PeerState::Left)
            .filter_map(|(&uid, p)| {
                Some(EchoSource {
                    uid,
                    incarnation: p.incarnation?,
                    sequence: p.sequence,
                    evidence: p.evidence,
                    last_heard: p.last_heard,
                    direct_until: p.last_heard + p.hold,
                    loss_permille: p.loss.permille(),
                    pending: false,
                })
            })
            .collect();
        let truncated = all.len() > max;
        if truncated {
            all.sort_by_key(|e| std::cmp::Reverse(e.evidence));
            all.truncate(max);
        }
        (all, truncated)
    }

    /// Mutable access to a peer's view bookkeeping (the core's split-view check).
    pub fn about_mut(&mut self, uid: Uid) -> Option<&mut AboutUs> {
        self.peers.get_mut(&uid).map(|p| &mut p.about_us)
    }

    /// The earliest deadline in the table: when `expire` has something to do next.
    /// How long ago the earliest member deadline passed (zero if none has).
    pub fn overdue(&self, now: Instant) -> Duration {
        self.peers
            .values()
            .map(|p| now.saturating_duration_since(p.deadline))
            .max()
            .unwrap_or_default()
    }

    /// Gives every member one whole hold time from `now` to be heard: we could not have heard
    /// anyone while our own process or host was held up, which is no evidence against them.
    pub fn renew_all(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.deadline = p.deadline.max(now + p.hold);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| [Some(p.deadline), p.ready_at].into_iter().flatten())
            .min()
    }

    /// Candidate owners other than ourselves, in ascending UID order.
    pub fn ready_peers(&self) -> impl Iterator<Item = Uid> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Ready)
            .map(|(&uid, _)| uid)
    }

    /// Peers in their start-up hold-down that speak this protocol (not legacy ones).
    pub fn starting_peers(&self) -> impl Iterator<Item = Uid> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Starting && p.incarnation.is_some())
            .map(|(&uid, _)| uid)
    }

    /// Every peer we keep an entry for, tombstones included.
    pub fn peers(&self) -> &BTreeMap<Uid, Peer> {
        &self.peers
    }
}
