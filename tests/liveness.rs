//! The liveness table with injected time: every `Instant` is `t0 + offset`, no clock is read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wmgwd2::liveness::{Liveness, Observation, PeerState, Refusal, GO_START, LEGACY_HOLD};
use wmgwd2::types::Uid;
use wmgwd2::wire::{self, Frame, Heartbeat, FLAG_LEAVING, FLAG_STARTING};

const ME: Uid = Uid(0x1001);
const MY_INC: u64 = 500;
const PEER: Uid = Uid(0x1002);
const OTHER: Uid = Uid(0x1003);
const NS: Duration = Duration::from_nanos(1);

fn addr() -> SocketAddr {
    "192.0.2.2:3000".parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hb(uid: Uid, incarnation: u64, sequence: u64, flags: u8, hold_ms: u32) -> Frame {
    Frame::Heartbeat(Heartbeat {
        uid,
        incarnation,
        sequence,
        flags,
        interval_ms: 100,
        hold_ms,
    })
}

fn ready(uid: Uid, inc: u64, seq: u64) -> Frame {
    hb(uid, inc, seq, 0, 300)
}

fn table() -> (Liveness, Instant) {
    (Liveness::new(ME, MY_INC), Instant::now())
}

fn ready_peers(l: &Liveness) -> Vec<Uid> {
    l.ready_peers().collect()
}

#[test]
fn join_then_refresh_moves_the_deadline() {
    let (mut l, t0) = table();
    assert_eq!(l.next_deadline(), None);
    assert_eq!(
        l.observe(&ready(PEER, 1, 1), addr(), t0),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(ready_peers(&l), vec![PEER]);
    let p = &l.peers()[&PEER];
    assert_eq!(p.deadline, t0 + ms(300));
    assert_eq!(p.state, PeerState::Ready);
    assert_eq!(p.incarnation, Some(1));
    assert_eq!(p.sequence, 1);
    assert_eq!(p.interval, ms(100));
    assert_eq!(p.addr, addr());

    let t1 = t0 + ms(100);
    assert_eq!(
        l.observe(&ready(PEER, 1, 2), addr(), t1),
        Observation::Refreshed { uid: PEER }
    );
    assert_eq!(l.peers()[&PEER].deadline, t1 + ms(300));
    assert_eq!(l.peers()[&PEER].sequence, 2);
    // The refresh is what keeps it: it is alive past the first frame's deadline.
    assert_eq!(l.expire(t0 + ms(300)), Vec::<Uid>::new());
    assert_eq!(ready_peers(&l), vec![PEER]);
}

#[test]
fn expires_exactly_at_the_deadline() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    let deadline = t0 + ms(300);
    assert_eq!(l.next_deadline(), Some(deadline));

    assert_eq!(l.expire(deadline - NS), Vec::<Uid>::new());
    assert_eq!(ready_peers(&l), vec![PEER]);

    assert_eq!(l.expire(deadline), vec![PEER]);
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
    assert!(l.peers().is_empty());
    assert_eq!(l.next_deadline(), None);
    // Gone means gone: a second expiry reports nothing.
    assert_eq!(l.expire(deadline + ms(1)), Vec::<Uid>::new());
}

#[test]
fn hold_time_is_the_senders() {
    let (mut l, t0) = table();
    l.observe(&hb(PEER, 1, 1, 0, 1000), addr(), t0);
    l.observe(&hb(OTHER, 1, 1, 0, 5000), addr(), t0);
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(1000));
    assert_eq!(l.peers()[&OTHER].deadline, t0 + ms(5000));
    assert_eq!(l.next_deadline(), Some(t0 + ms(1000)));
    assert_eq!(l.expire(t0 + ms(1000)), vec![PEER]);
    assert_eq!(ready_peers(&l), vec![OTHER]);
    assert_eq!(l.next_deadline(), Some(t0 + ms(5000)));
    assert_eq!(l.expire(t0 + ms(5000)), vec![OTHER]);

    // A sender may also shorten its hold time from one frame to the next.
    l.observe(&hb(PEER, 2, 1, 0, 5000), addr(), t0);
    l.observe(&hb(PEER, 2, 2, 0, 200), addr(), t0 + ms(10));
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(210));
}

#[test]
fn next_deadline_is_the_minimum() {
    let (mut l, t0) = table();
    l.observe(&hb(PEER, 1, 1, 0, 900), addr(), t0);
    l.observe(&hb(OTHER, 1, 1, FLAG_STARTING, 400), addr(), t0 + ms(100));
    l.observe(&hb(Uid(0x1004), 1, 1, 0, 700), addr(), t0 + ms(50));
    assert_eq!(l.next_deadline(), Some(t0 + ms(500)));
    // Expiring the starting peer removes it but reports no candidate.
    assert_eq!(l.expire(t0 + ms(500)), Vec::<Uid>::new());
    assert!(!l.peers().contains_key(&OTHER));
    assert_eq!(l.next_deadline(), Some(t0 + ms(750)));
    // Tombstones count too: `expire` has to remove them.
    l.observe(
        &hb(Uid(0x1005), 1, 1, FLAG_LEAVING, 100),
        addr(),
        t0 + ms(500),
    );
    assert_eq!(l.next_deadline(), Some(t0 + ms(600)));
}

#[test]
fn leaving_removes_at_once_and_older_frames_stay_out() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 7, 10), addr(), t0);
    assert_eq!(
        l.observe(&hb(PEER, 7, 11, FLAG_LEAVING, 300), addr(), t0 + ms(1)),
        Observation::Left { uid: PEER }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
    assert_eq!(l.peers()[&PEER].state, PeerState::Left);

    // The heartbeat sent just before LEAVING arrives late.
    assert_eq!(
        l.observe(&ready(PEER, 7, 10), addr(), t0 + ms(2)),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
    // The second LEAVING (a stopping gateway sends two) changes nothing either.
    assert_eq!(
        l.observe(&hb(PEER, 7, 12, FLAG_LEAVING, 300), addr(), t0 + ms(3)),
        Observation::Stale { uid: PEER }
    );
    // The tombstone goes away silently, and the next process of that gateway joins.
    let dead = l.peers()[&PEER].deadline;
    assert_eq!(l.expire(dead), Vec::<Uid>::new());
    assert!(l.peers().is_empty());
    assert_eq!(
        l.observe(&ready(PEER, 8, 1), addr(), dead + ms(1)),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
}

#[test]
fn restart_out_of_a_tombstone_is_a_join() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 7, 10), addr(), t0);
    l.observe(&hb(PEER, 7, 11, FLAG_LEAVING, 300), addr(), t0);
    assert_eq!(
        l.observe(&hb(PEER, 8, 1, FLAG_STARTING, 300), addr(), t0 + ms(100)),
        Observation::Joined {
            uid: PEER,
            starting: true
        }
    );
    assert_eq!(l.peers()[&PEER].state, PeerState::Starting);
}

#[test]
fn leaving_from_an_unknown_peer_leaves_a_tombstone() {
    let (mut l, t0) = table();
    assert_eq!(
        l.observe(&hb(PEER, 7, 11, FLAG_LEAVING, 300), addr(), t0),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(
        l.observe(&ready(PEER, 7, 10), addr(), t0 + ms(1)),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
}

#[test]
fn larger_incarnation_is_a_restart() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 7, 100), addr(), t0);
    // The new process starts its sequence again from 1.
    assert_eq!(
        l.observe(&ready(PEER, 8, 1), addr(), t0 + ms(10)),
        Observation::Restarted {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(l.peers()[&PEER].incarnation, Some(8));
    assert_eq!(l.peers()[&PEER].sequence, 1);
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(310));

    // A crashed-and-restarted gateway announces STARTING: it stops being a candidate at once.
    assert_eq!(
        l.observe(&hb(PEER, 9, 1, FLAG_STARTING, 300), addr(), t0 + ms(20)),
        Observation::Restarted {
            uid: PEER,
            starting: true
        }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
}

#[test]
fn smaller_incarnation_is_stale_and_changes_nothing() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 8, 5), addr(), t0);
    let before = l.peers()[&PEER].clone();
    assert_eq!(
        l.observe(&ready(PEER, 7, 1000), addr(), t0 + ms(200)),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(l.peers()[&PEER], before, "a stale frame must not refresh");
    // A duplicate of the last frame is stale too.
    assert_eq!(
        l.observe(&ready(PEER, 8, 5), addr(), t0 + ms(200)),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(l.peers()[&PEER], before);
    assert_eq!(l.expire(t0 + ms(300)), vec![PEER]);
}

#[test]
fn starting_peers_are_not_candidates_until_ready() {
    let (mut l, t0) = table();
    assert_eq!(
        l.observe(&hb(PEER, 1, 1, FLAG_STARTING, 300), addr(), t0),
        Observation::Joined {
            uid: PEER,
            starting: true
        }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
    assert_eq!(l.peers()[&PEER].state, PeerState::Starting);
    assert_eq!(
        l.observe(&hb(PEER, 1, 2, FLAG_STARTING, 300), addr(), t0 + ms(100)),
        Observation::Refreshed { uid: PEER }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
    assert_eq!(
        l.observe(&ready(PEER, 1, 3), addr(), t0 + ms(200)),
        Observation::Ready { uid: PEER }
    );
    assert_eq!(ready_peers(&l), vec![PEER]);
    // And back: a ready peer that goes into a hold-down again (its uplink flapped).
    assert_eq!(
        l.observe(&hb(PEER, 1, 4, FLAG_STARTING, 300), addr(), t0 + ms(300)),
        Observation::Withdrew { uid: PEER }
    );
    assert_eq!(ready_peers(&l), Vec::<Uid>::new());
}

#[test]
fn ready_peers_are_in_ascending_uid_order() {
    let (mut l, t0) = table();
    for uid in [0x9, 0x3, 0x7, 0x1] {
        l.observe(&ready(Uid(uid), 1, 1), addr(), t0);
    }
    l.observe(&hb(Uid(0x5), 1, 1, FLAG_STARTING, 300), addr(), t0);
    assert_eq!(ready_peers(&l), [0x1, 0x3, 0x7, 0x9].map(Uid));
}

#[test]
fn own_frame_with_own_incarnation_is_an_echo() {
    let (mut l, t0) = table();
    assert_eq!(
        l.observe(&ready(ME, MY_INC, 1), addr(), t0),
        Observation::Echo
    );
    assert_eq!(
        l.observe(&hb(ME, MY_INC, 2, FLAG_LEAVING, 300), addr(), t0),
        Observation::Echo
    );
    assert!(l.peers().is_empty());
    assert_eq!(l.next_deadline(), None);
}

#[test]
fn own_uid_elsewhere_is_a_conflict() {
    let (mut l, t0) = table();
    assert_eq!(
        l.observe(&ready(ME, MY_INC + 1, 1), addr(), t0),
        Observation::Conflict {
            uid: ME,
            incarnation: Some(MY_INC + 1),
            addr: addr()
        }
    );
    assert_eq!(
        l.observe(&Frame::Legacy { uid: ME }, addr(), t0),
        Observation::Conflict {
            uid: ME,
            incarnation: None,
            addr: addr()
        }
    );
    assert!(l.peers().is_empty(), "we never list ourselves as a peer");
}

/// `--go-compat`: a legacy peer first heard after the presumption window has just started (the
/// original owns nothing for its first 3 s): alive, a candidate only `GO_START` after its first
/// frame; one first heard inside the window ran before us: a candidate at once.
#[test]
fn go_compat_legacy_peers_start_unless_presumed_running() {
    assert_eq!(GO_START, Duration::from_secs(3));
    let t0 = std::time::Instant::now();
    let mut l = Liveness::new(ME, MY_INC).with_legacy_start(GO_START);
    l.presume_legacy_running_until(t0 + ms(1500));
    let legacy = |uid| Frame::Legacy { uid };
    assert_eq!(
        l.observe(&legacy(PEER), addr(), t0 + ms(1499)),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(
        l.observe(&legacy(OTHER), addr(), t0 + ms(1500)),
        Observation::Joined {
            uid: OTHER,
            starting: true
        }
    );
    assert_eq!(ready_peers(&l), vec![PEER]);
    // Its promotion is a deadline of the table, and refreshing frames do not promote it.
    assert_eq!(l.peers()[&OTHER].ready_at, Some(t0 + ms(1500) + GO_START));
    l.observe(&legacy(OTHER), addr(), t0 + ms(2500));
    l.observe(&legacy(PEER), addr(), t0 + ms(2500));
    assert_eq!(l.next_deadline(), Some(t0 + ms(1500) + GO_START));
    assert_eq!(l.promote(t0 + ms(1500) + GO_START - NS), Vec::<Uid>::new());
    assert_eq!(l.promote(t0 + ms(1500) + GO_START), vec![OTHER]);
    assert_eq!(ready_peers(&l), vec![PEER, OTHER]);
    assert_eq!(l.promote(t0 + ms(9000)), Vec::<Uid>::new());
    // One that dies while starting was never a candidate: not reported dead.
    let mut l = Liveness::new(ME, MY_INC).with_legacy_start(GO_START);
    l.observe(&legacy(PEER), addr(), t0);
    assert_eq!(l.expire(t0 + LEGACY_HOLD), Vec::<Uid>::new());
    assert!(l.peers().is_empty());
}

#[test]
fn legacy_frames_join_with_the_legacy_hold() {
    assert_eq!(LEGACY_HOLD, Duration::from_secs(3));
    let (mut l, t0) = table();
    let legacy = Frame::Legacy { uid: PEER };
    assert_eq!(
        l.observe(&legacy, addr(), t0),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(ready_peers(&l), vec![PEER]);
    assert_eq!(l.peers()[&PEER].incarnation, None);
    assert_eq!(l.peers()[&PEER].deadline, t0 + LEGACY_HOLD);
    assert_eq!(
        l.observe(&legacy, addr(), t0 + ms(1000)),
        Observation::Refreshed { uid: PEER }
    );
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(1000) + LEGACY_HOLD);
    assert_eq!(
        l.expire(t0 + ms(1000) + LEGACY_HOLD - NS),
        Vec::<Uid>::new()
    );
    assert_eq!(l.expire(t0 + ms(1000) + LEGACY_HOLD), vec![PEER]);
}

#[test]
fn legacy_peer_upgrading_to_version_1_is_a_restart() {
    let (mut l, t0) = table();
    l.observe(&Frame::Legacy { uid: PEER }, addr(), t0);
    assert_eq!(
        l.observe(&ready(PEER, 1, 1), addr(), t0 + ms(10)),
        Observation::Restarted {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(l.peers()[&PEER].incarnation, Some(1));
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(310));
}

#[test]
fn changes_candidates_for_every_observation() {
    let a = addr();
    let cases = [
        (
            Observation::Joined {
                uid: PEER,
                starting: false,
            },
            true,
        ),
        (
            Observation::Joined {
                uid: PEER,
                starting: true,
            },
            false,
        ),
        (Observation::Ready { uid: PEER }, true),
        (
            Observation::Restarted {
                uid: PEER,
                starting: false,
            },
            true,
        ),
        (
            Observation::Restarted {
                uid: PEER,
                starting: true,
            },
            true,
        ),
        (Observation::Left { uid: PEER }, true),
        (Observation::Refreshed { uid: PEER }, false),
        (Observation::Stale { uid: PEER }, false),
        (Observation::Echo, false),
        (
            Observation::Conflict {
                uid: ME,
                incarnation: Some(1),
                addr: a,
            },
            false,
        ),
        (
            Observation::Conflict {
                uid: ME,
                incarnation: None,
                addr: a,
            },
            false,
        ),
    ];
    for (obs, expected) in cases {
        assert_eq!(obs.changes_candidates(), expected, "{obs:?}");
    }
}

/// The table's own verdicts agree with `changes_candidates`: whenever an observation says the
/// candidates did not change, `ready_peers` is indeed the same as before.
#[test]
fn changes_candidates_matches_the_table() {
    let (mut l, t0) = table();
    let frames = [
        hb(PEER, 1, 1, FLAG_STARTING, 300),
        hb(PEER, 1, 2, FLAG_STARTING, 300),
        ready(PEER, 1, 3),
        ready(PEER, 1, 4),
        ready(PEER, 1, 4),
        ready(PEER, 0, 9),
        ready(ME, MY_INC, 1),
        ready(ME, 3, 1),
        Frame::Legacy { uid: ME },
        ready(OTHER, 1, 1),
        hb(OTHER, 1, 2, FLAG_LEAVING, 300),
        ready(OTHER, 1, 1),
        hb(PEER, 2, 1, FLAG_STARTING, 300),
        ready(PEER, 2, 2),
        Frame::Legacy { uid: Uid(0x1004) },
        Frame::Legacy { uid: Uid(0x1004) },
    ];
    for (i, f) in frames.iter().enumerate() {
        let before = ready_peers(&l);
        let obs = l.observe(f, addr(), t0 + ms(i as u64));
        let after = ready_peers(&l);
        if !obs.changes_candidates() {
            assert_eq!(before, after, "frame {i} {f:?} gave {obs:?}");
        }
        if before != after {
            assert!(obs.changes_candidates(), "frame {i} {f:?} gave {obs:?}");
        }
    }
}

/// A LEAVING the peer did not send (forged in its name with its incarnation and any sequence
/// number, or replayed): its own next two heartbeats end the tombstone (one alone could be a frame
/// sent before the LEAVING and reordered behind it).
#[test]
fn a_live_peers_next_heartbeats_refute_a_leaving_it_did_not_send() {
    for forged_seq in [11, 12, 1_000_000, u64::MAX] {
        let (mut l, t0) = table();
        l.observe(&ready(PEER, 7, 10), addr(), t0);
        assert_eq!(
            l.observe(
                &hb(PEER, 7, forged_seq, FLAG_LEAVING, 300),
                addr(),
                t0 + ms(1)
            ),
            Observation::Left { uid: PEER }
        );
        assert_eq!(
            l.observe(&ready(PEER, 7, 11), addr(), t0 + ms(100)),
            Observation::Stale { uid: PEER }
        );
        assert_eq!(
            l.observe(&ready(PEER, 7, 12), addr(), t0 + ms(200)),
            Observation::LeaveRefuted {
                uid: PEER,
                starting: false
            }
        );
        assert_eq!(ready_peers(&l), vec![PEER]);
        assert_eq!(l.peers()[&PEER].deadline, t0 + ms(500));
        assert_eq!(
            l.observe(&ready(PEER, 7, 13), addr(), t0 + ms(300)),
            Observation::Refreshed { uid: PEER }
        );
    }
}

/// A tombstone, even one of an incarnation from the future, does not keep out another process of
/// that UID.
#[test]
fn a_tombstone_yields_to_another_incarnation() {
    let (mut l, t0) = table();
    l.observe(&hb(PEER, u64::MAX, 1, FLAG_LEAVING, 300), addr(), t0);
    assert_eq!(l.peers()[&PEER].state, PeerState::Left);
    assert_eq!(
        l.observe(&ready(PEER, 5, 1), addr(), t0 + ms(10)),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
    assert_eq!(ready_peers(&l), vec![PEER]);
}

/// No frame keeps a peer (or a tombstone) for longer than the protocol's clamp, whatever it asks.
#[test]
fn hold_time_and_interval_are_clamped() {
    let (mut l, t0) = table();
    l.observe(
        &Frame::Heartbeat(Heartbeat {
            uid: PEER,
            incarnation: 1,
            sequence: 1,
            flags: 0,
            interval_ms: u32::MAX,
            hold_ms: u32::MAX,
        }),
        addr(),
        t0,
    );
    let p = &l.peers()[&PEER];
    assert_eq!(p.deadline, t0 + ms(u64::from(wire::MAX_HOLD_MS)));
    assert_eq!(p.interval, ms(u64::from(wire::MAX_INTERVAL_MS)));
    l.observe(&hb(OTHER, 1, 1, FLAG_LEAVING, u32::MAX), addr(), t0);
    assert_eq!(l.peers()[&OTHER].deadline, t0 + ms(180_000));
}

/// An 8-byte legacy frame cannot speak for a version-1 peer: it neither revives a tombstone, nor
/// turns a starting peer into a candidate, nor shortens a peer's deadline.
#[test]
fn legacy_frames_do_not_speak_for_version_1_peers() {
    let (mut l, t0) = table();
    l.observe(&hb(PEER, 1, 1, FLAG_STARTING, 60_000), addr(), t0);
    assert_eq!(
        l.observe(&Frame::Legacy { uid: PEER }, addr(), t0 + ms(1)),
        Observation::Stale { uid: PEER }
    );
    assert_eq!(l.peers()[&PEER].state, PeerState::Starting);
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(60_000));
    l.observe(&hb(OTHER, 1, 1, FLAG_LEAVING, 300), addr(), t0);
    assert_eq!(
        l.observe(&Frame::Legacy { uid: OTHER }, addr(), t0 + ms(1)),
        Observation::Stale { uid: OTHER }
    );
    assert_eq!(l.peers()[&OTHER].state, PeerState::Left);
}

/// The table never holds more than its cap, and new UIDs come in at a bounded rate; known peers
/// are never refused.
#[test]
fn the_table_is_bounded() {
    let t0 = Instant::now();
    let mut l = Liveness::with_max_peers(ME, MY_INC, 4);
    for u in 0..4 {
        assert!(matches!(
            l.observe(&ready(Uid(0x2000 + u), 1, 1), addr(), t0),
            Observation::Joined { .. }
        ));
    }
    assert_eq!(
        l.observe(&ready(Uid(0x3000), 1, 1), addr(), t0),
        Observation::Refused {
            uid: Uid(0x3000),
            reason: Refusal::TableFull
        }
    );
    assert_eq!(
        l.observe(&Frame::Legacy { uid: Uid(0x3001) }, addr(), t0),
        Observation::Refused {
            uid: Uid(0x3001),
            reason: Refusal::TableFull
        }
    );
    assert_eq!(
        l.observe(&ready(Uid(0x2000), 1, 2), addr(), t0 + ms(1)),
        Observation::Refreshed { uid: Uid(0x2000) }
    );
    // Room again, but the burst is spent: one new UID per 10 s / 4 = 2.5 s.
    assert_eq!(l.expire(t0 + ms(300)).len(), 3);
    assert_eq!(
        l.observe(&ready(Uid(0x3000), 1, 1), addr(), t0 + ms(300)),
        Observation::Refused {
            uid: Uid(0x3000),
            reason: Refusal::JoinRate
        }
    );
    assert!(matches!(
        l.observe(&ready(Uid(0x3000), 1, 1), addr(), t0 + ms(2500)),
        Observation::Joined { .. }
    ));
    assert_eq!(
        l.observe(&ready(Uid(0x3002), 1, 1), addr(), t0 + ms(2600)),
        Observation::Refused {
            uid: Uid(0x3002),
            reason: Refusal::JoinRate
        }
    );
}

/// What an attacker without a key sends in these properties.
#[derive(Debug, Clone)]
enum Forged {
    /// Any frame of an invented UID.
    Other {
        uid: u64,
        inc: u64,
        seq: u64,
        flags: u8,
        hold: u32,
        /// An ECHO claiming to have heard the genuine peer (and us) this long ago.
        echo_age: Option<u32>,
    },
    /// An invented legacy frame.
    Legacy(u64),
    /// A LEAVING in the genuine peer's name, with its incarnation and some sequence number.
    Leaving { seq_ahead: u64 },
    /// A replay of one of the genuine peer's earlier frames.
    Replay { back: usize },
}

fn forged() -> impl proptest::strategy::Strategy<Value = Forged> {
    use proptest::prelude::*;
    prop_oneof![
        (
            1u64..64,
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(uid, inc, seq, flags, hold, echo_age)| Forged::Other {
                uid: 0x9000 + uid,
                inc,
                seq,
                flags,
                hold: hold.max(100),
                echo_age,
            }),
        (1u64..64).prop_map(|u| Forged::Legacy(0x9000 + u)),
        (0u64..3).prop_map(|seq_ahead| Forged::Leaving { seq_ahead }),
        (0usize..10).prop_map(|back| Forged::Replay { back }),
    ]
}

proptest::proptest! {
    /// A genuine peer sends every 100 ms; between two of its heartbeats, any number of forged
    /// frames arrive. The table never exceeds its cap, no deadline lies beyond the clamp, and the
    /// genuine peer is a candidate again at the latest after its second heartbeat following any
    /// forged frame (the first may carry the sequence number a forged LEAVING used). Forged
    /// ECHOes (what an invented member claims to have heard) extend nobody beyond the clamp.
    #[test]
    fn forged_frames_keep_the_table_bounded_and_cannot_evict_a_live_peer(
        rounds in proptest::collection::vec(proptest::collection::vec(forged(), 0..6), 1..40),
    ) {
        const CAP: usize = 8;
        let t0 = Instant::now();
        let mut l = Liveness::with_max_peers(ME, MY_INC, CAP);
        let mut sent: Vec<Frame> = vec![];
        let mut clean_rounds = 0;
        for (i, round) in rounds.iter().enumerate() {
            let t = t0 + ms(100 * i as u64);
            let genuine = ready(PEER, 1000, i as u64 + 1);
            sent.push(genuine);
            l.observe(&genuine, addr(), t);
            l.expire(t);
            clean_rounds += 1;
            if clean_rounds >= 2 {
                proptest::prop_assert!(ready_peers(&l).contains(&PEER), "round {i}: {:?}", l.peers().get(&PEER));
            }
            for (j, f) in round.iter().enumerate() {
                let t = t + ms(1 + j as u64);
                let frame = match *f {
                    Forged::Other { uid, inc, seq, flags, hold, .. } => Frame::Heartbeat(Heartbeat {
                        uid: Uid(uid), incarnation: inc, sequence: seq, flags,
                        interval_ms: 100, hold_ms: hold,
                    }),
                    Forged::Legacy(uid) => Frame::Legacy { uid: Uid(uid) },
                    Forged::Leaving { seq_ahead } => hb(PEER, 1000, i as u64 + 1 + seq_ahead, FLAG_LEAVING, 300),
                    Forged::Replay { back } => sent[sent.len().saturating_sub(1 + back)],
                };
                l.observe(&frame, addr(), t);
                if let Forged::Other { uid, echo_age: Some(age), .. } = *f {
                    let ext = echoes(&[(PEER, 1000, u64::MAX, age), (ME, MY_INC, 1, age)]);
                    l.observe_extensions(Uid(uid), &ext, t);
                }
                clean_rounds = 0;
                proptest::prop_assert!(l.peers().len() <= CAP);
                for p in l.peers().values() {
                    proptest::prop_assert!(p.deadline <= t + ms(u64::from(wire::MAX_HOLD_MS)));
                }
            }
        }
    }
}

fn echoes(entries: &[(Uid, u64, u64, u32)]) -> wire::Extensions {
    wire::Extensions {
        echo: Some(wire::Echoes {
            entries: entries
                .iter()
                .map(|&(uid, incarnation, sequence, age_ms)| wire::Echo {
                    uid,
                    incarnation,
                    sequence,
                    age_ms,
                    loss_permille: 0,
                    direct: true,
                })
                .collect(),
            truncated: false,
        }),
        ..Default::default()
    }
}

#[test]
fn what_another_member_heard_keeps_a_peer_alive_within_its_hold() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    l.observe(&ready(OTHER, 1, 1), addr(), t0);
    // OTHER heard PEER 50 ms before its frame at 250: PEER was alive at 200.
    l.observe(&ready(OTHER, 1, 2), addr(), t0 + ms(250));
    let r = l.observe_extensions(OTHER, &echoes(&[(PEER, 1, 3, 50)]), t0 + ms(250));
    assert!(r.now_indirect.is_empty());
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(500));
    assert_eq!(l.peers()[&PEER].evidence, t0 + ms(200));
    // Still not heard by us after its hold time: kept alive by OTHER, marked indirect once.
    l.observe(&ready(OTHER, 1, 3), addr(), t0 + ms(350));
    let r = l.observe_extensions(OTHER, &echoes(&[(PEER, 1, 4, 0)]), t0 + ms(350));
    assert_eq!(r.now_indirect, vec![PEER]);
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(650));
    let r = l.observe_extensions(OTHER, &echoes(&[(PEER, 1, 4, 0)]), t0 + ms(360));
    assert!(r.now_indirect.is_empty());
    // Evidence of another incarnation, of a tombstone, too old (age ≥ hold), or of an unknown
    // UID changes nothing; nobody is created by hearsay.
    let before = l.peers()[&PEER].deadline;
    l.observe_extensions(
        OTHER,
        &echoes(&[(PEER, 2, 9, 0), (PEER, 1, 9, 300), (Uid(0x7777), 1, 1, 0)]),
        t0 + ms(400),
    );
    assert_eq!(l.peers()[&PEER].deadline, before);
    assert!(!l.peers().contains_key(&Uid(0x7777)));
    // Nobody hears it any more: it expires at the last evidence plus its hold time.
    l.observe(&ready(OTHER, 1, 4), addr(), t0 + ms(600));
    assert_eq!(l.expire(t0 + ms(659)), vec![]);
    assert_eq!(l.expire(t0 + ms(660)), vec![PEER]);
}

#[test]
fn what_a_peer_says_of_us_is_kept() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    l.observe_extensions(PEER, &echoes(&[(ME, MY_INC, 40, 0)]), t0);
    let a = &l.peers()[&PEER].about_us;
    assert!(a.echoes && a.direct);
    assert_eq!(a.missing_us, 0);
    assert_eq!(a.our_sequence, Some((MY_INC, 40)));
    // Leaves us out (or lists an earlier process of ours): counted, frame by frame.
    l.observe_extensions(PEER, &echoes(&[(ME, MY_INC - 1, 40, 0)]), t0);
    l.observe_extensions(PEER, &echoes(&[]), t0);
    assert_eq!(l.peers()[&PEER].about_us.missing_us, 2);
    // A frame without ECHO: a sender that does not say what it hears, nothing is inferred.
    l.observe_extensions(PEER, &wire::Extensions::default(), t0);
    assert!(!l.peers()[&PEER].about_us.echoes);
    assert_eq!(l.peers()[&PEER].about_us.missing_us, 0);
}

#[test]
fn a_replayed_frame_does_not_revive_a_peer_that_expired() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    l.observe(&ready(PEER, 1, 2), addr(), t0 + ms(100));
    assert_eq!(l.expire(t0 + ms(400)), vec![PEER]);
    // Frames it sent before are stale; a later one of the same process (it came back) counts.
    for seq in [1, 2] {
        assert_eq!(
            l.observe(&ready(PEER, 1, seq), addr(), t0 + ms(500)),
            Observation::Stale { uid: PEER }
        );
    }
    assert_eq!(
        l.observe(&ready(PEER, 1, 3), addr(), t0 + ms(500)),
        Observation::Joined {
            uid: PEER,
            starting: false
        }
    );
}

#[test]
fn the_echo_we_send_lists_live_members_with_their_evidence() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    l.observe(&ready(OTHER, 4, 7), addr(), t0 + ms(50));
    l.observe(&Frame::Legacy { uid: Uid(0x9) }, addr(), t0);
    let (src, truncated) = l.echo_sources(wire::MAX_ECHOES);
    assert!(!truncated);
    let at = t0 + ms(340);
    let got: Vec<wire::Echo> = src.iter().map(|e| e.at(at)).collect();
    assert_eq!(got.len(), 2, "the legacy peer is not listed");
    assert_eq!(
        (got[0].uid, got[0].age_ms, got[0].direct),
        (PEER, 340, false)
    );
    assert_eq!(
        (
            got[1].uid,
            got[1].incarnation,
            got[1].sequence,
            got[1].age_ms,
            got[1].direct
        ),
        (OTHER, 4, 7, 290, true)
    );
    let (src, truncated) = l.echo_sources(1);
    assert!(truncated);
    assert_eq!(src[0].uid, OTHER, "the most recently heard first");
}

#[test]
fn loss_is_measured_from_sequence_gaps_over_a_window() {
    use wmgwd2::liveness::LossMeter;
    let mut m = LossMeter::default();
    assert_eq!(m.permille(), 0);
    for _ in 0..100 {
        m.record(0);
        m.record(0);
        m.record(0);
        m.record(1);
    }
    assert!((190..=210).contains(&m.permille()), "{}", m.permille());
    // It follows recent frames: a long clean run brings it down.
    for _ in 0..2000 {
        m.record(0);
    }
    assert!(m.permille() < 10, "{}", m.permille());
    m.record(u64::MAX);
    assert!(m.permille() <= 1000);
}

#[test]
fn only_what_a_member_heard_itself_is_evidence() {
    let (mut l, t0) = table();
    l.observe(&ready(PEER, 1, 1), addr(), t0);
    l.observe(&ready(OTHER, 1, 1), addr(), t0 + ms(200));
    let mut ext = echoes(&[(PEER, 1, 1, 0)]);
    ext.echo.as_mut().unwrap().entries[0].direct = false;
    l.observe_extensions(OTHER, &ext, t0 + ms(200));
    // Hearsay passed on is no evidence: relayed back and forth it would creep later by one
    // delivery per hop and keep a dead peer alive.
    assert_eq!(l.peers()[&PEER].deadline, t0 + ms(300));
    // The ECHO we send states when we heard a peer ourselves, not the latest hearsay.
    l.observe_extensions(OTHER, &echoes(&[(PEER, 1, 1, 0)]), t0 + ms(250));
    let (src, _) = l.echo_sources(wire::MAX_ECHOES);
    let peer = src.iter().find(|e| e.uid == PEER).unwrap().at(t0 + ms(260));
    assert!(peer.direct);
    assert_eq!(peer.age_ms, 260);
}
