//! The real [`Kernel`]: rtnetlink for links, addresses and protodown; one AF_PACKET socket for
//! gratuitous ARPs. The only module that needs CAP_NET_ADMIN and CAP_NET_RAW.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkProtocolDownReason,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NlSocketAddr, TokioSocket};
use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

use crate::kernel::{EventSource, Kernel, KernelError, KernelEvent, Snapshot};
use crate::links::LinkState;
use crate::reconcile::FdbFlush;
use crate::types::IfIndex;

/// Receive buffer for the event socket: a takeover of thousands of VNIs makes thousands of
/// events at once.
const EVENT_RCVBUF: usize = 8 << 20;

pub struct NetlinkKernel {
    /// Protodown requests go out in batches on their own socket: one datagram carries up to
    /// [`BATCH`] requests, and the acks are matched by sequence number.
    batch: TokioSocket,
    seq: Cell<u32>,
    packet: Socket,
    reason_bit: u8,
}

/// Requests per datagram. Their acks (one per request) must fit the batch socket's receive buffer.
const BATCH: usize = 256;
/// Send buffer of the GARP socket.
const PACKET_SNDBUF: usize = 1 << 20;
/// Receive buffer for one dump datagram (the kernel fills at most 32 KiB).
const DUMP_BUF: usize = 64 << 10;
/// Receive buffer of the batch socket.
const BATCH_RCVBUF: usize = 4 << 20;
/// How long to wait for the kernel's acks to one batch before calling them failed.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl NetlinkKernel {
    /// Opens the request and event netlink sockets and the packet socket (inside a tokio runtime).
    ///
    /// Requests and dumps go over one plain netlink socket driven by this type rather than
    /// through rtnetlink's `Handle`: that handle queues a whole dump as parsed messages before the
    /// caller sees the first, which cost ~28 MB of heap at 4000 links; here memory is bounded by
    /// one datagram, and a reconcile's requests share datagrams.
    pub fn open(reason_bit: u8) -> Result<(Self, NetlinkEvents), KernelError> {
        let events = NetlinkEvents::open()?;

        let mut batch = TokioSocket::new(NETLINK_ROUTE).map_err(KernelError::Socket)?;
        batch
            .socket_mut()
            .bind_auto()
            .map_err(KernelError::Socket)?;
        let _ = batch.socket_mut().set_cap_ack(true);
        if set_rcvbuf_force(batch.as_raw_fd(), BATCH_RCVBUF).is_err() {
            let _ = batch.socket_mut().set_rx_buf_sz(BATCH_RCVBUF);
        }

        let packet = Socket::new(Domain::PACKET, Type::RAW.nonblocking().cloexec(), None)
            .map_err(KernelError::PacketSocket)?;
        // Room for a takeover's burst of GARPs; beyond it the daemon paces and retries.
        let _ = packet.set_send_buffer_size(PACKET_SNDBUF);
        Ok((
            NetlinkKernel {
                batch,
                seq: Cell::new(1),
                packet,
                reason_bit,
            },
            events,
        ))
    }
}

/// Link and IPv4-address events, read straight from a multicast netlink socket by the daemon's
/// loop, so that "every event queued so far" is well defined: [`EventSource::next_batch`] drains
/// the socket until it would block.
pub struct NetlinkEvents {
    sock: TokioSocket,
    buf: Vec<u8>,
}

/// RTMGRP_LINK | RTMGRP_IPV4_IFADDR.
const EVENT_GROUPS: u32 = 0x1 | 0x10;
const EVENT_BUF: usize = 64 << 10;

impl NetlinkEvents {
    fn open() -> Result<Self, KernelError> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(KernelError::Socket)?;
        sock.socket_mut()
            .bind(&NlSocketAddr::new(0, EVENT_GROUPS))
            .map_err(KernelError::Socket)?;
        // Forcing needs CAP_NET_ADMIN; fall back to the capped size without it.
        if let Err(e) = set_rcvbuf_force(sock.as_raw_fd(), EVENT_RCVBUF) {
            tracing::debug!(error = %e, "SO_RCVBUFFORCE refused, using SO_RCVBUF");
            let _ = sock.socket_mut().set_rx_buf_sz(EVENT_RCVBUF);
        }
        Ok(NetlinkEvents {
            sock,
            buf: Vec::with_capacity(EVENT_BUF),
        })
    }

    fn parse_into(&self, out: &mut Vec<KernelEvent>) {
        for m in messages(&self.buf) {
            if let Some(ev) = event(m) {
                out.push(ev);
            }
        }
    }
}

impl EventSource for NetlinkEvents {
    async fn next_batch(&mut self) -> Option<Vec<KernelEvent>> {
        let mut out = Vec::new();
        self.buf.clear();
        match self.sock.recv(&mut self.buf).await {
            Ok(()) => self.parse_into(&mut out),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(KernelEvent::Lost),
            Err(e) => {
                tracing::warn!(error = %e, "kernel event socket failed");
                return None;
            }
        }
        // Everything else already queued, without waiting.
        loop {
            self.buf.clear();
            match self
                .sock
                .socket_ref()
                .recv(&mut self.buf, libc::MSG_DONTWAIT)
            {
                Ok(_) => self.parse_into(&mut out),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(KernelEvent::Lost),
                Err(_) => break,
            }
        }
        Some(out)
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
        ifindex: IfIndex(msg.header.index),
        ifname: String::new(),
        protodown: false,
        reason: 0,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        running: msg.header.flags.contains(LinkFlags::Running),
        mac: [0; 6],
        lower: None,
        master: None,
    };
    let mut other_netns = false;
    for a in &msg.attributes {
        match a {
            LinkAttribute::LinkNetNsId(_) => other_netns = true,
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
            LinkAttribute::Link(i) => l.lower = Some(IfIndex(*i)),
            LinkAttribute::Controller(i) => l.master = Some(IfIndex(*i)),
            _ => {}
        }
    }
    // IFLA_LINK then names a link of another namespace: an index that means nothing here.
    if other_netns {
        l.lower = None;
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
                ifindex: IfIndex(l.header.index),
            }),
            RouteNetlinkMessage::NewAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: IfIndex(a.header.index),
                addr,
                added: true,
            }),
            RouteNetlinkMessage::DelAddress(a) => ipv4(&a).map(|addr| KernelEvent::Address {
                ifindex: IfIndex(a.header.index),
                addr,
                added: false,
            }),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Lost),
        _ => None,
    }
}

impl Kernel for NetlinkKernel {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let mut snap = Snapshot::default();
        // Without the counters (RTEXT_FILTER_SKIP_STATS): most of each link's message, never
        // read here. At 1000 VNIs a resync costs about half as much CPU.
        let mut get_link = LinkMessage::default();
        get_link
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.dump(RouteNetlinkMessage::GetLink(get_link), "link dump", |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                snap.links.push(link_state(&l));
            }
        })
        .await?;
        let mut get_addr = AddressMessage::default();
        get_addr.header.family = AddressFamily::Inet;
        self.dump(
            RouteNetlinkMessage::GetAddress(get_addr),
            "address dump",
            |m| {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    if let Some(v4) = ipv4(&a) {
                        snap.addrs
                            .entry(IfIndex(a.header.index))
                            .or_default()
                            .push(v4);
                    }
                }
            },
        )
        .await?;
        Ok(snap)
    }

    async fn set_protodown(&self, changes: &[(IfIndex, bool)]) -> Vec<Result<(), KernelError>> {
        let msgs = changes
            .iter()
            .map(|&(ifindex, on)| RouteNetlinkMessage::SetLink(self.protodown_message(ifindex, on)))
            .collect();
        self.batch(msgs, "protodown")
            .await
            .into_iter()
            .zip(changes)
            .map(|(r, &(ifindex, _))| r.map_err(|e| e.for_link(ifindex)))
            .collect()
    }

    async fn flush_neighbours(&self, ifindexes: &[IfIndex]) -> Result<usize, KernelError> {
        let mut get = NeighbourMessage::default();
        get.header.family = AddressFamily::Inet;
        let mut doomed = Vec::new();
        self.dump(
            RouteNetlinkMessage::GetNeighbour(get),
            "neighbour dump",
            |m| {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    let keep = matches!(
                        n.header.state,
                        NeighbourState::Permanent | NeighbourState::Noarp
                    );
                    if !keep && ifindexes.contains(&IfIndex(n.header.ifindex)) {
                        doomed.push(n);
                    }
                }
            },
        )
        .await?;
        let n = doomed.len();
        let msgs = doomed
            .into_iter()
            .map(|mut m| {
                m.attributes
                    .retain(|a| matches!(a, NeighbourAttribute::Destination(_)));
                RouteNetlinkMessage::DelNeighbour(m)
            })
            .collect();
        // An entry that went away meanwhile is fine; anything else is logged by the caller.
        for r in self.batch(msgs, "neighbour flush").await {
            match r {
                Ok(()) | Err(BatchError::Errno(libc::ENOENT)) => {}
                Err(e) => return Err(e.for_link(IfIndex(0))),
            }
        }
        Ok(n)
    }

    async fn flush_fdb(&self, flushes: &[FdbFlush]) -> Vec<Result<(), KernelError>> {
        let msgs = flushes
            .iter()
            .map(|f| {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = f.port.0;
                m.header.flags = NeighbourFlags::Controller;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
                RouteNetlinkMessage::DelNeighbour(m)
            })
            .collect();
        self.batch(msgs, "fdb flush")
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

    fn send_frame(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError> {
        let addr = packet_addr(ifindex, frame).map_err(KernelError::PacketSocket)?;
        self.packet
            .send_to(frame, &addr)
            .map(|_| ())
            .map_err(|source| KernelError::Send { ifindex, source })
    }
}

/// Why one request of a batch failed.
#[derive(Debug)]
enum BatchError {
    Errno(i32),
    Io(&'static str, String),
}

impl BatchError {
    fn for_link(self, ifindex: IfIndex) -> KernelError {
        match self {
            BatchError::Errno(errno) => errno_error(ifindex, errno),
            BatchError::Io(op, detail) => KernelError::Netlink { op, detail },
        }
    }
}

impl NetlinkKernel {
    /// Runs one dump request and hands every message to `each` as its datagram arrives, so that
    /// memory stays bounded by one datagram however many links there are.
    async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        op: &'static str,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), KernelError> {
        let err = |detail: String| KernelError::Netlink { op, detail };
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut m = NetlinkMessage::from(msg);
        m.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        m.header.sequence_number = seq;
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.batch
            .send(&out)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut buf: Vec<u8> = Vec::with_capacity(DUMP_BUF);
        loop {
            buf.clear();
            match tokio::time::timeout(ACK_TIMEOUT, self.batch.recv(&mut buf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(err(e.to_string())),
                Err(_) => return Err(err("the kernel did not finish the dump".into())),
            }
            for m in messages(&buf) {
                if m.header.sequence_number != seq {
                    continue; // a late ack of an earlier batch
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(err(format!("{e}")))
                    }
                    NetlinkPayload::InnerMessage(x) => each(x),
                    _ => {}
                }
            }
            // The kernel fills each datagram inside recvmsg; a dump of thousands of links is
            // many of them: let the heartbeat task run between two.
            tokio::task::yield_now().await;
        }
    }

    /// Sends `msgs` as acknowledged requests, [`BATCH`] per datagram, and returns one result per
    /// message, matched by sequence number.
    async fn batch(
        &self,
        msgs: Vec<RouteNetlinkMessage>,
        op: &'static str,
    ) -> Vec<Result<(), BatchError>> {
        let n = msgs.len();
        let mut results: Vec<Option<Result<(), BatchError>>> = (0..n).map(|_| None).collect();
        let mut msgs = msgs.into_iter();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
        for c in 0..n.div_ceil(BATCH) {
            let base = self.seq.get();
            let len = BATCH.min(n - c * BATCH);
            self.seq.set(base.wrapping_add(len as u32));
            out.clear();
            for (i, msg) in msgs.by_ref().take(len).enumerate() {
                let mut m = NetlinkMessage::from(msg);
                m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
                m.header.sequence_number = base.wrapping_add(i as u32);
                m.finalize();
                let at = out.len();
                out.resize(at + m.buffer_len(), 0);
                m.serialize(&mut out[at..]);
            }
            let done = &mut results[c * BATCH..c * BATCH + len];
            if let Err(e) = self.batch.send(&out).await {
                for r in done.iter_mut() {
                    *r = Some(Err(BatchError::Io(op, e.to_string())));
                }
                continue;
            }
            let mut pending = len;
            while pending > 0 {
                buf.clear();
                match tokio::time::timeout(ACK_TIMEOUT, self.batch.recv(&mut buf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // ENOBUFS: acks were dropped. The ones we lack count as failed; the
                        // daemon retries them.
                        tracing::debug!(error = %e, op, "ack receive failed");
                        break;
                    }
                    Err(_) => break,
                }
                for (seq, r) in acks(&buf) {
                    let i = seq.wrapping_sub(base) as usize;
                    if let Some(slot @ None) = done.get_mut(i) {
                        *slot = Some(r.map_err(BatchError::Errno));
                        pending -= 1;
                    }
                }
            }
            // The kernel did this datagram's work inside sendmsg, on our thread: let the
            // heartbeat task run before the next one.
            tokio::task::yield_now().await;
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(BatchError::Io(
                        op,
                        "no acknowledgement from the kernel".into(),
                    ))
                })
            })
            .collect()
    }

    fn protodown_message(&self, ifindex: IfIndex, on: bool) -> LinkMessage {
        let bit = 1u32 << self.reason_bit;
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex.0;
        msg.attributes.push(LinkAttribute::ProtoDownReason(vec![
            LinkProtocolDownReason::Mask(bit),
            LinkProtocolDownReason::Value(if on { bit } else { 0 }),
        ]));
        msg.attributes.push(LinkAttribute::ProtoDown(u8::from(on)));
        msg
    }
}

fn errno_error(ifindex: IfIndex, errno: i32) -> KernelError {
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

/// The netlink messages in one datagram (malformed ones are skipped).
fn messages(mut buf: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            out.push(m);
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        if step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    out
}

/// The acknowledgements in one datagram: (sequence number, Ok or Err(errno)).
fn acks(buf: &[u8]) -> Vec<(u32, Result<(), i32>)> {
    messages(buf)
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::Error(e) => Some((
                m.header.sequence_number,
                e.code.map_or(Ok(()), |c| Err(-c.get())),
            )),
            _ => None,
        })
        .collect()
}

/// `sockaddr_ll` for sending `frame` (an Ethernet frame) out of `ifindex`.
fn packet_addr(ifindex: IfIndex, frame: &[u8]) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex.0)
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
