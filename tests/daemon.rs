//! The event loop without root: `FakeKernel`, loopback UDP and paused tokio time.
//!
//! The daemon sends its heartbeats to 127.0.0.1:<port of `Harness::hb_rx`>; the test plays the
//! peers by sending encoded frames to the daemon's socket. `hb_rx` is a non-blocking std socket so
//! that the fake kernel can look into it synchronously (did a heartbeat leave before protodown?).
//! Every wait is on a condition with a bound in virtual time; the oracle for ownership is
//! `assign::owned`.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::time::Duration;

use common::link;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, LocalSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wmgwd2::assign;
use wmgwd2::cli::Config;
use wmgwd2::core::{Notice, Stats};
use wmgwd2::daemon::{Daemon, DaemonError, Notifier};
use wmgwd2::garp::frame as garp;
use wmgwd2::kernel::{EventSource, FakeKernel, Kernel, KernelError, KernelEvent, Snapshot};
use wmgwd2::links::LinkState;
use wmgwd2::reconcile::FdbFlush;
use wmgwd2::types::{IfIndex, Uid, Vni, VniRange};
use wmgwd2::wire::{self, Frame, Heartbeat, FLAG_LEAVING, FLAG_SETTLING, FLAG_STARTING};

const ME: Uid = Uid(0x1001);
const MY_INC: u64 = 77;
const PEER: Uid = Uid(0x1002);
const VNIS: u32 = 16;
const REASON: u8 = 3;
const OURS: u32 = 1 << REASON;
/// The veth pair and bridge every managed macvlan sits on (for the FDB flush).
const VETH: IfIndex = IfIndex(200);
const VETH_PEER: IfIndex = IfIndex(201);
const BRIDGE: IfIndex = IfIndex(300);
/// An unmanaged link and a link outside the managed range: never touched.
const ETH0: IfIndex = IfIndex(2);
const OUTSIDE: IfIndex = IfIndex(999);
/// The daemon's settings in these tests.
const INTERVAL: Duration = Duration::from_millis(100);
const HOLD_DOWN: Duration = Duration::from_millis(300);
const GARP_SPACING: Duration = Duration::from_millis(200);
const LEAVE_WAIT: Duration = Duration::from_millis(300);
/// Bound for anything that should happen within a few intervals.
const SOON: Duration = Duration::from_secs(2);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ifindex(vni: u32) -> IfIndex {
    IfIndex(100 + vni)
}

fn mac(vni: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, vni as u8]
}

fn ips(vni: u32) -> Vec<Ipv4Addr> {
    let mut v = vec![Ipv4Addr::new(10, 100, vni as u8, 1)];
    if vni == 1 {
        // Two addresses on one interface: one GARP each.
        v.push(Ipv4Addr::new(10, 100, 1, 2));
    }
    v
}

fn managed(vni: u32) -> LinkState {
    LinkState {
        mac: mac(vni),
        ..link(ifindex(vni), &format!("vrrp4-{vni}"), Some(VETH), None)
    }
}

/// What the fake kernel saw, besides the links themselves.
#[derive(Default)]
struct Journal {
    /// Every `set_protodown` request, with: was a heartbeat already waiting in `hb_rx`?
    protodown_calls: Vec<(Vec<(IfIndex, bool)>, bool)>,
    /// When each frame was sent, and on which interface.
    frames_at: Vec<(Instant, IfIndex)>,
}

struct Shared {
    fake: FakeKernel,
    hb_rx: Rc<StdUdpSocket>,
    journal: RefCell<Journal>,
    /// How long each protodown request takes (a kernel busy with thousands of links).
    slow: Cell<Duration>,
}

/// The kernel handed to the daemon: the fake, shared with the test, plus a journal.
struct Probe(Rc<Shared>);

impl Kernel for Probe {
    async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        self.0.fake.snapshot().await
    }

    async fn set_protodown(&self, changes: &[(IfIndex, bool)]) -> Vec<Result<(), KernelError>> {
        let heartbeat_waiting = self.0.hb_rx.peek_from(&mut [0u8; 64]).is_ok();
        self.0
            .journal
            .borrow_mut()
            .protodown_calls
            .push((changes.to_vec(), heartbeat_waiting));
        let slow = self.0.slow.get();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        self.0.fake.set_protodown(changes).await
    }

    async fn hand_back(&self, ifindexes: &[IfIndex]) -> Vec<Result<(), KernelError>> {
        self.0.fake.hand_back(ifindexes).await
    }

    async fn flush_neighbours(&self, ifindexes: &[IfIndex]) -> Result<usize, KernelError> {
        self.0.fake.flush_neighbours(ifindexes).await
    }

    async fn flush_fdb(&self, flushes: &[FdbFlush]) -> Vec<Result<(), KernelError>> {
        self.0.fake.flush_fdb(flushes).await
    }

    fn send_frame(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError> {
        self.0
            .journal
            .borrow_mut()
            .frames_at
            .push((Instant::now(), ifindex));
        self.0.fake.send_frame(ifindex, frame)
    }
}

/// The fake kernel's events, which the test can mute (to let the daemon miss changes), merged with
/// events the test injects (address changes, `Lost`), which `FakeKernel` does not produce.
struct Events {
    fake: mpsc::UnboundedReceiver<KernelEvent>,
    extra: mpsc::UnboundedReceiver<KernelEvent>,
    muted: Rc<Cell<bool>>,
}

impl EventSource for Events {
    async fn next_batch(&mut self) -> Option<Vec<KernelEvent>> {
        loop {
            tokio::select! {
                b = self.fake.next_batch() => {
                    let b = b?;
                    if !self.muted.get() {
                        return Some(b);
                    }
                }
                b = self.extra.next_batch() => return b,
            }
        }
    }
}

struct Harness {
    k: Rc<Shared>,
    /// Where the test's peers send from.
    peer_tx: StdUdpSocket,
    daemon_addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<Result<Stats, DaemonError>>>,
    /// Every heartbeat the daemon sent, in order.
    seen: Vec<Heartbeat>,
    peer_seq: u64,
    /// Injects kernel events.
    inject: mpsc::UnboundedSender<KernelEvent>,
    /// While set, the daemon does not hear of the fake kernel's changes.
    muted: Rc<Cell<bool>>,
}

fn config(port: u16, extra: &[&str]) -> Config {
    let port = port.to_string();
    let mut args = vec![
        "wmgwd2",
        "--minvni",
        "1",
        "--maxvni",
        "16",
        "--broadcast",
        "127.0.0.1",
        "--port",
        &port,
        "--interval",
        "100ms",
        "--dead-after",
        "3",
        "--hold-down",
        "3",
        "--garp-count",
        "3",
        "--garp-spacing",
        "200ms",
        "--garp-refresh",
        "30s",
        "--leave-wait",
        "300ms",
        "--protodown-reason",
        "3",
    ];
    args.extend_from_slice(extra);
    Config::parse_from(args).unwrap()
}

impl Harness {
    /// Builds the fake kernel (16 managed macvlans on a veth into a bridge, plus two links the
    /// daemon must leave alone), applies `setup` to it, and starts the daemon. Must run inside a
    /// `LocalSet`.
    async fn start_with(extra: &[&str], setup: impl FnOnce(&FakeKernel)) -> Harness {
        Harness::start_configured(extra, setup, |d, _| d).await
    }

    /// As [`Harness::start_with`], with `configure` applied to the daemon before it runs.
    async fn start_configured(
        extra: &[&str],
        setup: impl FnOnce(&FakeKernel),
        configure: impl FnOnce(Daemon<Probe>, Rc<Shared>) -> Daemon<Probe>,
    ) -> Harness {
        let hb_rx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        hb_rx.set_nonblocking(true).unwrap();
        let port = hb_rx.local_addr().unwrap().port();
        let (fake, events) = FakeKernel::new(REASON);
        fake.put_link(link(ETH0, "eth0", None, None), vec![]);
        fake.put_link(link(VETH, "veth-gw", Some(VETH_PEER), None), vec![]);
        fake.put_link(link(VETH_PEER, "veth-br", Some(VETH), Some(BRIDGE)), vec![]);
        fake.put_link(link(BRIDGE, "br0", None, None), vec![]);
        fake.put_link(
            link(OUTSIDE, "vrrp4-17", Some(VETH), None),
            vec![Ipv4Addr::new(10, 100, 17, 1)],
        );
        for vni in 1..=VNIS {
            fake.put_link(managed(vni), ips(vni));
        }
        setup(&fake);
        let k = Rc::new(Shared {
            fake,
            hb_rx: Rc::new(hb_rx),
            journal: RefCell::default(),
            slow: Cell::new(Duration::ZERO),
        });
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let daemon_addr = socket.local_addr().unwrap();
        let token = CancellationToken::new();
        let daemon = configure(
            Daemon::new(config(port, extra), ME, MY_INC, Probe(k.clone())),
            k.clone(),
        );
        let (inject, extra) = mpsc::unbounded_channel();
        let muted = Rc::new(Cell::new(false));
        let events = Events {
            fake: events,
            extra,
            muted: muted.clone(),
        };
        let task = tokio::task::spawn_local(daemon.run(socket, events, token.clone()));
        Harness {
            k,
            peer_tx: StdUdpSocket::bind("127.0.0.1:0").unwrap(),
            daemon_addr,
            token,
            task: Some(task),
            seen: vec![],
            peer_seq: 0,
            inject,
            muted,
        }
    }

    async fn start() -> Harness {
        Harness::start_with(&[], |_| {}).await
    }

    fn fake(&self) -> &FakeKernel {
        &self.k.fake
    }

    fn link(&self, ifindex: IfIndex) -> LinkState {
        self.fake().link(ifindex).unwrap()
    }

    /// The VNIs whose interface is active (protodown off, carrier).
    fn up(&self) -> BTreeSet<u32> {
        (1..=VNIS)
            .filter(|&v| self.link(ifindex(v)).active())
            .collect()
    }

    /// Every managed link is protodown with our bit and without carrier.
    fn all_down(&self) -> bool {
        (1..=VNIS).all(|v| {
            let l = self.link(ifindex(v));
            l.protodown && l.reason & OURS != 0 && !l.carrier
        })
    }

    fn untouched_links_untouched(&self) {
        assert_eq!(self.link(ETH0), link(ETH0, "eth0", None, None));
        assert_eq!(
            self.link(OUTSIDE),
            link(OUTSIDE, "vrrp4-17", Some(VETH), None)
        );
        for (changes, _) in &self.k.journal.borrow().protodown_calls {
            for &(i, _) in changes {
                assert!(
                    (ifindex(1)..=ifindex(VNIS)).contains(&i),
                    "protodown request for unmanaged ifindex {i}"
                );
            }
        }
    }

    fn protodown_requests(&self) -> usize {
        self.k
            .journal
            .borrow()
            .protodown_calls
            .iter()
            .map(|(c, _)| c.len())
            .sum()
    }

    /// Reads every heartbeat that arrived since the last call into `seen`; returns the new ones.
    fn read_heartbeats(&mut self) -> Vec<Heartbeat> {
        let mut buf = [0u8; 600];
        let mut new = vec![];
        while let Ok((n, _)) = self.k.hb_rx.recv_from(&mut buf) {
            match wire::decode(&buf[..n]) {
                Ok(Frame::Heartbeat(hb)) => new.push(hb),
                other => panic!("the daemon sent {other:?}"),
            }
        }
        self.seen.extend_from_slice(&new);
        new
    }

    /// Waits until `cond` holds, at most `bound` (virtual time), reading heartbeats meanwhile.
    async fn until(
        &mut self,
        what: &str,
        bound: Duration,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) {
        let end = Instant::now() + bound;
        loop {
            self.read_heartbeats();
            if cond(self) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            tokio::time::sleep(ms(1)).await;
        }
    }

    /// Lets `d` of virtual time pass with the daemon running.
    async fn pass(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
        self.read_heartbeats();
    }

    fn send(&self, bytes: &[u8]) {
        self.peer_tx.send_to(bytes, self.daemon_addr).unwrap();
    }

    /// Sends a heartbeat of `uid` with the next sequence number.
    fn send_peer(&mut self, uid: Uid, incarnation: u64, flags: u8, hold_ms: u32) {
        self.peer_seq += 1;
        self.send(&wire::encode(&Heartbeat {
            uid,
            incarnation,
            sequence: self.peer_seq,
            flags,
            interval_ms: 100,
            hold_ms,
        }));
    }

    /// Sends a heartbeat of `uid` whose ECHO lists us (as the last heartbeat of ours it saw) or
    /// leaves us out (it has expired us).
    fn send_peer_echoing(&mut self, uid: Uid, hold_ms: u32, lists_us: bool) {
        self.read_heartbeats();
        self.peer_seq += 1;
        let ours = self.seen.last().expect("a heartbeat of ours");
        let entries = if lists_us {
            vec![wire::Echo {
                uid: ME,
                incarnation: ours.incarnation,
                sequence: ours.sequence,
                age_ms: 0,
                loss_permille: 0,
                direct: true,
            }]
        } else {
            Vec::new()
        };
        let ext = wire::Extensions {
            echo: Some(wire::Echoes {
                entries,
                truncated: false,
            }),
            ..Default::default()
        };
        let hb = Heartbeat {
            uid,
            incarnation: 1,
            sequence: self.peer_seq,
            flags: 0,
            interval_ms: 100,
            hold_ms,
        };
        self.send(&wire::encode_full(&hb, &ext, None));
    }

    /// A daemon that took everything, then shares the VNIs with `PEER`, whose heartbeats list it;
    /// with our share.
    async fn split_with_echoing_peer() -> (Harness, BTreeSet<u32>) {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer_echoing(PEER, 60_000, true);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        (h, mine)
    }

    /// Waits for the end of the hold-down (the first ready heartbeat) and for every VNI to be up.
    /// (The links start up, as left by an earlier run: `up()` alone proves nothing at first.)
    async fn takeover(&mut self) {
        let all: BTreeSet<u32> = (1..=VNIS).collect();
        self.until("the lone daemon owns everything", SOON, |h| {
            h.seen.iter().any(|hb| hb.flags == 0) && h.up() == all
        })
        .await;
    }

    /// Cancels the daemon and returns its counters.
    async fn stop(&mut self) -> Stats {
        self.token.cancel();
        let stats = self.task.take().unwrap().await.unwrap().unwrap();
        self.read_heartbeats();
        stats
    }
}

/// The VNIs of 1..=16 that we own with `PEER` as the other candidate.
fn mine_with_peer() -> BTreeSet<u32> {
    let mine: BTreeSet<u32> =
        assign::owned(ME, &BTreeSet::from([PEER]), VniRange::spanning(1, VNIS))
            .into_iter()
            .map(|v| v.0)
            .collect();
    assert!(
        !mine.is_empty() && mine.len() < VNIS as usize,
        "the test needs a split, got {mine:?}"
    );
    mine
}

/// Runs `f` on a `LocalSet`: the daemon shares the fake kernel through an `Rc`, so it is not `Send`.
async fn local<F: std::future::Future>(f: F) -> F::Output {
    LocalSet::new().run_until(f).await
}

#[tokio::test(start_paused = true)]
async fn start_sets_protodown_everywhere_before_the_first_heartbeat() {
    local(async {
        let mut h = Harness::start().await;
        h.until("the first heartbeat", SOON, |h| !h.seen.is_empty())
            .await;
        let first = h.seen[0];
        assert_eq!(
            first,
            Heartbeat {
                uid: ME,
                incarnation: MY_INC,
                sequence: 1,
                flags: FLAG_STARTING,
                interval_ms: 100,
                hold_ms: 300,
            }
        );
        {
            let journal = h.k.journal.borrow();
            let (changes, heartbeat_waiting) = &journal.protodown_calls[0];
            assert!(!heartbeat_waiting, "a heartbeat left before protodown");
            let expected: Vec<(IfIndex, bool)> = (1..=VNIS).map(|v| (ifindex(v), true)).collect();
            assert_eq!(changes, &expected);
        }
        assert!(h.all_down());
        h.untouched_links_untouched();
        // Every managed MAC was flushed from the bridge it feeds.
        let flushed = h.fake().take_flushed();
        let expected: Vec<FdbFlush> = (1..=VNIS)
            .map(|vni| FdbFlush {
                vni: Vni(vni),
                family: wmgwd2::types::Family::V4,
                port: VETH_PEER,
                mac: mac(vni),
            })
            .collect();
        assert_eq!(flushed, expected);
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn lone_daemon_takes_everything_after_the_hold_down_and_sends_garps() {
    local(async {
        let t0 = Instant::now();
        let mut h = Harness::start().await;
        // Throughout the hold-down: starting heartbeats, nothing up, no GARP.
        h.pass(HOLD_DOWN - ms(10)).await;
        assert!(h.all_down());
        assert!(h.fake().take_sent().is_empty());
        assert!(
            h.seen.len() >= 2,
            "one heartbeat per interval: {:?}",
            h.seen
        );
        assert!(h.seen.iter().all(|hb| hb.flags == FLAG_STARTING));

        h.takeover().await;
        assert!(
            t0.elapsed() >= HOLD_DOWN,
            "took over after {:?}",
            t0.elapsed()
        );
        assert!(
            t0.elapsed() < HOLD_DOWN + ms(50),
            "took over after {:?}",
            t0.elapsed()
        );
        h.untouched_links_untouched();
        // Neighbour entries collected while protodown are flushed on every interface taken.
        let taken: Vec<IfIndex> = (1..=VNIS).map(ifindex).collect();
        assert_eq!(h.fake().take_neighbour_flushes(), taken);
        // Ready heartbeats from now on.
        h.until("a ready heartbeat", SOON, |h| {
            h.seen.last().unwrap().flags == 0
        })
        .await;

        // A burst of 3 GARPs per address, 200 ms apart, then nothing until the refresh.
        h.pass(2 * GARP_SPACING + ms(50)).await;
        let sent = h.fake().take_sent();
        for vni in 1..=VNIS {
            for ip in ips(vni) {
                let frame = garp(mac(vni), ip).to_vec();
                let n = sent
                    .iter()
                    .filter(|(i, f)| *i == ifindex(vni) && *f == frame)
                    .count();
                assert_eq!(n, 3, "GARPs for vni {vni} {ip}");
            }
        }
        let addresses: usize = (1..=VNIS).map(|v| ips(v).len()).sum();
        assert_eq!(sent.len(), 3 * addresses, "no other frames");
        h.pass(ms(5000)).await;
        assert!(h.fake().take_sent().is_empty(), "refresh is 30 s");
        let stats = h.stop().await;
        assert_eq!(stats.garps_sent, 3 * addresses as u64);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn peer_heartbeat_releases_exactly_its_vnis() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.pass(ms(500)).await;
        h.fake().take_flushed();
        h.fake().take_sent();
        // Join right after one of our scheduled heartbeats...
        let n = h.seen.len();
        h.until("a scheduled heartbeat", SOON, |h| h.seen.len() > n)
            .await;
        let t = Instant::now();
        let n = h.seen.len();

        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        // The released ones are protodown with our bit, and their MACs flushed from the bridge.
        for vni in (1..=VNIS).filter(|v| !mine.contains(v)) {
            let l = h.link(ifindex(vni));
            assert!(l.protodown && l.reason & OURS != 0, "vni {vni}: {l:?}");
        }
        let flushed: BTreeSet<u32> = h.fake().take_flushed().iter().map(|f| f.vni.0).collect();
        let theirs: BTreeSet<u32> = (1..=VNIS).filter(|v| !mine.contains(v)).collect();
        assert_eq!(flushed, theirs);
        // ...and a heartbeat out of schedule tells the peer at once, not 100 ms later.
        h.until("a heartbeat", SOON, |h| h.seen.len() > n).await;
        assert!(
            t.elapsed() < INTERVAL / 2,
            "next heartbeat after {:?}",
            t.elapsed()
        );

        // Stable while the peer lives: nothing flaps, no further requests.
        let requests = h.protodown_requests();
        for _ in 0..20 {
            h.pass(ms(100)).await;
            h.send_peer(PEER, 1, 0, 60_000);
        }
        assert_eq!(h.up(), mine);
        assert_eq!(h.protodown_requests(), requests);
        let stats = h.stop().await;
        assert_eq!(stats.frames_stale, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn starting_peer_takes_nothing_until_ready() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        let all: BTreeSet<u32> = (1..=VNIS).collect();
        for _ in 0..5 {
            h.send_peer(PEER, 1, FLAG_STARTING, 60_000);
            h.pass(ms(100)).await;
        }
        assert_eq!(h.up(), all, "a starting peer is not a candidate");
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn leaving_peer_is_replaced_before_its_hold_time() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;
        h.fake().take_sent();

        let t = Instant::now();
        h.send_peer(PEER, 1, FLAG_LEAVING, 60_000);
        let all: BTreeSet<u32> = (1..=VNIS).collect();
        h.until("the VNIs taken back", SOON, |h| h.up() == all)
            .await;
        assert!(t.elapsed() < ms(200), "took {:?}", t.elapsed());
        // The retaken VNIs are announced.
        h.pass(ms(10)).await;
        let garped: BTreeSet<u32> = h
            .fake()
            .take_sent()
            .iter()
            .map(|(i, _)| i.0 - 100)
            .collect();
        let theirs: BTreeSet<u32> = (1..=VNIS).filter(|v| !mine.contains(v)).collect();
        assert_eq!(garped, theirs);
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn dead_peer_is_replaced_at_its_hold_time() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        let t = Instant::now();
        h.send_peer(PEER, 1, 0, 1000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        // Not before its deadline...
        tokio::time::sleep_until(t + ms(950)).await;
        assert_eq!(h.up(), mine);
        // ...but right after it.
        let all: BTreeSet<u32> = (1..=VNIS).collect();
        h.until("the VNIs taken back", SOON, |h| h.up() == all)
            .await;
        assert!(t.elapsed() < ms(1100), "took {:?}", t.elapsed());
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn malformed_datagrams_change_nothing() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;
        let requests = h.protodown_requests();

        let good = wire::encode(&Heartbeat {
            uid: Uid(0x1003),
            incarnation: 1,
            sequence: 1,
            flags: 0,
            interval_ms: 100,
            hold_ms: 60_000,
        });
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b.to_vec()
        };
        let mut long = good.to_vec();
        long.push(0);
        let mut zero_uid = good;
        zero_uid[8..16].fill(0);
        let mut bad_timing = good;
        bad_timing[32..36].copy_from_slice(&[0; 4]);
        let garbage: Vec<Vec<u8>> = vec![
            vec![],
            good[..20].to_vec(),
            with(0, b'X'),
            with(4, 2),
            with(6, 2),
            long,
            vec![0; 8],
            zero_uid.to_vec(),
            bad_timing.to_vec(),
            vec![0xff; 600],
        ];
        for _ in 0..10 {
            for g in &garbage {
                h.send(g);
            }
            h.pass(ms(50)).await;
        }
        h.pass(ms(500)).await;
        assert_eq!(h.up(), mine);
        assert_eq!(h.protodown_requests(), requests);

        let stats = h.stop().await;
        let count = |k: &str| stats.frames_malformed.get(k).copied().unwrap_or(0);
        // The 600-byte datagram is cut at MAX_DATAGRAM by the receiver: a bad magic, still.
        assert_eq!(count("truncated"), 20);
        assert_eq!(count("bad_magic"), 20);
        assert_eq!(count("unsupported_version"), 10);
        assert_eq!(count("unsupported_auth"), 10);
        // One byte after the header: an extension too short for its own type and length.
        assert_eq!(count("bad_extension"), 10);
        assert_eq!(count("zero_uid"), 20);
        assert_eq!(count("bad_timing"), 10);
        assert_eq!(stats.frames_malformed.values().sum::<u64>(), 100);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn own_frames_are_ignored_and_uid_conflicts_counted() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.pass(ms(300)).await;
        let all: BTreeSet<u32> = (1..=VNIS).collect();
        // Our own heartbeat looped back (a broadcast comes back to its sender).
        let echo = *h.seen.last().unwrap();
        h.send(&wire::encode(&echo));
        // An earlier process with our UID, and a legacy gateway with our UID: counted, logged,
        // we keep serving (peers follow the later incarnation: ours).
        h.send(&wire::encode(&Heartbeat {
            incarnation: MY_INC - 1,
            sequence: 1,
            ..echo
        }));
        h.send(&ME.0.to_be_bytes());
        h.pass(ms(300)).await;
        assert_eq!(h.up(), all);
        // A later process with our UID: peers follow it, so we step back (own nothing) while
        // it is heard, and serve again once it has been silent for its hold time.
        h.send(&wire::encode(&Heartbeat {
            incarnation: MY_INC + 1,
            sequence: 1,
            ..echo
        }));
        h.pass(ms(100)).await;
        assert_eq!(h.up(), BTreeSet::new());
        h.pass(ms(600)).await;
        assert_eq!(h.up(), all);
        let stats = h.stop().await;
        assert_eq!(stats.uid_conflicts, 3);
        assert_eq!(stats.frames_received, 4);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn drift_is_corrected() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;
        let theirs = (1..=VNIS).find(|v| !mine.contains(v)).unwrap();
        let ours = *mine.first().unwrap();

        // Someone clears protodown on the peer's VNI by hand.
        h.fake().edit_link(ifindex(theirs), |l| {
            l.protodown = false;
            l.reason = 0;
            l.carrier = true;
            l.running = true;
        });
        h.until("protodown set again", SOON, |h| {
            let l = h.link(ifindex(theirs));
            l.protodown && l.reason & OURS != 0 && !l.carrier
        })
        .await;

        // The macvlan regains carrier when its lower device comes back: protodown again.
        h.fake().edit_link(ifindex(theirs), |l| {
            l.carrier = true;
            l.running = true;
        });
        h.until("carrier dropped again", SOON, |h| {
            !h.link(ifindex(theirs)).carrier
        })
        .await;

        // Someone sets protodown on one of ours.
        h.fake().edit_link(ifindex(ours), |l| {
            l.protodown = true;
            l.reason = OURS;
            l.carrier = false;
            l.running = false;
        });
        h.until("our VNI up again", SOON, |h| h.up() == mine).await;
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_leaving_and_ends_with_every_link_down() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.pass(ms(500)).await;
        let t = Instant::now();
        let stats = h.stop().await;
        // No ready peer to wait for: the stop is immediate.
        assert!(t.elapsed() < ms(50), "took {:?}", t.elapsed());
        assert!(h.all_down(), "links after stop: {:?}", h.up());
        // The last two heartbeats say LEAVING, and only they.
        let n = h.seen.len();
        assert!(h.seen[..n - 2]
            .iter()
            .all(|hb| hb.flags & FLAG_LEAVING == 0));
        assert!(h.seen[n - 2..].iter().all(|hb| hb.flags == FLAG_LEAVING));
        assert!(h.seen[n - 2].sequence < h.seen[n - 1].sequence);
        assert_eq!(stats.heartbeats_sent, h.seen.len() as u64);
        h.untouched_links_untouched();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_peer_at_most_leave_wait() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;

        // The peer never answers: the daemon keeps its VNIs up for leave-wait, then stops.
        let t = Instant::now();
        h.token.cancel();
        h.until("the first LEAVING", SOON, |h| {
            h.seen.last().unwrap().flags == FLAG_LEAVING
        })
        .await;
        assert_eq!(h.up(), mine, "make before break: still up while waiting");
        let stats = h.task.take().unwrap().await.unwrap().unwrap();
        assert!(t.elapsed() >= LEAVE_WAIT, "took {:?}", t.elapsed());
        assert!(t.elapsed() < LEAVE_WAIT + ms(50), "took {:?}", t.elapsed());
        assert!(h.all_down());
        assert!(stats.heartbeats_sent > 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_early_when_the_peer_confirms() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;

        let t = Instant::now();
        h.token.cancel();
        h.until("the first LEAVING", SOON, |h| {
            h.seen.last().unwrap().flags == FLAG_LEAVING
        })
        .await;
        // A heartbeat the peer sent while still applying the takeover confirms nothing.
        h.send_peer(PEER, 1, FLAG_SETTLING, 60_000);
        h.pass(LEAVE_WAIT / 2).await;
        assert!(
            !h.task.as_ref().unwrap().is_finished(),
            "a SETTLING heartbeat ended the wait"
        );
        // The peer took over and says so with a heartbeat out of schedule.
        h.send_peer(PEER, 1, 0, 60_000);
        h.task.take().unwrap().await.unwrap().unwrap();
        assert!(t.elapsed() < LEAVE_WAIT, "took {:?}", t.elapsed());
        assert!(h.all_down());
    })
    .await;
}

/// A stop within 50 ms (the action backoff) of a takeover. The final protodown once went through
/// the backoff: it was deferred to a retry that never ran, because the loop was over, and the
/// VNIs taken just before the stop stayed up.
#[tokio::test(start_paused = true)]
async fn shutdown_right_after_a_takeover_still_ends_with_every_link_down() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.stop().await;
        assert!(h.all_down(), "still up after stop: {:?}", h.up());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn missing_interface_is_managed_when_it_appears() {
    local(async {
        let mut h = Harness::start_with(&[], |fake| {
            // vrrp4-5 does not exist yet.
            fake.edit_link(ifindex(5), |l| l.ifname = "tmp5".into());
        })
        .await;
        let all: BTreeSet<u32> = (1..=VNIS).filter(|&v| v != 5).collect();
        h.until("the others taken", SOON, |h| {
            h.seen.iter().any(|hb| hb.flags == 0)
                && (1..=VNIS)
                    .filter(|&v| v != 5 && h.link(ifindex(v)).active())
                    .collect::<BTreeSet<_>>()
                    == all
        })
        .await;
        assert_eq!(h.link(ifindex(5)).ifname, "tmp5");
        assert!(
            !h.link(ifindex(5)).protodown,
            "an unmanaged name is not touched"
        );
        h.fake()
            .edit_link(ifindex(5), |l| l.ifname = "vrrp4-5".into());
        let every: BTreeSet<u32> = (1..=VNIS).collect();
        h.until("vrrp4-5 owned and up", SOON, |h| h.up() == every)
            .await;
        h.stop().await;
    })
    .await;
}

/// Takes everything, loses the uplink's carrier (releases everything), gets it back, and checks
/// that nothing is taken for `hold` after that (heartbeats saying STARTING), then everything.
async fn uplink_cut_and_back(uplink_hold_down: &str, hold: Duration) {
    let mut h = Harness::start_with(
        &[
            "--bind-interface",
            "eth0",
            "--uplink-hold-down",
            uplink_hold_down,
        ],
        |_| {},
    )
    .await;
    h.takeover().await;
    h.fake().edit_link(ETH0, |l| l.carrier = false);
    h.until("everything released", SOON, |h| h.all_down()).await;
    h.until("a starting heartbeat", SOON, |h| {
        h.seen.last().unwrap().flags == FLAG_STARTING
    })
    .await;
    let t = Instant::now();
    h.fake().edit_link(ETH0, |l| l.carrier = true);
    h.pass(hold - ms(20)).await;
    assert!(h.up().is_empty(), "took over during the hold-down");
    assert_eq!(h.seen.last().unwrap().flags, FLAG_STARTING);
    h.takeover().await;
    assert!(t.elapsed() >= hold);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn uplink_loss_releases_everything_and_rejoins_through_the_uplink_hold_down() {
    local(uplink_cut_and_back("2s", ms(2000))).await;
}

#[tokio::test(start_paused = true)]
async fn uplink_hold_down_shorter_than_the_start_up_hold_down_does_not_shorten_it() {
    local(uplink_cut_and_back("0s", HOLD_DOWN)).await;
}

/// GARP frames sent since the last call, per (ifindex, sender IP).
fn garps_by_address(
    sent: &[(IfIndex, Vec<u8>)],
) -> std::collections::BTreeMap<(IfIndex, Ipv4Addr), usize> {
    let mut m = std::collections::BTreeMap::new();
    for (i, f) in sent {
        let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
        *m.entry((*i, ip)).or_default() += 1;
    }
    m
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_their_schedule_while_the_kernel_is_slow() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.read_heartbeats();
        let before = h.seen.len();
        // A peer joins: we release its VNIs, and the kernel takes a second to answer. Our peers
        // must keep hearing us meanwhile (they would declare us dead after 3 intervals).
        h.k.slow.set(ms(1000));
        h.send_peer(PEER, 1, 0, 60_000);
        h.pass(ms(1000)).await;
        let during = &h.seen[before..];
        assert!(
            during.len() >= 8,
            "{} heartbeats in 1 s of a slow kernel, at a 100 ms interval",
            during.len()
        );
        // Sent while the kernel was still applying the change: they must not confirm anything.
        let settling = during
            .iter()
            .filter(|hb| hb.flags & FLAG_SETTLING != 0)
            .count();
        assert!(
            settling >= during.len() - 2,
            "{settling} of {} said SETTLING",
            during.len()
        );
        h.k.slow.set(Duration::ZERO);
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn address_added_to_an_owned_interface_is_announced() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(1000)).await;
        h.fake().take_sent();

        let ours = *mine.first().unwrap();
        let theirs = (1..=VNIS).find(|v| !mine.contains(v)).unwrap();
        for vni in [ours, theirs] {
            let new = Ipv4Addr::new(10, 200, vni as u8, 9);
            let mut addrs = ips(vni);
            addrs.push(new);
            h.fake().put_link(h.link(ifindex(vni)), addrs);
            h.inject
                .send(KernelEvent::Address {
                    ifindex: ifindex(vni),
                    addr: new.into(),
                    added: true,
                })
                .unwrap();
        }
        h.pass(2 * GARP_SPACING + ms(50)).await;
        let sent = garps_by_address(&h.fake().take_sent());
        // A burst for the owned interface (all of its addresses), nothing for the other one.
        let expected: std::collections::BTreeMap<(IfIndex, Ipv4Addr), usize> = ips(ours)
            .into_iter()
            .chain([Ipv4Addr::new(10, 200, ours as u8, 9)])
            .map(|ip| ((ifindex(ours), ip), 3))
            .collect();
        assert_eq!(sent, expected);
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn drift_the_daemon_did_not_hear_of_is_corrected_by_the_periodic_resync() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        let theirs = (1..=VNIS).find(|v| !mine.contains(v)).unwrap();
        h.muted.set(true);
        h.fake().edit_link(ifindex(theirs), |l| {
            l.protodown = false;
            l.reason = 0;
            l.carrier = true;
            l.running = true;
        });
        h.pass(ms(500)).await;
        assert!(h.up().contains(&theirs), "no event, no correction yet");
        // --resync 60s (the default).
        h.until("the resync corrected it", Duration::from_secs(61), |h| {
            h.up() == mine
        })
        .await;
        h.muted.set(false);
        h.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn lost_events_trigger_a_resync_at_once() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        h.pass(ms(500)).await;
        let theirs = (1..=VNIS).find(|v| !mine.contains(v)).unwrap();
        h.muted.set(true);
        h.fake().edit_link(ifindex(theirs), |l| {
            l.protodown = false;
            l.reason = 0;
            l.carrier = true;
            l.running = true;
        });
        h.muted.set(false);
        let t = Instant::now();
        h.inject.send(KernelEvent::Lost).unwrap();
        h.until("the resync corrected it", SOON, |h| h.up() == mine)
            .await;
        assert!(t.elapsed() < ms(50), "took {:?}", t.elapsed());
        let stats = h.stop().await;
        assert!(stats.resyncs >= 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_interface_is_forgotten_and_a_new_one_managed() {
    local(async {
        let mut h = Harness::start().await;
        h.takeover().await;
        h.pass(ms(1000)).await;
        h.fake().take_sent();
        // vrrp4-4 is deleted and created again with a new ifindex, protodown off.
        h.inject
            .send(KernelEvent::LinkGone {
                ifindex: ifindex(4),
            })
            .unwrap();
        h.pass(ms(10)).await;
        let mut again = managed(4);
        again.ifindex = IfIndex(500);
        again.protodown = true;
        again.reason = 0;
        again.carrier = false;
        again.running = false;
        h.fake().put_link(again, ips(4));
        h.pass(ms(1)).await;
        // FakeKernel reports the link only; the kernel reports the address next.
        h.inject
            .send(KernelEvent::Address {
                ifindex: IfIndex(500),
                addr: ips(4)[0].into(),
                added: true,
            })
            .unwrap();
        h.until("the new vrrp4-4 up", SOON, |h| {
            h.link(IfIndex(500)).active()
        })
        .await;
        h.pass(ms(10)).await;
        let sent = garps_by_address(&h.fake().take_sent());
        assert_eq!(sent.get(&(IfIndex(500), ips(4)[0])), Some(&1), "{sent:?}");
        h.stop().await;
        // The stop puts the new interface down (acted on a moment ago: no backoff at the stop).
        assert!(h.link(IfIndex(500)).protodown);
    })
    .await;
}

/// More GARPs than the daemon sends in one wake-up: every address is still announced, once, at
/// once.
#[tokio::test(start_paused = true)]
async fn a_large_takeover_announces_every_address() {
    local(async {
        const N: u32 = 600;
        let hb_rx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        hb_rx.set_nonblocking(true).unwrap();
        let port = hb_rx.local_addr().unwrap().port().to_string();
        let (fake, events) = FakeKernel::new(REASON);
        let ip = |vni: u32| Ipv4Addr::new(10, 100 + (vni / 256) as u8, (vni % 256) as u8, 1);
        let mac = |vni: u32| [0x02, 0, 0, 0, (vni >> 8) as u8, vni as u8];
        for vni in 1..=N {
            let l = LinkState {
                mac: mac(vni),
                ..link(IfIndex(1000 + vni), &format!("vrrp4-{vni}"), None, None)
            };
            fake.put_link(l, vec![ip(vni)]);
        }
        let k = Rc::new(Shared {
            fake,
            hb_rx: Rc::new(hb_rx),
            journal: RefCell::default(),
            slow: Cell::new(Duration::ZERO),
        });
        let cfg = Config::parse_from([
            "wmgwd2",
            "--minvni=1",
            "--maxvni=600",
            "--broadcast=127.0.0.1",
            &format!("--port={port}"),
            "--interval=100ms",
            "--hold-down=1",
            "--garp-count=1",
        ])
        .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let token = CancellationToken::new();
        let daemon = Daemon::new(cfg, ME, MY_INC, Probe(k.clone()));
        let task = tokio::task::spawn_local(daemon.run(socket, events, token.clone()));

        let t0 = Instant::now();
        while k.journal.borrow().frames_at.len() < N as usize {
            assert!(
                t0.elapsed() < SOON,
                "GARPs sent: {}",
                k.journal.borrow().frames_at.len()
            );
            tokio::time::sleep(ms(1)).await;
        }
        tokio::time::sleep(ms(100)).await;
        let (first, last) = {
            let journal = k.journal.borrow();
            (journal.frames_at[0].0, journal.frames_at.last().unwrap().0)
        };
        assert!(last - first < ms(50), "the burst took {:?}", last - first);
        let sent = k.fake.take_sent();
        assert_eq!(sent.len(), N as usize, "exactly one each");
        let expected: BTreeSet<(IfIndex, Vec<u8>)> = (1..=N)
            .map(|vni| (IfIndex(1000 + vni), garp(mac(vni), ip(vni)).to_vec()))
            .collect();
        assert_eq!(sent.into_iter().collect::<BTreeSet<_>>(), expected);
        token.cancel();
        task.await.unwrap().unwrap();
    })
    .await;
}

/// The whole process stalls (SIGSTOP, a VM pause: here the clock jumps) for longer than its hold
/// time, and its peer expired it meanwhile (the peer's heartbeats queued during the stall leave
/// it out). The heartbeat task notices the silence first and waits for the loop's verdict, so not
/// one heartbeat after the stall says "ready"; the core releases everything and rejoins through
/// the hold-down.
#[tokio::test(start_paused = true)]
async fn a_stall_after_which_a_peer_has_expired_us_releases_everything_and_rejoins() {
    local(async {
        let (mut h, mine) = Harness::split_with_echoing_peer().await;
        let before = h.seen.len();
        // Sent during our stall: the peer no longer counts us.
        h.send_peer_echoing(PEER, 60_000, false);
        tokio::time::advance(ms(1000)).await;
        h.until("everything down after the stall", SOON, |h| h.all_down())
            .await;
        let after = &h.seen[before..];
        assert!(!after.is_empty(), "no heartbeat after the stall");
        assert!(
            after.iter().all(|hb| hb.flags & FLAG_STARTING != 0),
            "a heartbeat after the stall did not say STARTING: {after:?}"
        );
        // Through the hold-down, back to our share (the peer lists us again).
        h.send_peer_echoing(PEER, 60_000, true);
        h.until("our share back after the hold-down", SOON, |h| {
            h.up() == mine && h.seen.last().is_some_and(|hb| hb.flags == 0)
        })
        .await;
        let stats = h.stop().await;
        assert!(h.all_down());
        assert_eq!(stats.local_stalls, 1);
    })
    .await;
}

/// The same stall, but nobody expired us: a lone gateway, or peers held up with us (the whole
/// host stalled; here the peer's heartbeat read after the stall still lists us). Releasing
/// everything would be the outage: the daemon keeps what it owns, and its first heartbeat after
/// the stall says "ready", not STARTING.
#[tokio::test(start_paused = true)]
async fn a_stall_after_which_every_peer_still_counts_us_keeps_everything() {
    local(async {
        let (mut h, mine) = Harness::split_with_echoing_peer().await;
        let before = h.seen.len();
        h.send_peer_echoing(PEER, 60_000, true);
        tokio::time::advance(ms(1000)).await;
        h.pass(ms(500)).await;
        let after = &h.seen[before..];
        assert!(!after.is_empty(), "no heartbeat after the stall");
        assert!(
            after.iter().all(|hb| hb.flags & FLAG_STARTING == 0),
            "a heartbeat after the stall said STARTING: {after:?}"
        );
        assert_eq!(h.up(), mine, "what we own moved");
        let stats = h.stop().await;
        assert_eq!(stats.local_stalls, 1);
    })
    .await;
}

/// What the daemon told its service manager, and when, and how many VNIs were up then.
type Notices = Rc<RefCell<Vec<(Instant, Notice, usize)>>>;

struct Recorder(Notices, Rc<Shared>);

impl Notifier for Recorder {
    fn notify(&mut self, notice: &Notice) {
        let up = (1..=VNIS)
            .filter(|&v| self.1.fake.link(ifindex(v)).is_some_and(|l| l.active()))
            .count();
        self.0
            .borrow_mut()
            .push((Instant::now(), notice.clone(), up));
    }
}

/// READY=1 only once the hold-down is over and the takeover is in the kernel; watchdog
/// keep-alives come from the event loop, so they stop while it is stuck (here: on a kernel that
/// takes two seconds to answer), even though the heartbeat task keeps sending; STOPPING at the
/// stop.
#[tokio::test(start_paused = true)]
async fn systemd_hears_ready_after_the_takeover_and_no_keepalive_from_a_stuck_loop() {
    local(async {
        let notices: Notices = Rc::default();
        let n = notices.clone();
        let mut h = Harness::start_configured(
            &[],
            |_| {},
            move |d, k| {
                d.with_notifier(Box::new(Recorder(n, k)))
                    .with_watchdog(ms(50))
            },
        )
        .await;
        h.takeover().await;
        let ready: Vec<usize> = notices
            .borrow()
            .iter()
            .filter(|(_, n, _)| *n == Notice::Ready)
            .map(|&(_, _, up)| up)
            .collect();
        assert_eq!(ready, vec![VNIS as usize], "one READY, with every VNI up");
        h.pass(ms(300)).await;
        let keepalives = |from: Instant, to: Instant| {
            notices
                .borrow()
                .iter()
                .filter(|(t, n, _)| *n == Notice::Watchdog && *t >= from && *t < to)
                .count()
        };
        let t = Instant::now();
        assert!(
            keepalives(t - ms(300), t) >= 5,
            "keep-alives while all is well"
        );

        // The kernel now takes 2 s per request: the loop waits on it.
        h.k.slow.set(Duration::from_secs(2));
        let sent_before = h.seen.len();
        let stuck = Instant::now();
        h.send_peer(PEER, 1, 0, 60_000);
        h.pass(ms(1500)).await;
        assert_eq!(
            keepalives(stuck + ms(100), stuck + ms(1500)),
            0,
            "keep-alives from a loop stuck on the kernel"
        );
        assert!(
            h.seen.len() - sent_before >= 10,
            "the heartbeat task went on meanwhile"
        );
        h.k.slow.set(Duration::ZERO);
        h.pass(ms(1000)).await;
        let t = Instant::now();
        assert!(keepalives(t - ms(400), t) >= 4, "keep-alives again");
        h.stop().await;
        assert!(notices
            .borrow()
            .iter()
            .any(|(_, n, _)| *n == Notice::Stopping));
    })
    .await;
}

/// `wmgwd2 status` over the control socket: the gateway, its members, every VNI's owner and
/// whether it is active here (checked against the kernel), counters, and the ownership changes
/// with their reasons.
#[tokio::test(start_paused = true)]
async fn status_over_the_control_socket_agrees_with_the_kernel() {
    local(async {
        let dir = std::env::temp_dir().join(format!("wmgwd2-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let rx = wmgwd2::control::listen(&path).await.unwrap();
        let mut h = Harness::start_configured(&[], |_| {}, move |d, _| d.with_control(rx)).await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        // A second daemon must not take over a live daemon's socket.
        assert!(matches!(
            wmgwd2::control::listen(&path).await,
            Err(wmgwd2::control::ControlError::InUse { .. })
        ));
        let answer = wmgwd2::control::ask(&path, "status").await.unwrap();
        let r: wmgwd2::status::Report = serde_json::from_str(&answer).unwrap();
        assert_eq!(r.schema, 1);
        assert_eq!(r.gateway.uid, "0x1001");
        assert_eq!(r.gateway.state, "ready");
        assert_eq!(r.gateway.owned, mine.len());
        assert_eq!(r.members.len(), 1);
        assert_eq!(
            (r.members[0].uid.as_str(), r.members[0].state.as_str()),
            ("0x1002", "ready")
        );
        assert!(r.members[0].frames >= 1);
        assert_eq!(r.vnis.len(), VNIS as usize);
        for v in &r.vnis {
            let ours = mine.contains(&v.vni);
            let expected = if ours { "0x1001" } else { "0x1002" };
            assert_eq!(v.owner.as_deref(), Some(expected), "vni {}", v.vni);
            assert_eq!(v.active, h.link(ifindex(v.vni)).active(), "vni {}", v.vni);
            assert_eq!(v.active, ours, "vni {}", v.vni);
            assert_eq!(v.why, None, "vni {}", v.vni);
        }
        let reasons: Vec<&str> = r.transitions.iter().map(|t| t.reason.as_str()).collect();
        assert_eq!(reasons, ["hold-down over", "peer 0x1002 joined"]);
        assert!(r.counters["frames_received"] >= 1);
        let text = r.render();
        assert!(text.contains("gateway 0x1001 (ready)"), "{text}");
        assert!(text.contains("(this gateway)"), "{text}");
        // `plan --without 0x1002` predicts exactly the moves its leaving then makes.
        let plan: wmgwd2::status::PlanReport = serde_json::from_str(
            &wmgwd2::control::ask(&path, "plan without=0x1002")
                .await
                .unwrap(),
        )
        .unwrap();
        let theirs: BTreeSet<u32> = (1..=VNIS).filter(|v| !mine.contains(v)).collect();
        assert_eq!(plan.candidates_now, ["0x1001", "0x1002"]);
        assert_eq!(plan.candidates_then, ["0x1001"]);
        assert_eq!(plan.moves.len(), 1);
        assert_eq!(
            (plan.moves[0].from.as_str(), plan.moves[0].to.as_str()),
            ("0x1002", "0x1001")
        );
        assert_eq!(plan.moved, theirs.len());
        let none: serde_json::Value =
            serde_json::from_str(&wmgwd2::control::ask(&path, "plan").await.unwrap()).unwrap();
        assert_eq!(none["moved"], 0);
        h.send_peer(PEER, 1, FLAG_LEAVING, 60_000);
        let every: BTreeSet<u32> = (1..=VNIS).collect();
        h.until("the peer's VNIs back", SOON, |h| h.up() == every)
            .await;
        // What the plan named is what moved.
        let named = plan.moves[0].vnis.clone();
        assert_eq!(
            named,
            wmgwd2::types::vni_ranges(theirs.iter().map(|&v| Vni(v)))
        );
        let bad: serde_json::Value =
            serde_json::from_str(&wmgwd2::control::ask(&path, "nonsense").await.unwrap()).unwrap();
        assert_eq!(bad["error"], "unknown request \"nonsense\"");
        h.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// `wmgwd2 drain` and `wmgwd2 undrain` over the control socket, on a lone gateway: it hands
/// everything over (to nobody: everything goes down), keeps heartbeating as a non-candidate, and
/// takes everything back after a hold-down.
#[tokio::test(start_paused = true)]
async fn drain_and_undrain_over_the_control_socket() {
    local(async {
        let dir = std::env::temp_dir().join(format!("wmgwd2-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let rx = wmgwd2::control::listen(&path).await.unwrap();
        let mut h = Harness::start_configured(&[], |_| {}, move |d, _| d.with_control(rx)).await;
        h.takeover().await;
        let state = |answer: String| -> String {
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
            v["state"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            state(wmgwd2::control::ask(&path, "drain").await.unwrap()),
            "drained"
        );
        h.until("everything down", SOON, |h| h.all_down()).await;
        let before = h.seen.len();
        h.pass(ms(500)).await;
        assert!(h.seen.len() > before, "heartbeats go on while drained");
        assert!(
            h.seen[before..].iter().all(|hb| hb.starting()),
            "drained: not a candidate"
        );
        assert!(h.all_down());
        assert_eq!(
            state(wmgwd2::control::ask(&path, "undrain").await.unwrap()),
            "starting"
        );
        let every: BTreeSet<u32> = (1..=VNIS).collect();
        h.until("everything back", SOON, |h| h.up() == every).await;
        h.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// `GET /metrics`: the exposition agrees with the kernel (owned and active VNIs), counts what
/// happened, and passes Prometheus's own checker (`promtool check metrics`) when it is installed
/// (CI installs Debian's `prometheus`; without it that part says it was skipped).
#[tokio::test(start_paused = true)]
async fn metrics_are_served_and_agree_with_the_kernel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    local(async {
        let (rx, addr) = wmgwd2::metrics::listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut h = Harness::start_configured(&[], |_| {}, move |d, _| d.with_metrics(rx)).await;
        h.takeover().await;
        h.send_peer(PEER, 1, 0, 60_000);
        let mine = mine_with_peer();
        h.until("the peer's VNIs released", SOON, |h| h.up() == mine)
            .await;
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let reply = get("/metrics").await;
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let value = |name: &str| -> f64 {
            body.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{body}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(value("wmgwd2_vnis_owned") as usize, mine.len());
        assert_eq!(value("wmgwd2_vnis_active") as usize, h.up().len());
        assert_eq!(value("wmgwd2_vnis_managed") as u32, VNIS);
        assert_eq!(value("wmgwd2_members{state=\"ready\"}"), 1.0);
        assert_eq!(value("wmgwd2_ready"), 1.0);
        assert_eq!(
            value("wmgwd2_ownership_changes_total{reason=\"peer_joined\"}"),
            1.0
        );
        assert_eq!(
            value("wmgwd2_ownership_changes_total{reason=\"hold_down_over\"}"),
            1.0
        );
        assert!(value("wmgwd2_frames_received_total") >= 1.0);
        assert!(value("wmgwd2_heartbeats_sent_total") >= 1.0);
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        match std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(mut p) => {
                use std::io::Write;
                p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
                let out = p.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout);
                // promtool reads the classic text format: an OpenMetrics counter's HELP names the
                // family (`x`), its sample is `x_total`, and promtool takes that for a sample
                // without help. That one complaint is expected; any other is a fault.
                for problem in text.lines().filter(|l| !l.trim().is_empty()) {
                    let family = problem
                        .strip_suffix(" no help text")
                        .and_then(|m| m.strip_suffix("_total"));
                    assert!(
                        family.is_some_and(|f| body.contains(&format!("# HELP {f} "))),
                        "promtool check metrics: {problem}\n{body}"
                    );
                }
            }
            Err(_) => {
                eprintln!("SKIPPED promtool check: promtool is not installed (Debian's prometheus)")
            }
        }
        h.stop().await;
    })
    .await;
}

/// deploy/wmgwd2.alerts.yml is valid Prometheus rules and names only metrics the daemon exports
/// (`promtool check rules`; skipped, saying so, without promtool).
#[test]
fn the_example_alert_rules_are_valid_and_use_exported_metrics() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/wmgwd2.alerts.yml");
    match std::process::Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("SKIPPED promtool check rules: promtool is not installed"),
    }
    let exported = wmgwd2::metrics::render(
        &wmgwd2::status::Report {
            schema: 1,
            gateway: wmgwd2::status::Gateway {
                uid: "0x1".into(),
                incarnation: 1,
                state: "ready".into(),
                interval_ms: 100,
                hold_ms: 300,
                uplink: None,
                uplink_up: true,
                range: "1-1".into(),
                managed: 1,
                owned: 1,
                active: 1,
                blocked: 0,
                missing: 0,
                go_compat: None,
                heartbeats_to: vec![],
            },
            members: vec![],
            vnis: vec![],
            // A labelled family with no sample has no TYPE line: give it one.
            counters: [("ownership_changes.peer_dead".to_owned(), 1)].into(),
            transitions: vec![],
        },
        &Default::default(),
    );
    let text = std::fs::read_to_string(rules).unwrap();
    for name in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wmgwd2_"))
    {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the rules use {name}, which the daemon does not export"
        );
    }
}

/// The shell with IPv6 interfaces: a VNI's `vrrp6-<vni>` comes up with its `vrrp4-<vni>`, and
/// what goes out of it are unsolicited neighbour advertisements (the frame of
/// `garp::na_frame`), three per address (the global one and the link-local one), and no
/// gratuitous ARP; the IPv4 interface still sends only ARPs. A stop puts both down.
#[tokio::test(start_paused = true)]
async fn ipv6_interfaces_follow_their_vni_and_send_neighbour_advertisements() {
    use std::net::{IpAddr, Ipv6Addr};
    use wmgwd2::garp::na_frame;
    const V6: u32 = 3;
    let ifindex6 = IfIndex(400 + V6);
    let mac6 = [0x02, 0, 0, 0, 0x60, V6 as u8];
    let global = Ipv6Addr::new(0x2001, 0xdb8, V6 as u16, 0, 0, 0, 0, 1);
    let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    local(async {
        let mut h = Harness::start_with(&[], |fake| {
            let l = LinkState {
                mac: mac6,
                ..link(ifindex6, &format!("vrrp6-{V6}"), Some(VETH), None)
            };
            // An IPv4 address on the IPv6 interface is not its business: not announced.
            let addrs = vec![
                IpAddr::V6(global),
                IpAddr::V6(ll),
                IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1)),
            ];
            fake.put_link_with(l, addrs);
        })
        .await;
        h.pass(HOLD_DOWN - ms(10)).await;
        let l6 = h.link(ifindex6);
        assert!(
            l6.protodown && l6.reason & OURS != 0,
            "down at start: {l6:?}"
        );
        h.takeover().await;
        h.until("vrrp6 up with its VNI", SOON, |h| h.link(ifindex6).active())
            .await;
        h.pass(2 * GARP_SPACING + ms(50)).await;
        let sent = h.fake().take_sent();
        let from6: Vec<&Vec<u8>> = sent
            .iter()
            .filter(|(i, _)| *i == ifindex6)
            .map(|(_, f)| f)
            .collect();
        assert_eq!(from6.len(), 6, "3 per IPv6 address, nothing else");
        for ip in [global, ll] {
            let frame = na_frame(mac6, ip).to_vec();
            assert_eq!(from6.iter().filter(|f| ***f == frame).count(), 3, "{ip}");
        }
        let arps4 = sent
            .iter()
            .filter(|(i, f)| *i == ifindex(V6) && f[12..14] == [0x08, 0x06])
            .count();
        assert_eq!(arps4, 3 * ips(V6).len(), "the IPv4 interface's GARPs");
        h.stop().await;
        let l6 = h.link(ifindex6);
        assert!(l6.protodown && !l6.carrier, "down after the stop: {l6:?}");
    })
    .await;
}
