//! The heartbeat task: sends our heartbeats on a fixed grid, and at once when the loop asks,
//! with the flags the core chose; its own task, so that the peers keep hearing us while the
//! loop waits on the kernel. It also notices when it was itself kept from running for longer
//! than our hold time (a stalled process or host) and says STARTING from then on, until the
//! loop has told the core.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tracing::{trace, warn};

use crate::auth::Keys;
use crate::core::Advert;
use crate::wire::{self, Heartbeat, FLAG_SETTLING, FLAG_STARTING};

/// At most one line per this period for a failing send.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The worst send delay is kept over this window and the one before it.
const LAG_WINDOW: Duration = Duration::from_secs(30);

/// The moment `now` on the clock the daemon uses (tokio's, so tests can pause it).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What the loop and the heartbeat task share.
#[derive(Debug, Default)]
pub(crate) struct BeaconShared {
    /// The flags of the next heartbeat (0: ready, or FLAG_STARTING).
    pub(crate) flags: AtomicU8,
    /// The loop is waiting on the kernel (applying a change, or re-reading it before one):
    /// heartbeats sent meanwhile carry FLAG_SETTLING.
    pub(crate) busy: AtomicBool,
    /// Wakes the task to send one heartbeat at once.
    pub(crate) now: Notify,
    pub(crate) sequence: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) last_error_log: Mutex<Option<Instant>>,
    /// The beacon found it had sent nothing for longer than our hold time (the process or the
    /// host was stalled: SIGSTOP, a VM pause, swap): the peers may have expired us. The beacon
    /// holds its heartbeats until the loop has read what was queued and the core has decided
    /// (release and say STARTING if a peer expired us, carry on if none did), for at most one
    /// hold time; after that it says STARTING, so that nobody takes us for a candidate.
    pub(crate) stalled: AtomicBool,
    /// Wakes the loop when the beacon sets `stalled`.
    pub(crate) stall_notice: Notify,
    /// The longest such silence, in milliseconds.
    pub(crate) stall_ms: AtomicU64,
    /// How late the last periodic heartbeat went out against its slot, in microseconds.
    pub(crate) lag_us: AtomicU64,
    /// The worst such delay lately (this [`LAG_WINDOW`] and the one before), in microseconds:
    /// the loop hands it to the core, which raises the hold time we ask for to cover it.
    pub(crate) worst_lag_us: AtomicU64,
    /// What the heartbeats carry besides the header (echoes, view, blocked VNIs) and the hold
    /// time they ask for, as the loop last published it.
    pub(crate) advert: Mutex<Option<Arc<Advert>>>,
}

/// Sends heartbeats: every interval, and at once when the loop asks. Its own task, so the peers
/// keep hearing us while the loop waits on the kernel.
pub(crate) struct Beacon {
    pub(crate) socket: Arc<UdpSocket>,
    /// Where every heartbeat goes: the broadcast address, the IPv6 group, or each peer.
    pub(crate) to: Vec<SocketAddr>,
    pub(crate) template: Heartbeat,
    /// Signs every frame when set (`--key-file`).
    pub(crate) keys: Option<Arc<Keys>>,
    pub(crate) interval: Duration,
    pub(crate) shared: Arc<BeaconShared>,
    /// `--go-compat`: also the Go original's 8-byte frame to here, every
    /// [`wire::LEGACY_INTERVAL`], while we are a candidate.
    pub(crate) legacy: Option<SocketAddrV4>,
}

/// What woke the heartbeat task.
enum Wake {
    Tick,
    Now,
    Legacy,
}

impl Beacon {
    /// Sends one heartbeat; returns the hold time it asked for.
    pub(crate) async fn send(&self, flags: u8) -> Duration {
        let sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let advert = self
            .shared
            .advert
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(Arc::clone));
        let mut hb = Heartbeat {
            sequence,
            flags,
            ..self.template
        };
        let ext = match &advert {
            Some(a) => {
                hb.hold_ms = a.hold_ms.max(self.template.hold_ms);
                a.extensions(now())
            }
            None => wire::Extensions {
                echo: Some(wire::Echoes::default()),
                ..Default::default()
            },
        };
        let frame = wire::encode_full(&hb, &ext, self.keys.as_deref());
        // One frame, the same bytes, to every destination: a peer that cannot be reached now
        // costs a counted error, not the others' heartbeats.
        for &to in &self.to {
            self.send_to(&frame, to, sequence, flags).await;
        }
        hb.hold()
    }

    async fn send_to(&self, frame: &[u8], to: SocketAddr, sequence: u64, flags: u8) {
        match self.socket.send_to(frame, to).await {
            Ok(_) => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                trace!(seq = sequence, flags, %to, "heartbeat sent");
            }
            Err(e) => {
                let errors = self.shared.errors.fetch_add(1, Ordering::Relaxed) + 1;
                let t = now();
                let log = match self.shared.last_error_log.lock() {
                    Ok(mut last) if last.is_none_or(|l| t >= l + LOG_EVERY) => {
                        *last = Some(t);
                        true
                    }
                    Ok(_) => false,
                    Err(_) => true,
                };
                if log {
                    warn!(error = %e, %to, errors, "heartbeat send failed");
                }
            }
        }
    }

    /// The Go original's frame (our UID, 8 bytes big-endian), if we send those and are a
    /// candidate now: it takes every UID it hears for a candidate, so a gateway that is not one
    /// (starting, drained, stepped back, stalled, leaving) must fall silent there and let the
    /// original expire it. None once the fleet has left `--go-compat` (phase 3).
    async fn send_legacy(&self) {
        let Some(to) = self.legacy else {
            return;
        };
        let flags = self.shared.flags.load(Ordering::Relaxed);
        let left = (flags & wire::COMPAT_PHASE_MASK) >> wire::COMPAT_PHASE_SHIFT == 3;
        if flags & FLAG_STARTING != 0 || left || self.shared.stalled.load(Ordering::Relaxed) {
            return;
        }
        match self
            .socket
            .send_to(&self.template.uid.0.to_be_bytes(), to)
            .await
        {
            Ok(_) => trace!(%to, "legacy heartbeat sent"),
            Err(e) => {
                let errors = self.shared.errors.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(error = %e, %to, errors, "legacy heartbeat send failed");
            }
        }
    }

    /// Runs until aborted. Ticks stay on the interval's grid (a late tick does not push the
    /// later ones back); a tick missed entirely is skipped, not sent in a burst.
    pub(crate) async fn run(self) {
        let mut next = now();
        let mut next_legacy = next;
        let mut last: Option<Instant> = None;
        // While the loop decides about a stall of ours: until when the beacon waits for it.
        let mut verdict_until: Option<Instant> = None;
        // What our last heartbeat asked the peers to wait for us: a longer silence is a stall.
        let mut hold = Duration::from_millis(u64::from(self.template.hold_ms));
        // The worst send delay in this window and in the one before.
        let (mut window_start, mut lag_now, mut lag_before) = (next, 0u64, 0u64);
        loop {
            let legacy_due = async {
                match self.legacy {
                    Some(_) => tokio::time::sleep_until(next_legacy.into()).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => Wake::Tick,
                _ = self.shared.now.notified() => Wake::Now,
                _ = legacy_due => Wake::Legacy,
            };
            if let Wake::Legacy = wake {
                self.send_legacy().await;
                let t = now();
                next_legacy += wire::LEGACY_INTERVAL;
                if next_legacy <= t {
                    next_legacy = t + wire::LEGACY_INTERVAL;
                }
                continue;
            }
            let woken = matches!(wake, Wake::Now);
            let t = now();
            if !woken {
                let lag = u64::try_from(t.saturating_duration_since(next).as_micros())
                    .unwrap_or(u64::MAX);
                self.shared.lag_us.store(lag, Ordering::Relaxed);
                if t.saturating_duration_since(window_start) >= LAG_WINDOW {
                    (window_start, lag_before, lag_now) = (t, lag_now, 0);
                }
                // A delay as long as the hold time is a stall (below), not jitter to cover.
                if lag < u64::try_from(hold.as_micros()).unwrap_or(u64::MAX) {
                    lag_now = lag_now.max(lag);
                }
                self.shared
                    .worst_lag_us
                    .store(lag_now.max(lag_before), Ordering::Relaxed);
            }
            if let Some(gap) = last.map(|l| t.saturating_duration_since(l)) {
                if gap > hold {
                    let ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
                    self.shared.stall_ms.fetch_max(ms, Ordering::Relaxed);
                    self.shared.stalled.store(true, Ordering::Relaxed);
                    self.shared.stall_notice.notify_one();
                    verdict_until = Some(t + hold);
                }
            }
            let mut flags = self.shared.flags.load(Ordering::Relaxed);
            if self.shared.busy.load(Ordering::Relaxed) {
                flags |= FLAG_SETTLING;
            }
            if self.shared.stalled.load(Ordering::Relaxed) {
                if verdict_until.is_some_and(|u| t < u) {
                    // Not yet: a ready heartbeat now could make peers that expired us take us
                    // back at once, and a STARTING one would make peers that did not hand our
                    // VNIs over. The loop wakes us when it has decided.
                    last = Some(t);
                    next = (next + self.interval).max(t + self.interval);
                    continue;
                }
                flags |= FLAG_STARTING;
            } else {
                verdict_until = None;
            }
            hold = self.send(flags).await;
            if woken {
                // A change (we became a candidate, say): the original hears it at once too.
                self.send_legacy().await;
            }
            last = Some(t);
            let t = now();
            next = if woken {
                t + self.interval
            } else {
                next + self.interval
            };
            if next <= t {
                next = t + self.interval;
            }
        }
    }
}
