//! The real [`Kernel`]: rtnetlink for links, addresses and protodown; one AF_PACKET socket for
//! gratuitous ARPs. The only module that needs CAP_NET_ADMIN and CAP_NET_RAW.
//!
//! - `transport`: the request socket (batched acknowledged requests, streamed dumps);
//! - `msg`: translation between rtnetlink messages and the daemon's types (no sockets);
//! - `events`: the multicast event socket, [`NetlinkEvents`];
//! - `packet`: the AF_PACKET socket for GARPs;
//! - here: [`NetlinkKernel`], which ties them together.

use std::io;

use netlink_packet_route::RouteNetlinkMessage;

mod events;
#[cfg(test)]
mod fixtures;
mod msg;
mod packet;
mod transport;

pub use events::NetlinkEvents;
pub use msg::link_state;

use crate::kernel::{Kernel, KernelError, Snapshot};
use crate::reconcile::FdbFlush;
use packet::PacketSocket;
use transport::{BatchError, Transport};

pub struct NetlinkKernel {
    /// Requests and dumps.
    transport: Transport,
    packet: PacketSocket,
    reason_bit: u8,
}

impl NetlinkKernel {
    /// Opens the request and event netlink sockets and the packet socket (inside a tokio runtime).
    pub fn open(reason_bit: u8) -> Result<(Self, NetlinkEvents), KernelError> {
        let events = NetlinkEvents::open()?;
        let transport = Transport::open()?;
        let packet = PacketSocket::open()?;
        Ok((
            NetlinkKernel {
                transport,
                packet,
                reason_bit,
            },
            events,
        ))
    }
}

impl Kernel for NetlinkKernel {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let mut snap = Snapshot::default();
        self.transport
            .dump(msg::dump_links(), "link dump", |m| {
                if let RouteNetlinkMessage::NewLink(l) = m {
                    snap.links.push(link_state(&l));
                }
            })
            .await?;
        self.transport
            .dump(msg::dump_ipv4_addresses(), "address dump", |m| {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    if let Some(v4) = msg::ipv4(&a) {
                        snap.addrs.entry(a.header.index).or_default().push(v4);
                    }
                }
            })
            .await?;
        Ok(snap)
    }

    async fn set_protodown(&self, changes: &[(u32, bool)]) -> Vec<Result<(), KernelError>> {
        let msgs = changes
            .iter()
            .map(|&(ifindex, on)| msg::protodown(ifindex, self.reason_bit, on))
            .collect();
        self.transport
            .batch(msgs, "protodown")
            .await
            .into_iter()
            .zip(changes)
            .map(|(r, &(ifindex, _))| r.map_err(|e| e.for_link(ifindex)))
            .collect()
    }

    async fn flush_neighbours(&self, ifindexes: &[u32]) -> Result<usize, KernelError> {
        let mut doomed = Vec::new();
        self.transport
            .dump(msg::dump_ipv4_neighbours(), "neighbour dump", |m| {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    if msg::flushable(&n, ifindexes) {
                        doomed.push(n);
                    }
                }
            })
            .await?;
        let n = doomed.len();
        let msgs = doomed.into_iter().map(msg::neighbour_delete).collect();
        // An entry that went away meanwhile is fine; anything else is logged by the caller.
        for r in self.transport.batch(msgs, "neighbour flush").await {
            match r {
                Ok(()) | Err(BatchError::Errno(libc::ENOENT)) => {}
                Err(e) => return Err(e.for_link(0)),
            }
        }
        Ok(n)
    }

    async fn flush_fdb(&self, flushes: &[FdbFlush]) -> Vec<Result<(), KernelError>> {
        let msgs = flushes.iter().map(msg::fdb_delete).collect();
        self.transport
            .batch(msgs, "fdb flush")
            .await
            .into_iter()
            .zip(flushes)
            .map(|(r, f)| match r {
                // Nothing learnt there: nothing to flush.
                Err(BatchError::Errno(libc::ENOENT)) => Ok(()),
                r => r.map_err(|e| e.for_link(f.port)),
            })
            .collect()
    }

    fn send_frame(&self, ifindex: u32, frame: &[u8]) -> Result<(), KernelError> {
        self.packet.send(ifindex, frame)
    }
}

impl BatchError {
    fn for_link(self, ifindex: u32) -> KernelError {
        match self {
            BatchError::Errno(errno) => errno_error(ifindex, errno),
            BatchError::Io(op, detail) => KernelError::Netlink { op, detail },
        }
    }
}

fn errno_error(ifindex: u32, errno: i32) -> KernelError {
    match errno {
        libc::EBUSY => KernelError::Busy { ifindex },
        libc::ENODEV => KernelError::NoDevice { ifindex },
        libc::EOPNOTSUPP => KernelError::NotSupported { ifindex },
        _ => KernelError::Errno {
            op: "protodown",
            ifindex,
            errno,
        },
    }
}

/// SO_RCVBUFFORCE: a receive buffer beyond `net.core.rmem_max` (needs CAP_NET_ADMIN).
fn set_rcvbuf_force(fd: i32, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call;
    // setsockopt reads exactly `size_of::<c_int>()` bytes through the pointer, which points to
    // the live local `v` of that size and type.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
