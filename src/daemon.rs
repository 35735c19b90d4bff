//! The async shell around [`Core`]: it waits on the heartbeat socket, the kernel's events, the
//! core's next deadline, the shutdown token and status requests; feeds what happened to the core;
//! and carries out the core's effects in order, through the [`Kernel`] boundary and the sockets.
//! It decides nothing. Heartbeats go out from a second, small task (the [`Beacon`]), so that a
//! long kernel request never delays one past the peers' deadline; the core only says which flags
//! they carry and when to send one at once. See docs/architecture.md.

use std::future::pending;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::announce::{self, heartbeat_socket, Received};
use crate::auth::Keys;
use crate::beacon::{now, Beacon, BeaconShared};
use crate::cli::Config;
use crate::control::{Pending, Request};
use crate::core::{Command, Core, Effect, Exit, GarpReport, Input, Stats};
use crate::garp::{self, Announcement};
use crate::kernel::{EventSource, Kernel, KernelError};
use crate::metrics::{Scrape, ShellFacts};
pub use crate::notify::{NoNotifier, Notifier, SdNotifier};
use crate::types::{IfIndex, Uid};
use crate::wire::{self, Heartbeat};

/// At most this many queued datagrams are read before a timer is handled (heartbeats that arrived
/// while the loop was busy must be seen before anyone is declared dead; a flood must not keep the
/// loop from its timers).
const READ_QUEUED_MAX: usize = 1024;
/// At most one line per this period for a failing receive or send.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Errors that end the daemon with a failure.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("reading interfaces from the kernel: {0}")]
    Snapshot(#[source] KernelError),
    #[error("stopped with {} managed interfaces still up: {}", .still_up.len(), .still_up.join(","))]
    StopIncomplete { still_up: Vec<String> },
}

/// The shell: the core, the kernel, and what the loop needs between two inputs.
pub struct Daemon<K: Kernel> {
    cfg: Config,
    me: Uid,
    incarnation: u64,
    kernel: K,
    core: Core,
    /// Requests for a status line (SIGUSR1 in `main`).
    status_requests: Option<mpsc::UnboundedReceiver<()>>,
    shared: Arc<BeaconShared>,
    beacon: Option<JoinHandle<()>>,
    /// The beacon's worst recent send delay as last handed to the core.
    fed_lag: Duration,
    last_recv_log: Option<Instant>,
    /// Makes a new heartbeat socket (the uplink was created again under a new index).
    new_socket: SocketFactory,
    /// Tells the service manager (nothing, unless `main` installs systemd's).
    notifier: Box<dyn Notifier>,
    keys: Option<Arc<Keys>>,
    /// Requests from the control socket (`wmgwd2 status`).
    control: Option<mpsc::Receiver<Pending>>,
    /// Scrapes of `/metrics`, and what the shell measures for them.
    metrics: Option<mpsc::Receiver<Scrape>>,
    facts: ShellFacts,
}

/// How the shell makes a heartbeat socket again: by default as `main` made the first one.
pub type SocketFactory = Box<dyn Fn() -> Result<UdpSocket, String>>;

async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => pending().await,
    }
}

/// A document for the control socket, one per answer.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    json + "\n"
}

async fn recv_opt_chan<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
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
    pub fn new(cfg: Config, me: Uid, incarnation: u64, kernel: K) -> Self {
        let socket_spec = announce::SocketSpec::of(&cfg);
        Daemon {
            core: Core::new(cfg.clone(), me, incarnation),
            cfg,
            me,
            incarnation,
            kernel,
            status_requests: None,
            shared: Arc::default(),
            beacon: None,
            fed_lag: Duration::ZERO,
            last_recv_log: None,
            new_socket: Box::new(move || heartbeat_socket(&socket_spec).map_err(|e| e.to_string())),
            notifier: Box::new(NoNotifier),
            keys: None,
            control: None,
            metrics: None,
            facts: ShellFacts::default(),
        }
    }

    /// Answer the scrapes that arrive on `rx` (see [`crate::metrics::listen`]).
    pub fn with_metrics(mut self, rx: mpsc::Receiver<Scrape>) -> Self {
        self.metrics = Some(rx);
        self
    }

    /// Answer the requests that arrive on `rx` (see [`crate::control::listen`]).
    pub fn with_control(mut self, rx: mpsc::Receiver<Pending>) -> Self {
        self.control = Some(rx);
        self
    }

    /// The state as `wmgwd2 status` shows it.
    fn report(&self) -> crate::status::Report {
        self.core
            .report(now(), self.incarnation, &self.sent_stats())
    }

    /// The report without its per-VNI list (what `/metrics` uses).
    fn report_totals(&self) -> crate::status::Report {
        self.core
            .report_totals(now(), self.incarnation, &self.sent_stats())
    }

    fn sent_stats(&self) -> Stats {
        Stats {
            heartbeats_sent: self.shared.sent.load(Ordering::Relaxed),
            send_errors: self.shared.errors.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }

    /// Sign our heartbeats with the first key and verify every frame (`--key-file`).
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.core = self.core.with_keys(Some(keys.clone()));
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Where to tell the service manager about readiness, state, the stop and progress.
    pub fn with_notifier(mut self, n: Box<dyn Notifier>) -> Self {
        self.notifier = n;
        self
    }

    /// Watchdog keep-alives every `every`, from the event loop (see [`Core::with_watchdog`]).
    pub fn with_watchdog(mut self, every: Duration) -> Self {
        self.core = self.core.with_watchdog(every);
        self
    }

    /// Replaces how a new heartbeat socket is made when the uplink must be bound again.
    pub fn with_socket_factory(mut self, f: SocketFactory) -> Self {
        self.new_socket = f;
        self
    }

    /// Every `()` received on `rx` logs the daemon's state at info (see [`Self::log_status`]).
    pub fn with_status_requests(mut self, rx: mpsc::UnboundedReceiver<()>) -> Self {
        self.status_requests = Some(rx);
        self
    }

    /// One line with the membership, the ownership and the counters.
    pub fn log_status(&self) {
        let s = self.core.status();
        let mut st = self.core.stats().clone();
        st.heartbeats_sent = self.shared.sent.load(Ordering::Relaxed);
        st.send_errors = self.shared.errors.load(Ordering::Relaxed);
        info!(
            uid = %self.me,
            ready = s.ready,
            uplink_up = s.uplink_up,
            peers = %s.peers.join(","),
            managed = s.managed,
            owned = s.owned,
            active = s.active,
            missing = s.missing,
            blocked = s.blocked,
            counters = %st.summary(),
            "status"
        );
    }

    /// Runs until `shutdown` is cancelled, then leaves gracefully (see docs/operations.md).
    pub async fn run(
        mut self,
        socket: UdpSocket,
        mut events: impl EventSource,
        shutdown: CancellationToken,
    ) -> Result<Stats, DaemonError> {
        let mut socket = Arc::new(socket);
        let snap = self
            .kernel
            .snapshot()
            .await
            .map_err(DaemonError::Snapshot)?;
        // Every managed interface down before the first heartbeat.
        self.core.handle(Input::Start(snap), now());
        if let Some(exit) = self.execute(&mut socket).await {
            return self.exit(exit);
        }
        let s = self.core.status();
        info!(uid = %self.me, managed = s.managed, missing = s.missing, "started, all managed interfaces protodown");
        self.beacon = Some(tokio::spawn(self.beacon_for(&socket).run()));

        let mut events_open = true;
        let mut stopping = false;
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut status = self.status_requests.take();
        let mut control = self.control.take();
        let mut metrics = self.metrics.take();
        loop {
            let deadline = self.core.next_deadline();
            // Its own handle: an effect may replace the socket (a rebind).
            let sock = socket.clone();
            // Not `biased`: a flood of datagrams must not starve the timers.
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    // Heartbeats already queued were sent before our LEAVING: they confirm nothing.
                    self.read_queued(&sock, &mut buf);
                    self.input(Input::Command(Command::Stop), now());
                }
                r = announce::recv(&sock, &mut buf) => match r {
                    Ok(got) => self.feed(&buf, got),
                    Err(e) => {
                        let t = now();
                        if self.last_recv_log.is_none_or(|l| t >= l + LOG_EVERY) {
                            self.last_recv_log = Some(t);
                            warn!(error = %e, "heartbeat receive failed");
                        }
                    }
                },
                batch = events.next_batch(), if events_open => match batch {
                    Some(batch) => self.input(Input::Kernel(batch), now()),
                    None => {
                        error!("kernel event stream ended; relying on periodic resync");
                        events_open = false;
                    }
                },
                _ = sleep_opt(deadline) => {
                    self.read_queued(&sock, &mut buf);
                    self.input(Input::Timer, now());
                }
                // The beacon found itself stalled: handled below, after this select.
                _ = self.shared.stall_notice.notified() => {}
                Some(()) = recv_opt(&mut status) => self.log_status(),
                Some(reply) = recv_opt_chan(&mut metrics) => {
                    self.facts.heartbeat_lag =
                        Duration::from_micros(self.shared.lag_us.load(Ordering::Relaxed));
                    let _ = reply.send(crate::metrics::render(&self.report_totals(), &self.facts));
                }
                Some((request, reply)) = recv_opt_chan(&mut control) => match request {
                    Request::Status => {
                        let _ = reply.send(to_json(&self.report()));
                    }
                    Request::Plan { without, with } => {
                        let _ = reply.send(to_json(&self.core.plan(&without, &with)));
                    }
                    Request::Drain | Request::Undrain => {
                        let command = if request == Request::Drain {
                            Command::Drain
                        } else {
                            Command::Undrain
                        };
                        // Heartbeats already queued were sent before the drain: they confirm
                        // nothing.
                        self.read_queued(&sock, &mut buf);
                        self.input(Input::Command(command), now());
                        let state = self.report().gateway.state;
                        let _ = reply.send(to_json(&serde_json::json!({ "state": state })));
                    }
                },
            }
            let lag = Duration::from_micros(self.shared.worst_lag_us.load(Ordering::Relaxed));
            if lag != self.fed_lag {
                self.fed_lag = lag;
                self.input(Input::SendLag(lag), now());
            }
            if self.shared.stalled.load(Ordering::Relaxed) {
                // What the peers sent while we were stalled tells whether they expired us.
                self.read_queued(&sock, &mut buf);
                let ms = self.shared.stall_ms.swap(0, Ordering::Relaxed);
                let silent = Duration::from_millis(ms);
                self.input(Input::LocalStall { silent }, now());
                // The flags say what the core decided before the beacon, waiting for it, sends
                // again (the kernel work of a release comes after).
                self.shared
                    .flags
                    .store(self.core.heartbeat_flags(), Ordering::Relaxed);
                self.shared.stalled.store(false, Ordering::Relaxed);
                self.shared.now.notify_one();
            }
            if let Some(exit) = self.execute(&mut socket).await {
                return self.exit(exit);
            }
        }
    }

    /// Hands the core one input from the loop. Heartbeats say SETTLING from here until the
    /// effects are carried out (`execute` clears it): the heartbeat thread runs beside the loop,
    /// and a heartbeat it sent between the core's decision to take over and the kernel's
    /// acknowledgement must not confirm that takeover to a draining or leaving peer.
    fn input(&mut self, input: Input, at: Instant) {
        self.shared.busy.store(true, Ordering::Relaxed);
        self.core.handle(input, at);
    }

    /// Feeds the datagrams already queued on the socket, at most [`READ_QUEUED_MAX`].
    fn read_queued(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..READ_QUEUED_MAX {
            let Ok(got) = announce::try_recv(socket, buf) else {
                break;
            };
            self.feed(buf, got);
        }
    }

    fn feed(&mut self, buf: &[u8], got: Received) {
        let input = Input::Datagram {
            bytes: &buf[..got.len.min(buf.len())],
            from: got.from,
            ttl: got.ttl,
            ifindex: got.ifindex,
            dropped: got.dropped,
            own_sequence: self.shared.sequence.load(Ordering::Relaxed),
        };
        self.input(input, now());
    }

    /// Carries out the core's effects in order, feeding back their results, until none is left;
    /// then sets the heartbeat flags. Heartbeats sent meanwhile say SETTLING.
    async fn execute(&mut self, socket: &mut Arc<UdpSocket>) -> Option<Exit> {
        let mut heartbeat_now = false;
        self.shared.busy.store(true, Ordering::Relaxed);
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::SetProtodown(changes) => {
                    let req: Vec<(IfIndex, bool)> =
                        changes.iter().map(|c| (c.ifindex, c.on)).collect();
                    let started = now();
                    let results = self.kernel.set_protodown(&req).await;
                    self.facts.last_reconcile = now().saturating_duration_since(started);
                    self.core.handle(Input::Applied { changes, results }, now());
                }
                Effect::HandBack(changes) => {
                    let req: Vec<IfIndex> = changes.iter().map(|c| c.ifindex).collect();
                    let results = self.kernel.hand_back(&req).await;
                    self.core.handle(Input::Applied { changes, results }, now());
                }
                Effect::FlushFdb(flushes) => {
                    let results = self.kernel.flush_fdb(&flushes).await;
                    self.core
                        .handle(Input::FdbFlushed { flushes, results }, now());
                }
                Effect::FlushNeighbours(ifindexes) => {
                    let result = self.kernel.flush_neighbours(&ifindexes).await;
                    let interfaces = ifindexes.len();
                    self.core
                        .handle(Input::NeighboursFlushed { interfaces, result }, now());
                }
                Effect::SendGarps(list) => {
                    let report = self.send_garps(list);
                    self.core.handle(Input::GarpsSent(report), now());
                }
                Effect::Resync => {
                    let snap = self.kernel.snapshot().await;
                    if snap.is_ok() {
                        self.facts.last_resync_unix = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0);
                    }
                    self.core.handle(Input::Snapshot(snap), now());
                }
                Effect::HeartbeatNow => heartbeat_now = true,
                Effect::StopBeacon => {
                    if let Some(b) = self.beacon.take() {
                        b.abort();
                        let _ = b.await;
                    }
                }
                Effect::SendHeartbeat { flags } => {
                    self.beacon_for(socket).send(flags).await;
                }
                Effect::Notify(notice) => self.notifier.notify(&notice),
                Effect::RebindSocket => {
                    let result = (self.new_socket)().map(|new| {
                        *socket = Arc::new(new);
                        // The heartbeat task sends on the new socket from now on.
                        if let Some(b) = self.beacon.take() {
                            b.abort();
                            self.beacon = Some(tokio::spawn(self.beacon_for(socket).run()));
                        }
                    });
                    self.core.handle(Input::Rebound(result), now());
                }
                Effect::Exit(exit) => {
                    self.shared.busy.store(false, Ordering::Relaxed);
                    return Some(exit);
                }
            }
        }
        self.shared.busy.store(false, Ordering::Relaxed);
        // Only now, after this input's changes: a ready heartbeat follows our takeover.
        self.shared
            .flags
            .store(self.core.heartbeat_flags(), Ordering::Relaxed);
        self.publish_advert();
        if heartbeat_now {
            self.shared.now.notify_one();
        }
        None
    }

    /// Hands the heartbeat task what the next heartbeats carry, if it changed.
    fn publish_advert(&mut self) {
        if let Some(advert) = self.core.take_advert() {
            if let Ok(mut slot) = self.shared.advert.lock() {
                *slot = Some(Arc::new(advert));
            }
        }
    }

    /// Sends the announcements until the socket is full; reports what was sent, what failed and
    /// what is left.
    fn send_garps(&self, list: Vec<Announcement>) -> GarpReport {
        let mut report = GarpReport::default();
        let mut list = list.into_iter();
        while let Some(a) = list.next() {
            let mut blocked = false;
            for &ip in &a.ips {
                let frame = garp::announcement(a.mac, ip);
                match self.kernel.send_frame(a.ifindex, frame.as_ref()) {
                    Ok(()) => {
                        report.sent += 1;
                        debug!(vni = %a.slot.vni, ifname = %self.cfg.ifname(a.slot), %ip, remaining = a.remaining, "garp sent");
                    }
                    Err(KernelError::Send { source, .. })
                        if source.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        blocked = true;
                        break;
                    }
                    Err(e) => report.failed.push((a.slot, ip, e)),
                }
            }
            if blocked {
                report.unsent.push(a);
                report.unsent.extend(list);
                break;
            }
        }
        report
    }

    fn exit(self, exit: Exit) -> Result<Stats, DaemonError> {
        let mut stats = self.core.stats().clone();
        stats.heartbeats_sent = self.shared.sent.load(Ordering::Relaxed);
        stats.send_errors = self.shared.errors.load(Ordering::Relaxed);
        if exit.still_up.is_empty() {
            Ok(stats)
        } else {
            Err(DaemonError::StopIncomplete {
                still_up: exit.still_up.iter().map(|&s| self.cfg.ifname(s)).collect(),
            })
        }
    }

    fn beacon_for(&self, socket: &Arc<UdpSocket>) -> Beacon {
        Beacon {
            socket: socket.clone(),
            to: self
                .cfg
                .destinations()
                .into_iter()
                .map(|d| announce::destination(d, self.cfg.heartbeat_v6()))
                .collect(),
            template: Heartbeat {
                uid: self.me,
                incarnation: self.incarnation,
                sequence: 0,
                flags: 0,
                interval_ms: u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX),
                hold_ms: u32::try_from(self.cfg.hold().as_millis()).unwrap_or(u32::MAX),
            },
            interval: self.cfg.interval,
            keys: self.keys.clone(),
            shared: self.shared.clone(),
            legacy: self.cfg.go_compat.then_some(wire::LEGACY_DESTINATION),
        }
    }
}
