//! The core's vocabulary: what goes in ([`Input`], [`Command`]), what comes out ([`Effect`]), and
//! what it reports ([`Stats`], [`Status`], [`Exit`]). Pure data.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::garp::Announcement;
use crate::kernel::KernelError;
use crate::links::{KernelEvent, Snapshot};
use crate::reconcile::{FdbFlush, Protodown};
use crate::types::{IfIndex, Slot, Vni};

/// Something that happened, fed to `Core::handle` with the time it happened.
#[derive(Debug)]
pub enum Input<'a> {
    /// The first read of the kernel: the core puts every managed interface down and starts its
    /// hold-down.
    Start(Snapshot),
    /// One datagram on the heartbeat socket, with its IP TTL and the interface it came in on
    /// when the kernel said.
    Datagram {
        bytes: &'a [u8],
        from: SocketAddr,
        ttl: Option<u8>,
        ifindex: Option<IfIndex>,
        /// The socket's running count of dropped datagrams (a full receive buffer).
        dropped: Option<u32>,
        /// The sequence number of our latest heartbeat (the heartbeat task's counter): what a
        /// signed frame's ECHO of us is checked against (freshness).
        own_sequence: u64,
    },
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
    /// `Core::next_deadline` has come.
    Timer,
    /// The result of [`Effect::RebindSocket`].
    Rebound(Result<(), String>),
    /// This gateway sent no heartbeat for `silent`, longer than its hold time (its process or
    /// host was stalled): its peers may have expired it and taken its VNIs.
    LocalStall { silent: std::time::Duration },
    /// The worst delay of our own periodic heartbeats against their slots lately (the host's
    /// scheduling delays as the heartbeat thread sees them): the hold time we ask for covers it.
    SendLag(std::time::Duration),
    /// An operator's command.
    Command(Command),
}

/// Commands from outside (signals today; a control socket later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Leave gracefully: announce it, wait for the peers to take over, put everything down, exit.
    Stop,
    /// Hand every VNI over as a stop does, but stay: heartbeating, a member, not a candidate.
    Drain,
    /// Be a candidate again, through a hold-down.
    Undrain,
}

/// What the shell made of an [`Effect::SendGarps`].
#[derive(Debug, Default)]
pub struct GarpReport {
    /// Frames sent.
    pub sent: u64,
    /// Frames that failed, with the error.
    pub failed: Vec<(Slot, IpAddr, KernelError)>,
    /// Announcements not (completely) sent because the socket was full: from the first one
    /// blocked to the end of the list.
    pub unsent: Vec<Announcement>,
}

/// Something for the shell to do, in the order queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Set or release protodown; report with [`Input::Applied`].
    SetProtodown(Vec<Protodown>),
    /// Protodown on with our reason bit cleared (`--go-compat`'s stop: the Go original can take
    /// these interfaces over); report with [`Input::Applied`].
    HandBack(Vec<Protodown>),
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
    /// Bind a new heartbeat socket to the uplink (`--bind-interface`), which was created again
    /// under a new index, and send and receive on it from now on; report with [`Input::Rebound`].
    RebindSocket,
    /// Have the heartbeat task send a heartbeat at once, with `Core::heartbeat_flags` as they
    /// are once this input's effects are done.
    HeartbeatNow,
    /// Stop the periodic heartbeats (no heartbeat may follow our LEAVING).
    StopBeacon,
    /// Send one heartbeat with these flags from the shell itself.
    SendHeartbeat { flags: u8 },
    /// Tell the service manager (systemd's sd_notify).
    Notify(Notice),
    /// The stop is complete: exit.
    Exit(Exit),
}

/// What the service manager is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Started: the first reconcile after the hold-down is done (or the uplink is down and the
    /// daemon waits for it). `READY=1`.
    Ready,
    /// One line of state for `systemctl status`. `STATUS=…`.
    Status(String),
    /// The graceful stop began. `STOPPING=1`.
    Stopping,
    /// The event loop is making progress. `WATCHDOG=1`.
    Watchdog,
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Managed interfaces that could not be put down (empty: a clean stop).
    pub still_up: Vec<Slot>,
}

/// Counters, logged at a stop and on demand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub frames_received: u64,
    pub frames_malformed: BTreeMap<&'static str, u64>,
    pub frames_stale: u64,
    /// Frames dropped by policy, by reason (`ttl`: routed, not from the segment; `interface`:
    /// arrived on a gateway interface).
    pub frames_rejected: BTreeMap<&'static str, u64>,
    /// Frames of unknown UIDs kept out of the peer table, by reason (`table_full`, `join_rate`).
    pub frames_refused: BTreeMap<&'static str, u64>,
    /// LEAVINGs contradicted by the same process's later heartbeat (forged or replayed).
    pub leaves_refuted: u64,
    /// Membership and ownership log lines left out by the rate limit.
    pub log_lines_suppressed: u64,
    pub uid_conflicts: u64,
    /// One-way loss seen: peers kept alive only through other members (`in`), peers that hear
    /// us only through others or not at all (`out`).
    pub one_way_in: u64,
    pub one_way_out: u64,
    /// Peers whose candidate set differed from ours for longer than a few intervals.
    pub split_views: u64,
    /// Changes of what this gateway owns, by kind of reason (`peer_joined`, `peer_dead`, …).
    pub ownership_changes: BTreeMap<&'static str, u64>,
    /// Datagrams the kernel dropped on the heartbeat socket (its receive buffer was full).
    pub socket_drops: u64,
    /// Stalls of this gateway longer than its hold time (see `Input::LocalStall`).
    pub local_stalls: u64,
    /// Deadlines acted on a hold time or more late (see `Core::timer`): every member was given
    /// a hold time from then to be heard.
    pub late_wakes: u64,
    pub heartbeats_sent: u64,
    pub send_errors: u64,
    pub actions_applied: u64,
    pub actions_failed: u64,
    pub garps_sent: u64,
    pub garp_errors: u64,
    pub resyncs: u64,
}

/// One change of what this gateway owns, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipChange {
    pub at: std::time::Instant,
    pub taken: Vec<Vni>,
    pub released: Vec<Vni>,
    pub reason: String,
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
