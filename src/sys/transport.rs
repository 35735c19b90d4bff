//! The netlink request socket: acknowledged requests sent in batches ([`BATCH`] per datagram,
//! acks matched by sequence number) and dumps streamed datagram by datagram, so that memory stays
//! bounded by one datagram however many links there are.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket};

use super::set_rcvbuf_force;
use crate::kernel::{KernelError, KernelOp};

/// Requests per datagram. Their acks (one per request) must fit the socket's receive buffer.
pub(super) const BATCH: usize = 256;
/// Receive buffer for one dump datagram (the kernel fills at most 32 KiB).
const DUMP_BUF: usize = 64 << 10;
/// Receive buffer of the request socket.
const RCVBUF: usize = 4 << 20;
/// How long to wait for the kernel's acks to one batch before calling them failed.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a dump is run while the kernel flags it interrupted (NLM_F_DUMP_INTR: the
/// table changed between two of its datagrams, so entries may be missing or doubled).
pub(super) const DUMP_ATTEMPTS: u32 = 5;

/// What the transport needs of a netlink socket: the real one, or a scripted one in tests.
pub(super) trait Datagrams {
    fn send_datagram(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Appends one whole datagram to `buf`.
    fn recv_datagram(&self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<()>>;
}

impl Datagrams for TokioSocket {
    async fn send_datagram(&self, buf: &[u8]) -> io::Result<()> {
        AsyncSocketExt::send(self, buf).await.map(|_| ())
    }

    async fn recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        AsyncSocketExt::recv(self, buf).await
    }
}

/// One plain netlink socket for requests and dumps, driven here rather than through rtnetlink's
/// `Handle`: that handle queues a whole dump as parsed messages before the caller sees the
/// first, which cost ~28 MB of heap at 4000 links; here memory is bounded by one datagram, and a
/// reconcile's requests share datagrams.
pub(super) struct Transport<S = TokioSocket> {
    sock: S,
    seq: Cell<u32>,
}

/// Why one request of a batch failed.
#[derive(Debug)]
pub(super) enum BatchError {
    /// The kernel's answer.
    Errno(i32),
    /// No answer: the datagram could not be sent, or its ack never came.
    Io(io::Error),
}

/// How one run of a dump ended.
enum DumpEnd {
    Complete,
    /// The kernel flagged a message NLM_F_DUMP_INTR: what was read is not one consistent table.
    Interrupted,
}

impl Transport {
    /// Opens the socket (inside a tokio runtime).
    pub(super) fn open() -> Result<Self, KernelError> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(KernelError::Socket)?;
        sock.socket_mut().bind_auto().map_err(KernelError::Socket)?;
        let _ = sock.socket_mut().set_cap_ack(true);
        if set_rcvbuf_force(sock.as_raw_fd(), RCVBUF).is_err() {
            let _ = sock.socket_mut().set_rx_buf_sz(RCVBUF);
        }
        Ok(Transport::new(sock))
    }
}

impl<S: Datagrams> Transport<S> {
    pub(super) fn new(sock: S) -> Self {
        Transport {
            sock,
            seq: Cell::new(1),
        }
    }

    /// Runs a dump request and folds every message into a value made by `init`, as its datagram
    /// arrives, so that memory stays bounded by one datagram however many links there are. A dump
    /// the kernel flags interrupted is thrown away and run again, up to [`DUMP_ATTEMPTS`] times.
    pub(super) async fn dump<T>(
        &self,
        msg: RouteNetlinkMessage,
        op: KernelOp,
        mut init: impl FnMut() -> T,
        mut each: impl FnMut(&mut T, RouteNetlinkMessage),
    ) -> Result<T, KernelError> {
        for attempt in 1..=DUMP_ATTEMPTS {
            let mut acc = init();
            match self
                .dump_once(msg.clone(), op, |m| each(&mut acc, m))
                .await?
            {
                DumpEnd::Complete => return Ok(acc),
                DumpEnd::Interrupted => {
                    tracing::debug!(%op, attempt, "dump interrupted by a concurrent change");
                }
            }
        }
        Err(KernelError::DumpInterrupted {
            op,
            attempts: DUMP_ATTEMPTS,
        })
    }

    async fn dump_once(
        &self,
        msg: RouteNetlinkMessage,
        op: KernelOp,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<DumpEnd, KernelError> {
        let err = |source: io::Error| KernelError::Netlink {
            op,
            ifindex: None,
            source,
        };
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut out = Vec::new();
        serialize(msg, NLM_F_REQUEST | NLM_F_DUMP, seq, &mut out);
        self.sock.send_datagram(&out).await.map_err(err)?;
        let mut buf: Vec<u8> = Vec::with_capacity(DUMP_BUF);
        let mut interrupted = false;
        loop {
            buf.clear();
            match tokio::time::timeout(ACK_TIMEOUT, self.sock.recv_datagram(&mut buf)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(err(e)),
                Err(_) => {
                    return Err(err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the kernel did not finish the dump",
                    )))
                }
            }
            for m in messages(&buf) {
                if m.header.sequence_number != seq {
                    continue; // a late ack of an earlier batch
                }
                // The rest of an interrupted dump is still read, to its end, but not used.
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::Done(_) if interrupted => return Ok(DumpEnd::Interrupted),
                    NetlinkPayload::Done(_) => return Ok(DumpEnd::Complete),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(err(io::Error::from_raw_os_error(-code.get())));
                        }
                    }
                    NetlinkPayload::InnerMessage(x) if !interrupted => each(x),
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
    pub(super) async fn batch(
        &self,
        msgs: Vec<RouteNetlinkMessage>,
        op: KernelOp,
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
                serialize(
                    msg,
                    NLM_F_REQUEST | NLM_F_ACK,
                    base.wrapping_add(i as u32),
                    &mut out,
                );
            }
            let done = &mut results[c * BATCH..c * BATCH + len];
            if let Err(e) = self.sock.send_datagram(&out).await {
                for r in done.iter_mut() {
                    *r = Some(Err(BatchError::Io(copy(&e))));
                }
                continue;
            }
            let mut pending = len;
            while pending > 0 {
                buf.clear();
                match tokio::time::timeout(ACK_TIMEOUT, self.sock.recv_datagram(&mut buf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // ENOBUFS: acks were dropped. The ones we lack count as failed; the
                        // daemon retries them.
                        tracing::debug!(error = %e, %op, "ack receive failed");
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
                    Err(BatchError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no acknowledgement from the kernel",
                    )))
                })
            })
            .collect()
    }
}

/// The same error again, for each request of a datagram that failed as a whole (io::Error is not
/// Clone): the errno if there is one, else the kind and the message.
fn copy(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Appends `msg` as a netlink message with these flags and sequence number (port id 0: the
/// kernel).
pub(super) fn serialize(msg: RouteNetlinkMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    let at = out.len();
    out.resize(at + m.buffer_len(), 0);
    m.serialize(&mut out[at..]);
}

/// The netlink messages in one datagram (malformed ones are skipped).
pub(super) fn messages(mut buf: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
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
pub(super) fn acks(buf: &[u8]) -> Vec<(u32, Result<(), i32>)> {
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

#[cfg(all(test, target_endian = "little"))]
mod tests;
