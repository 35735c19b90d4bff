//! The real [`Kernel`]: rtnetlink for links, addresses and protodown; one AF_PACKET socket for
//! gratuitous ARPs. The only module that needs CAP_NET_ADMIN and CAP_NET_RAW.
//!
//! - `transport`: the request socket (batched acknowledged requests, streamed dumps);
//! - `msg`: translation between rtnetlink messages and the daemon's types (no sockets);
//! - `events`: the multicast event socket, [`NetlinkEvents`];
//! - `packet`: the AF_PACKET socket for GARPs;
//! - here: [`NetlinkKernel`], which ties them together.

use std::io;

use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

mod events;
#[cfg(test)]
mod fixtures;
mod msg;
mod packet;
mod transport;

pub use events::NetlinkEvents;
pub use msg::link_state;

use crate::kernel::{Kernel, KernelError, KernelOp, Snapshot};
use crate::links::{Addresses, LinkState};
use crate::reconcile::FdbFlush;
use crate::types::IfIndex;
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

impl NetlinkKernel {
    /// The kind of every link (`macvlan`, `veth`, `vxlan`, …) by name, from IFLA_LINKINFO: one
    /// more dump, for `wmgwd2 check`.
    pub async fn link_kinds(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, KernelError> {
        self.transport
            .dump(
                msg::dump_links(),
                KernelOp::LinkDump,
                std::collections::BTreeMap::new,
                |kinds, m| {
                    if let RouteNetlinkMessage::NewLink(l) = m {
                        if let Some((name, kind)) = msg::link_kind(&l) {
                            kinds.insert(name, kind);
                        }
                    }
                },
            )
            .await
    }
}

/// Every link, read in one consistent dump.
async fn dump_links<S: transport::Datagrams>(
    t: &Transport<S>,
) -> Result<Vec<LinkState>, KernelError> {
    t.dump(
        msg::dump_links(),
        KernelOp::LinkDump,
        Vec::new,
        |links, m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                links.push(link_state(&l));
            }
        },
    )
    .await
}

impl Kernel for NetlinkKernel {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let links = dump_links(&self.transport).await?;
        // One dump per family: IPv4, then IPv6 (usable addresses only: not tentative).
        let mut addrs = Addresses::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let found = self
                .transport
                .dump(
                    msg::dump_addresses(family),
                    KernelOp::AddressDump,
                    Vec::new,
                    |found, m| {
                        if let RouteNetlinkMessage::NewAddress(a) = m {
                            if let Some((ip, true)) = msg::address(&a) {
                                found.push((IfIndex(a.header.index), ip));
                            }
                        }
                    },
                )
                .await?;
            for (ifindex, ip) in found {
                addrs.entry(ifindex).or_default().push(ip);
            }
        }
        Ok(Snapshot { links, addrs })
    }

    async fn set_protodown(&self, changes: &[(IfIndex, bool)]) -> Vec<Result<(), KernelError>> {
        let msgs = changes
            .iter()
            .map(|&(ifindex, on)| msg::protodown(ifindex, self.reason_bit, on))
            .collect();
        let op = KernelOp::Protodown;
        self.transport
            .batch(msgs, op)
            .await
            .into_iter()
            .zip(changes)
            .map(|(r, &(ifindex, _))| r.map_err(|e| request_error(op, ifindex, e)))
            .collect()
    }

    async fn hand_back(&self, ifindexes: &[IfIndex]) -> Vec<Result<(), KernelError>> {
        let msgs = ifindexes
            .iter()
            .map(|&ifindex| msg::hand_back(ifindex, self.reason_bit))
            .collect();
        let op = KernelOp::Protodown;
        self.transport
            .batch(msgs, op)
            .await
            .into_iter()
            .zip(ifindexes)
            .map(|(r, &ifindex)| r.map_err(|e| request_error(op, ifindex, e)))
            .collect()
    }

    async fn flush_neighbours(&self, ifindexes: &[IfIndex]) -> Result<usize, KernelError> {
        // IPv4 (ARP) and IPv6 (neighbour discovery) entries: one dump per family.
        let mut doomed = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            doomed.extend(
                self.transport
                    .dump(
                        msg::dump_neighbours(family),
                        KernelOp::NeighbourDump,
                        Vec::new,
                        |doomed, m| {
                            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                                if msg::flushable(&n, ifindexes) {
                                    doomed.push(n);
                                }
                            }
                        },
                    )
                    .await?,
            );
        }
        let n = doomed.len();
        let links: Vec<IfIndex> = doomed.iter().map(|d| IfIndex(d.header.ifindex)).collect();
        let msgs = doomed.into_iter().map(msg::neighbour_delete).collect();
        let op = KernelOp::NeighbourFlush;
        // An entry that went away meanwhile is fine; anything else is logged by the caller.
        for (r, ifindex) in self.transport.batch(msgs, op).await.into_iter().zip(links) {
            match r {
                Ok(()) | Err(BatchError::Errno(libc::ENOENT)) => {}
                Err(e) => return Err(request_error(op, ifindex, e)),
            }
        }
        Ok(n)
    }

    async fn flush_fdb(&self, flushes: &[FdbFlush]) -> Vec<Result<(), KernelError>> {
        let msgs = flushes.iter().map(msg::fdb_delete).collect();
        let op = KernelOp::FdbFlush;
        self.transport
            .batch(msgs, op)
            .await
            .into_iter()
            .zip(flushes)
            .map(|(r, f)| match r {
                // Nothing learnt there: nothing to flush.
                Err(BatchError::Errno(libc::ENOENT)) => Ok(()),
                r => r.map_err(|e| request_error(op, f.port, e)),
            })
            .collect()
    }

    fn send_frame(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError> {
        self.packet.send(ifindex, frame)
    }
}

/// The error of one request about `ifindex`: the protodown answers the daemon tells apart by
/// variant, any other errno with the operation and the interface, and a failed exchange with its
/// cause.
fn request_error(op: KernelOp, ifindex: IfIndex, e: BatchError) -> KernelError {
    match (op, e) {
        (KernelOp::Protodown, BatchError::Errno(libc::EBUSY)) => KernelError::Busy { ifindex },
        (KernelOp::Protodown, BatchError::Errno(libc::ENODEV)) => KernelError::NoDevice { ifindex },
        (KernelOp::Protodown, BatchError::Errno(libc::EOPNOTSUPP)) => {
            KernelError::NotSupported { ifindex }
        }
        (op, BatchError::Errno(errno)) => KernelError::Errno {
            op,
            ifindex,
            source: io::Error::from_raw_os_error(errno),
        },
        (op, BatchError::Io(source)) => KernelError::Netlink {
            op,
            ifindex: Some(ifindex),
            source,
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn errno_of(e: &KernelError) -> Option<i32> {
        e.source()?.downcast_ref::<io::Error>()?.raw_os_error()
    }

    #[test]
    fn protodown_answers_the_daemon_tells_apart_keep_their_variants() {
        let pd = KernelOp::Protodown;
        let busy = request_error(pd, IfIndex(7), BatchError::Errno(libc::EBUSY));
        assert!(
            matches!(
                busy,
                KernelError::Busy {
                    ifindex: IfIndex(7)
                }
            ),
            "{busy:?}"
        );
        let gone = request_error(pd, IfIndex(7), BatchError::Errno(libc::ENODEV));
        assert!(
            matches!(
                gone,
                KernelError::NoDevice {
                    ifindex: IfIndex(7)
                }
            ),
            "{gone:?}"
        );
        let unsupported = request_error(pd, IfIndex(7), BatchError::Errno(libc::EOPNOTSUPP));
        assert!(
            matches!(
                unsupported,
                KernelError::NotSupported {
                    ifindex: IfIndex(7)
                }
            ),
            "{unsupported:?}"
        );
    }

    #[test]
    fn a_refusal_names_the_operation_the_interface_and_keeps_the_errno() {
        for (op, text) in [
            (KernelOp::FdbFlush, "fdb flush on interface 11"),
            (KernelOp::NeighbourFlush, "neighbour flush on interface 11"),
            (KernelOp::Protodown, "protodown on interface 11"),
        ] {
            let e = request_error(op, IfIndex(11), BatchError::Errno(libc::EINVAL));
            assert!(
                matches!(e, KernelError::Errno { op: o, ifindex: IfIndex(11), .. } if o == op),
                "{e:?}"
            );
            assert!(e.to_string().starts_with(text), "{e}");
            assert_eq!(errno_of(&e), Some(libc::EINVAL));
            assert_eq!(e.kind(), "errno");
        }
        // Not a protodown: ENODEV and EBUSY are plain refusals of that operation.
        let e = request_error(
            KernelOp::FdbFlush,
            IfIndex(11),
            BatchError::Errno(libc::ENODEV),
        );
        assert!(
            matches!(
                e,
                KernelError::Errno {
                    op: KernelOp::FdbFlush,
                    ifindex: IfIndex(11),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(errno_of(&e), Some(libc::ENODEV));
    }

    #[test]
    fn a_failed_exchange_keeps_its_cause() {
        let cause = io::Error::from_raw_os_error(libc::ENOBUFS);
        let e = request_error(KernelOp::FdbFlush, IfIndex(11), BatchError::Io(cause));
        assert!(
            matches!(
                e,
                KernelError::Netlink {
                    op: KernelOp::FdbFlush,
                    ifindex: Some(IfIndex(11)),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("fdb flush on interface 11: "),
            "{e}"
        );
        assert_eq!(errno_of(&e), Some(libc::ENOBUFS));
        assert_eq!(e.kind(), "netlink");

        let dump = KernelError::Netlink {
            op: KernelOp::LinkDump,
            ifindex: None,
            source: io::Error::new(io::ErrorKind::TimedOut, "late"),
        };
        assert_eq!(dump.to_string(), "link dump: late");
        assert_eq!(
            dump.source()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .map(io::Error::kind),
            Some(io::ErrorKind::TimedOut)
        );
    }
}
