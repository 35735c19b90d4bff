//! The real [`Kernel`]: rtnetlink for links, addresses and protodown; one AF_PACKET socket for
//! gratuitous ARPs. The only module that needs CAP_NET_ADMIN and CAP_NET_RAW.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkProtocolDownReason};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::AsyncSocket;
use rtnetlink::{Handle, MulticastGroup};
use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};
use tokio::sync::mpsc;

use crate::kernel::{Kernel, KernelError, KernelEvent, Snapshot};
use crate::reconcile::LinkState;

/// Receive buffer for the event socket: a takeover of thousands of VNIs makes thousands of
/// events at once.
const EVENT_RCVBUF: usize = 8 << 20;

pub struct NetlinkKernel {
    handle: Handle,
    packet: Socket,
    reason_bit: u8,
}

impl NetlinkKernel {
    /// Opens the request and event netlink sockets and the packet socket, and spawns their tasks
    /// on the current runtime.
    pub fn open(
        reason_bit: u8,
    ) -> Result<(Self, mpsc::UnboundedReceiver<KernelEvent>), KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
        tokio::spawn(conn);

        let (mut econn, _ehandle, mut messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
        ])
        .map_err(KernelError::Socket)?;
        let sock = econn.socket_mut().socket_mut();
        // Forcing needs CAP_NET_ADMIN; fall back to the capped size without it.
        if let Err(e) = set_rcvbuf_force(sock.as_raw_fd(), EVENT_RCVBUF) {
            tracing::debug!(error = %e, "SO_RCVBUFFORCE refused, using SO_RCVBUF");
            let _ = sock.set_rx_buf_sz(EVENT_RCVBUF);
        }
        tokio::spawn(econn);

        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((msg, _)) = messages.next().await {
                if let Some(ev) = event(msg) {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
            // The event connection ended (for instance on an overrun): ask for a snapshot.
            let _ = tx.send(KernelEvent::Lost);
        });

        let packet = Socket::new(Domain::PACKET, Type::RAW.nonblocking().cloexec(), None)
            .map_err(KernelError::PacketSocket)?;
        Ok((
            NetlinkKernel {
                handle,
                packet,
                reason_bit,
            },
            rx,
        ))
    }
}

fn set_rcvbuf_force(fd: i32, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the stated length.
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

/// A link message as [`LinkState`].
pub fn link_state(msg: &LinkMessage) -> LinkState {
    let mut l = LinkState {
        ifindex: msg.header.index,
        ifname: String::new(),
        protodown: false,
        reason: 0,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        mac: [0; 6],
        lower: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.ifname.clone_from(n),
            LinkAttribute::ProtoDown(v) => l.protodown = *v != 0,
            LinkAttribute::ProtoDownReason(rs) => {
                for r in rs {
                    if let LinkProtocolDownReason::Value(v) = r {
                        l.reason = *v;
                    }
                }
            }
            LinkAttribute::Address(a) if a.len() == 6 => l.mac.copy_from_slice(a),
            LinkAttribute::Link(i) => l.lower = Some(*i),
            _ => {}
        }
    }
    l
}

/// The IPv4 address of an address message, if it is one.
fn ipv4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut found = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => return Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => found = Some(*v),
            _ => {}
        }
    }
    found
}

fn event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(m) => match m {
            RouteNetlinkMessage::NewLink(l) => Some(KernelEvent::Link(link_state(&l))),
            RouteNetlinkMessage::DelLink(l) => Some(KernelEvent::LinkGone {
                ifindex: l.header.index,
            }),
            RouteNetlinkMessage::NewAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: a.header.index,
                addr,
                added: true,
            }),
            RouteNetlinkMessage::DelAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: a.header.index,
                addr,
                added: false,
            }),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Lost),
        _ => None,
    }
}

fn netlink_err(op: &'static str, e: rtnetlink::Error) -> KernelError {
    KernelError::Netlink {
        op,
        detail: e.to_string(),
    }
}

impl Kernel for NetlinkKernel {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let mut snap = Snapshot::default();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links.next().await {
            snap.links
                .push(link_state(&l.map_err(|e| netlink_err("link dump", e))?));
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(a) = addrs.next().await {
            let a = a.map_err(|e| netlink_err("address dump", e))?;
            if let Some(v4) = ipv4(&a) {
                snap.addrs.entry(a.header.index).or_default().push(v4);
            }
        }
        Ok(snap)
    }

    async fn set_protodown(&self, ifindex: u32, on: bool) -> Result<(), KernelError> {
        let bit = 1u32 << self.reason_bit;
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::ProtoDownReason(vec![
            LinkProtocolDownReason::Mask(bit),
            LinkProtocolDownReason::Value(if on { bit } else { 0 }),
        ]));
        msg.attributes.push(LinkAttribute::ProtoDown(u8::from(on)));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::SetLink(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let mut handle = self.handle.clone();
        let mut resp = handle
            .request(req)
            .map_err(|e| netlink_err("protodown", e))?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if let Some(code) = e.code {
                    let errno = -code.get();
                    return Err(match errno {
                        libc::EBUSY => KernelError::Busy { ifindex },
                        libc::ENODEV => KernelError::NoDevice { ifindex },
                        libc::EOPNOTSUPP => KernelError::NotSupported { ifindex },
                        _ => KernelError::Errno {
                            op: "protodown",
                            ifindex,
                            errno,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    fn send_frame(&self, ifindex: u32, frame: &[u8]) -> Result<(), KernelError> {
        let addr = packet_addr(ifindex, frame).map_err(KernelError::PacketSocket)?;
        self.packet
            .send_to(frame, &addr)
            .map(|_| ())
            .map_err(|source| KernelError::Send { ifindex, source })
    }
}

/// `sockaddr_ll` for sending `frame` (an Ethernet frame) out of `ifindex`.
fn packet_addr(ifindex: u32, frame: &[u8]) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    let ethertype = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    if let Some(dst) = frame.get(0..6) {
        ll.sll_addr[..6].copy_from_slice(dst);
    }
    let mut storage = SockAddrStorage::zeroed();
    let len = std::mem::size_of::<libc::sockaddr_ll>();
    // SAFETY: sockaddr_ll fits in sockaddr_storage; we copy exactly its bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&ll as *const libc::sockaddr_ll).cast::<u8>(),
            (&mut storage as *mut SockAddrStorage).cast::<u8>(),
            len,
        );
        Ok(SockAddr::new(storage, len as libc::socklen_t))
    }
}
