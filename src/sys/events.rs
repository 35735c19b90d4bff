//! The multicast netlink socket of link and IPv4-address events.

use std::os::fd::AsRawFd;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NlSocketAddr, TokioSocket};

use super::msg::event;
use super::set_rcvbuf_force;
use super::transport::messages;
use crate::kernel::{EventSource, KernelError, KernelEvent};

/// Receive buffer for the event socket: a takeover of thousands of VNIs makes thousands of
/// events at once.
const EVENT_RCVBUF: usize = 8 << 20;
/// RTMGRP_LINK | RTMGRP_IPV4_IFADDR.
const EVENT_GROUPS: u32 = 0x1 | 0x10;
const EVENT_BUF: usize = 64 << 10;

/// Link and IPv4-address events, read straight from a multicast netlink socket by the daemon's
/// loop, so that "every event queued so far" is well defined: [`EventSource::next_batch`] drains
/// the socket until it would block.
pub struct NetlinkEvents {
    sock: TokioSocket,
    buf: Vec<u8>,
}

impl NetlinkEvents {
    pub(super) fn open() -> Result<Self, KernelError> {
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
