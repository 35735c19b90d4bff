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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod admit;
mod apply;
mod compat;
mod evidence;
mod io;
mod leave;
mod logs;
mod membership;
mod report;
mod uplink;

pub use io::{Command, Effect, Exit, GarpReport, Input, Notice, OwnershipChange, Stats, Status};

/// How many ownership changes a status shows.
pub const TRANSITIONS_KEPT: usize = 64;
pub use evidence::{adaptive_multiple, lag_multiple, Advert};
pub use leave::STOP_ATTEMPTS;

use tracing::{debug, info, trace, warn};

use self::logs::Throttles;
use crate::auth::Keys;
use crate::cli::Config;
use crate::garp;
use crate::kernel::KernelError;
use crate::links::{Change, KernelEvent, LinkTable, Snapshot};
use crate::liveness::{Liveness, Observation};
use crate::readiness::{Readiness, Transition};
use crate::reconcile::Backoff;
use crate::types::{IfIndex, Uid, Vni};
use crate::wire::{Frame, FLAG_STARTING};

/// Where the core is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before [`Input::Start`].
    New,
    Running,
    /// LEAVING (or, for a drain, STARTING) sent: waiting (until `deadline`) for these peers to
    /// confirm with a heartbeat sent after they read it. We still own our VNIs: make before
    /// break. Then exit (a stop) or stay, drained.
    Leaving {
        since: Instant,
        deadline: Instant,
        waiting: BTreeSet<Uid>,
        exit: bool,
        /// `--go-compat` with legacy peers: they cannot confirm, and take over only once they
        /// have expired us; until then we keep the VNIs that go to them (see `leave.rs`).
        legacy_until: Option<Instant>,
    },
    /// Putting every managed interface down, each attempt verified by a fresh read.
    Stopping {
        since: Instant,
        confirmed: bool,
        attempts: u32,
    },
    Done,
}

/// The state machine.
pub struct Core {
    cfg: Config,
    me: Uid,
    incarnation: u64,
    /// Our own heartbeats' source address, as they loop back.
    my_addr: Option<SocketAddr>,
    /// Candidate peers that do not count us alive (their ECHO leaves us out): we step back.
    unseen_by: BTreeSet<Uid>,
    /// Peers that hear us only through other members.
    heard_indirectly_by: BTreeSet<Uid>,
    /// Peers whose view has differed from ours for a while.
    split_with: BTreeSet<Uid>,
    /// What candidate peers cannot serve (their BLOCKED).
    peer_blocked: BTreeMap<Uid, Vec<Vni>>,
    /// A later process with our UID was heard: we own nothing until then.
    yield_until: Option<Instant>,
    /// A cold start (no candidate peer when our hold-down ended, some starting with us): the
    /// starting peers, counted as candidates until they are ready or `presumed_until` passes.
    presumed: BTreeSet<Uid>,
    presumed_until: Option<Instant>,
    /// Peers heard starting during our current hold-down.
    cold: BTreeSet<Uid>,
    /// Signed frames that verified but did not prove freshness (yet), by sender: echoed with
    /// our next heartbeats, so that their senders can prove it (two gateways that start at once
    /// must each hear the other first). At most `max_peers`, each for the longest hold time.
    pending: BTreeMap<Uid, (u64, u64, Instant)>,
    /// Our hold time now (raised under loss).
    hold: Duration,
    /// The worst recent delay of our periodic heartbeats (`Input::SendLag`).
    send_lag: Duration,
    /// The VNIs we last said we cannot serve.
    last_unservable: Vec<Vni>,
    /// The advert for the heartbeat task changed.
    advert_dirty: bool,
    /// Our phase of leaving `--go-compat` (see `compat.rs`), and when a frame of an original was
    /// last heard (our start until one is).
    compat_phase: u8,
    last_legacy: Option<Instant>,
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
    /// The uplink's ifindex the heartbeat socket is bound to; a rebind under way; when to try a
    /// failed one again.
    bound_uplink: Option<IfIndex>,
    rebinding: bool,
    rebind_after: Option<Instant>,
    /// The last ownership changes, oldest first.
    transitions: std::collections::VecDeque<OwnershipChange>,
    /// The keys heartbeats are verified with (`None`: no `--key-file`).
    keys: Option<Keys>,
    /// The heartbeat socket's drop count as last reported.
    drops_seen: u32,
    /// READY=1 sent; the watchdog period and when the next keep-alive is due.
    notified_ready: bool,
    watchdog: Option<Duration>,
    watchdog_at: Option<Instant>,
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
            incarnation,
            my_addr: None,
            unseen_by: BTreeSet::new(),
            heard_indirectly_by: BTreeSet::new(),
            split_with: BTreeSet::new(),
            peer_blocked: BTreeMap::new(),
            yield_until: None,
            presumed: BTreeSet::new(),
            presumed_until: None,
            cold: BTreeSet::new(),
            pending: BTreeMap::new(),
            hold: cfg.hold(),
            send_lag: Duration::ZERO,
            last_unservable: Vec::new(),
            advert_dirty: true,
            compat_phase: 0,
            last_legacy: None,
            live: Liveness::with_max_peers(me, incarnation, cfg.max_peers).with_legacy_start(
                if cfg.go_compat {
                    crate::liveness::GO_START
                } else {
                    Duration::ZERO
                },
            ),
            links: LinkTable::new(
                cfg.pattern.clone(),
                cfg.pattern6.clone(),
                cfg.vnis(),
                cfg.bind_interface.clone(),
            ),
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
            bound_uplink: None,
            rebinding: false,
            rebind_after: None,
            transitions: Default::default(),
            keys: None,
            drops_seen: 0,
            notified_ready: false,
            watchdog: None,
            watchdog_at: None,
            effects: VecDeque::new(),
            stats: Stats::default(),
            logs: Throttles::default(),
        }
    }

    /// Keep-alives for systemd's watchdog every `every` (half of `WatchdogSec=`), sent from the
    /// event loop itself: a loop that stops making progress stops them, and systemd restarts it.
    pub fn with_watchdog(mut self, every: Duration) -> Core {
        self.watchdog = Some(every);
        self
    }

    /// Verify every frame with these keys (`--key-file`), as `cfg.auth_mode` says.
    pub fn with_keys(mut self, keys: Option<Keys>) -> Core {
        self.keys = keys;
        self
    }

    /// Takes one input that happened at `now`.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Start(snap) => self.start(snap, now),
            Input::Datagram {
                bytes,
                from,
                ttl,
                ifindex,
                dropped,
                own_sequence,
            } => {
                self.socket_drops(dropped, now);
                self.datagram(bytes, from, ttl, ifindex, own_sequence, now)
            }
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
            Input::Rebound(result) => self.rebound(result, now),
            Input::LocalStall { silent } => self.local_stall(silent, now),
            Input::SendLag(lag) => {
                self.send_lag = lag;
                self.adapt_hold();
            }
            Input::Command(Command::Stop) => self.stop(now),
            Input::Command(Command::Drain) => self.drain(now),
            Input::Command(Command::Undrain) => self.undrain(now),
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
                self.rebind_after,
                self.watchdog_at,
                self.yield_until,
                self.compat_deadline(),
                self.presumed_until,
            ],
            // Only who is alive and how long we wait for them.
            Phase::Leaving {
                deadline,
                legacy_until,
                ..
            } => [
                self.live.next_deadline(),
                Some(*deadline),
                self.watchdog_at,
                *legacy_until,
                None,
                None,
                None,
                None,
                None,
                None,
            ],
            _ => return None,
        };
        deadlines.into_iter().flatten().min()
    }

    /// The flags of the periodic heartbeats now.
    pub fn heartbeat_flags(&self) -> u8 {
        let phase = self.compat_phase << crate::wire::COMPAT_PHASE_SHIFT;
        if self.candidate() {
            phase
        } else {
            phase | FLAG_STARTING
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
            managed: self.links.managed_vnis(),
            owned: self.owned.len(),
            active: crate::types::count_vnis(self.garps.active().keys()),
            missing: self.missing.len(),
            blocked: self.blocked.len(),
        }
    }

    fn start(&mut self, snap: Snapshot, now: Instant) {
        if self.phase != Phase::New {
            return;
        }
        self.phase = Phase::Running;
        if self.cfg.go_compat {
            self.live
                .presume_legacy_running_until(now + crate::wire::LEGACY_INTERVAL * 3 / 2);
            self.last_legacy = Some(now);
        }
        self.links.load(snap);
        // The socket was bound to the uplink by name just before this read.
        self.bound_uplink = self.links.uplink_index();
        // Protodown on everything we manage, before anything else.
        self.reconcile(now);
        let up = self.uplink_usable();
        self.readiness.start(now, up);
        if !up {
            warn!(ifname = ?self.links.uplink_name(), "uplink down at start: owning nothing until it is up");
        }
        self.next_resync = Some(now + self.cfg.resync);
        self.watchdog_at = self.watchdog.map(|w| now + w);
        if self.cfg.start_drained {
            self.readiness.drain();
            info!("started drained: owning nothing until `wmgwd2 undrain`");
            self.notify_ready("drained (--start-drained): owning nothing until undrained");
        } else if !up {
            self.notify_ready("waiting for the uplink");
        }
    }

    /// READY=1, once, with a status line.
    fn notify_ready(&mut self, status: &str) {
        if !self.notified_ready {
            self.notified_ready = true;
            self.effects.push_back(Effect::Notify(Notice::Ready));
            self.effects
                .push_back(Effect::Notify(Notice::Status(status.to_owned())));
        }
    }

    /// The status line for the service manager.
    fn status_line(&self) -> String {
        format!(
            "owning {} of {} VNIs, {} peers ready",
            self.owned.len(),
            self.cfg.vnis().len(),
            self.live.ready_peers().count()
        )
    }

    fn datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        ttl: Option<u8>,
        ifindex: Option<IfIndex>,
        own_sequence: u64,
        now: Instant,
    ) {
        self.stats.frames_received += 1;
        let Some(admit::Admitted { frame, ext, signed }) =
            self.admit(bytes, from, ttl, ifindex, now)
        else {
            return;
        };
        if self.legacy_twin(&frame, from) {
            return;
        }
        if signed && !self.fresh(&frame, &ext, own_sequence) {
            self.heard_pending(&frame, now);
            *self.stats.frames_rejected.entry("not_fresh").or_default() += 1;
            if self.logs.rejected.ready(now) {
                warn!(%from, reason = "not_fresh", "heartbeat rejected: it echoes none of our recent heartbeats (a replay, or a sender that has not heard us yet)");
            }
            return;
        }
        if matches!(frame, Frame::Legacy { .. }) {
            self.last_legacy = Some(now);
        }
        let obs = self.live.observe(&frame, from, now);
        trace!(from = %from, ?obs, "heartbeat");
        self.note(obs, from, now);
        if let Frame::Heartbeat(hb) = &frame {
            match obs {
                Observation::Echo => self.my_addr = Some(from),
                Observation::Conflict {
                    incarnation: Some(inc),
                    ..
                } => self.duplicate_uid(inc, from, hb.hold(), now),
                Observation::Stale { .. }
                | Observation::Refused { .. }
                | Observation::Left { .. } => {}
                _ => self.evidence_in(hb, &ext, now),
            }
            // A (re)started peer in its hold-down: we keep what it will own for now.
            if matches!(
                obs,
                Observation::Restarted { starting: true, .. }
                    | Observation::Joined { starting: true, .. }
            ) {
                self.reannounce_for(hb.uid, now);
            }
        }
        let view = matches!(self.phase, Phase::Leaving { .. }).then(|| self.view().digest);
        match &mut self.phase {
            Phase::Running if obs.changes_candidates() => {
                self.effects.push_back(Effect::HeartbeatNow);
                self.reassign(now, &obs.reason());
                self.reconcile(now);
            }
            Phase::Leaving { waiting, .. } => {
                // A peer confirms with a heartbeat sent once its kernel is done: one sent while it
                // was still applying our departure (SETTLING) does not count. A peer that leaves
                // too confirms nothing, but is no longer waited for.
                // Its VIEW (when it sends one) must also be ours: the candidates without us, so
                // that a heartbeat it sent before it read our step-back (the heartbeat task runs
                // beside its loop) does not count, nor one from a peer that still counts us or
                // someone else in (it would not have taken what we hand it).
                if let Frame::Heartbeat(hb) = frame {
                    let agrees = ext.view.is_none_or(|v| Some(v.digest) == view);
                    if hb.leaving() || (!hb.settling() && agrees) {
                        waiting.remove(&hb.uid);
                    }
                }
                self.leave_if_confirmed(now);
            }
            _ => {}
        }
        self.compat_step(now);
    }

    /// `--go-compat`: an 8-byte frame that is our own, looped back (from our own address), or
    /// the twin of a version-1 member's heartbeat (a gateway in this mode sends both): not news.
    fn legacy_twin(&self, frame: &Frame, from: SocketAddr) -> bool {
        let Frame::Legacy { uid } = *frame else {
            return false;
        };
        self.cfg.go_compat
            && ((uid == self.me && self.my_addr == Some(from))
                || self
                    .live
                    .peers()
                    .get(&uid)
                    .is_some_and(|p| p.incarnation.is_some()))
    }

    /// The kernel dropped datagrams on the heartbeat socket (a flood filled its buffer): any of
    /// them may have been a member's heartbeat, so every member counts as heard now. Under a
    /// flood nobody is expired on our side (no duplicates because we stopped hearing); a member
    /// that really dies meanwhile is expired once the drops stop (docs/security.md).
    fn socket_drops(&mut self, dropped: Option<u32>, now: Instant) {
        let Some(n) = dropped else {
            return;
        };
        let new = n.wrapping_sub(self.drops_seen);
        self.drops_seen = n;
        if new == 0 || new > u32::MAX / 2 {
            return;
        }
        self.stats.socket_drops += u64::from(new);
        self.live.heard_all(now);
        if self.logs.drops.ready(now) {
            warn!(
                dropped = new,
                total = self.stats.socket_drops,
                "heartbeat socket overflowing (a flood?): members count as heard while it lasts"
            );
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
                Change::Inactive(slot) => self.garps.inactive(slot),
                Change::AddressAdded(slot, ifindex) => self.garps.address_added(slot, ifindex, now),
                Change::RenamedOut(slot, ifindex) => {
                    if self.owned.contains(&slot.vni) {
                        warn!(vni = %slot.vni, family = %slot.family, %ifindex, "owned interface renamed out of the pattern: putting it down, then leaving it alone");
                        self.links.orphan(ifindex, slot);
                    }
                }
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
        if let (Some(every), Some(at)) = (self.watchdog, self.watchdog_at) {
            if at <= now {
                self.effects.push_back(Effect::Notify(Notice::Watchdog));
                self.watchdog_at = Some(now + every);
            }
        }
        let mut reassign: Option<String> = None;
        if self.phase == Phase::Running {
            if let Some(Transition::Ready) = self.readiness.poll(now) {
                info!(
                    peers = self.live.ready_peers().count(),
                    "hold-down over, taking ownership"
                );
                self.presume_starting_peers(now);
                reassign = Some("hold-down over".into());
                self.effects.push_back(Effect::HeartbeatNow);
            }
        }
        if self.presumed_until.is_some_and(|t| t <= now) {
            self.presumed_until = None;
            let late: Vec<Uid> = std::mem::take(&mut self.presumed)
                .into_iter()
                .filter(|u| self.live.starting_peers().any(|s| s == *u))
                .collect();
            if !late.is_empty() {
                info!(
                    peers = ?late.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                    "peers that started with us are not ready yet: taking their shares"
                );
                reassign = Some("starting peers not ready in time".into());
            }
        }
        if self.yield_until.is_some_and(|t| t <= now) {
            self.yield_until = None;
            info!(
                "no frame with our uid from a later process for its hold time: a candidate again"
            );
            reassign = Some("duplicate uid gone".into());
            self.effects.push_back(Effect::HeartbeatNow);
        }
        // Our own stall is not everyone else's death: a deadline acted on a whole hold time late
        // means this loop (or its host) was held up for that long, and heard nobody meanwhile
        // (what was queued has just been read). Peers that were held up with us sent nothing
        // either; every member gets one whole hold time from now to be heard before anyone is
        // expired. A member that really died is then found that much later, once.
        {
            let late = self.live.overdue(now);
            if late >= self.cfg.hold() {
                self.live.renew_all(now);
                self.stats.late_wakes += 1;
                if self.logs.lines.allow(now, &mut self.stats) {
                    warn!(
                        late_ms = late.as_millis() as u64,
                        "this gateway acted on a deadline later than its hold time (its process or host was held up): every member gets a hold time from now to be heard"
                    );
                }
            }
        }
        let gone = self.live.expire(now);
        let promoted = self.live.promote(now);
        if !gone.is_empty() || !promoted.is_empty() {
            self.advert_dirty = true;
        }
        for uid in &promoted {
            if self.logs.lines.allow(now, &mut self.stats) {
                info!(peer = %uid, "legacy peer ready (its start-up is over)");
            }
        }
        for uid in &gone {
            self.unseen_by.remove(uid);
            self.heard_indirectly_by.remove(uid);
            self.split_with.remove(uid);
            self.peer_blocked.remove(uid);
            if self.logs.lines.allow(now, &mut self.stats) {
                info!(peer = %uid, "peer dead");
            }
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
        if !gone.is_empty() || !promoted.is_empty() {
            let why: Vec<String> = gone
                .iter()
                .map(|u| format!("peer {u} dead"))
                .chain(promoted.iter().map(|u| format!("peer {u} ready")))
                .collect();
            reassign = Some(why.join(", "));
            self.effects.push_back(Effect::HeartbeatNow);
        }
        let reassigned = reassign.is_some();
        if let Some(why) = reassign {
            self.reassign(now, &why);
        }
        let mut retry = self.backoff.due(now);
        if self.rebind_after.is_some_and(|t| t <= now) {
            self.rebind_after = None;
            self.check_uplink(now);
            retry = true;
        }
        if reassigned || retry {
            self.reconcile(now);
            if self.readiness.ready() {
                let status = self.status_line();
                self.notify_ready(&status);
            }
        } else {
            self.send_due_garps(now);
        }
        if self.next_resync.is_some_and(|t| t <= now) {
            self.next_resync = Some(now + self.cfg.resync);
            self.effects.push_back(Effect::Resync);
        }
        self.compat_step(now);
    }
}
