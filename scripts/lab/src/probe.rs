//! The probes, each one implementation: packet capture (an AF_PACKET socket: gratuitous ARPs at
//! the client, control packets at the switch), pings from the client (a raw ICMP socket), and
//! each gateway's ownership timeline (`ip -o monitor link`, or `address` for a VRRP daemon).
//! Each stamps its records on the lab's clock when it reads them; the analysis is in
//! [`crate::analysis`]. Stopping (or dropping) a probe ends its thread and the process it started.
//!
//! Sockets are created on a thread inside the namespace and keep it; the threads that read them
//! need not be in it.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::analysis::{self, Garp, Timed};
use crate::kernel::Ownership;
use crate::netns;
use crate::{io_err, LabError, Result};

/// How often a probe's blocked read wakes to look at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Creates a socket inside namespace `ns`.
fn socket_in(
    ns: &str,
    make: impl FnOnce() -> std::io::Result<Socket> + Send + 'static,
) -> Result<Socket> {
    let what = format!("socket in {ns}");
    let s = netns::spawn_in(ns, make)?
        .join()
        .map_err(|_| LabError::Parse {
            what: what.clone(),
            detail: "the thread panicked".into(),
        })?
        .map_err(io_err(what))?;
    s.set_read_timeout(Some(POLL))
        .map_err(io_err("socket timeout"))?;
    Ok(s)
}

/// A packet socket for `proto` (network order taken care of), bound to `ifname` when given.
fn packet_socket(ns: &str, proto: u16, ifname: Option<&str>) -> Result<Socket> {
    let ifname = ifname.map(|s| std::ffi::CString::new(s).expect("an interface name"));
    socket_in(ns, move || {
        let s = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(proto.to_be()))),
        )?;
        if let Some(name) = ifname {
            // SAFETY: a valid NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto.to_be();
            sll.sll_ifindex = index as i32;
            // SAFETY: bind with a correctly sized sockaddr_ll on our own socket.
            let r = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(s)
    })
}

/// A background reader of a socket: a stop flag, a thread, and the records it appended.
struct Reader<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Send + 'static> Reader<T> {
    /// Reads `sock` until stopped; `f` turns a datagram into a record.
    fn start(
        sock: Arc<Socket>,
        epoch: Instant,
        f: impl Fn(&[u8], Duration) -> Option<T> + Send + 'static,
    ) -> Reader<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), records.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = (&*sock).read(&mut buf) else {
                    continue;
                };
                if let Some(x) = f(&buf[..n], epoch.elapsed()) {
                    r.lock().unwrap_or_else(|p| p.into_inner()).push(x);
                }
            }
        });
        Reader {
            stop,
            thread: Some(thread),
            records,
        }
    }
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

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Gratuitous ARPs for gateway IPs seen in a namespace (the client's).
pub struct GarpSniffer {
    r: Reader<Garp>,
}

impl GarpSniffer {
    pub fn start(ns: &str, epoch: Instant) -> Result<GarpSniffer> {
        let sock = Arc::new(packet_socket(ns, libc::ETH_P_ARP as u16, None)?);
        let r = Reader::start(sock, epoch, |f, at| {
            analysis::parse_garp(f).map(|(vni, mac)| Garp { at, vni, mac })
        });
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

/// Control packets of the daemons ([`analysis::is_control_frame`]) crossing one interface.
pub struct ControlCounter {
    r: Reader<Duration>,
    sock: Arc<Socket>,
}

impl ControlCounter {
    pub fn start(ns: &str, ifname: &str, epoch: Instant) -> Result<ControlCounter> {
        let sock = Arc::new(packet_socket(ns, libc::ETH_P_ALL as u16, Some(ifname))?);
        let r = Reader::start(sock.clone(), epoch, |f, at| {
            analysis::is_control_frame(f).then_some(at)
        });
        Ok(ControlCounter { r, sock })
    }

    /// Control packets seen in `[t0, t1]`.
    pub fn count(&self, t0: Duration, t1: Duration) -> usize {
        self.r
            .records()
            .iter()
            .filter(|&&t| t >= t0 && t <= t1)
            .count()
    }

    /// Packets the kernel dropped for this socket since the last call (PACKET_STATISTICS).
    pub fn drops(&self) -> u32 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: getsockopt into a correctly sized tpacket_stats on our own socket.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            st.tp_drops
        } else {
            0
        }
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
        let sock = Arc::new(socket_in(ns, || {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        })?);
        let r = Reader::start(sock.clone(), epoch, move |p, at| {
            analysis::parse_echo_reply(p, id).map(|from| (at, from))
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, targets) = (stop.clone(), targets.to_vec());
        let sender = thread::spawn(move || {
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

/// Pings IPv6 addresses from a namespace every `every` (a raw ICMPv6 socket), and records when
/// each answered. A raw ICMPv6 socket reads no IP header, so each target has an identifier of its
/// own.
pub struct Pinger6 {
    r: Reader<(Duration, u16)>,
    targets: Vec<Ipv6Addr>,
    base: u16,
    sender: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Pinger6 {
    pub fn start(
        ns: &str,
        targets: &[Ipv6Addr],
        every: Duration,
        epoch: Instant,
    ) -> Result<Pinger6> {
        let base = (std::process::id() as u16) ^ 0xa5a5;
        let sock = Arc::new(socket_in(ns, || {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        })?);
        let r = Reader::start(sock.clone(), epoch, move |p, at| {
            analysis::parse_echo6_reply(p).map(|id| (at, id))
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, list) = (stop.clone(), targets.to_vec());
        let sender = thread::spawn(move || {
            let mut seq: u16 = 0;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                for (i, t) in list.iter().enumerate() {
                    let id = base.wrapping_add(i as u16);
                    let _ = sock.send_to(
                        &analysis::echo6_request(id, seq),
                        &SockAddr::from(SocketAddrV6::new(*t, 0, 0, 0)),
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
        Ok(Pinger6 {
            r,
            targets: targets.to_vec(),
            base,
            sender: Some(sender),
            stop,
        })
    }

    /// The reply times of `target` so far, in order.
    pub fn replies(&self, target: Ipv6Addr) -> Vec<Duration> {
        let Some(i) = self.targets.iter().position(|t| *t == target) else {
            return vec![];
        };
        let id = self.base.wrapping_add(i as u16);
        self.r
            .records()
            .into_iter()
            .filter(|&(_, x)| x == id)
            .map(|(t, _)| t)
            .collect()
    }
}

impl Drop for Pinger6 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        self.r.finish();
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A process whose output is read line by line, each line with when it was read; stopping (or
/// dropping) it ends the process (by PID) and the reading thread.
pub struct LineReader {
    child: Child,
    thread: Option<JoinHandle<()>>,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl LineReader {
    /// Starts `cmd` (its stdout line-buffered with stdbuf) with `env`.
    pub fn start(cmd: &[&str], env: &[(&str, &str)], epoch: Instant) -> Result<LineReader> {
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .args(cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(format!("{cmd:?}")))?;
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
        Ok(LineReader {
            child,
            thread: Some(thread),
            lines,
        })
    }

    /// The lines so far, with when each was read.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

impl Drop for LineReader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lab's epoch on the wall clock, µs since the Unix epoch: ip's and bridge's `-ts` stamps
/// minus this are the lab's clock.
pub fn wall0(epoch: Instant) -> u64 {
    unix_micros().saturating_sub(epoch.elapsed().as_micros() as u64)
}

/// The ownership timeline of one gateway: `ip -ts -o monitor link` (protodown) or
/// `ip -ts -o -4 monitor address` (the gateway IP) in its namespace, stamped by ip as it reads
/// each message (in UTC).
pub struct Monitor {
    r: LineReader,
    g: usize,
    how: Ownership,
    wall0: u64,
}

impl Monitor {
    /// Starts the monitor and returns once it is known to listen: it makes a change it reports
    /// (a bridge `lab-mark` created, or an address on it), again until one is reported (at most
    /// `bound`).
    pub fn start(
        ns: &str,
        g: usize,
        how: Ownership,
        epoch: Instant,
        bound: Duration,
    ) -> Result<Monitor> {
        let what: &[&str] = match how {
            Ownership::Link => &["-o", "monitor", "link"],
            Ownership::Addr => &["-o", "-4", "monitor", "address"],
        };
        let mut cmd = vec!["ip", "-ts", "-n", ns];
        cmd.extend_from_slice(what);
        let r = LineReader::start(&cmd, &[("TZ", "UTC")], epoch)?;
        let m = Monitor {
            r,
            g,
            how,
            wall0: wall0(epoch),
        };
        // The monitor may not listen yet when the first mark goes by: mark again until one is
        // reported.
        let t0 = Instant::now();
        loop {
            match how {
                Ownership::Link => {
                    let _ = netns::ip(ns, &["link", "del", "lab-mark"]);
                    netns::ip(ns, &["link", "add", "lab-mark", "type", "bridge"])?;
                }
                Ownership::Addr => {
                    let _ = netns::ip(ns, &["link", "add", "lab-mark", "type", "bridge"]);
                    let _ = netns::ip(ns, &["addr", "del", "192.0.2.1/32", "dev", "lab-mark"]);
                    netns::ip(ns, &["addr", "add", "192.0.2.1/32", "dev", "lab-mark"])?;
                }
            }
            let t1 = Instant::now();
            while t1.elapsed() < Duration::from_millis(200) {
                if m.lines().iter().any(|(_, l)| l.contains("lab-mark")) {
                    return Ok(m);
                }
                thread::sleep(Duration::from_millis(10));
            }
            if t0.elapsed() > bound {
                return Err(LabError::Timeout {
                    what: format!("ip monitor in {ns} to report"),
                    bound,
                });
            }
        }
    }

    /// The lines so far, as ip printed them, with when we read them.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.r.lines()
    }

    /// The lab's epoch on the wall clock (µs since the Unix epoch).
    pub fn wall0(&self) -> u64 {
        self.wall0
    }

    /// The gateway it watches.
    pub fn gateway(&self) -> usize {
        self.g
    }

    /// The ownership records so far.
    pub fn records(&self) -> Vec<Timed> {
        analysis::timeline(&self.lines(), self.g, self.how, self.wall0)
    }
}
