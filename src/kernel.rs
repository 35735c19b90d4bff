//! The boundary to the kernel: the [`Kernel`] trait, its events and errors, and [`FakeKernel`], a
//! public in-memory implementation for tests of the daemon loop without root.
//!
//! The real implementation is [`crate::sys::NetlinkKernel`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::links::{Addresses, LinkState};
pub use crate::links::{KernelEvent, Snapshot};
use crate::reconcile::FdbFlush;
use crate::types::IfIndex;

/// The request or dump a [`KernelError`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOp {
    LinkDump,
    AddressDump,
    NeighbourDump,
    Protodown,
    NeighbourFlush,
    FdbFlush,
}

impl std::fmt::Display for KernelOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelOp::LinkDump => "link dump",
            KernelOp::AddressDump => "address dump",
            KernelOp::NeighbourDump => "neighbour dump",
            KernelOp::Protodown => "protodown",
            KernelOp::NeighbourFlush => "neighbour flush",
            KernelOp::FdbFlush => "fdb flush",
        })
    }
}

/// Errors at the kernel boundary. Per-interface errors are logged and retried by the daemon.
///
/// `NoDevice`, `Busy` and `NotSupported` are the kernel's answers to a protodown request that the
/// daemon tells apart; any other refusal, of any request, is `Errno`.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("packet socket: {0}")]
    PacketSocket(#[source] std::io::Error),
    /// Protodown of a link that does not exist (ENODEV).
    #[error("protodown on interface {ifindex}: no such interface")]
    NoDevice { ifindex: IfIndex },
    /// Our protodown reason bit is released, but another reason still holds the link down
    /// (EBUSY).
    #[error("protodown on interface {ifindex}: held by another reason")]
    Busy { ifindex: IfIndex },
    /// The link's driver has no protodown (EOPNOTSUPP).
    #[error("protodown on interface {ifindex}: not supported by the device")]
    NotSupported { ifindex: IfIndex },
    /// The kernel refused one request about one interface; `source` carries its errno
    /// (`raw_os_error`).
    #[error("{op} on interface {ifindex}: {source}")]
    Errno {
        op: KernelOp,
        ifindex: IfIndex,
        #[source]
        source: std::io::Error,
    },
    /// The exchange with the kernel failed: a send or receive error, no answer in time, or a dump
    /// the kernel ended with an error. `ifindex` is the request's interface (none for a dump).
    #[error("{op}{}: {source}", on_interface(*.ifindex))]
    Netlink {
        op: KernelOp,
        ifindex: Option<IfIndex>,
        #[source]
        source: std::io::Error,
    },
    /// Every attempt at a dump was interrupted by changes made meanwhile (NLM_F_DUMP_INTR).
    #[error("{op}: interrupted by concurrent changes {attempts} times in a row")]
    DumpInterrupted { op: KernelOp, attempts: u32 },
    #[error("sending on interface {ifindex}: {source}")]
    Send {
        ifindex: IfIndex,
        #[source]
        source: std::io::Error,
    },
}

fn on_interface(ifindex: Option<IfIndex>) -> String {
    ifindex.map_or_else(String::new, |i| format!(" on interface {i}"))
}

impl KernelError {
    /// A short constant label for counters and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            KernelError::Socket(_) => "socket",
            KernelError::PacketSocket(_) => "packet_socket",
            KernelError::NoDevice { .. } => "no_device",
            KernelError::Busy { .. } => "busy",
            KernelError::NotSupported { .. } => "not_supported",
            KernelError::Errno { .. } => "errno",
            KernelError::Netlink { .. } => "netlink",
            KernelError::DumpInterrupted { .. } => "dump_interrupted",
            KernelError::Send { .. } => "send",
        }
    }
}

/// What the daemon needs from the kernel. Events arrive separately, on the receiver handed out
/// with the implementation.
pub trait Kernel {
    /// Reads every link and address (IPv4 and IPv6).
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, KernelError>>;
    /// For every `(ifindex, on)`: sets (`on`) or releases our protodown reason bit and the
    /// protodown flag of that link. One result per change, in order.
    fn set_protodown(
        &self,
        changes: &[(IfIndex, bool)],
    ) -> impl Future<Output = Vec<Result<(), KernelError>>>;
    /// For every link: protodown **on**, our protodown reason bit **cleared** (`--go-compat`'s
    /// stop): down, but with no reason bit of ours left behind, so that the Go original, which
    /// never sends a reason, can clear protodown again when it takes the gateway over. One result
    /// per link, in order.
    fn hand_back(
        &self,
        ifindexes: &[IfIndex],
    ) -> impl Future<Output = Vec<Result<(), KernelError>>>;
    /// Deletes the dynamic IPv4 neighbour entries of these links (entries left unresolved while a
    /// link was protodown delay the first replies after a takeover by a full ARP retry, ~1 s).
    /// Returns how many were deleted.
    fn flush_neighbours(
        &self,
        ifindexes: &[IfIndex],
    ) -> impl Future<Output = Result<usize, KernelError>>;
    /// Removes MACs from bridge forwarding databases; an entry that is not there is no error.
    fn flush_fdb(&self, flushes: &[FdbFlush])
        -> impl Future<Output = Vec<Result<(), KernelError>>>;
    /// Sends one Ethernet frame out of one link.
    fn send_frame(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError>;
}

/// Where kernel events come from.
pub trait EventSource {
    /// Waits for the next event, then returns it with every other event already queued, so that
    /// the daemon plans against the kernel's latest word. `None`: the source is gone.
    fn next_batch(&mut self) -> impl Future<Output = Option<Vec<KernelEvent>>>;
}

impl EventSource for mpsc::UnboundedReceiver<KernelEvent> {
    async fn next_batch(&mut self) -> Option<Vec<KernelEvent>> {
        let first = self.recv().await?;
        let mut out = vec![first];
        while let Ok(ev) = self.try_recv() {
            out.push(ev);
        }
        Some(out)
    }
}

/// An in-memory kernel: links whose protodown follows the requests, events on a channel, and a
/// record of every frame sent. For tests; it needs no privileges.
#[derive(Debug)]
pub struct FakeKernel {
    reason_bit: u8,
    links: RefCell<BTreeMap<IfIndex, LinkState>>,
    addrs: RefCell<Addresses>,
    sent: RefCell<Vec<(IfIndex, Vec<u8>)>>,
    flushed: RefCell<Vec<FdbFlush>>,
    neigh_flushed: RefCell<Vec<IfIndex>>,
    events: mpsc::UnboundedSender<KernelEvent>,
}

impl FakeKernel {
    pub fn new(reason_bit: u8) -> (FakeKernel, mpsc::UnboundedReceiver<KernelEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let k = FakeKernel {
            reason_bit,
            links: RefCell::default(),
            addrs: RefCell::default(),
            sent: RefCell::default(),
            flushed: RefCell::default(),
            neigh_flushed: RefCell::default(),
            events: tx,
        };
        (k, rx)
    }

    /// Adds or replaces a link (as if created by hand) and reports it.
    pub fn put_link(&self, link: LinkState, addrs: Vec<Ipv4Addr>) {
        self.put_link_with(link, addrs.into_iter().map(IpAddr::V4).collect());
    }

    /// [`FakeKernel::put_link`] with addresses of either family.
    pub fn put_link_with(&self, link: LinkState, addrs: Vec<IpAddr>) {
        self.addrs.borrow_mut().insert(link.ifindex, addrs);
        self.links.borrow_mut().insert(link.ifindex, link.clone());
        let _ = self.events.send(KernelEvent::Link(link));
    }

    /// Changes a link with `f` and reports it.
    pub fn edit_link(&self, ifindex: IfIndex, f: impl FnOnce(&mut LinkState)) {
        let changed = {
            let mut links = self.links.borrow_mut();
            links.get_mut(&ifindex).map(|l| {
                f(l);
                l.clone()
            })
        };
        if let Some(l) = changed {
            let _ = self.events.send(KernelEvent::Link(l));
        }
    }

    pub fn link(&self, ifindex: IfIndex) -> Option<LinkState> {
        self.links.borrow().get(&ifindex).cloned()
    }

    /// Every FDB flush requested so far.
    pub fn take_flushed(&self) -> Vec<FdbFlush> {
        std::mem::take(&mut self.flushed.borrow_mut())
    }

    /// Every interface whose neighbours were flushed so far.
    pub fn take_neighbour_flushes(&self) -> Vec<IfIndex> {
        std::mem::take(&mut self.neigh_flushed.borrow_mut())
    }

    /// Every frame sent so far, with its interface.
    pub fn take_sent(&self) -> Vec<(IfIndex, Vec<u8>)> {
        std::mem::take(&mut self.sent.borrow_mut())
    }
}

impl Kernel for FakeKernel {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        Ok(Snapshot {
            links: self.links.borrow().values().cloned().collect(),
            addrs: self.addrs.borrow().clone(),
        })
    }

    async fn set_protodown(&self, changes: &[(IfIndex, bool)]) -> Vec<Result<(), KernelError>> {
        changes
            .iter()
            .map(|&(ifindex, on)| self.set_one(ifindex, on))
            .collect()
    }

    async fn hand_back(&self, ifindexes: &[IfIndex]) -> Vec<Result<(), KernelError>> {
        let ours = 1u32 << self.reason_bit;
        ifindexes
            .iter()
            .map(|&ifindex| {
                if self.link(ifindex).is_none() {
                    return Err(KernelError::NoDevice { ifindex });
                }
                self.edit_link(ifindex, |l| {
                    l.reason &= !ours;
                    l.protodown = true;
                    l.carrier = false;
                });
                Ok(())
            })
            .collect()
    }

    async fn flush_neighbours(&self, ifindexes: &[IfIndex]) -> Result<usize, KernelError> {
        self.neigh_flushed.borrow_mut().extend_from_slice(ifindexes);
        Ok(0)
    }

    async fn flush_fdb(&self, flushes: &[FdbFlush]) -> Vec<Result<(), KernelError>> {
        self.flushed.borrow_mut().extend_from_slice(flushes);
        flushes.iter().map(|_| Ok(())).collect()
    }

    fn send_frame(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError> {
        self.sent.borrow_mut().push((ifindex, frame.to_vec()));
        Ok(())
    }
}

impl FakeKernel {
    fn set_one(&self, ifindex: IfIndex, on: bool) -> Result<(), KernelError> {
        if self.link(ifindex).is_none() {
            return Err(KernelError::NoDevice { ifindex });
        }
        let ours = 1u32 << self.reason_bit;
        let mut result = Ok(());
        self.edit_link(ifindex, |l| {
            if on {
                l.reason |= ours;
            } else {
                l.reason &= !ours;
            }
            if !on && l.reason != 0 {
                result = Err(KernelError::Busy { ifindex });
                return;
            }
            l.protodown = on;
            l.carrier = !on;
            l.running = !on;
        });
        result
    }
}
