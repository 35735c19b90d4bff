//! The heartbeat socket: one UDP socket, broadcast-capable, that sends our frames and receives
//! everyone's (ours come back too and are recognised by their incarnation).
//!
//! Frames go out with IP TTL 255, and every frame is read with its TTL and the interface it came
//! in on (IP_RECVTTL, IP_PKTINFO), so that the core can drop what was routed (RFC 5082's GTSM, as
//! VRRP does: a frame from another segment arrives with a TTL below 255, whatever its sender set)
//! and what arrived on a gateway interface rather than on the segment.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self as nixsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use tokio::io::Interest;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::UdpSocket;

use crate::types::IfIndex;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("creating the heartbeat socket: {0}")]
    Create(#[source] io::Error),
    #[error("setting {option} on the heartbeat socket: {source}")]
    Option {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("binding the heartbeat socket to interface {ifname}: {source}")]
    BindDevice {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("binding the heartbeat socket to UDP port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// The TTL heartbeats are sent with, and the only one accepted on version-1 frames.
pub const TTL: u8 = 255;
/// The heartbeat socket's receive buffer (the kernel caps it at `net.core.rmem_max`).
const RCVBUF: usize = 4 << 20;

/// A non-blocking UDP socket bound to 0.0.0.0:`port` with SO_REUSEADDR and SO_BROADCAST, and
/// SO_BINDTODEVICE when `device` is given; sending with TTL 255, receiving with each datagram's
/// TTL and ingress interface. Must be called inside a tokio runtime.
pub fn heartbeat_socket(port: u16, device: Option<&str>) -> Result<UdpSocket, SocketError> {
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(SocketError::Create)?;
    let opt = |option: &'static str| move |source| SocketError::Option { option, source };
    s.set_reuse_address(true).map_err(opt("SO_REUSEADDR"))?;
    s.set_broadcast(true).map_err(opt("SO_BROADCAST"))?;
    s.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
    s.set_ttl_v4(u32::from(TTL)).map_err(opt("IP_TTL"))?;
    nixsock::setsockopt(&s, sockopt::Ipv4RecvTtl, &true)
        .map_err(|e| opt("IP_RECVTTL")(io::Error::from(e)))?;
    nixsock::setsockopt(&s, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| opt("IP_PKTINFO")(io::Error::from(e)))?;
    // How many datagrams the kernel dropped on this socket (a full receive buffer): the core
    // then knows its view of the members is not to be trusted.
    nixsock::setsockopt(&s, sockopt::RxqOvfl, &1)
        .map_err(|e| opt("SO_RXQ_OVFL")(io::Error::from(e)))?;
    let _ = s.set_recv_buffer_size(RCVBUF);
    if let Some(dev) = device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|source| SocketError::BindDevice {
                ifname: dev.to_owned(),
                source,
            })?;
    }
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .map_err(|source| SocketError::Bind { port, source })?;
    UdpSocket::from_std(s.into()).map_err(SocketError::Create)
}

/// One datagram as received: its length in the buffer, its sender, and (when the kernel said)
/// its IP TTL and the interface it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub ttl: Option<u8>,
    pub ifindex: Option<IfIndex>,
    /// The socket's count of datagrams dropped so far (SO_RXQ_OVFL), when the kernel said.
    pub dropped: Option<u32>,
}

/// Waits for the next datagram.
pub async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    sock.async_io(Interest::READABLE, || recv_now(sock, buf))
        .await
}

/// The next datagram if one is queued (`WouldBlock` if none).
pub fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    sock.try_io(Interest::READABLE, || recv_now(sock, buf))
}

fn recv_now(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in_pktinfo, libc::c_int, u32);
    let msg = nixsock::recvmsg::<SockaddrIn>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let from = msg
        .address
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source"))?;
    let mut ttl = None;
    let mut ifindex = None;
    let mut dropped = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    ifindex = u32::try_from(info.ipi_ifindex).ok().map(IfIndex)
                }
                ControlMessageOwned::RxqOvfl(n) => dropped = Some(n),
                _ => {}
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        from,
        ttl,
        ifindex,
        dropped,
    })
}
