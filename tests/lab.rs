//! Lab tests: the real binary, several gateways in network namespaces built by scripts/lab.sh,
//! real macvlans, real protodown, real packets. They need root; without it each test says it was
//! skipped and why.
//!
//! Assertions read the kernel's own state (`ip -j -d link show`: `proto_down`, `LOWER_UP`) and
//! packets seen in the client namespace (gratuitous ARPs, neighbour entries), never only the
//! daemon's logs. The oracle for "who should own VNI v" is the pure `assign` module.
//!
//! Lab tests run one at a time (a lock), so the daemons of two tests never compete for the
//! machine's two cores. Every wait is on a condition, with a generous bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use wmgwd2::assign;

const G: usize = 3;
const V: u32 = 16;
const BIN: &str = env!("CARGO_BIN_EXE_wmgwd2");
/// Bound for anything that should take well under a second.
const BOUND: Duration = Duration::from_secs(20);

static LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn uid(g: usize) -> u64 {
    0x1000 + g as u64
}

fn gateway_ip(vni: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (100 + vni / 256) as u8, (vni % 256) as u8, 1)
}

fn vni_of_gateway_ip(ip: [u8; 4]) -> Option<u32> {
    (ip[0] == 10 && ip[1] >= 100 && ip[3] == 1)
        .then(|| u32::from(ip[1] - 100) * 256 + u32::from(ip[2]))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &[&str]) -> String {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// One managed interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Iface {
    protodown: bool,
    lower_up: bool,
    mac: String,
}

/// A lab: G gateways, a client, a switch; daemons started and stopped by PID.
struct Lab {
    name: String,
    daemons: Vec<Option<Child>>,
    logs: PathBuf,
    args: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds the lab, or returns `None` (after saying so) when not root.
    fn up(test: &str, extra: &[&str]) -> Option<Lab> {
        if !is_root() {
            eprintln!("SKIPPED {test}: lab tests need root to create network namespaces");
            return None;
        }
        let lock = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "wt{:05}{}",
            std::process::id() % 100_000,
            (b'a' + n as u8) as char
        );
        let logs = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");
        let lab = Lab {
            name,
            daemons: (0..G).map(|_| None).collect(),
            logs,
            args: extra.iter().map(|s| s.to_string()).collect(),
            _lock: lock,
        };
        // Drop removes the namespaces even if building them fails half-way.
        run(Command::new("bash").arg(lab.script()).args([
            "up",
            &lab.name,
            &G.to_string(),
            &V.to_string(),
        ]));
        Some(lab)
    }

    fn script(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh")
    }

    fn gw(&self, g: usize) -> String {
        format!("{}-gw{}", self.name, g)
    }

    fn client(&self) -> String {
        format!("{}-cl", self.name)
    }

    fn start(&mut self, g: usize) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("gw{g}.log")))
            .expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.gw(g), BIN])
            .args(["--uid", &format!("{:#x}", uid(g))])
            .args(["--minvni", "1", "--maxvni", &V.to_string()])
            .args(["--broadcast", "10.0.1.255", "--bind-interface", "eth0"])
            .args(["--interval", "100ms", "-v"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.daemons[g - 1] = Some(cmd.spawn().expect("start daemon"));
    }

    fn signal(&mut self, g: usize, sig: i32) -> Child {
        let child = self.daemons[g - 1].take().expect("daemon running");
        // SAFETY: kill on the PID of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, sig) };
        child
    }

    fn alive(&mut self, g: usize) -> bool {
        match self.daemons[g - 1].as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// The managed interfaces of gateway `g`, by VNI.
    fn ifaces(&self, g: usize) -> BTreeMap<u32, Iface> {
        let out = ip(&self.gw(g), &["-j", "-d", "link", "show"]);
        let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
        let mut m = BTreeMap::new();
        for l in links.as_array().into_iter().flatten() {
            let name = l["ifname"].as_str().unwrap_or("");
            let Some(vni) = name.strip_prefix("vrrp4-").and_then(|s| s.parse().ok()) else {
                continue;
            };
            let flags: Vec<&str> = l["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            m.insert(
                vni,
                Iface {
                    protodown: l["proto_down"].as_bool().unwrap_or(false),
                    lower_up: flags.contains(&"LOWER_UP"),
                    mac: l["address"].as_str().unwrap_or("").to_owned(),
                },
            );
        }
        m
    }

    /// For every VNI, the gateways among `gws` (sampled in that order) with protodown off.
    fn owners(&self, gws: &[usize]) -> BTreeMap<u32, Vec<usize>> {
        let mut m: BTreeMap<u32, Vec<usize>> = (1..=V).map(|v| (v, Vec::new())).collect();
        for &g in gws {
            for (vni, i) in self.ifaces(g) {
                if !i.protodown {
                    m.entry(vni).or_default().push(g);
                }
            }
        }
        m
    }

    /// Waits until `f` holds, or panics after `bound` with `what`.
    fn wait(&self, what: &str, bound: Duration, mut f: impl FnMut() -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            if f() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < bound,
                "timed out after {bound:?} waiting for {what}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until exactly the assignment over `gws` holds in the kernels of `gws`.
    fn wait_converged(&self, gws: &[usize]) -> Duration {
        let expected = expected(gws);
        self.wait(&format!("convergence of gateways {gws:?}"), BOUND, || {
            self.owners(gws) == expected
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            // SAFETY: kill on the PID of a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(self.script())
            .args(["down", &self.name])
            .status();
        if thread::panicking() {
            for g in 1..=G {
                let log = self.logs.join(format!("gw{g}.log"));
                if let Ok(s) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = s.lines().rev().take(40).collect();
                    eprintln!("--- {} (last 40 lines)", log.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// The owners the pure assignment predicts when `gws` are the live gateways.
fn expected(gws: &[usize]) -> BTreeMap<u32, Vec<usize>> {
    (1..=V)
        .map(|v| {
            let o = assign::owner(
                wmgwd2::types::Vni(v),
                gws.iter().map(|&g| wmgwd2::types::Uid(uid(g))),
            )
            .expect("a candidate");
            (v, vec![(o.0 - 0x1000) as usize])
        })
        .collect()
}

fn owned_by(gws: &[usize], g: usize) -> BTreeSet<u32> {
    expected(gws)
        .into_iter()
        .filter(|(_, o)| o == &[g])
        .map(|(v, _)| v)
        .collect()
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let nsf = File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let r = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
}

/// A gratuitous ARP seen by the client.
#[derive(Debug, Clone)]
struct Garp {
    at: Instant,
    vni: u32,
    mac: String,
}

/// Captures gratuitous ARPs (sender IP = target IP) in a namespace until stopped.
struct Sniffer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Garp>>>,
}

impl Sniffer {
    fn start(ns: &str) -> Sniffer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let thread = in_netns(ns, move || {
            let proto = (libc::ETH_P_ARP as u16).to_be() as i32;
            let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(proto)))
                .expect("packet socket");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let _ = ready_tx.send(());
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = (&sock).read(&mut buf) else {
                    continue;
                };
                let f = &buf[..n];
                if n < 42 || f[12..14] != [0x08, 0x06] {
                    continue;
                }
                let (spa, tpa) = (&f[28..32], &f[38..42]);
                if spa != tpa {
                    continue;
                }
                if let Some(vni) = vni_of_gateway_ip([spa[0], spa[1], spa[2], spa[3]]) {
                    let mac = f[22..28]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":");
                    seen.push(Garp {
                        at: Instant::now(),
                        vni,
                        mac,
                    });
                }
            }
            seen
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sniffer ready");
        Sniffer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Garp> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("sniffer"))
            .unwrap_or_default()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Checks that every VNI in `moved` got a GARP from its new owner's MAC after `since`.
fn assert_garps(lab: &Lab, garps: &[Garp], moved: &BTreeSet<u32>, gws: &[usize], since: Instant) {
    let owners = expected(gws);
    for &vni in moved {
        let g = owners[&vni][0];
        let mac = &lab.ifaces(g)[&vni].mac;
        assert!(
            garps
                .iter()
                .any(|x| x.vni == vni && &x.mac == mac && x.at >= since),
            "no gratuitous ARP for vni {vni} from gw{g} ({mac}); seen: {:?}",
            garps.iter().map(|x| (x.vni, &x.mac)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn converges_then_crash_moves_only_the_dead_gateways_vnis_then_rejoins() {
    let Some(mut lab) = Lab::up("crash", &[]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        lab.start(g);
    }
    lab.wait_converged(&all);

    // The gateway IP answers from the owner: the client's neighbour entry carries its MAC.
    for vni in [1, 7, 16] {
        let owner = expected(&all)[&vni][0];
        let mac = lab.ifaces(owner)[&vni].mac.clone();
        let target = gateway_ip(vni).to_string();
        run(Command::new("ip").args([
            "netns",
            "exec",
            &lab.client(),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &target,
        ]));
        let neigh = ip(&lab.client(), &["neigh", "show", &target]);
        assert!(
            neigh.contains(&mac),
            "vni {vni}: neighbour {neigh:?}, owner mac {mac}"
        );
    }

    // kill -9 gateway 2: gateways 1 and 3 take exactly its VNIs, with a GARP for each.
    let before = expected(&all);
    let moved = owned_by(&all, 2);
    assert!(!moved.is_empty());
    let sniff = Sniffer::start(&lab.client());
    let t_kill = Instant::now();
    let mut dead = lab.signal(2, libc::SIGKILL);
    let _ = dead.wait();
    let survivors = [1, 3];
    lab.wait("takeover after a crash", BOUND, || {
        let now = lab.owners(&survivors);
        // Only the dead gateway's VNIs may change hands meanwhile.
        for (vni, o) in &now {
            if !moved.contains(vni) {
                assert_eq!(o, &before[vni], "vni {vni} moved but its owner did not die");
            }
        }
        now == expected(&survivors)
    });
    thread::sleep(Duration::from_millis(300)); // let the GARP reach the sniffer
    let garps = sniff.finish();
    assert_garps(&lab, &garps, &moved, &survivors, t_kill);

    // Restart it (as systemd would): it first sets protodown on its stale interfaces, then
    // takes its VNIs back; at no sampled moment is a VNI without an owner.
    lab.start(2);
    let mut samples = 0;
    lab.wait("rejoin after a crash", BOUND, || {
        samples += 1;
        // The survivors (current owners) first, the joiner last: see docs/operations.md.
        let now = lab.owners(&[1, 3, 2]);
        for (vni, o) in &now {
            assert!(!o.is_empty(), "vni {vni} had no owner during the rejoin");
        }
        now == expected(&all)
    });
    assert!(samples > 3, "too few samples to say anything: {samples}");
    for g in all {
        assert!(lab.alive(g), "gw{g} died");
    }
}

#[test]
fn sigterm_hands_over_before_the_dead_interval_and_rejoin_leaves_no_gap() {
    // A dead interval of 30 × 100 ms = 3 s: a takeover through LEAVING is far faster.
    let Some(mut lab) = Lab::up("sigterm", &["--dead-after", "30"]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        lab.start(g);
    }
    lab.wait_converged(&all);
    let moved = owned_by(&all, 1);

    let sniff = Sniffer::start(&lab.client());
    let t_stop = Instant::now();
    let mut stopping = lab.signal(1, libc::SIGTERM);
    let rest = [2, 3];
    let took = lab.wait("takeover after SIGTERM", BOUND, || {
        lab.owners(&rest) == expected(&rest)
    });
    let status = stopping.wait().expect("wait");
    assert!(status.success(), "SIGTERM exit status {status:?}");
    assert!(
        took < Duration::from_millis(3000),
        "takeover took {took:?}: it waited for the dead interval instead of LEAVING"
    );
    // The stopped gateway ends with protodown on everywhere.
    for (vni, i) in lab.ifaces(1) {
        assert!(
            i.protodown,
            "stopped gw1 left vrrp4-{vni} without protodown"
        );
    }
    thread::sleep(Duration::from_millis(300));
    assert_garps(&lab, &sniff.finish(), &moved, &rest, t_stop);

    // Rejoin: no VNI ever ownerless, and only gateway 1's VNIs move back.
    let before = expected(&rest);
    lab.start(1);
    lab.wait("rejoin after SIGTERM", BOUND, || {
        let now = lab.owners(&[2, 3, 1]);
        for (vni, o) in &now {
            assert!(!o.is_empty(), "vni {vni} had no owner during the rejoin");
            if !moved.contains(vni) {
                assert_eq!(o, &before[vni], "vni {vni} moved but is not gw1's");
            }
        }
        now == expected(&all)
    });
}

#[test]
fn garbage_datagrams_change_nothing() {
    let Some(mut lab) = Lab::up("garbage", &[]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        lab.start(g);
    }
    lab.wait_converged(&all);
    let before = lab.owners(&all);

    let sent = in_netns(&lab.client(), || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_broadcast(true).expect("broadcast");
        let mut v1 = wmgwd2::wire::encode(&wmgwd2::wire::Heartbeat {
            uid: wmgwd2::types::Uid(0x9999),
            incarnation: 1,
            sequence: 1,
            flags: 0,
            interval_ms: 100,
            hold_ms: 300,
        })
        .to_vec();
        let mut frames: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x57],
            vec![0; 8],                                          // legacy frame with uid 0
            v1[..39].to_vec(),                                   // truncated
            [v1.clone(), vec![0]].concat(),                      // trailing byte
            b"WMG2\x09garbage-garbage-garbage-garbage".to_vec(), // version 9
            vec![0xff; 512],
        ];
        v1[6] = 7; // an authentication kind nobody knows
        frames.push(v1.clone());
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            let f: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if len != 8 {
                frames.push(f);
            }
        }
        let mut n = 0;
        for _ in 0..5 {
            for f in &frames {
                if s.send_to(f, "10.0.1.255:3000").is_ok() {
                    n += 1;
                }
            }
        }
        n
    })
    .join()
    .expect("sender");
    assert!(sent > 1000, "sent only {sent} datagrams");

    // Over several dead intervals nothing changes and every daemon lives.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(lab.owners(&all), before, "garbage changed ownership");
        thread::sleep(Duration::from_millis(50));
    }
    for g in all {
        assert!(lab.alive(g), "gw{g} died on garbage");
    }

    // SIGUSR1: a status line whose counters saw the garbage, and the daemon carries on.
    let pid = lab.daemons[0].as_ref().expect("gw1").id() as i32;
    // SAFETY: kill on the PID of a child we started and have not reaped.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let log = lab.logs.join("gw1.log");
    lab.wait("a status line", BOUND, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains(" status ") && l.contains("owned=") && !l.contains("frames_malformed=0 ")
            })
    });
    assert!(lab.alive(1), "gw1 died on SIGUSR1");
    assert_eq!(lab.owners(&all), before);
}

#[test]
fn missing_interface_at_start_is_managed_once_it_appears() {
    let Some(mut lab) = Lab::up("missing", &[]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        ip(&lab.gw(g), &["link", "del", "vrrp4-16"]);
    }
    for g in all {
        lab.start(g);
    }
    let exp = expected(&all);
    lab.wait("convergence without vrrp4-16", BOUND, || {
        let now = lab.owners(&all);
        (1..16).all(|v| now[&v] == exp[&v])
    });
    for g in all {
        assert!(lab.alive(g), "gw{g} died on a missing interface");
        assert!(!lab.ifaces(g).contains_key(&16));
    }
    // The interface appears (created up, protodown off, on every gateway at once).
    let sniff = Sniffer::start(&lab.client());
    let t0 = Instant::now();
    for g in all {
        let ns = lab.gw(g);
        ip(
            &ns,
            &[
                "link", "add", "vrrp4-16", "link", "vxlan16", "type", "macvlan", "mode", "bridge",
            ],
        );
        ip(
            &ns,
            &[
                "addr",
                "add",
                &format!("{}/24", gateway_ip(16)),
                "dev",
                "vrrp4-16",
            ],
        );
        ip(&ns, &["link", "set", "vrrp4-16", "up"]);
    }
    lab.wait_converged(&all);
    thread::sleep(Duration::from_millis(300));
    assert_garps(&lab, &sniff.finish(), &BTreeSet::from([16]), &all, t0);
}

#[test]
fn drift_is_repaired_protodown_cleared_by_hand_and_lower_device_flap() {
    let Some(mut lab) = Lab::up("drift", &[]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        lab.start(g);
    }
    lab.wait_converged(&all);
    let exp = expected(&all);
    let not_owned = (1..=V)
        .find(|v| exp[v] != [2])
        .expect("a vni gw2 does not own");
    let dev = format!("vrrp4-{not_owned}");
    let ns = lab.gw(2);

    // 1. Someone clears protodown by hand on a non-owner (our reason bit first: the kernel
    //    refuses to clear protodown while a reason is set). The daemon sets it back.
    //    One request, so the daemon cannot re-assert its bit between the two changes.
    ip(
        &ns,
        &[
            "link",
            "set",
            &dev,
            "protodown_reason",
            "3",
            "off",
            "protodown",
            "off",
        ],
    );
    lab.wait("protodown repaired", BOUND, || {
        let i = &lab.ifaces(2)[&not_owned];
        i.protodown && !i.lower_up
    });
    lab.wait_converged(&all);

    // 2. The lower device flaps on a non-owner: the macvlan regains carrier although protodown
    //    is on; the daemon drops it again.
    let lower = format!("vxlan{not_owned}");
    ip(&ns, &["link", "set", &lower, "down"]);
    ip(&ns, &["link", "set", &lower, "up"]);
    lab.wait("carrier dropped again after the flap", BOUND, || {
        let i = &lab.ifaces(2)[&not_owned];
        i.protodown && !i.lower_up
    });

    // 3. The lower device flaps on the owner: when carrier returns it announces itself again.
    let owned = (1..=V).find(|v| exp[v] == [2]).expect("a vni gw2 owns");
    let sniff = Sniffer::start(&lab.client());
    let t0 = Instant::now();
    let lower = format!("vxlan{owned}");
    ip(&ns, &["link", "set", &lower, "down"]);
    ip(&ns, &["link", "set", &lower, "up"]);
    lab.wait("owner active again", BOUND, || {
        let i = &lab.ifaces(2)[&owned];
        !i.protodown && i.lower_up
    });
    thread::sleep(Duration::from_millis(300));
    assert_garps(&lab, &sniff.finish(), &BTreeSet::from([owned]), &all, t0);
    lab.wait_converged(&all);
    for g in all {
        assert!(lab.alive(g));
    }
}

#[test]
fn a_gateway_cut_off_from_the_segment_releases_everything_and_rejoins_without_gaps() {
    let Some(mut lab) = Lab::up("cut", &["--uplink-hold-down", "2s"]) else {
        return;
    };
    let all = [1, 2, 3];
    for g in all {
        lab.start(g);
    }
    lab.wait_converged(&all);
    let moved = owned_by(&all, 3);

    // Its switch port goes down: gateway 3 loses carrier on its heartbeat interface. It must not
    // claim every VNI (the peers it no longer hears are not dead); it releases its own instead,
    // and the peers take them after its dead interval.
    let sw = format!("{}-sw", lab.name);
    let sniff = Sniffer::start(&lab.client());
    let t_cut = Instant::now();
    ip(&sw, &["link", "set", "p3", "down"]);
    lab.wait("the cut gateway to release everything", BOUND, || {
        lab.ifaces(3).values().all(|i| i.protodown)
    });
    let rest = [1, 2];
    lab.wait_converged(&rest);
    thread::sleep(Duration::from_millis(300));
    assert_garps(&lab, &sniff.finish(), &moved, &rest, t_cut);

    // The link returns: the uplink hold-down (2 s here), then it takes its VNIs back, with an
    // owner for every VNI at every sampled moment.
    ip(&sw, &["link", "set", "p3", "up"]);
    lab.wait("rejoin after the link returns", BOUND, || {
        let now = lab.owners(&[1, 2, 3]);
        for (vni, o) in &now {
            assert!(
                !o.is_empty(),
                "vni {vni} had no owner after the link returned"
            );
        }
        now == expected(&all)
    });
    for g in all {
        assert!(lab.alive(g));
    }
}
