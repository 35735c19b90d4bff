//! The transport against a scripted kernel that answers with captured messages.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::super::fixtures as fx;
use super::super::msg;
use super::*;
use crate::sys::dump_links;

/// A netlink socket whose kernel is `reply`: every datagram sent is recorded and answered
/// with the datagrams `reply` returns; receiving with nothing queued fails (no waiting).
struct Script {
    sent: RefCell<Vec<Vec<u8>>>,
    queue: RefCell<VecDeque<Vec<u8>>>,
    reply: RefCell<Box<Kernel>>,
}

/// The kernel's answer to one datagram: the datagrams it queues.
type Kernel = dyn FnMut(&[u8]) -> Vec<Vec<u8>>;

impl Script {
    fn new(reply: impl FnMut(&[u8]) -> Vec<Vec<u8>> + 'static) -> Transport<Script> {
        Transport::new(Script {
            sent: RefCell::default(),
            queue: RefCell::default(),
            reply: RefCell::new(Box::new(reply)),
        })
    }
}

impl Datagrams for Script {
    async fn send_datagram(&self, buf: &[u8]) -> io::Result<()> {
        self.sent.borrow_mut().push(buf.to_vec());
        let answer = (self.reply.borrow_mut())(buf);
        self.queue.borrow_mut().extend(answer);
        Ok(())
    }

    async fn recv_datagram(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let d = self.queue.borrow_mut().pop_front();
        let d = d.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        buf.extend_from_slice(&d);
        Ok(())
    }
}

/// The (sequence number, offset) of every message in a datagram we sent.
fn requests(d: &[u8]) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= d.len() {
        let len = u32::from_ne_bytes(d[at..at + 4].try_into().unwrap()) as usize;
        out.push((
            u32::from_ne_bytes(d[at + 8..at + 12].try_into().unwrap()),
            at,
        ));
        at += len.next_multiple_of(4);
    }
    out
}

/// A captured message answering sequence number `seq`, with `flags` added.
fn answer(captured: &[u8], seq: u32, flags: u16) -> Vec<u8> {
    let mut m = captured.to_vec();
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    let f = u16::from_ne_bytes([m[6], m[7]]) | flags;
    m[6..8].copy_from_slice(&f.to_ne_bytes());
    m
}

/// A captured ack, for the request with sequence number `seq`.
fn ack(captured: &[u8], seq: u32) -> Vec<u8> {
    let mut m = answer(captured, seq, 0);
    // The request's own header follows the error code.
    m[28..32].copy_from_slice(&seq.to_ne_bytes());
    m
}

#[tokio::test]
async fn an_interrupted_dump_is_run_again_and_only_the_complete_run_counts() {
    // The kernel flagged this message of a dump during which a link was added.
    assert_ne!(
        messages(fx::DUMP_INTR_LINK)[0].header.flags & NLM_F_DUMP_INTR,
        0
    );
    let mut runs = 0;
    let t = Script::new(move |req| {
        runs += 1;
        let seq = requests(req)[0].0;
        if runs <= 2 {
            // As captured: a link added between two datagrams of the dump.
            vec![
                datagram(&[&answer(fx::DUMP_LINK_MACVLAN, seq, 0)]),
                datagram(&[
                    &answer(fx::DUMP_INTR_LINK, seq, 0),
                    &answer(fx::DUMP_DONE, seq, 0),
                ]),
            ]
        } else {
            vec![
                datagram(&[
                    &answer(fx::DUMP_LINK_MACVLAN, seq, 0),
                    &answer(fx::DUMP_LINK_PORT, seq, 0),
                ]),
                datagram(&[&answer(fx::DUMP_DONE, seq, 0)]),
            ]
        }
    });
    let links = dump_links(&t).await.expect("the third run is complete");
    let indexes: Vec<u32> = links.iter().map(|l| l.ifindex.0).collect();
    assert_eq!(indexes, vec![20, 11], "nothing of the interrupted runs");
    let seqs: Vec<u32> = t
        .sock
        .sent
        .borrow()
        .iter()
        .map(|d| requests(d)[0].0)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "each run is a request of its own");
}

#[tokio::test]
async fn a_dump_flagged_interrupted_only_on_its_done_is_run_again() {
    let mut runs = 0;
    let t = Script::new(move |req| {
        runs += 1;
        let seq = requests(req)[0].0;
        let intr = if runs == 1 { NLM_F_DUMP_INTR } else { 0 };
        vec![datagram(&[
            &answer(fx::DUMP_LINK_PORT, seq, 0),
            &answer(fx::DUMP_DONE, seq, intr),
        ])]
    });
    let links = dump_links(&t).await.expect("complete");
    assert_eq!(links.len(), 1);
    assert_eq!(t.sock.sent.borrow().len(), 2);
}

#[tokio::test]
async fn a_dump_interrupted_every_time_is_an_error_after_the_last_attempt() {
    let t = Script::new(|req| {
        let seq = requests(req)[0].0;
        vec![datagram(&[
            &answer(fx::DUMP_LINK_MACVLAN, seq, NLM_F_DUMP_INTR),
            &answer(fx::DUMP_DONE, seq, NLM_F_DUMP_INTR),
        ])]
    });
    let e = dump_links(&t).await.expect_err("never consistent");
    assert!(
        matches!(
            e,
            KernelError::DumpInterrupted {
                op: KernelOp::LinkDump,
                attempts: DUMP_ATTEMPTS
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), "dump_interrupted");
    assert_eq!(
        e.to_string(),
        format!("link dump: interrupted by concurrent changes {DUMP_ATTEMPTS} times in a row")
    );
    assert_eq!(t.sock.sent.borrow().len(), DUMP_ATTEMPTS as usize);
}

#[tokio::test]
async fn a_dump_the_kernel_refuses_is_an_error_with_its_errno() {
    let t = Script::new(|req| vec![ack(fx::ACK_ENODEV, requests(req)[0].0)]);
    let e = dump_links(&t).await.expect_err("refused");
    let KernelError::Netlink {
        op: KernelOp::LinkDump,
        ifindex: None,
        source,
    } = e
    else {
        panic!("{e:?}");
    };
    assert_eq!(source.raw_os_error(), Some(libc::ENODEV));
}

#[tokio::test]
async fn batched_acks_are_matched_by_sequence_number_across_datagrams() {
    // The kernel's answers, in reverse order, after a stray ack of an earlier request: every
    // seventh request is refused (ENOENT), the last one never acknowledged.
    let t = Script::new(|req| {
        let mut acks: Vec<Vec<u8>> = vec![ack(fx::ACK_OK, 0xdead)];
        for (seq, _) in requests(req).into_iter().rev() {
            let i = seq - 1;
            if i == 299 {
                continue;
            }
            acks.push(ack(
                if i % 7 == 0 {
                    fx::ACK_ENOENT
                } else {
                    fx::ACK_OK
                },
                seq,
            ));
        }
        let (a, b) = acks.split_at(acks.len() / 2);
        let parts = |x: &[Vec<u8>]| datagram(&x.iter().map(Vec::as_slice).collect::<Vec<_>>());
        vec![parts(a), parts(b)]
    });
    let msgs = (0..300)
        .map(|i| msg::protodown(crate::types::IfIndex(1000 + i), 3, true))
        .collect();
    let results = t.batch(msgs, KernelOp::Protodown).await;
    let sent = t.sock.sent.borrow();
    assert_eq!(sent.len(), 2, "{BATCH} requests per datagram");
    assert_eq!(requests(&sent[0]).len(), BATCH);
    assert_eq!(requests(&sent[1]).len(), 300 - BATCH);
    assert_eq!(results.len(), 300);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(()) => assert!(i % 7 != 0 && i != 299, "{i}"),
            Err(BatchError::Errno(libc::ENOENT)) => assert_eq!(i % 7, 0, "{i}"),
            Err(BatchError::Io(e)) => {
                assert_eq!(i, 299);
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            }
            Err(e) => panic!("{i}: {e:?}"),
        }
    }
}

/// Messages as the kernel packs them into one datagram: each padded to 4 bytes.
fn datagram(parts: &[&[u8]]) -> Vec<u8> {
    let mut d = Vec::new();
    for p in parts {
        d.extend_from_slice(p);
        d.resize(d.len().next_multiple_of(4), 0);
    }
    d
}

#[test]
fn acks_are_matched_to_their_sequence_numbers_with_the_kernels_errno() {
    let d = datagram(&[fx::ACK_OK, fx::ACK_ENOENT, fx::ACK_EBUSY, fx::ACK_ENODEV]);
    assert_eq!(
        acks(&d),
        vec![
            (200, Ok(())),
            (201, Err(libc::ENOENT)),
            (402, Err(libc::EBUSY)),
            (403, Err(libc::ENODEV)),
        ]
    );
}

#[test]
fn a_dump_datagram_splits_into_its_messages() {
    let d = datagram(&[fx::DUMP_LINK_MACVLAN, fx::DUMP_LINK_PORT, fx::DUMP_DONE]);
    let m = messages(&d);
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|m| m.header.sequence_number == 100));
    assert!(matches!(m[2].payload, NetlinkPayload::Done(_)));
    // No acks in a dump.
    assert!(acks(&d).is_empty());
}

#[test]
fn a_truncated_datagram_yields_the_whole_messages_before_the_cut() {
    let d = datagram(&[fx::DUMP_LINK_PORT, fx::DUMP_LINK_MACVLAN]);
    let cut = fx::DUMP_LINK_PORT.len().next_multiple_of(4) + 40;
    assert_eq!(messages(&d[..cut]).len(), 1);
    assert!(messages(&d[..15]).is_empty());
}
