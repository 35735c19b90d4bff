//! The liveness table: which gateways are alive, and which of them are candidate owners.
//! Pure: time is an argument (`now`), nothing here reads a clock or a socket.
//!
//! A peer is kept until the deadline its last frame set (`now + hold time`, the hold time chosen
//! by the *sender*, so every receiver expires it at the same moment). A `LEAVING` frame drops it at
//! once and leaves a tombstone for one hold time, so a reordered older frame cannot bring it back.
//! A `STARTING` peer is alive but not a candidate: today's owners keep its future VNIs until it says
//! it is ready.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::types::Uid;
use crate::wire::{Frame, Heartbeat};

/// How long a legacy (Go wmgwd2) peer lives after a frame: the original's 3 × 1 s.
pub const LEGACY_HOLD: Duration = Duration::from_secs(3);

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
    pub sequence: u64,
    pub state: PeerState,
    pub deadline: Instant,
    pub addr: SocketAddr,
    pub interval: Duration,
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
}

impl Observation {
    /// Did the set of candidate owners change?
    pub fn changes_candidates(&self) -> bool {
        match self {
            Observation::Joined { starting, .. } => !starting,
            Observation::Ready { .. } | Observation::Left { .. } => true,
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
}

impl Liveness {
    pub fn new(me: Uid, my_incarnation: u64) -> Self {
        Liveness {
            me,
            my_incarnation,
            peers: BTreeMap::new(),
        }
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
            Some(p) if p.state == PeerState::Ready => {
                p.deadline = deadline;
                p.addr = addr;
                Observation::Refreshed { uid }
            }
            _ => {
                self.peers.insert(
                    uid,
                    Peer {
                        incarnation: None,
                        sequence: 0,
                        state: PeerState::Ready,
                        deadline,
                        addr,
                        interval: Duration::from_secs(1),
                    },
                );
                Observation::Joined {
                    uid,
                    starting: false,
                }
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
        let hold = Duration::from_millis(u64::from(hb.hold_ms));
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
            state,
            deadline: now + hold,
            addr,
            interval: Duration::from_millis(u64::from(hb.interval_ms)),
        };
        let Some(p) = self.peers.get_mut(&uid) else {
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
        // Same incarnation, newer sequence.
        let was = p.state;
        *p = fresh;
        match (was, state) {
            (PeerState::Left, PeerState::Left) => Observation::Stale { uid },
            (PeerState::Left, _) => {
                // The same incarnation cannot come back after LEAVING; keep the tombstone.
                p.state = PeerState::Left;
                Observation::Stale { uid }
            }
            (_, PeerState::Left) => Observation::Left { uid },
            (PeerState::Starting, PeerState::Ready) => Observation::Ready { uid },
            (PeerState::Ready, PeerState::Starting) => Observation::Restarted {
                uid,
                starting: true,
            },
            _ => Observation::Refreshed { uid },
        }
    }

    /// Removes every peer whose deadline is at or before `now`; returns the candidates among them.
    pub fn expire(&mut self, now: Instant) -> Vec<Uid> {
        let mut gone = Vec::new();
        self.peers.retain(|&uid, p| {
            if p.deadline <= now {
                if p.state == PeerState::Ready {
                    gone.push(uid);
                }
                false
            } else {
                true
            }
        });
        gone
    }

    /// The earliest deadline in the table: when `expire` has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers.values().map(|p| p.deadline).min()
    }

    /// Candidate owners other than ourselves, in ascending UID order.
    pub fn ready_peers(&self) -> impl Iterator<Item = Uid> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Ready)
            .map(|(&uid, _)| uid)
    }

    /// Every peer we keep an entry for, tombstones included.
    pub fn peers(&self) -> &BTreeMap<Uid, Peer> {
        &self.peers
    }
}
