//! The one event loop: the only place that combines time, state and I/O.
//!
//! Inputs (all in one task, one `select!`): heartbeat datagrams, kernel events, the peers'
//! deadlines, the end of the hold-down, the GARP schedule, the periodic resync, and the shutdown
//! token. Every input updates state, then the same two pure steps run: `assign::owned` (who owns
//! what) and `reconcile::plan` (what the kernel must change). Heartbeats go out from a second,
//! small task (the [`Beacon`]), so that a long reconcile never delays one past the peers'
//! deadline; the loop only tells it the flags and when to send at once. See docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::pending;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};

use crate::arp;
use crate::assign;
use crate::cli::Config;
use crate::kernel::{EventSource, Kernel, KernelError, KernelEvent, Snapshot};
use crate::liveness::{Liveness, Observation};
use crate::reconcile::{self, Action, Addresses, LinkState};
use crate::wire::{self, Frame, Heartbeat, FLAG_LEAVING, FLAG_SETTLING, FLAG_STARTING};

/// A VNI acted on less than this long ago waits before the next action (stops a hot loop if the
/// kernel keeps undoing what we set).
const ACTION_BACKOFF: Duration = Duration::from_millis(50);
/// A failed kernel request is retried after this long (or sooner, on the next event).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// GARP frames sent per wake-up at most; the rest follow after [`GARP_PACE`].
const GARP_BATCH: usize = 128;
const GARP_PACE: Duration = Duration::from_millis(2);
/// At most one line per this period for each kind of repeated warning.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Errors that stop the daemon (at start). Everything later is logged, counted and retried.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("reading interfaces from the kernel: {0}")]
    Snapshot(#[source] KernelError),
}

/// Counters, logged at shutdown and on demand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub frames_received: u64,
    pub frames_malformed: BTreeMap<&'static str, u64>,
    pub frames_stale: u64,
    pub uid_conflicts: u64,
    pub heartbeats_sent: u64,
    pub send_errors: u64,
    pub actions_applied: u64,
    pub actions_failed: u64,
    pub garps_sent: u64,
    pub garp_errors: u64,
    pub resyncs: u64,
}

/// A log line at most once per period.
#[derive(Debug, Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self, now: Instant) -> bool {
        match self.0 {
            Some(t) if now < t + LOG_EVERY => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

/// What the loop and the heartbeat task share.
#[derive(Debug, Default)]
struct BeaconShared {
    /// The flags of the next heartbeat (0: ready, or FLAG_STARTING).
    flags: AtomicU8,
    /// The loop is waiting on the kernel (applying a change, or re-reading it before one):
    /// heartbeats sent meanwhile carry FLAG_SETTLING.
    busy: AtomicBool,
    /// Wakes the task to send one heartbeat at once.
    now: Notify,
    sequence: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    log_send: Mutex<Throttle>,
}

/// Sends heartbeats: every interval, and at once when the loop asks. Its own task, so the peers
/// keep hearing us while the loop waits on the kernel.
struct Beacon {
    socket: Arc<UdpSocket>,
    to: SocketAddrV4,
    template: Heartbeat,
    interval: Duration,
    shared: Arc<BeaconShared>,
}

impl Beacon {
    async fn send(&self, flags: u8) {
        let sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let hb = Heartbeat {
            sequence,
            flags,
            ..self.template
        };
        match self.socket.send_to(&wire::encode(&hb), self.to).await {
            Ok(_) => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                trace!(seq = sequence, flags, "heartbeat sent");
            }
            Err(e) => {
                let errors = self.shared.errors.fetch_add(1, Ordering::Relaxed) + 1;
                let log = self
                    .shared
                    .log_send
                    .lock()
                    .map(|mut t| t.ready(now()))
                    .unwrap_or(true);
                if log {
                    warn!(error = %e, to = %self.to, errors, "heartbeat send failed");
                }
            }
        }
    }

    /// Runs until aborted. Ticks stay on the interval's grid (a late tick does not push the
    /// later ones back); a tick missed entirely is skipped, not sent in a burst.
    async fn run(self) {
        let mut next = now();
        loop {
            let woken = tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => false,
                _ = self.shared.now.notified() => true,
            };
            let mut flags = self.shared.flags.load(Ordering::Relaxed);
            if self.shared.busy.load(Ordering::Relaxed) {
                flags |= FLAG_SETTLING;
            }
            self.send(flags).await;
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

/// The GARP schedule: for every owned, active VNI the next due time and how many of its takeover
/// burst remain.
#[derive(Debug, Default)]
struct Garps {
    due: BTreeSet<(Instant, u32)>,
    by_vni: HashMap<u32, (Instant, u32)>,
}

impl Garps {
    fn put(&mut self, vni: u32, at: Instant, remaining: u32) {
        self.remove(vni);
        self.due.insert((at, vni));
        self.by_vni.insert(vni, (at, remaining));
    }
    fn remove(&mut self, vni: u32) {
        if let Some((at, _)) = self.by_vni.remove(&vni) {
            self.due.remove(&(at, vni));
        }
    }
    fn next(&self) -> Option<Instant> {
        self.due.first().map(|&(t, _)| t)
    }
    /// Removes and returns every VNI due at `now`, with its remaining burst.
    fn take_due(&mut self, now: Instant) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        while let Some(&(t, vni)) = self.due.first() {
            if t > now {
                break;
            }
            self.due.pop_first();
            if let Some((_, rem)) = self.by_vni.remove(&vni) {
                out.push((vni, rem));
            }
        }
        out
    }
}

/// Everything the loop knows.
pub struct Daemon<K: Kernel> {
    cfg: Config,
    me: u64,
    incarnation: u64,
    kernel: K,
    live: Liveness,
    /// False during the start-up hold-down, while the uplink is down, and at shutdown: we own
    /// nothing.
    ready: bool,
    /// When the current hold-down ends (`None`: not in a hold-down).
    hold_until: Option<Instant>,
    /// The heartbeat interface (`--bind-interface`), when tracked: its ifindex and whether it is up
    /// with carrier. Without carrier we are cut off from the segment and own nothing.
    uplink: Option<(Option<u32>, bool)>,
    /// The uplink state the last [`Self::check_uplink`] acted on.
    uplink_was: bool,
    /// Managed links by VNI, as the kernel last reported them.
    links: BTreeMap<u32, LinkState>,
    /// ifindex -> VNI for the managed links.
    index: HashMap<u32, u32>,
    /// Every link by ifindex: the topology around the managed ones (lower devices, bridge ports).
    all: BTreeMap<u32, LinkState>,
    /// IPv4 addresses of the managed links.
    addrs: Addresses,
    owned: BTreeSet<u32>,
    /// Owned VNIs whose interface was active at the last reconcile: VNI -> ifindex. A VNI that
    /// enters this map (or changes ifindex) starts a GARP burst.
    active: BTreeMap<u32, u32>,
    garps: Garps,
    /// When each VNI was last acted on.
    acted: HashMap<u32, Instant>,
    /// Earliest moment a deferred action may run.
    retry_at: Option<Instant>,
    missing: BTreeSet<u32>,
    blocked: BTreeMap<u32, u32>,
    beacon: Arc<BeaconShared>,
    /// A membership change asks for a heartbeat now, not at the next tick.
    heartbeat_now: bool,
    pub stats: Stats,
    /// Requests for a status line (SIGUSR1 in `main`).
    status_requests: Option<mpsc::UnboundedReceiver<()>>,
    log_malformed: Throttle,
    log_conflict: Throttle,
    log_recv: Throttle,
    log_garp: Throttle,
    log_apply: Throttle,
}

/// The moment `now` on the clock the daemon uses (tokio's, so tests can pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => pending().await,
    }
}

impl<K: Kernel> Daemon<K> {
    pub fn new(cfg: Config, me: u64, incarnation: u64, kernel: K) -> Self {
        let cfg_uplink = cfg.bind_interface.as_ref().map(|_| (None, false));
        Daemon {
            live: Liveness::new(me, incarnation),
            cfg,
            me,
            incarnation,
            kernel,
            ready: false,
            hold_until: None,
            uplink: cfg_uplink,
            uplink_was: true,
            links: BTreeMap::new(),
            index: HashMap::new(),
            all: BTreeMap::new(),
            addrs: Addresses::new(),
            owned: BTreeSet::new(),
            active: BTreeMap::new(),
            garps: Garps::default(),
            acted: HashMap::new(),
            retry_at: None,
            missing: BTreeSet::new(),
            blocked: BTreeMap::new(),
            beacon: Arc::default(),
            heartbeat_now: false,
            stats: Stats::default(),
            status_requests: None,
            log_malformed: Throttle::default(),
            log_conflict: Throttle::default(),
            log_recv: Throttle::default(),
            log_garp: Throttle::default(),
            log_apply: Throttle::default(),
        }
    }

    /// Every `()` received on `rx` logs the daemon's state at info (see [`Self::log_status`]).
    pub fn with_status_requests(mut self, rx: mpsc::UnboundedReceiver<()>) -> Self {
        self.status_requests = Some(rx);
        self
    }

    /// One line with the membership, the ownership and the counters.
    pub fn log_status(&self) {
        let peers: Vec<String> = self
            .live
            .peers()
            .iter()
            .map(|(uid, p)| format!("{uid:#x}:{:?}@{}", p.state, p.addr))
            .collect();
        info!(
            uid = %format_args!("{:#x}", self.me),
            ready = self.ready,
            uplink_up = self.uplink_up(),
            peers = %peers.join(","),
            managed = self.links.len(),
            owned = self.owned.len(),
            active = self.active.len(),
            missing = self.missing.len(),
            blocked = self.blocked.len(),
            frames_received = self.stats.frames_received,
            frames_malformed = self.stats.frames_malformed.values().sum::<u64>(),
            frames_stale = self.stats.frames_stale,
            uid_conflicts = self.stats.uid_conflicts,
            heartbeats_sent = self.beacon.sent.load(Ordering::Relaxed),
            send_errors = self.beacon.errors.load(Ordering::Relaxed),
            actions_applied = self.stats.actions_applied,
            actions_failed = self.stats.actions_failed,
            garps_sent = self.stats.garps_sent,
            garp_errors = self.stats.garp_errors,
            resyncs = self.stats.resyncs,
            "status"
        );
    }

    pub fn owned(&self) -> &BTreeSet<u32> {
        &self.owned
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Runs until `shutdown` is cancelled, then leaves gracefully (see docs/operations.md).
    pub async fn run(
        mut self,
        socket: UdpSocket,
        mut events: impl EventSource,
        shutdown: CancellationToken,
    ) -> Result<Stats, DaemonError> {
        // 1. Protodown on everything we manage, before anything else.
        let snap = self
            .kernel
            .snapshot()
            .await
            .map_err(DaemonError::Snapshot)?;
        self.load(snap);
        self.reconcile().await;
        info!(
            uid = %format_args!("{:#x}", self.me),
            managed = self.links.len(),
            missing = self.missing.len(),
            "started, all managed interfaces protodown"
        );

        // 2. Announce ourselves as starting, listen for the hold-down.
        let start = now();
        self.uplink_was = self.uplink_up();
        if self.uplink_was {
            self.hold_until = Some(start + self.cfg.hold_down());
        } else {
            warn!(ifname = ?self.cfg.bind_interface, "uplink down at start: owning nothing until it is up");
        }
        let socket = Arc::new(socket);
        self.beacon.flags.store(FLAG_STARTING, Ordering::Relaxed);
        let beacon = tokio::spawn(self.beacon_for(&socket).run());
        let mut next_resync = start + self.cfg.resync;
        let mut events_open = true;
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut status = self.status_requests.take();

        loop {
            let next_expiry = self.live.next_deadline();
            // Not `biased`: a flood of datagrams must not starve the heartbeat timer.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let t = now();
                        if self.on_datagram(&buf[..n], from, t) {
                            self.reassign(t);
                            self.reconcile().await;
                        }
                    }
                    Err(e) => {
                        if self.log_recv.ready(now()) {
                            warn!(error = %e, "heartbeat receive failed");
                        }
                    }
                },
                batch = events.next_batch(), if events_open => {
                    let Some(batch) = batch else {
                        error!("kernel event stream ended; relying on periodic resync");
                        events_open = false;
                        continue;
                    };
                    let mut lost = false;
                    for ev in batch {
                        lost |= self.on_event(ev);
                    }
                    if lost {
                        warn!("kernel events lost; resyncing");
                        self.resync().await;
                    }
                    self.check_uplink(now());
                    self.reconcile().await;
                }
                _ = sleep_opt(self.hold_until) => {
                    self.hold_until = None;
                    self.ready = true;
                    info!(peers = self.live.ready_peers().count(), "hold-down over, taking ownership");
                    self.reassign(now());
                    self.reconcile().await;
                    self.heartbeat_now = true;
                }
                _ = sleep_opt(next_expiry) => {
                    // Heartbeats that arrived while the loop was busy (a long reconcile) are
                    // queued in the socket: read them before declaring anyone dead.
                    let mut changed = false;
                    while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
                        changed |= self.on_datagram(&buf[..n], from, now());
                    }
                    let t = now();
                    let gone = self.live.expire(t);
                    if changed && gone.is_empty() {
                        self.reassign(t);
                        self.reconcile().await;
                    }
                    for uid in &gone {
                        info!(peer = %format_args!("{uid:#x}"), "peer dead");
                    }
                    if !gone.is_empty() {
                        self.heartbeat_now = true;
                        self.reassign(t);
                        self.reconcile().await;
                    }
                }
                _ = sleep_opt(self.garps.next()) => self.send_due_garps(now()),
                _ = sleep_opt(self.retry_at) => {
                    self.retry_at = None;
                    self.reconcile().await;
                }
                _ = tokio::time::sleep_until(next_resync.into()) => {
                    next_resync = now() + self.cfg.resync;
                    self.resync().await;
                    self.check_uplink(now());
                    self.reconcile().await;
                }
                Some(()) = recv_opt(&mut status) => self.log_status(),
            }
            // Only now, after this input's reconcile: a ready heartbeat follows our takeover.
            let flags = if self.ready { 0 } else { FLAG_STARTING };
            self.beacon.flags.store(flags, Ordering::Relaxed);
            if self.heartbeat_now {
                self.heartbeat_now = false;
                self.beacon.now.notify_one();
            }
        }
        // No periodic heartbeat may follow our LEAVING.
        beacon.abort();
        let _ = beacon.await;
        self.leave(&socket).await;
        self.stats.heartbeats_sent = self.beacon.sent.load(Ordering::Relaxed);
        self.stats.send_errors = self.beacon.errors.load(Ordering::Relaxed);
        Ok(self.stats)
    }

    /// Graceful stop: LEAVING, wait for the peers' confirmation, protodown everything, LEAVING.
    async fn leave(&mut self, socket: &Arc<UdpSocket>) {
        let t0 = now();
        info!(owned = self.owned.len(), "stopping: announcing leave");
        self.ready = false;
        self.hold_until = None;
        // Heartbeats already queued were sent before our LEAVING: they confirm nothing.
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
            self.on_datagram(&buf[..n], from, now());
        }
        self.send_heartbeat(socket, FLAG_LEAVING).await;
        let mut waiting: BTreeSet<u64> = self.live.ready_peers().collect();
        let deadline = t0 + self.cfg.leave_wait;
        while !waiting.is_empty() {
            let r = tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                _ = tokio::time::sleep_until(deadline.into()) => break,
            };
            if let Ok((n, _)) = r {
                // A peer confirms with a heartbeat sent once its kernel is done: one that left
                // while it was still applying our departure (SETTLING) does not count.
                if let Ok(Frame::Heartbeat(hb)) = wire::decode(&buf[..n]) {
                    if !hb.settling() {
                        waiting.remove(&hb.uid);
                    }
                }
            }
        }
        let confirmed = waiting.is_empty();
        self.reassign(now());
        // The last word: no backoff may keep an interface up after we exit.
        self.acted.clear();
        self.reconcile().await;
        self.send_heartbeat(socket, FLAG_LEAVING).await;
        info!(
            confirmed,
            unconfirmed = waiting.len(),
            elapsed_ms = now().duration_since(t0).as_millis() as u64,
            heartbeats_sent = self.beacon.sent.load(Ordering::Relaxed),
            frames_received = self.stats.frames_received,
            actions_failed = self.stats.actions_failed,
            garps_sent = self.stats.garps_sent,
            "stopped, all managed interfaces protodown"
        );
    }

    fn beacon_for(&self, socket: &Arc<UdpSocket>) -> Beacon {
        Beacon {
            socket: socket.clone(),
            to: SocketAddrV4::new(self.cfg.broadcast, self.cfg.port),
            template: Heartbeat {
                uid: self.me,
                incarnation: self.incarnation,
                sequence: 0,
                flags: 0,
                interval_ms: u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX),
                hold_ms: u32::try_from(self.cfg.hold().as_millis()).unwrap_or(u32::MAX),
            },
            interval: self.cfg.interval,
            shared: self.beacon.clone(),
        }
    }

    /// One heartbeat from the loop itself (at stop, once the beacon task is gone).
    async fn send_heartbeat(&self, socket: &Arc<UdpSocket>, flags: u8) {
        self.beacon_for(socket).send(flags).await;
    }

    /// Takes one datagram; true when the candidate owners changed.
    pub fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, t: Instant) -> bool {
        self.stats.frames_received += 1;
        let frame = match wire::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                let n = self.stats.frames_malformed.entry(e.kind()).or_default();
                *n += 1;
                let total: u64 = self.stats.frames_malformed.values().sum();
                if self.log_malformed.ready(t) {
                    warn!(from = %from, error = %e, malformed = total, "malformed heartbeat dropped");
                } else {
                    trace!(from = %from, error = %e, "malformed heartbeat dropped");
                }
                return false;
            }
        };
        let obs = self.live.observe(&frame, from, t);
        trace!(from = %from, ?obs, "heartbeat");
        match obs {
            Observation::Joined { uid, starting } => {
                info!(peer = %format_args!("{uid:#x}"), %from, starting, "peer joined")
            }
            Observation::Ready { uid } => info!(peer = %format_args!("{uid:#x}"), "peer ready"),
            Observation::Restarted { uid, starting } => {
                info!(peer = %format_args!("{uid:#x}"), starting, "peer restarted")
            }
            Observation::Left { uid } => info!(peer = %format_args!("{uid:#x}"), "peer left"),
            Observation::Stale { .. } => self.stats.frames_stale += 1,
            Observation::Conflict {
                uid,
                incarnation,
                addr,
            } => {
                self.stats.uid_conflicts += 1;
                if self.log_conflict.ready(t) {
                    error!(
                        peer = %format_args!("{uid:#x}"),
                        from = %addr,
                        incarnation = ?incarnation,
                        conflicts = self.stats.uid_conflicts,
                        "another gateway uses our uid: fix --uid on one of them"
                    );
                }
            }
            Observation::Refreshed { .. } | Observation::Echo => {}
        }
        let changed = obs.changes_candidates();
        if changed {
            self.heartbeat_now = true;
        }
        changed
    }

    /// Recomputes what we own and logs every change.
    fn reassign(&mut self, _t: Instant) {
        let peers: BTreeSet<u64> = self.live.ready_peers().collect();
        let owned = if self.ready {
            assign::owned(self.me, &peers, self.cfg.vnis())
        } else {
            BTreeSet::new()
        };
        for vni in owned.difference(&self.owned) {
            info!(vni, ifname = %self.cfg.pattern.name(*vni), "taking vni");
        }
        for vni in self.owned.difference(&owned) {
            let to = assign::owner(*vni, peers.iter().copied());
            info!(
                vni,
                ifname = %self.cfg.pattern.name(*vni),
                peer = %to.map(|u| format!("{u:#x}")).unwrap_or_else(|| "none".into()),
                "releasing vni"
            );
        }
        self.owned = owned;
    }

    /// Is the heartbeat interface up with carrier (always true when not tracked)?
    fn uplink_up(&self) -> bool {
        self.uplink.is_none_or(|(_, up)| up)
    }

    /// Acts on a change of the uplink: down → own nothing at once; up → a new hold-down, as at
    /// start but at least `--uplink-hold-down`, so that the peers keep our VNIs until we have heard
    /// them again and BGP EVPN has had time to bring this gateway's sessions back.
    fn check_uplink(&mut self, t: Instant) {
        let up = self.uplink_up();
        if up == self.uplink_was {
            return;
        }
        self.uplink_was = up;
        let ifname = self.cfg.bind_interface.clone().unwrap_or_default();
        if up {
            let hold = self.cfg.uplink_hold_down();
            info!(%ifname, hold = ?hold, "uplink up: hold-down before taking ownership");
            self.hold_until = Some(t + hold);
        } else {
            warn!(%ifname, owned = self.owned.len(), "uplink down: releasing every vni");
            self.ready = false;
            self.hold_until = None;
            self.reassign(t);
        }
        self.heartbeat_now = true;
    }

    /// Replaces the managed links and addresses with a snapshot.
    fn load(&mut self, snap: Snapshot) {
        self.links.clear();
        self.index.clear();
        self.all.clear();
        if let Some(up) = self.uplink.as_mut() {
            *up = (None, false);
        }
        for l in snap.links {
            self.put_link(l);
        }
        self.addrs = snap
            .addrs
            .into_iter()
            .filter(|(i, _)| self.index.contains_key(i))
            .collect();
    }

    fn put_link(&mut self, l: LinkState) {
        self.all.insert(l.ifindex, l.clone());
        if let Some(up) = self.uplink.as_mut() {
            if self.cfg.bind_interface.as_deref() == Some(l.ifname.as_str()) {
                *up = (Some(l.ifindex), l.admin_up && l.carrier);
            } else if up.0 == Some(l.ifindex) {
                // Renamed away.
                *up = (None, false);
            }
        }
        if let Some(old) = self.index.get(&l.ifindex).copied() {
            // Renamed: forget the old name's entry.
            if self.links.get(&old).map(|x| x.ifindex) == Some(l.ifindex) {
                self.links.remove(&old);
            }
            self.index.remove(&l.ifindex);
        }
        let Some(vni) = self.cfg.pattern.vni(&l.ifname) else {
            self.addrs.remove(&l.ifindex);
            return;
        };
        if !self.cfg.vnis().contains(&vni) {
            return;
        }
        if let Some(prev) = self.links.get(&vni) {
            if prev.ifindex != l.ifindex {
                self.index.remove(&prev.ifindex);
                self.addrs.remove(&prev.ifindex);
            }
        }
        self.index.insert(l.ifindex, vni);
        self.links.insert(vni, l);
    }

    /// Applies one kernel event to the model; true when events were lost.
    pub fn on_event(&mut self, ev: KernelEvent) -> bool {
        match ev {
            KernelEvent::Link(l) => {
                trace!(ifname = %l.ifname, protodown = l.protodown, carrier = l.carrier, "link event");
                let inactive = (!l.active()).then_some(l.ifindex);
                self.put_link(l);
                // A flap (carrier lost and back) may arrive in one batch: remember the loss, so
                // that the interface counts as newly active and announces itself again.
                if let Some(vni) = inactive.and_then(|i| self.index.get(&i).copied()) {
                    if self.active.remove(&vni).is_some() {
                        self.garps.remove(vni);
                    }
                }
            }
            KernelEvent::LinkGone { ifindex } => {
                self.all.remove(&ifindex);
                if let Some(up) = self.uplink.as_mut() {
                    if up.0 == Some(ifindex) {
                        *up = (None, false);
                    }
                }
                if let Some(vni) = self.index.remove(&ifindex) {
                    debug!(vni, ifindex, "managed interface deleted");
                    self.links.remove(&vni);
                }
                self.addrs.remove(&ifindex);
            }
            KernelEvent::Address {
                ifindex,
                addr,
                added,
            } => {
                if let Some(&vni) = self.index.get(&ifindex) {
                    let list = self.addrs.entry(ifindex).or_default();
                    list.retain(|a| *a != addr);
                    if added {
                        list.push(addr);
                        // A new address on an interface we announce: announce it too.
                        if self.active.get(&vni) == Some(&ifindex) {
                            self.garps.put(vni, now(), self.cfg.garp_count);
                        }
                    }
                }
            }
            KernelEvent::Lost => return true,
        }
        false
    }

    async fn resync(&mut self) {
        self.beacon.busy.store(true, Ordering::Relaxed);
        let snap = self.kernel.snapshot().await;
        self.beacon.busy.store(false, Ordering::Relaxed);
        match snap {
            Ok(s) => {
                self.stats.resyncs += 1;
                self.load(s);
            }
            Err(e) => {
                if self.log_apply.ready(now()) {
                    warn!(error = %e, "resync failed; keeping the last known state");
                }
            }
        }
    }

    /// Plans against the kernel's reported state and applies the difference; then starts GARP
    /// bursts for VNIs that just became active. Heartbeats sent meanwhile say SETTLING.
    pub async fn reconcile(&mut self) {
        self.beacon.busy.store(true, Ordering::Relaxed);
        self.reconcile_now().await;
        self.beacon.busy.store(false, Ordering::Relaxed);
    }

    async fn reconcile_now(&mut self) {
        let t = now();
        let plan = reconcile::plan(
            &self.owned,
            self.cfg.vnis(),
            &self.links,
            self.cfg.protodown_reason,
        );
        self.report_missing(&plan.missing);
        self.report_blocked(&plan.blocked);

        let mut todo = Vec::with_capacity(plan.actions.len());
        for a in plan.actions {
            let Action::SetProtodown { vni, .. } = a;
            match self.acted.get(&vni) {
                Some(&last) if t < last + ACTION_BACKOFF => {
                    let at = last + ACTION_BACKOFF;
                    self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                }
                _ => todo.push(a),
            }
        }
        let planned = todo.len();
        let plan_done = todo.clone();
        if !todo.is_empty() {
            let done = self.apply(todo).await;
            self.flush_fdb(&done).await;
            self.flush_neighbours(&done).await;
        }
        let applied = now();
        for a in &plan_done {
            let Action::SetProtodown { vni, .. } = *a;
            self.acted.insert(vni, applied);
        }
        self.update_active(applied);
        if planned > 0 {
            debug!(
                actions = planned,
                apply_us = applied.duration_since(t).as_micros() as u64,
                garp_us = now().duration_since(applied).as_micros() as u64,
                "reconciled"
            );
        }
    }

    /// Carries out the actions; returns the ones that succeeded.
    async fn apply(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let n = actions.len();
        let changes: Vec<(u32, bool)> = actions
            .iter()
            .map(|a| {
                let Action::SetProtodown { ifindex, on, .. } = *a;
                (ifindex, on)
            })
            .collect();
        let results = self.kernel.set_protodown(&changes).await;
        let mut failed = 0u64;
        let mut done = Vec::with_capacity(n);
        for (a, r) in actions.into_iter().zip(results) {
            let Action::SetProtodown { vni, on, .. } = a;
            let ifname = self.cfg.pattern.name(vni);
            match r {
                Ok(()) => {
                    debug!(vni, %ifname, protodown = on, action = "set_protodown", "applied");
                    done.push(a);
                }
                // Another reason holds it down: reported by report_blocked, not an error here.
                Err(KernelError::Busy { .. }) => {}
                Err(e) => {
                    failed += 1;
                    if self.log_apply.ready(now()) {
                        warn!(vni, %ifname, protodown = on, error = %e, kind = e.kind(), "protodown failed; will retry");
                    }
                    let at = now() + RETRY_AFTER_FAILURE;
                    self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                }
            }
        }
        self.stats.actions_applied += n as u64 - failed;
        self.stats.actions_failed += failed;
        done
    }

    /// Deletes the neighbour entries that interfaces just taken over collected while protodown.
    async fn flush_neighbours(&mut self, done: &[Action]) {
        let taken: Vec<u32> = done
            .iter()
            .filter_map(|a| match *a {
                Action::SetProtodown {
                    ifindex, on: false, ..
                } => Some(ifindex),
                _ => None,
            })
            .collect();
        if taken.is_empty() {
            return;
        }
        match self.kernel.flush_neighbours(&taken).await {
            Ok(n) => debug!(
                interfaces = taken.len(),
                deleted = n,
                action = "flush_neighbours",
                "applied"
            ),
            Err(e) => {
                if self.log_apply.ready(now()) {
                    warn!(error = %e, "neighbour flush failed");
                }
            }
        }
    }

    /// Removes the MACs of interfaces just put into protodown from the bridges they feed.
    async fn flush_fdb(&mut self, done: &[Action]) {
        let ports: BTreeMap<u32, u32> = done
            .iter()
            .filter_map(|a| {
                let Action::SetProtodown { vni, on: true, .. } = *a else {
                    return None;
                };
                Some((
                    vni,
                    reconcile::bridge_port(self.links.get(&vni)?, &self.all)?,
                ))
            })
            .collect();
        let flushes = reconcile::fdb_flushes(done, &self.links, &ports);
        if flushes.is_empty() {
            return;
        }
        let results = self.kernel.flush_fdb(&flushes).await;
        for (f, r) in flushes.iter().zip(results) {
            let ifname = self.cfg.pattern.name(f.vni);
            match r {
                Ok(()) => {
                    debug!(vni = f.vni, %ifname, port = f.port, action = "flush_fdb", "applied")
                }
                Err(e) => {
                    self.stats.actions_failed += 1;
                    if self.log_apply.ready(now()) {
                        warn!(vni = f.vni, %ifname, port = f.port, error = %e, "fdb flush failed");
                    }
                }
            }
        }
    }

    fn report_missing(&mut self, missing: &[u32]) {
        let now_missing: BTreeSet<u32> = missing.iter().copied().collect();
        let appeared: Vec<u32> = self.missing.difference(&now_missing).copied().collect();
        let vanished: Vec<u32> = now_missing.difference(&self.missing).copied().collect();
        if !vanished.is_empty() {
            let first = vanished[0];
            warn!(
                count = vanished.len(),
                vni = first,
                ifname = %self.cfg.pattern.name(first),
                "managed interfaces missing; will manage them when they appear"
            );
        }
        for vni in appeared {
            info!(vni, ifname = %self.cfg.pattern.name(vni), "managed interface appeared");
        }
        self.missing = now_missing;
    }

    fn report_blocked(&mut self, blocked: &[(u32, u32)]) {
        let now_blocked: BTreeMap<u32, u32> = blocked.iter().copied().collect();
        for (&vni, &bits) in &now_blocked {
            if self.blocked.get(&vni) != Some(&bits) {
                warn!(
                    vni,
                    ifname = %self.cfg.pattern.name(vni),
                    reason_bits = %format_args!("{bits:#x}"),
                    "owned, but protodown is held by another reason; not clearing it"
                );
            }
        }
        self.blocked = now_blocked;
    }

    /// Starts a GARP burst for every owned VNI whose interface just became active (takeover, or
    /// carrier back), drops the schedule of the others, and sends what is due.
    fn update_active(&mut self, t: Instant) {
        let mut active = BTreeMap::new();
        for &vni in &self.owned {
            if let Some(l) = self.links.get(&vni) {
                if l.active() {
                    active.insert(vni, l.ifindex);
                    if self.active.get(&vni) != Some(&l.ifindex) {
                        self.garps.put(vni, t, self.cfg.garp_count);
                    }
                }
            }
        }
        for vni in self.active.keys() {
            if !active.contains_key(vni) {
                self.garps.remove(*vni);
            }
        }
        self.active = active;
        self.send_due_garps(t);
    }

    fn send_due_garps(&mut self, t: Instant) {
        let mut due = self.garps.take_due(t).into_iter();
        let mut frames = 0usize;
        while let Some((vni, remaining)) = due.next() {
            let Some(&ifindex) = self.active.get(&vni) else {
                continue;
            };
            let Some(link) = self.links.get(&vni) else {
                continue;
            };
            // Pace: at most GARP_BATCH frames per wake-up, the rest a moment later; and when the
            // socket is full, wait for it rather than drop the announcement.
            let mut blocked = frames >= GARP_BATCH;
            let addrs = self.addrs.get(&ifindex).map(Vec::as_slice).unwrap_or(&[]);
            if addrs.is_empty() && !blocked {
                debug!(vni, ifname = %link.ifname, "no IPv4 address to announce");
            }
            for &ip in addrs {
                if blocked {
                    break;
                }
                match self.kernel.send_frame(ifindex, &arp::garp(link.mac, ip)) {
                    Ok(()) => {
                        frames += 1;
                        self.stats.garps_sent += 1;
                        debug!(vni, ifname = %link.ifname, %ip, remaining, "garp sent");
                    }
                    Err(KernelError::Send { source, .. })
                        if source.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        blocked = true;
                    }
                    Err(e) => {
                        self.stats.garp_errors += 1;
                        if self.log_garp.ready(t) {
                            warn!(vni, ifname = %link.ifname, %ip, error = %e, "garp failed");
                        }
                    }
                }
            }
            if blocked {
                let later = t + GARP_PACE;
                self.garps.put(vni, later, remaining);
                for (vni, remaining) in due.by_ref() {
                    self.garps.put(vni, later, remaining);
                }
                break;
            }
            if remaining > 1 {
                self.garps
                    .put(vni, t + self.cfg.garp_spacing, remaining - 1);
            } else if let Some(r) = self.cfg.garp_refresh {
                self.garps.put(vni, t + r, 1);
            }
        }
    }
}
