//! The daemon's decisions as one state machine, without I/O (the shape of quinn-proto's
//! `Connection` and holo's protocol instances). Pure: no clock, no socket, no kernel.
//!
//! [`Core::handle`] takes an [`Input`] (a datagram with its source, a batch of kernel events, a
//! snapshot, the result of an effect, a timer, a command) and the time it happened; the core
//! updates its state and queues [`Effect`]s, which the shell takes with [`Core::poll_effect`] and
//! carries out in order. Effects that talk to the kernel report back as inputs
//! ([`Input::Applied`], [`Input::Snapshot`], …), so the core, not the shell, decides what follows
//! (flushes after a protodown, a retry after a failure, the GARPs once a link runs).
//! [`Core::next_deadline`] says when to feed [`Input::Timer`].
//!
//! Inside, small pure pieces each own one concern: [`Liveness`] (who is alive),
//! [`crate::assign`] (who owns what), [`LinkTable`] (the kernel's links), [`Readiness`]
//! (hold-down, uplink), [`reconcile`] (the plan, and its backoff), [`garp::Schedule`] (what to
//! announce when).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, trace, warn};

use crate::assign;
use crate::cli::Config;
use crate::garp::{self, Announcement};
use crate::kernel::KernelError;
use crate::links::{Change, KernelEvent, LinkTable, Snapshot};
use crate::liveness::{Liveness, Observation};
use crate::readiness::{Readiness, Transition};
use crate::reconcile::{self, Backoff, FdbFlush, Protodown, RETRY_AFTER_FAILURE};
use crate::types::{IfIndex, Uid, Vni};
use crate::wire::{self, Frame, FLAG_LEAVING, FLAG_STARTING};

/// At most one line per this period for each kind of repeated warning.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// At a stop, how many times the core asks the kernel to put every managed interface down (each
/// time verified by a fresh read) before it gives up and exits with an error.
pub const STOP_ATTEMPTS: u32 = 3;

/// Something that happened, fed to [`Core::handle`] with the time it happened.
#[derive(Debug)]
pub enum Input<'a> {
    /// The first read of the kernel: the core puts every managed interface down and starts its
    /// hold-down.
    Start(Snapshot),
    /// One datagram on the heartbeat socket.
    Datagram { bytes: &'a [u8], from: SocketAddr },
    /// Kernel events, every one queued so far.
    Kernel(Vec<KernelEvent>),
    /// The result of [`Effect::Resync`].
    Snapshot(Result<Snapshot, KernelError>),
    /// The result of [`Effect::SetProtodown`]: one result per change, in order.
    Applied {
        changes: Vec<Protodown>,
        results: Vec<Result<(), KernelError>>,
    },
    /// The result of [`Effect::FlushFdb`].
    FdbFlushed {
        flushes: Vec<FdbFlush>,
        results: Vec<Result<(), KernelError>>,
    },
    /// The result of [`Effect::FlushNeighbours`]: how many entries went.
    NeighboursFlushed {
        interfaces: usize,
        result: Result<usize, KernelError>,
    },
    /// The result of [`Effect::SendGarps`].
    GarpsSent(GarpReport),
    /// [`Core::next_deadline`] has come.
    Timer,
    /// An operator's command.
    Command(Command),
}

/// Commands from outside (signals today; a control socket later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Leave gracefully: announce it, wait for the peers to take over, put everything down, exit.
    Stop,
}

/// What the shell made of an [`Effect::SendGarps`].
#[derive(Debug, Default)]
pub struct GarpReport {
    /// Frames sent.
    pub sent: u64,
    /// Frames that failed, with the error.
    pub failed: Vec<(Vni, Ipv4Addr, KernelError)>,
    /// Announcements not (completely) sent because the socket was full: from the first one
    /// blocked to the end of the list.
    pub unsent: Vec<Announcement>,
}

/// Something for the shell to do, in the order queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Set or release protodown; report with [`Input::Applied`].
    SetProtodown(Vec<Protodown>),
    /// Remove released MACs from bridges; report with [`Input::FdbFlushed`].
    FlushFdb(Vec<FdbFlush>),
    /// Delete the dynamic neighbour entries of these links; report with
    /// [`Input::NeighboursFlushed`].
    FlushNeighbours(Vec<IfIndex>),
    /// Send these gratuitous ARPs (only once each link runs: the core checked); report with
    /// [`Input::GarpsSent`].
    SendGarps(Vec<Announcement>),
    /// Read every link and address again; report with [`Input::Snapshot`].
    Resync,
    /// Have the heartbeat task send a heartbeat at once, with [`Core::heartbeat_flags`] as they
    /// are once this input's effects are done.
    HeartbeatNow,
    /// Stop the periodic heartbeats (no heartbeat may follow our LEAVING).
    StopBeacon,
    /// Send one heartbeat with these flags from the shell itself.
    SendHeartbeat { flags: u8 },
    /// The stop is complete: exit.
    Exit(Exit),
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Managed interfaces that could not be put down (empty: a clean stop).
    pub still_up: Vec<Vni>,
}

/// Counters, logged at a stop and on demand.
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

/// One line's worth of state (SIGUSR1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub ready: bool,
    pub uplink_up: bool,
    pub peers: Vec<String>,
    pub managed: usize,
    pub owned: usize,
    pub active: usize,
    pub missing: usize,
    pub blocked: usize,
}

/// Where the core is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before [`Input::Start`].
    New,
    Running,
    /// LEAVING sent: waiting (until `deadline`) for these peers to confirm with a heartbeat sent
    /// after they read it. We still own our VNIs: make before break.
    Leaving {
        since: Instant,
        deadline: Instant,
        waiting: BTreeSet<Uid>,
    },
    /// Putting every managed interface down, each attempt verified by a fresh read.
    Stopping {
        since: Instant,
        confirmed: bool,
        attempts: u32,
    },
    Done,
}

/// A log line at most once per period.
#[derive(Debug, Default, Clone)]
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

#[derive(Debug, Default, Clone)]
struct Throttles {
    malformed: Throttle,
    conflict: Throttle,
    garp: Throttle,
    apply: Throttle,
}

/// The state machine.
pub struct Core {
    cfg: Config,
    me: Uid,
    live: Liveness,
    links: LinkTable,
    readiness: Readiness,
    owned: BTreeSet<Vni>,
    garps: garp::Schedule,
    backoff: Backoff,
    missing: BTreeSet<Vni>,
    blocked: BTreeMap<Vni, u32>,
    phase: Phase,
    next_resync: Option<Instant>,
    /// A protodown request is out: plan again only once its result is in.
    applying: bool,
    /// Something changed while a request was out: plan again when it is in.
    replan: bool,
    effects: VecDeque<Effect>,
    stats: Stats,
    logs: Throttles,
}

impl Core {
    pub fn new(cfg: Config, me: Uid, incarnation: u64) -> Core {
        let policy = garp::Policy {
            count: cfg.garp_count,
            spacing: cfg.garp_spacing,
            refresh: cfg.garp_refresh,
        };
        Core {
            live: Liveness::new(me, incarnation),
            links: LinkTable::new(cfg.pattern.clone(), cfg.vnis(), cfg.bind_interface.clone()),
            readiness: Readiness::new(cfg.hold_down(), cfg.uplink_hold_down()),
            garps: garp::Schedule::new(policy),
            cfg,
            me,
            owned: BTreeSet::new(),
            backoff: Backoff::default(),
            missing: BTreeSet::new(),
            blocked: BTreeMap::new(),
            phase: Phase::New,
            next_resync: None,
            applying: false,
            replan: false,
            effects: VecDeque::new(),
            stats: Stats::default(),
            logs: Throttles::default(),
        }
    }

    /// Takes one input that happened at `now`.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Start(snap) => self.start(snap, now),
            Input::Datagram { bytes, from } => self.datagram(bytes, from, now),
            Input::Kernel(events) => self.kernel_events(events, now),
            Input::Snapshot(snap) => self.snapshot(snap, now),
            Input::Applied { changes, results } => self.applied(changes, results, now),
            Input::FdbFlushed { flushes, results } => self.fdb_flushed(&flushes, results, now),
            Input::NeighboursFlushed { interfaces, result } => match result {
                Ok(n) => debug!(
                    interfaces,
                    deleted = n,
                    action = "flush_neighbours",
                    "applied"
                ),
                Err(e) => {
                    if self.logs.apply.ready(now) {
                        warn!(error = %e, "neighbour flush failed");
                    }
                }
            },
            Input::GarpsSent(report) => self.garps_sent(report, now),
            Input::Timer => self.timer(now),
            Input::Command(Command::Stop) => self.stop(now),
        }
    }

    /// The next effect to carry out, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Input::Timer`] is due next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let deadlines = match &self.phase {
            Phase::Running => [
                self.live.next_deadline(),
                self.readiness.next_deadline(),
                self.garps.next_deadline(),
                self.backoff.next_deadline(),
                self.next_resync,
            ],
            // Only who is alive and how long we wait for them.
            Phase::Leaving { deadline, .. } => {
                [self.live.next_deadline(), Some(*deadline), None, None, None]
            }
            _ => return None,
        };
        deadlines.into_iter().flatten().min()
    }

    /// The flags of the periodic heartbeats now.
    pub fn heartbeat_flags(&self) -> u8 {
        if self.readiness.ready() {
            0
        } else {
            FLAG_STARTING
        }
    }

    /// Is the stop complete?
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn owned(&self) -> &BTreeSet<Vni> {
        &self.owned
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn status(&self) -> Status {
        Status {
            ready: self.readiness.ready(),
            uplink_up: self.links.uplink_up(),
            peers: self
                .live
                .peers()
                .iter()
                .map(|(uid, p)| format!("{uid}:{:?}@{}", p.state, p.addr))
                .collect(),
            managed: self.links.managed().len(),
            owned: self.owned.len(),
            active: self.garps.active().len(),
            missing: self.missing.len(),
            blocked: self.blocked.len(),
        }
    }

    fn start(&mut self, snap: Snapshot, now: Instant) {
        if self.phase != Phase::New {
            return;
        }
        self.phase = Phase::Running;
        self.links.load(snap);
        // Protodown on everything we manage, before anything else.
        self.reconcile(now);
        let up = self.links.uplink_up();
        self.readiness.start(now, up);
        if !up {
            warn!(ifname = ?self.links.uplink_name(), "uplink down at start: owning nothing until it is up");
        }
        self.next_resync = Some(now + self.cfg.resync);
    }

    fn datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        self.stats.frames_received += 1;
        let frame = match wire::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                let n = self.stats.frames_malformed.entry(e.kind()).or_default();
                *n += 1;
                let total: u64 = self.stats.frames_malformed.values().sum();
                if self.logs.malformed.ready(now) {
                    warn!(from = %from, error = %e, malformed = total, "malformed heartbeat dropped");
                } else {
                    trace!(from = %from, error = %e, "malformed heartbeat dropped");
                }
                return;
            }
        };
        let obs = self.live.observe(&frame, from, now);
        trace!(from = %from, ?obs, "heartbeat");
        match obs {
            Observation::Joined { uid, starting } => {
                info!(peer = %uid, %from, starting, "peer joined")
            }
            Observation::Ready { uid } => info!(peer = %uid, "peer ready"),
            Observation::Restarted { uid, starting } => {
                info!(peer = %uid, starting, "peer restarted")
            }
            Observation::Left { uid } => info!(peer = %uid, "peer left"),
            Observation::Stale { .. } => self.stats.frames_stale += 1,
            Observation::Conflict {
                uid,
                incarnation,
                addr,
            } => {
                self.stats.uid_conflicts += 1;
                if self.logs.conflict.ready(now) {
                    error!(
                        peer = %uid,
                        from = %addr,
                        incarnation = ?incarnation,
                        conflicts = self.stats.uid_conflicts,
                        "another gateway uses our uid: fix --uid on one of them"
                    );
                }
            }
            Observation::Refreshed { .. } | Observation::Echo => {}
        }
        match &mut self.phase {
            Phase::Running if obs.changes_candidates() => {
                self.effects.push_back(Effect::HeartbeatNow);
                self.reassign();
                self.reconcile(now);
            }
            Phase::Leaving { waiting, .. } => {
                // A peer confirms with a heartbeat sent once its kernel is done: one sent while it
                // was still applying our departure (SETTLING) does not count. A peer that leaves
                // too confirms nothing, but is no longer waited for.
                if let Frame::Heartbeat(hb) = frame {
                    if !hb.settling() || hb.leaving() {
                        waiting.remove(&hb.uid);
                    }
                }
                self.leave_if_confirmed(now);
            }
            _ => {}
        }
    }

    fn kernel_events(&mut self, events: Vec<KernelEvent>, now: Instant) {
        let mut lost = false;
        for ev in events {
            if let KernelEvent::Link(l) = &ev {
                trace!(ifname = %l.ifname, protodown = l.protodown, carrier = l.carrier, "link event");
            }
            match self.links.apply(ev) {
                Change::Nothing => {}
                Change::Lost => lost = true,
                Change::Inactive(vni) => self.garps.inactive(vni),
                Change::AddressAdded(vni, ifindex) => self.garps.address_added(vni, ifindex, now),
            }
        }
        if lost {
            warn!("kernel events lost; resyncing");
            self.effects.push_back(Effect::Resync);
            return;
        }
        self.check_uplink(now);
        self.reconcile(now);
    }

    fn snapshot(&mut self, snap: Result<Snapshot, KernelError>, now: Instant) {
        match snap {
            Ok(s) => {
                self.stats.resyncs += 1;
                self.links.load(s);
            }
            Err(e) => {
                if self.logs.apply.ready(now) {
                    warn!(error = %e, "resync failed; keeping the last known state");
                }
            }
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            self.verify_stop(now);
            return;
        }
        self.check_uplink(now);
        self.reconcile(now);
    }

    fn timer(&mut self, now: Instant) {
        let mut reassign = false;
        if self.phase == Phase::Running {
            if let Some(Transition::Ready) = self.readiness.poll(now) {
                info!(
                    peers = self.live.ready_peers().count(),
                    "hold-down over, taking ownership"
                );
                reassign = true;
                self.effects.push_back(Effect::HeartbeatNow);
            }
        }
        let gone = self.live.expire(now);
        for uid in &gone {
            info!(peer = %uid, "peer dead");
        }
        if let Phase::Leaving { waiting, .. } = &mut self.phase {
            for uid in &gone {
                waiting.remove(uid);
            }
            self.leave_if_confirmed(now);
            return;
        }
        if self.phase != Phase::Running {
            return;
        }
        if !gone.is_empty() {
            reassign = true;
            self.effects.push_back(Effect::HeartbeatNow);
        }
        if reassign {
            self.reassign();
        }
        let retry = self.backoff.due(now);
        if reassign || retry {
            self.reconcile(now);
        } else {
            self.send_due_garps(now);
        }
        if self.next_resync.is_some_and(|t| t <= now) {
            self.next_resync = Some(now + self.cfg.resync);
            self.effects.push_back(Effect::Resync);
        }
    }

    /// Graceful stop: LEAVING, wait for the peers' confirmation, protodown everything, LEAVING.
    fn stop(&mut self, now: Instant) {
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
        self.effects.push_back(Effect::StopBeacon);
        self.effects.push_back(Effect::SendHeartbeat {
            flags: FLAG_LEAVING,
        });
        self.phase = Phase::Leaving {
            since: now,
            deadline: now + self.cfg.leave_wait,
            waiting: self.live.ready_peers().collect(),
        };
        self.leave_if_confirmed(now);
    }

    /// Once every peer has confirmed (or the wait is over): release everything.
    fn leave_if_confirmed(&mut self, now: Instant) {
        let Phase::Leaving {
            since,
            deadline,
            waiting,
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
        self.phase = Phase::Stopping {
            since: *since,
            confirmed,
            attempts: 1,
        };
        self.reassign();
        self.release_all();
    }

    /// At a stop: every managed interface down, whatever the backoff says (the last word).
    fn release_all(&mut self) {
        let plan = reconcile::plan(
            &self.owned,
            self.cfg.vnis(),
            self.links.managed(),
            self.cfg.protodown_reason,
        );
        if plan.changes.is_empty() {
            // Verify with a fresh read all the same: the table may be behind the kernel.
            self.effects.push_back(Effect::Resync);
        } else {
            self.applying = true;
            self.effects.push_back(Effect::SetProtodown(plan.changes));
        }
    }

    /// The fresh read after a release: exit when every managed interface is down, or try again.
    fn verify_stop(&mut self, now: Instant) {
        let Phase::Stopping {
            since,
            confirmed,
            attempts,
        } = self.phase
        else {
            return;
        };
        let plan = reconcile::plan(
            &self.owned,
            self.cfg.vnis(),
            self.links.managed(),
            self.cfg.protodown_reason,
        );
        if !plan.changes.is_empty() && attempts < STOP_ATTEMPTS {
            self.phase = Phase::Stopping {
                since,
                confirmed,
                attempts: attempts + 1,
            };
            self.release_all();
            return;
        }
        let still_up: Vec<Vni> = plan.changes.iter().map(|c| c.vni).collect();
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
            let names: Vec<String> = still_up.iter().map(|&v| self.cfg.pattern.name(v)).collect();
            error!(
                count = still_up.len(),
                interfaces = %names.join(","),
                "stopped, but these managed interfaces could not be put down"
            );
        }
        self.phase = Phase::Done;
        self.effects.push_back(Effect::Exit(Exit { still_up }));
    }

    /// Recomputes what we own and logs every change.
    fn reassign(&mut self) {
        let peers: BTreeSet<Uid> = self.live.ready_peers().collect();
        let owned = if self.readiness.ready() {
            assign::owned(self.me, &peers, self.cfg.vnis())
        } else {
            BTreeSet::new()
        };
        for &vni in owned.difference(&self.owned) {
            info!(%vni, ifname = %self.cfg.pattern.name(vni), "taking vni");
        }
        for &vni in self.owned.difference(&owned) {
            let to = assign::owner(vni, peers.iter().copied());
            info!(
                %vni,
                ifname = %self.cfg.pattern.name(vni),
                peer = %to.map(|u| u.to_string()).unwrap_or_else(|| "none".into()),
                "releasing vni"
            );
        }
        self.owned = owned;
    }

    /// Acts on a change of the uplink: down → own nothing at once; up → a new hold-down.
    fn check_uplink(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        let ifname = self.links.uplink_name().unwrap_or_default().to_owned();
        match self.readiness.uplink(self.links.uplink_up(), now) {
            Some(Transition::UplinkUp { hold }) => {
                info!(%ifname, ?hold, "uplink up: hold-down before taking ownership");
            }
            Some(Transition::UplinkDown) => {
                warn!(%ifname, owned = self.owned.len(), "uplink down: releasing every vni");
                self.reassign();
            }
            _ => return,
        }
        self.effects.push_back(Effect::HeartbeatNow);
    }

    /// Plans against the kernel's reported state and asks for the difference; with nothing to
    /// change, brings the GARP schedule up to date.
    fn reconcile(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Done) {
            return;
        }
        if self.applying {
            self.replan = true;
            return;
        }
        let plan = reconcile::plan(
            &self.owned,
            self.cfg.vnis(),
            self.links.managed(),
            self.cfg.protodown_reason,
        );
        self.report_missing(&plan.missing);
        self.report_blocked(&plan.blocked);
        let todo = self.backoff.admit(plan.changes, now);
        if todo.is_empty() {
            self.update_active(now);
            return;
        }
        self.applying = true;
        self.effects.push_back(Effect::SetProtodown(todo));
    }

    fn applied(
        &mut self,
        changes: Vec<Protodown>,
        results: Vec<Result<(), KernelError>>,
        now: Instant,
    ) {
        self.applying = false;
        self.backoff.acted(changes.iter().map(|c| c.vni), now);
        let mut done = Vec::with_capacity(changes.len());
        let mut failed = 0u64;
        let n = changes.len() as u64;
        for (c, r) in changes.into_iter().zip(results) {
            let ifname = self.cfg.pattern.name(c.vni);
            match r {
                Ok(()) => {
                    debug!(vni = %c.vni, %ifname, protodown = c.on, action = "set_protodown", "applied");
                    done.push(c);
                }
                // Another reason holds it down: reported as blocked, not an error here.
                Err(KernelError::Busy { .. }) => {}
                Err(e) => {
                    failed += 1;
                    if self.logs.apply.ready(now) {
                        warn!(vni = %c.vni, %ifname, protodown = c.on, error = %e, kind = e.kind(), "protodown failed; will retry");
                    }
                    self.backoff.retry(now + RETRY_AFTER_FAILURE);
                }
            }
        }
        self.stats.actions_applied += n - failed;
        self.stats.actions_failed += failed;
        let links = &self.links;
        let flushes = reconcile::fdb_flushes(&done, links.managed(), |v| links.bridge_port(v));
        if !flushes.is_empty() {
            self.effects.push_back(Effect::FlushFdb(flushes));
        }
        let taken: Vec<IfIndex> = done.iter().filter(|c| !c.on).map(|c| c.ifindex).collect();
        if !taken.is_empty() {
            self.effects.push_back(Effect::FlushNeighbours(taken));
        }
        self.update_active(now);
        if std::mem::take(&mut self.replan) {
            self.reconcile(now);
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            // Verify with a fresh read of the kernel (the events of our own change may still be
            // on their way).
            self.effects.push_back(Effect::Resync);
        }
    }

    fn fdb_flushed(
        &mut self,
        flushes: &[FdbFlush],
        results: Vec<Result<(), KernelError>>,
        now: Instant,
    ) {
        for (f, r) in flushes.iter().zip(results) {
            let ifname = self.cfg.pattern.name(f.vni);
            match r {
                Ok(()) => {
                    debug!(vni = %f.vni, %ifname, port = %f.port, action = "flush_fdb", "applied")
                }
                Err(e) => {
                    self.stats.actions_failed += 1;
                    if self.logs.apply.ready(now) {
                        warn!(vni = %f.vni, %ifname, port = %f.port, error = %e, "fdb flush failed");
                    }
                }
            }
        }
    }

    /// Starts a GARP burst for every owned VNI whose interface just became active (takeover, or
    /// carrier back), drops the schedule of the others, and sends what is due.
    fn update_active(&mut self, now: Instant) {
        let active = self
            .owned
            .iter()
            .filter_map(|&vni| {
                let l = self.links.get(vni)?;
                l.active().then_some((vni, l.ifindex))
            })
            .collect();
        self.garps.update(active, now);
        self.send_due_garps(now);
    }

    fn send_due_garps(&mut self, now: Instant) {
        let links = &self.links;
        let due = self.garps.take_due(now, |vni| {
            let l = links.get(vni)?;
            Some((l.mac, links.addrs(l.ifindex)))
        });
        for a in due.iter().filter(|a| a.ips.is_empty()) {
            debug!(vni = %a.vni, ifname = %self.cfg.pattern.name(a.vni), "no IPv4 address to announce");
        }
        if due.iter().any(|a| !a.ips.is_empty()) {
            self.effects.push_back(Effect::SendGarps(due));
        }
    }

    fn garps_sent(&mut self, report: GarpReport, now: Instant) {
        self.stats.garps_sent += report.sent;
        self.stats.garp_errors += report.failed.len() as u64;
        if let Some((vni, ip, e)) = report.failed.first() {
            if self.logs.garp.ready(now) {
                warn!(%vni, ifname = %self.cfg.pattern.name(*vni), %ip, error = %e, failed = report.failed.len(), "garp failed");
            }
        }
        self.garps.defer(&report.unsent, now);
    }

    fn report_missing(&mut self, missing: &[Vni]) {
        let now_missing: BTreeSet<Vni> = missing.iter().copied().collect();
        if let Some(&first) = now_missing.difference(&self.missing).next() {
            let count = now_missing.difference(&self.missing).count();
            warn!(
                count,
                vni = %first,
                ifname = %self.cfg.pattern.name(first),
                "managed interfaces missing; will manage them when they appear"
            );
        }
        for &vni in self.missing.difference(&now_missing) {
            info!(%vni, ifname = %self.cfg.pattern.name(vni), "managed interface appeared");
        }
        self.missing = now_missing;
    }

    fn report_blocked(&mut self, blocked: &[(Vni, u32)]) {
        let now_blocked: BTreeMap<Vni, u32> = blocked.iter().copied().collect();
        for (&vni, &bits) in &now_blocked {
            if self.blocked.get(&vni) != Some(&bits) {
                warn!(
                    %vni,
                    ifname = %self.cfg.pattern.name(vni),
                    reason_bits = %format_args!("{bits:#x}"),
                    "owned, but protodown is held by another reason; not clearing it"
                );
            }
        }
        self.blocked = now_blocked;
    }
}
