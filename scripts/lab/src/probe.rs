//! The probes, each one implementation: gratuitous ARPs at the client (an AF_PACKET socket),
//! pings from the client (a raw ICMP socket), and each gateway's protodown timeline
//! (`ip -o monitor link`). Each stamps its records on the lab's clock when it reads them; the
//! analysis is in [`crate::analysis`]. Stopping (or dropping) a probe ends its thread and the
//! process it started.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::analysis::{self, Garp, Record, Timed};
use crate::netns;
use crate::{io_err, LabError, Result};

/// How often a probe's blocked read wakes to look at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A background reader: a stop flag, a thread, and the records it appended.
struct Reader<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Clone> Reader<T> {
    fn records(&self) -> Vec<T> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl<T> Reader<T> {
    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `f(stop, records)` on a thread inside `ns`, once it said it is ready (or failed).
fn start_in<T: Send + 'static>(
    ns: &str,
    what: &str,
    f: impl FnOnce(&AtomicBool, &Mutex<Vec<T>>, &dyn Fn(Result<()>)) + Send + 'static,
) -> Result<Reader<T>> {
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, r) = (stop.clone(), records.clone());
    let thread = netns::spawn_in(ns, move || {
        let ready = move |x: Result<()>| {
            let _ = tx.send(x);
        };
        f(&s, &r, &ready);
    })?;
    let mut reader = Reader {
        stop,
        thread: Some(thread),
        records,
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(reader),
        Ok(Err(e)) => {
            reader.finish();
            Err(e)
        }
        Err(_) => {
            reader.finish();
            Err(LabError::Timeout {
                what: format!("{what} in {ns} to start"),
                bound: Duration::from_secs(10),
            })
        }
    }
}

/// Gratuitous ARPs for gateway IPs seen in a namespace (the client's).
pub struct GarpSniffer {
    r: Reader<Garp>,
}

impl GarpSniffer {
    pub fn start(ns: &str, epoch: Instant) -> Result<GarpSniffer> {
        let r = start_in(ns, "ARP capture", move |stop, recs, ready| {
            let proto = (libc::ETH_P_ARP as u16).to_be() as i32;
            let sock = match Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(proto)))
                .and_then(|s| s.set_read_timeout(Some(POLL)).map(|()| s))
            {
                Ok(s) => s,
                Err(e) => return ready(Err(io_err("packet socket")(e))),
            };
            ready(Ok(()));
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = (&sock).read(&mut buf) else {
                    continue;
                };
                if let Some((vni, mac)) = analysis::parse_garp(&buf[..n]) {
                    let at = epoch.elapsed();
                    recs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Garp { at, vni, mac });
                }
            }
        })?;
        Ok(GarpSniffer { r })
    }

    /// What it saw so far.
    pub fn garps(&self) -> Vec<Garp> {
        self.r.records()
    }

    pub fn finish(mut self) -> Vec<Garp> {
        self.r.finish();
        self.r.records()
    }
}

impl Drop for GarpSniffer {
    fn drop(&mut self) {
        self.r.finish();
    }
}

/// Pings a few addresses from a namespace every `every`, and records when each answered.
pub struct Pinger {
    r: Reader<(Duration, Ipv4Addr)>,
    sender: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Pinger {
    pub fn start(
        ns: &str,
        targets: &[Ipv4Addr],
        every: Duration,
        epoch: Instant,
    ) -> Result<Pinger> {
        let id = (std::process::id() as u16) ^ 0x5a5a;
        let sock = Arc::new(Mutex::new(None::<Socket>));
        let s2 = sock.clone();
        let r = start_in(ns, "pinger", move |stop, recs, ready| {
            let sock = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
                .and_then(|s| s.set_read_timeout(Some(POLL)).map(|()| s))
            {
                Ok(s) => s,
                Err(e) => return ready(Err(io_err("ICMP socket")(e))),
            };
            match sock.try_clone() {
                Ok(c) => *s2.lock().unwrap_or_else(|p| p.into_inner()) = Some(c),
                Err(e) => return ready(Err(io_err("ICMP socket")(e))),
            }
            ready(Ok(()));
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = (&sock).read(&mut buf) else {
                    continue;
                };
                if let Some(from) = analysis::parse_echo_reply(&buf[..n], id) {
                    let at = epoch.elapsed();
                    recs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, from));
                }
            }
        })?;
        let sock = sock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("the receiver shares its socket once ready");
        let stop = Arc::new(AtomicBool::new(false));
        let (s, targets) = (stop.clone(), targets.to_vec());
        let sender = thread::spawn(move || {
            // A raw socket sends in the namespace it was created in: no setns needed here.
            let mut seq: u16 = 0;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                for t in &targets {
                    let _ = sock.send_to(
                        &analysis::echo_request(id, seq),
                        &SockAddr::from(SocketAddrV4::new(*t, 0)),
                    );
                }
                next += every;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        Ok(Pinger {
            r,
            sender: Some(sender),
            stop,
        })
    }

    /// The reply times of `target` so far, in order.
    pub fn replies(&self, target: Ipv4Addr) -> Vec<Duration> {
        self.r
            .records()
            .into_iter()
            .filter(|&(_, a)| a == target)
            .map(|(t, _)| t)
            .collect()
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        self.r.finish();
    }
}

/// The protodown timeline of one gateway: `ip -o monitor link` in its namespace.
pub struct Monitor {
    child: Child,
    thread: Option<JoinHandle<()>>,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
    g: usize,
}

impl Monitor {
    /// Starts the monitor and returns once it is known to listen: it creates a (down) bridge
    /// `lab-mark`, again until the monitor reports it (at most `bound`).
    pub fn start(ns: &str, g: usize, epoch: Instant, bound: Duration) -> Result<Monitor> {
        let mut child = Command::new("stdbuf")
            .args(["-oL", "ip", "-n", ns, "-o", "monitor", "link"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("ip monitor in {ns}")))?;
        let out = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let thread = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let at = epoch.elapsed();
                l2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, line));
            }
        });
        let mut m = Monitor {
            child,
            thread: Some(thread),
            lines,
            g,
        };
        // The monitor may not listen yet when the first mark goes by: mark again (delete and
        // re-create) until one is reported.
        let t0 = Instant::now();
        loop {
            let _ = netns::ip(ns, &["link", "del", "lab-mark"]);
            netns::ip(ns, &["link", "add", "lab-mark", "type", "bridge"])?;
            let t1 = Instant::now();
            while t1.elapsed() < Duration::from_millis(200) {
                if m.lines().iter().any(|(_, l)| l.contains("lab-mark")) {
                    return Ok(m);
                }
                thread::sleep(Duration::from_millis(10));
            }
            if t0.elapsed() > bound {
                m.stop();
                return Err(LabError::Timeout {
                    what: format!("ip monitor in {ns} to report"),
                    bound,
                });
            }
        }
    }

    fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The ownership records so far.
    pub fn records(&self) -> Vec<Timed> {
        self.lines()
            .iter()
            .filter_map(|(at, l)| {
                let (vni, owned) = analysis::parse_monitor_line(l)?;
                Some(Timed {
                    at: *at,
                    rec: Record::Own {
                        g: self.g,
                        vni,
                        owned,
                    },
                })
            })
            .collect()
    }

    fn stop(&mut self) {
        // SAFETY: kill on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}
