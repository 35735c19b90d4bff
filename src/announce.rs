//! The heartbeat socket: one UDP socket, broadcast-capable, that sends our frames and receives
//! everyone's (ours come back too and are recognised by their incarnation).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::UdpSocket;

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

/// A non-blocking UDP socket bound to 0.0.0.0:`port` with SO_REUSEADDR and SO_BROADCAST, and
/// SO_BINDTODEVICE when `device` is given. Must be called inside a tokio runtime.
pub fn heartbeat_socket(port: u16, device: Option<&str>) -> Result<UdpSocket, SocketError> {
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(SocketError::Create)?;
    let opt = |option: &'static str| move |source| SocketError::Option { option, source };
    s.set_reuse_address(true).map_err(opt("SO_REUSEADDR"))?;
    s.set_broadcast(true).map_err(opt("SO_BROADCAST"))?;
    s.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
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
