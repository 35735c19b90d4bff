//! The heartbeat socket: one UDP socket, broadcast-capable, that sends our frames and receives
//! everyone's (broadcast and multicast ones of ours come back too and are recognised by their
//! incarnation; to unicast peers they do not).
//!
//! Frames go out with IP TTL 255, and every frame is read with its TTL and the interface it came
//! in on (IP_RECVTTL, IP_PKTINFO), so that the core can drop what was routed (RFC 5082's GTSM, as
//! VRRP does: a frame from another segment arrives with a TTL below 255, whatever its sender set)
//! and what arrived on a gateway interface rather than on the segment.
//!
//! Over IPv6 (`--ipv6`, or an IPv6 `--peer`) the socket is AF_INET6 and dual-stack (IPv4 peers
//! as IPv4-mapped addresses, with the same IPv4 options): hop limit 255 out, each frame read with
//! its hop limit (IPV6_RECVHOPLIMIT, the IPv6 analogue of the TTL rule) and ingress interface
//! (IPV6_RECVPKTINFO); with `--ipv6` alone it joins the link-local multicast group on
//! `--bind-interface`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self as nixsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
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
    #[error("joining IPv6 group {group} on {ifname}: {source}")]
    Join {
        group: Ipv6Addr,
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

/// What the heartbeat socket is: its port, the interface it is bound to, IPv6 or not, and the
/// IPv6 group it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub port: u16,
    pub device: Option<String>,
    /// AF_INET6, dual-stack.
    pub v6: bool,
    /// Join this group on `device` (with `v6`).
    pub group: Option<Ipv6Addr>,
}

impl SocketSpec {
    pub fn of(cfg: &crate::cli::Config) -> SocketSpec {
        SocketSpec {
            port: cfg.port,
            device: cfg.bind_interface.clone(),
            v6: cfg.heartbeat_v6(),
            group: cfg.group(),
        }
    }
}

/// A non-blocking UDP socket bound to 0.0.0.0:`port` (or `[::]:port`, dual-stack) with
/// SO_REUSEADDR and SO_BROADCAST, and SO_BINDTODEVICE when `device` is given; sending with TTL
/// and hop limit 255, receiving with each datagram's TTL or hop limit and ingress interface.
/// Must be called inside a tokio runtime.
pub fn heartbeat_socket(spec: &SocketSpec) -> Result<UdpSocket, SocketError> {
    let port = spec.port;
    let domain = if spec.v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(SocketError::Create)?;
    let opt = |option: &'static str| move |source| SocketError::Option { option, source };
    let nix_opt = |option: &'static str| move |e: nix::Error| opt(option)(io::Error::from(e));
    s.set_reuse_address(true).map_err(opt("SO_REUSEADDR"))?;
    s.set_broadcast(true).map_err(opt("SO_BROADCAST"))?;
    s.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
    if spec.v6 {
        // Dual-stack for a peer list (IPv4 peers beside IPv6 ones); IPv6 only on the group.
        s.set_only_v6(spec.group.is_some())
            .map_err(opt("IPV6_V6ONLY"))?;
        s.set_unicast_hops_v6(u32::from(TTL))
            .map_err(opt("IPV6_UNICAST_HOPS"))?;
        s.set_multicast_hops_v6(u32::from(TTL))
            .map_err(opt("IPV6_MULTICAST_HOPS"))?;
        nixsock::setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(nix_opt("IPV6_RECVHOPLIMIT"))?;
        nixsock::setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(nix_opt("IPV6_RECVPKTINFO"))?;
    }
    // On a dual-stack socket these apply to its IPv4 datagrams.
    s.set_ttl_v4(u32::from(TTL)).map_err(opt("IP_TTL"))?;
    nixsock::setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(nix_opt("IP_RECVTTL"))?;
    nixsock::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(nix_opt("IP_PKTINFO"))?;
    // How many datagrams the kernel dropped on this socket (a full receive buffer): the core
    // then knows its view of the members is not to be trusted.
    nixsock::setsockopt(&s, sockopt::RxqOvfl, &1).map_err(nix_opt("SO_RXQ_OVFL"))?;
    let _ = s.set_recv_buffer_size(RCVBUF);
    if let Some(dev) = &spec.device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|source| SocketError::BindDevice {
                ifname: dev.clone(),
                source,
            })?;
    }
    if let (true, Some(group)) = (spec.v6, spec.group) {
        let ifname = spec.device.clone().unwrap_or_default();
        let join = |source| SocketError::Join {
            group,
            ifname: ifname.clone(),
            source,
        };
        let index =
            nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| join(io::Error::from(e)))?;
        s.set_multicast_if_v6(index)
            .map_err(opt("IPV6_MULTICAST_IF"))?;
        s.set_multicast_loop_v6(true)
            .map_err(opt("IPV6_MULTICAST_LOOP"))?;
        s.join_multicast_v6(&group, index).map_err(join)?;
    }
    let any: SocketAddr = if spec.v6 {
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into()
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()
    };
    s.bind(&any.into())
        .map_err(|source| SocketError::Bind { port, source })?;
    UdpSocket::from_std(s.into()).map_err(SocketError::Create)
}

/// `to` as the socket of `v6` takes it: an IPv4 address as IPv4-mapped on a dual-stack socket.
pub fn destination(to: SocketAddr, v6: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if v6 => {
            SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into()
        }
        other => other,
    }
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
    // A dual-stack socket's IPv4 datagram carries IPV6_PKTINFO besides the IPv4 ones.
    let mut space = nix::cmsg_space!(
        libc::in6_pktinfo,
        libc::in_pktinfo,
        libc::c_int,
        libc::c_int,
        u32
    );
    let msg = nixsock::recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let from =
        msg.address.as_ref().and_then(source).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without a source")
        })?;
    let mut ttl = None;
    let mut ifindex = None;
    let mut dropped = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok()
                }
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    ifindex = u32::try_from(info.ipi_ifindex).ok().map(IfIndex)
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    ifindex = Some(IfIndex(info.ipi6_ifindex))
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

/// A datagram's source as the core sees it: an IPv4-mapped address as IPv4 (a dual-stack
/// socket's IPv4 peers), an IPv6 one with its scope.
fn source(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddrV4::new(v4.ip(), v4.port()).into());
    }
    let v6 = a.as_sockaddr_in6()?;
    Some(match IpAddr::V6(v6.ip()).to_canonical() {
        IpAddr::V4(ip) => SocketAddrV4::new(ip, v6.port()).into(),
        IpAddr::V6(ip) => SocketAddrV6::new(ip, v6.port(), v6.flowinfo(), v6.scope_id()).into(),
    })
}
