//! The multicast netlink socket of link and address (IPv4 and IPv6) events.
//!
//! A receive error other than ENOBUFS (an overrun, reported as [`KernelEvent::Lost`]) does not end
//! the stream: the socket is reopened with the same groups and buffer and the batch reports
//! `Lost`, so the daemon resyncs; while reopening fails it is retried with a backoff, inside
//! [`EventSource::next_batch`].

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NlSocketAddr, TokioSocket};
use tokio::time::Instant;

use super::msg::event;
use super::set_rcvbuf_force;
use super::transport::messages;
use crate::kernel::{EventSource, KernelError, KernelEvent};

/// Receive buffer for the event socket: a takeover of thousands of VNIs makes thousands of
/// events at once.
const EVENT_RCVBUF: usize = 8 << 20;
/// RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR.
const EVENT_GROUPS: u32 = 0x1 | 0x10 | 0x100;
const EVENT_BUF: usize = 64 << 10;
/// Wait before the first retry of a failed reopen; it doubles up to [`REOPEN_BACKOFF_MAX`].
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Link and address events, read straight from a multicast netlink socket by the daemon's
/// loop, so that "every event queued so far" is well defined: [`EventSource::next_batch`] drains
/// the socket until it would block. The stream never ends (`next_batch` never returns `None`).
pub struct NetlinkEvents(Stream<TokioSocket>);

impl NetlinkEvents {
    pub(super) fn open() -> Result<Self, KernelError> {
        let sock = open_socket().map_err(KernelError::Socket)?;
        Ok(NetlinkEvents(Stream::new(sock, Box::new(open_socket))))
    }
}

impl EventSource for NetlinkEvents {
    fn next_batch(&mut self) -> impl Future<Output = Option<Vec<KernelEvent>>> {
        self.0.next_batch()
    }
}

/// A socket bound to [`EVENT_GROUPS`] with an [`EVENT_RCVBUF`] receive buffer.
fn open_socket() -> io::Result<TokioSocket> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut()
        .bind(&NlSocketAddr::new(0, EVENT_GROUPS))?;
    // Forcing needs CAP_NET_ADMIN; fall back to the capped size without it.
    if let Err(e) = set_rcvbuf_force(sock.as_raw_fd(), EVENT_RCVBUF) {
        tracing::debug!(error = %e, "SO_RCVBUFFORCE refused, using SO_RCVBUF");
        let _ = sock.socket_mut().set_rx_buf_sz(EVENT_RCVBUF);
    }
    Ok(sock)
}

/// What the event stream needs of its socket: the real one, or a scripted one in tests.
pub(super) trait EventSocket {
    /// Waits for one datagram and appends it to `buf`.
    fn recv_datagram(&self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<()>>;
    /// Appends one datagram if one is queued (else `WouldBlock`).
    fn try_recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()>;
}

impl EventSocket for TokioSocket {
    async fn recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        AsyncSocketExt::recv(self, buf).await
    }

    fn try_recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.socket_ref().recv(buf, libc::MSG_DONTWAIT).map(|_| ())
    }
}

type Opener<S> = Box<dyn FnMut() -> io::Result<S> + Send>;

/// The event stream over any [`EventSocket`]. Cancel-safe, as the daemon's `select!` needs: a
/// broken socket and the retry time of its reopening are kept here, not in the future.
pub(super) struct Stream<S> {
    /// `None`: broken, to be reopened before anything else (then reported as `Lost`).
    sock: Option<S>,
    open: Opener<S>,
    buf: Vec<u8>,
    /// Reopen attempts failed in a row.
    failures: u32,
    /// No reopen attempt before this.
    retry_at: Option<Instant>,
}

impl<S: EventSocket> Stream<S> {
    pub(super) fn new(sock: S, open: Opener<S>) -> Self {
        Stream {
            sock: Some(sock),
            open,
            buf: Vec::with_capacity(EVENT_BUF),
            failures: 0,
            retry_at: None,
        }
    }

    pub(super) async fn next_batch(&mut self) -> Option<Vec<KernelEvent>> {
        let Some(sock) = &self.sock else {
            self.reopen().await;
            return Some(vec![KernelEvent::Lost]);
        };
        let mut out = Vec::new();
        self.buf.clear();
        match sock.recv_datagram(&mut self.buf).await {
            Ok(()) => parse_into(&self.buf, &mut out),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(KernelEvent::Lost),
            Err(e) => return Some(self.broken(e).await),
        }
        // Everything else already queued, without waiting.
        loop {
            self.buf.clear();
            let Some(sock) = &self.sock else { break };
            match sock.try_recv_datagram(&mut self.buf) {
                Ok(()) => parse_into(&self.buf, &mut out),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(KernelEvent::Lost),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // What was read so far is kept: the resync that `Lost` asks for supersedes it.
                Err(e) => {
                    out.extend(self.broken(e).await);
                    break;
                }
            }
        }
        Some(out)
    }

    /// The socket failed: reopens it and returns the batch that says so.
    async fn broken(&mut self, e: io::Error) -> Vec<KernelEvent> {
        tracing::warn!(error = %e, "kernel event socket failed; reopening it");
        self.sock = None;
        self.reopen().await;
        vec![KernelEvent::Lost]
    }

    /// Opens a new socket, retrying with a backoff until that works.
    async fn reopen(&mut self) {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match (self.open)() {
                Ok(s) => {
                    if self.failures > 0 {
                        tracing::info!(
                            attempts = self.failures + 1,
                            "kernel event socket reopened"
                        );
                    }
                    self.sock = Some(s);
                    self.failures = 0;
                    self.retry_at = None;
                    return;
                }
                Err(e) => {
                    self.failures += 1;
                    let wait = backoff(self.failures);
                    tracing::warn!(error = %e, failures = self.failures, retry_in = ?wait,
                        "reopening the kernel event socket failed");
                    self.retry_at = Some(Instant::now() + wait);
                }
            }
        }
    }
}

/// The wait after `failures` failed reopen attempts in a row.
fn backoff(failures: u32) -> Duration {
    REOPEN_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(REOPEN_BACKOFF_MAX)
}

fn parse_into(buf: &[u8], out: &mut Vec<KernelEvent>) {
    for m in messages(buf) {
        if let Some(ev) = event(m) {
            out.push(ev);
        }
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use crate::types::IfIndex;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::super::fixtures as fx;
    use super::*;

    /// A socket that replays a script: datagrams (captured from the kernel) and errors.
    struct Scripted(RefCell<VecDeque<io::Result<&'static [u8]>>>);

    impl Scripted {
        fn new(script: Vec<io::Result<&'static [u8]>>) -> Scripted {
            Scripted(RefCell::new(script.into()))
        }

        fn next(&self, buf: &mut Vec<u8>) -> Option<io::Result<()>> {
            let r = self.0.borrow_mut().pop_front()?;
            Some(r.map(|d| buf.extend_from_slice(d)))
        }
    }

    impl EventSocket for Scripted {
        async fn recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
            self.next(buf)
                .expect("the test waits for a datagram it did not script")
        }

        fn try_recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
            self.next(buf)
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
        }
    }

    fn errno(e: i32) -> io::Result<&'static [u8]> {
        Err(io::Error::from_raw_os_error(e))
    }

    /// A stream on `first`, whose reopens fail `failures` times and then give a socket holding
    /// the address-added event; returns it with the count of reopen attempts.
    fn stream(
        first: Vec<io::Result<&'static [u8]>>,
        failures: u32,
    ) -> (Stream<Scripted>, Arc<AtomicU32>) {
        let attempts = Arc::new(AtomicU32::new(0));
        let n = attempts.clone();
        let open = move || {
            if n.fetch_add(1, Ordering::SeqCst) < failures {
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(Scripted::new(vec![Ok(fx::EVENT_NEWADDR)]))
            }
        };
        (Stream::new(Scripted::new(first), Box::new(open)), attempts)
    }

    fn added() -> KernelEvent {
        KernelEvent::Address {
            ifindex: IfIndex(20),
            addr: Ipv4Addr::new(10, 9, 1, 1).into(),
            added: true,
        }
    }

    #[tokio::test]
    async fn a_batch_holds_every_event_queued() {
        let (mut s, attempts) = stream(
            vec![Ok(fx::EVENT_NEWLINK_PROTODOWN), Ok(fx::EVENT_DELLINK)],
            0,
        );
        let b = s.next_batch().await.expect("a batch");
        assert!(
            matches!(&b[..], [KernelEvent::Link(l), KernelEvent::LinkGone { ifindex: IfIndex(30) }] if l.ifindex == IfIndex(20))
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_overrun_is_lost_events_on_the_same_socket() {
        let (mut s, attempts) = stream(vec![errno(libc::ENOBUFS), Ok(fx::EVENT_NEWADDR)], 0);
        assert_eq!(s.next_batch().await, Some(vec![KernelEvent::Lost, added()]));
        assert_eq!(attempts.load(Ordering::SeqCst), 0, "not reopened");
    }

    #[tokio::test]
    async fn a_failed_socket_is_reopened_and_the_batch_says_events_were_lost() {
        let (mut s, attempts) = stream(vec![errno(libc::EIO)], 0);
        assert_eq!(s.next_batch().await, Some(vec![KernelEvent::Lost]));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // Events come from the new socket.
        assert_eq!(s.next_batch().await, Some(vec![added()]));
    }

    #[tokio::test]
    async fn a_failure_while_draining_keeps_what_was_read_and_reports_lost() {
        let (mut s, attempts) = stream(vec![Ok(fx::EVENT_DELLINK), errno(libc::EIO)], 0);
        assert_eq!(
            s.next_batch().await,
            Some(vec![
                KernelEvent::LinkGone {
                    ifindex: IfIndex(30)
                },
                KernelEvent::Lost
            ])
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(s.next_batch().await, Some(vec![added()]));
    }

    #[tokio::test(start_paused = true)]
    async fn reopening_is_retried_with_a_backoff_until_it_works() {
        let (mut s, attempts) = stream(vec![errno(libc::EIO)], 3);
        assert_eq!(s.next_batch().await, Some(vec![KernelEvent::Lost]));
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        assert_eq!(s.next_batch().await, Some(vec![added()]));
        let waits: Vec<u64> = [1, 2, 3, 6, 7, 40]
            .map(|n| backoff(n).as_millis() as u64)
            .into();
        assert_eq!(waits, vec![100, 200, 400, 3200, 5000, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reopen_cancelled_in_its_backoff_resumes_and_still_reports_lost() {
        let (mut s, attempts) = stream(vec![errno(libc::EIO)], 1);
        // The daemon's select! drops the future when another input comes first: here while it
        // waits to retry the reopen (the clock is paused, so the shorter timeout fires first).
        let r = tokio::time::timeout(Duration::from_millis(1), s.next_batch()).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(s.next_batch().await, Some(vec![KernelEvent::Lost]));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(s.next_batch().await, Some(vec![added()]));
    }

    #[tokio::test]
    async fn a_reopened_socket_has_the_same_groups_and_buffer() {
        // Opening a listening socket changes nothing in the namespace; it needs no privilege.
        let (a, b) = (open_socket().expect("open"), open_socket().expect("reopen"));
        for s in [&a, &b] {
            let mut addr = NlSocketAddr::new(0, 0);
            s.socket_ref().get_address(&mut addr).expect("getsockname");
            assert_eq!(addr.multicast_groups(), EVENT_GROUPS);
        }
        let (ra, rb) = (
            a.socket_ref().get_rx_buf_sz().expect("SO_RCVBUF"),
            b.socket_ref().get_rx_buf_sz().expect("SO_RCVBUF"),
        );
        assert_eq!(ra, rb);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // The kernel reports twice the size it was asked for.
            assert_eq!(ra, 2 * EVENT_RCVBUF);
        }
    }
}
