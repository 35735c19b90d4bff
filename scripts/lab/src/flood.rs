//! `wmgwd2-lab flood`: issue 8's flood figures. One lab of G gateways × V VNIs, keyed (a 0600
//! key file in the lab directory) or not; after convergence, a window before, the flood (N
//! datagrams from the client's namespace at full rate: the mix of `tests/lab.rs`'s flood test),
//! optionally a SIGTERM to gw2 one second into it, and a window after. Meanwhile:
//!
//! - the gateways' heartbeats as the client receives them (a UDP socket on 0.0.0.0:3000 in the
//!   client's namespace, kernel receive stamps, a socket filter that drops the client's own
//!   flood looped back to it): per sender, how many arrived and the longest gap. Arrival at the
//!   client is the proxy for the sender's own grid;
//! - every gateway's protodown timeline (`ip monitor`, [`Session::watch`]) replayed by
//!   [`stability::stability`]: takeovers no stop explains, doubly owned and ownerless VNIs;
//! - each daemon's CPU (utime + stime from `/proc/PID/stat`, as [`crate::bench::steady`]) and
//!   RSS (`VmRSS`), sampled every 50 ms and at every window's edge;
//! - each daemon's counters from its SIGUSR1 status line (or its `counters at exit`), before and
//!   after: datagrams read and socket drops.
//!
//! ```text
//!  Lab::up ── Session::watch ── start all ── settled ── [before W] [flood ... (SIGTERM gw2)] [after W] ── settle ── tables
//!             monitors (ip monitor)           Capture (client, :3000) and Sampler (/proc) all along
//! ```
//! The pure parts (the flood's frames, the socket filter, gaps, counters, samples, the tables and
//! the verdicts) are tested below on fixed inputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

use crate::analysis::{self, Anomalies};
use crate::daemon::DaemonConfig;
use crate::oracle;
use crate::plan::{self, Spec};
use crate::probe;
use crate::scenario::{self, Event, LiveRule};
use crate::session::{self, Session};
use crate::stability::{self, Failure, Stability};
use crate::{io_err, netns, Lab, LabError, Result};

pub const USAGE: &str = "\
flood: issue 8's flood figures. One lab (G gateways, V VNIs, interval I), keyed (a 0600 key file
in the lab directory, --key-file on every daemon) unless --unkeyed. After convergence: a window
of W before, the flood, a window of W after; then a wait until the owners are the oracle's.
The flood: N datagrams from the client's namespace (10.0.1.250) to 10.0.1.255:3000 at full rate
with TTL 255, from one thread that stops by itself: the mix of tests/lab.rs's flood test, in
turn a version-1 frame with a random UID (random flags, incarnation, sequence, hold time), a
legacy 8-byte frame with a random UID, and 8-72 bytes of garbage. With --stop-during, gw2's
daemon gets SIGTERM one second into the flood.

Usage (as root, on a quiet machine):
  scripts/flood.sh [-g G] [-v V] [-i INTERVAL] [-n N] [--window W] [--recover R]
                   [--unkeyed] [--stop-during] [-b BIN] [-- DAEMON-ARGS...]
  (the same as: cargo run --release -p wmgwd2-lab -- flood [OPTIONS])
    defaults: -g 3 -v 30 -i 100ms -n 1000000 --window 10s --recover 240s
    --unkeyed      no key: the flood's version-1 frames count as members (docs/security.md)
    --stop-during  SIGTERM to gw2 one second into the flood; its time to exit, its exit status,
                   and whether every one of its interfaces was protodown at exit
    --recover R    after the window after, wait at most R for the owners to be the oracle's
    -b BIN         the wmgwd2 binary (default: the one built beside this binary)
  Environment: FLOOD_BOUND (seconds, default 60): the longest wait for convergence at start.

What is measured:
  heartbeats   a UDP socket bound to 0.0.0.0:3000 in the client's namespace receives the
               gateways' broadcast heartbeats, stamped by the kernel (SO_TIMESTAMPNS) as they
               reach the client; a socket filter drops the client's own flood (the kernel loops
               every broadcast back to its sender's host). Per gateway and window: heartbeats
               heard (against window / interval) and the longest gap, in intervals, counting
               from the last heartbeat before the window and to its end (gw2's flood window ends
               at its SIGTERM). Arrival at the client is the proxy for the sender's grid: a
               heartbeat held in a busy kernel queue on the way shows as a gap too, and
               heartbeats sent at once (not on the grid) only shorten gaps.
  CPU, RSS     utime + stime (10 ms ticks) and VmRSS from /proc/PID, every 50 ms and at each
               window's edge; CPU seconds per window; RSS before (at the flood's start), peak
               (during the flood and the window after), after (at the end of the window after).
  read, drops  the daemon's frames_received and socket_drops counters (its SIGUSR1 status line,
               or its `counters at exit`), after minus before.
  ownership    every gateway's `ip -ts monitor link`, replayed per phase: takeovers that no stop
               explains (spurious), protodown changes, VNIs doubly owned or ownerless (how many,
               VNI-time, longest moment), and the phase's last change.
  kernel       packets dropped machine-wide for a full input backlog during the flood
               (/proc/net/softnet_stat: every namespace shares the per-CPU backlog).
Verdicts (issue 8): every gateway's longest heartbeat gap during the flood under 1.5
intervals; the stop completes within --leave-wait + 1 s, exit status 0, every interface
protodown; keyed: no spurious takeover, no ownerless moment, doubly owned only during gw2's
handover (make before break), the owners at the end the oracle's; every daemon not stopped still
runs. RSS is reported, not judged. Exit status 1 when a verdict fails.

Namespaces wfl<pid><n>-*, removed on exit, failure or Ctrl-C; only processes this run started
are stopped, by PID. The daemons' logs and the raw records stay in /tmp/wmgwd2-lab-wfl*/
(printed): the session's (mon<g>.txt, wall0.txt, live.txt, ...), heartbeats.txt (\"t sender\"),
samples.txt (\"t gw ticks rss_kib\") and flood.txt (the windows, seconds on the lab's clock).
";

/// The heartbeat port the daemons use (their default).
pub const PORT: u16 = 3000;

/// The run's options.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    /// The daemons; `--key-file` (keyed) and `--control-socket` are added.
    pub daemon: DaemonConfig,
    pub keyed: bool,
    /// Datagrams in the flood.
    pub datagrams: u32,
    pub stop_during: bool,
    /// The windows before and after the flood.
    pub window: Duration,
    /// The longest wait for convergence at start.
    pub bound: Duration,
    /// The longest wait for the oracle's owners after the flood.
    pub recover: Duration,
}

// ---------------------------------------------------------------------------------------------
// Pure: the flood's frames, the socket filter, gaps, counters, samples, tables, verdicts.

/// One step of the flood's xorshift generator.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The generator's seed (the test's).
pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Datagram `i` of the flood, `x` the generator's state: as `tests/lab.rs`'s flood test, in
/// turn a version-1 frame (random UID, incarnation, sequence, flags, hold time), a legacy
/// 8-byte frame, and 8-72 bytes of garbage.
pub fn frame(i: u32, x: &mut u64) -> Vec<u8> {
    let x = next(x);
    match i % 3 {
        0 => wmgwd2::wire::encode(&wmgwd2::wire::Heartbeat {
            uid: wmgwd2::types::Uid(x | 1),
            incarnation: x >> 3,
            sequence: x >> 5,
            flags: (x >> 11) as u8 & 0x7,
            interval_ms: 100,
            hold_ms: (x >> 17) as u32 | 100,
        })
        .to_vec(),
        1 => (x | 1).to_be_bytes().to_vec(),
        _ => x.to_le_bytes().repeat(1 + (x % 9) as usize),
    }
}

/// Classic BPF for a UDP socket: drop datagrams whose IPv4 source is `ip`, keep the rest. A
/// socket filter sees the datagram from its UDP header; the IP header is at `SKF_NET_OFF`.
pub fn drop_source(ip: Ipv4Addr) -> Vec<SockFilter> {
    // BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20), BPF_JMP | BPF_JEQ | BPF_K (0x05 | 0x10 | 0x00),
    // BPF_RET | BPF_K (0x06 | 0x00).
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const SKF_NET_OFF: i32 = -0x10_0000;
    vec![
        SockFilter::new(LD_W_ABS, 0, 0, (SKF_NET_OFF + 12) as u32),
        SockFilter::new(JEQ_K, 0, 1, u32::from(ip)),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ]
}

/// A heartbeat seen at the client: its sender's address and when the kernel received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub from: Ipv4Addr,
    pub at: Duration,
}

/// One sender's heartbeats in a window: how many arrived in it, and the longest time without
/// one (from the last before the window, or its start, to its end: [`analysis::max_gap`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    pub count: usize,
    pub gap: Duration,
    /// How many the window holds at one per interval.
    pub slots: usize,
}

/// `from`'s heartbeats among `arrivals` (any order) in `[t0, t1]`.
pub fn heard(
    arrivals: &[Arrival],
    from: Ipv4Addr,
    t0: Duration,
    t1: Duration,
    interval: Duration,
) -> Heard {
    let mut ts: Vec<Duration> = arrivals
        .iter()
        .filter(|a| a.from == from)
        .map(|a| a.at)
        .collect();
    ts.sort();
    Heard {
        count: ts.iter().filter(|&&t| t >= t0 && t <= t1).count(),
        gap: analysis::max_gap(&ts, t0, t1),
        slots: (t1.saturating_sub(t0).as_secs_f64() / interval.as_secs_f64()).round() as usize,
    }
}

/// A gap in intervals.
pub fn intervals(gap: Duration, interval: Duration) -> f64 {
    gap.as_secs_f64() / interval.as_secs_f64()
}

/// The counters of the last status line (`status`, SIGUSR1) or `counters at exit` line in a
/// daemon's log: every `name=number` word, `counters=` taken off the first.
pub fn counters(log: &str) -> Option<BTreeMap<String, u64>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" status ") || l.contains("counters at exit"))?;
    let mut m = BTreeMap::new();
    for w in line.split_whitespace() {
        let w = w.trim_matches('"');
        let w = w.strip_prefix("counters=").unwrap_or(w);
        let w = w.trim_matches('"');
        if let Some((k, v)) = w.split_once('=') {
            if let Ok(n) = v.parse::<u64>() {
                m.insert(k.to_owned(), n);
            }
        }
    }
    Some(m)
}

/// `after[name] - before[name]`, a missing counter being 0; None without both lines.
pub fn delta(
    before: Option<&BTreeMap<String, u64>>,
    after: Option<&BTreeMap<String, u64>>,
    name: &str,
) -> Option<u64> {
    let get = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
    Some(get(after?).saturating_sub(get(before?)))
}

/// One reading of a daemon's `/proc` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    pub g: usize,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    pub rss_kib: u64,
}

fn last_at_or_before(samples: &[Sample], g: usize, t: Duration) -> Option<&Sample> {
    samples
        .iter()
        .filter(|s| s.g == g && s.at <= t)
        .max_by_key(|s| s.at)
}

/// Gateway g's CPU ticks in `(t0, t1]`: the last sample at or before t1 minus the last at or
/// before t0; None without a sample on each side (a daemon gone before the window).
pub fn ticks_between(samples: &[Sample], g: usize, t0: Duration, t1: Duration) -> Option<u64> {
    let a = last_at_or_before(samples, g, t0)?;
    let b = last_at_or_before(samples, g, t1)?;
    (b.at > a.at).then(|| b.ticks.saturating_sub(a.ticks))
}

/// Gateway g's RSS at t (its last sample at or before t, taken after `not_before`).
pub fn rss_at(samples: &[Sample], g: usize, t: Duration, not_before: Duration) -> Option<u64> {
    last_at_or_before(samples, g, t)
        .filter(|s| s.at >= not_before)
        .map(|s| s.rss_kib)
}

/// Gateway g's largest RSS in `[t0, t1]`.
pub fn rss_peak(samples: &[Sample], g: usize, t0: Duration, t1: Duration) -> Option<u64> {
    samples
        .iter()
        .filter(|s| s.g == g && s.at >= t0 && s.at <= t1)
        .map(|s| s.rss_kib)
        .max()
}

/// A value per window: before, during the flood, after.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Three<T> {
    pub before: T,
    pub flood: T,
    pub after: T,
}

/// How the stopped gateway's stop went.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub gateway: usize,
    /// SIGTERM, from the flood's start.
    pub into_flood: Duration,
    /// Whether the flood was still on when the daemon exited.
    pub during: bool,
    /// From SIGTERM until the daemon was seen gone.
    pub took: Duration,
    /// Exit status as text ("0", "hung", a signal).
    pub exit: String,
    pub success: bool,
    /// --leave-wait + 1 s.
    pub bound: Duration,
    /// Its managed interfaces protodown at exit, of how many.
    pub protodown: usize,
    pub interfaces: usize,
}

/// One gateway's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayRow {
    pub g: usize,
    /// Datagrams it read and the kernel dropped on its socket (counter deltas).
    pub read: Option<u64>,
    pub drops: Option<u64>,
    /// CPU seconds per window.
    pub cpu: Three<Option<f64>>,
    /// KiB: before, peak, after.
    pub rss: Three<Option<u64>>,
    pub heard: Three<Option<Heard>>,
    /// Still running at the end (not stopped, not dead).
    pub alive: bool,
}

/// One phase's ownership figures.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    pub stability: Stability,
    /// Doubly owned moments are a handover's, by design (make before break).
    pub handover: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub lab: String,
    pub dir: PathBuf,
    pub gateways: usize,
    pub vnis: u32,
    pub interval: Duration,
    pub keyed: bool,
    pub converged_in: Duration,
    /// Datagrams asked for, sent, failed sends, and the sender's own time from first to last.
    pub asked: u32,
    pub sent: u32,
    pub send_errors: u32,
    pub send_took: Duration,
    /// The windows: before, flood, after.
    pub windows: Three<Duration>,
    /// Machine-wide input backlog drops during the flood.
    pub backlog_drops: u64,
    /// Datagrams from other senders than the gateways that passed the capture's filter.
    pub capture_other: usize,
    pub rows: Vec<GatewayRow>,
    pub phases: Vec<Phase>,
    pub stop: Option<Stop>,
    /// The owners at the end are the oracle's for the live gateways, and when they last changed
    /// (from the flood's end).
    pub converged_at_end: bool,
    /// The timeline's last state is the kernels' at the end.
    pub timeline_whole: bool,
}

fn s2(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn opt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".to_owned(), f)
}

fn mib(k: u64) -> String {
    format!("{:.1}", k as f64 / 1024.0)
}

/// "none", or "N VNIs, T VNI-s, longest M ms".
/// "1 000 000"
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The report: a line on the flood, the per-gateway table and the ownership table (Markdown).
pub fn tables(o: &Outcome) -> String {
    let w = &o.windows;
    let iv = o.interval;
    let mut s = String::new();
    let rate = if o.send_took.is_zero() {
        0.0
    } else {
        f64::from(o.sent) / o.send_took.as_secs_f64()
    };
    let _ = writeln!(
        s,
        "{}, {} gateways × {} VNIs, {} ms: {} of {} datagrams sent ({} failed) in {} ({} per s); \
         flood window {}; kernel input backlog drops meanwhile (all namespaces): {}\n",
        if o.keyed { "keyed" } else { "unkeyed" },
        o.gateways,
        o.vnis,
        iv.as_millis(),
        thousands(u64::from(o.sent)),
        thousands(u64::from(o.asked)),
        o.send_errors,
        s2(o.send_took),
        thousands(rate as u64),
        s2(w.flood),
        o.backlog_drops,
    );
    let _ = writeln!(
        s,
        "| gateway | datagrams read / socket drops | CPU s: before {:.0} s / flood {:.1} s / after {:.0} s \
         | RSS MiB: before / peak / after | heartbeats heard at the client: before / flood / after \
         | longest heartbeat gap, intervals: before / flood / after | stop (SIGTERM to exit, status, interfaces protodown) |\n\
         |---|---:|---|---|---|---|---|",
        w.before.as_secs_f64(),
        w.flood.as_secs_f64(),
        w.after.as_secs_f64(),
    );
    for r in &o.rows {
        let stopped = o.stop.as_ref().filter(|x| x.gateway == r.g);
        let cpu = |x: Option<f64>| opt(x, |c| format!("{c:.2}"));
        let flood_cpu = match stopped {
            Some(_) => format!("{} to its stop", cpu(r.cpu.flood)),
            None => cpu(r.cpu.flood),
        };
        let count = |h: Option<Heard>| opt(h, |h| format!("{}/{}", h.count, h.slots));
        let gap = |h: Option<Heard>| opt(h, |h| format!("{:.2}", intervals(h.gap, iv)));
        let stop = match stopped {
            Some(x) => format!(
                "{} into the flood: {}, status {}, {} of {}",
                s2(x.into_flood),
                ms(x.took),
                x.exit,
                x.protodown,
                x.interfaces
            ),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "| gw{} | {} / {} | {} / {} / {} | {} / {} / {} | {} / {} / {} | {} / {} / {} | {} |",
            r.g,
            opt(r.read, thousands),
            opt(r.drops, thousands),
            cpu(r.cpu.before),
            flood_cpu,
            cpu(r.cpu.after),
            opt(r.rss.before, mib),
            opt(r.rss.flood, mib),
            opt(r.rss.after, mib),
            count(r.heard.before),
            count(r.heard.flood),
            count(r.heard.after),
            gap(r.heard.before),
            gap(r.heard.flood),
            gap(r.heard.after),
            stop,
        );
    }
    let gws = (1..=o.gateways)
        .map(|g| format!("gw{g}"))
        .collect::<Vec<_>>()
        .join("/");
    let _ = writeln!(
        s,
        "\n| phase | window | spurious takeovers | protodown changes ({gws}) | doubly owned | ownerless | last change |\n\
         |---|---:|---|---|---|---|---:|"
    );
    for p in &o.phases {
        let st = &p.stability;
        let a: &Anomalies = &st.anomalies;
        let spurious = if st.spurious == 0 {
            "0".to_owned()
        } else {
            format!("{} ({} VNIs)", st.spurious, st.spurious_vnis.len())
        };
        let flips = st
            .flips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" / ");
        let last = if st.total_flips() == 0 {
            "-".to_owned()
        } else {
            s2(a.last_change)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {spurious} | {flips} | {} | {} | {last} |",
            p.label,
            s2(st.window),
            crate::loss::anomaly(a.double_vnis, a.double_time, a.double_max),
            crate::loss::anomaly(a.ownerless_vnis, a.ownerless_time, a.ownerless_max),
        );
    }
    s
}

/// The verdicts, each (what, held), and informational lines (what, None).
pub fn verdicts(o: &Outcome) -> Vec<(String, Option<bool>)> {
    let mut v = Vec::new();
    v.push((
        "the timeline saw every change (its last state is the kernels')".to_owned(),
        Some(o.timeline_whole),
    ));
    let gaps: Vec<String> = o
        .rows
        .iter()
        .map(|r| {
            format!(
                "gw{} {}",
                r.g,
                opt(r.heard.flood, |h| format!(
                    "{:.2}",
                    intervals(h.gap, o.interval)
                ))
            )
        })
        .collect();
    let grid = o.rows.iter().all(|r| {
        r.heard
            .flood
            .is_some_and(|h| intervals(h.gap, o.interval) < 1.5)
    });
    v.push((
        format!(
            "heartbeats kept their grid during the flood: longest gap at the client under 1.5 intervals ({})",
            gaps.join(", ")
        ),
        Some(grid),
    ));
    if let Some(x) = &o.stop {
        v.push((
            format!(
                "gw{}'s SIGTERM {} into the flood{}: exit within --leave-wait + 1 s, {} ({}), status 0 ({}), \
                 every interface protodown ({} of {})",
                x.gateway,
                s2(x.into_flood),
                if x.during { "" } else { " (the flood had ended by its exit)" },
                ms(x.bound),
                ms(x.took),
                x.exit,
                x.protodown,
                x.interfaces
            ),
            Some(x.took <= x.bound && x.success && x.protodown == x.interfaces),
        ));
    }
    let spurious: usize = o.phases.iter().map(|p| p.stability.spurious).sum();
    let ownerless: usize = o
        .phases
        .iter()
        .map(|p| p.stability.anomalies.ownerless_vnis)
        .sum();
    let double: usize = o
        .phases
        .iter()
        .filter(|p| !p.handover)
        .map(|p| p.stability.anomalies.double_vnis)
        .sum();
    let what = format!(
        "ownership unchanged: no spurious takeover ({spurious}), no ownerless VNI ({ownerless}), \
         no doubly owned VNI outside a handover ({double}), the oracle's owners at the end ({})",
        if o.converged_at_end { "yes" } else { "no" }
    );
    let held = spurious == 0 && ownerless == 0 && double == 0 && o.converged_at_end;
    v.push(if o.keyed {
        (what, Some(held))
    } else {
        (format!("{what} (unkeyed: not required)"), None)
    });
    let gone: Vec<String> = o
        .rows
        .iter()
        .filter(|r| !r.alive && o.stop.as_ref().is_none_or(|x| x.gateway != r.g))
        .map(|r| format!("gw{}", r.g))
        .collect();
    v.push((
        format!(
            "every daemon not stopped still runs{}",
            if gone.is_empty() {
                String::new()
            } else {
                format!(" (gone: {})", gone.join(", "))
            }
        ),
        Some(gone.is_empty()),
    ));
    let rss: Vec<String> = o
        .rows
        .iter()
        .map(|r| {
            let d = |x: Option<u64>| match (r.rss.before, x) {
                (Some(b), Some(a)) => format!("{:+.1}", (a as f64 - b as f64) / 1024.0),
                _ => "-".into(),
            };
            format!("gw{} {} / {}", r.g, d(r.rss.flood), d(r.rss.after))
        })
        .collect();
    v.push((
        format!("RSS against before, MiB, peak / after: {}", rss.join(", ")),
        None,
    ));
    if o.capture_other > 0 {
        v.push((
            format!(
                "{} datagrams from other senders passed the capture's filter",
                o.capture_other
            ),
            None,
        ));
    }
    v
}

/// `--leave-wait` among the daemon's flags (its default, 300 ms, without).
pub fn leave_wait(extra: &[String]) -> Duration {
    let mut it = extra.iter();
    let mut v: Option<String> = None;
    while let Some(a) = it.next() {
        if a == "--leave-wait" {
            v = it.next().cloned();
        } else if let Some(x) = a.strip_prefix("--leave-wait=") {
            v = Some(x.to_owned());
        }
    }
    v.and_then(|s| analysis::interval_ms(&s))
        .map_or(Duration::from_millis(300), Duration::from_millis)
}

// ---------------------------------------------------------------------------------------------
// Effects: the capture, the sampler, the flood, the run.

/// The gateways' heartbeats at the client: a UDP socket on 0.0.0.0:3000 in its namespace.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

fn capture_socket() -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Before binding: nothing unfiltered is ever queued.
    s.attach_filter(&drop_source(plan::CLIENT_UNDERLAY))?;
    s.set_recv_buffer_size(1 << 20)?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on our own socket with a correctly sized int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        PORT,
    )))?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s)
}

/// One datagram: its source and the kernel's receive stamp (µs since the Unix epoch), if any.
fn receive(s: &Socket) -> Option<(Ipv4Addr, Option<u64>)> {
    let mut buf = [0u8; 2048];
    let mut cbuf = [0u64; 16];
    // SAFETY: plain C structs; zeroed is a valid start for each.
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: recvmsg on our socket with buffers that outlive the call.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let from = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote into cbuf, by the CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((from, stamp))
}

impl Capture {
    fn start(ns: &str, epoch: Instant) -> Result<Capture> {
        let sock = netns::spawn_in(ns, capture_socket)?
            .join()
            .map_err(|_| LabError::Spec("the capture's thread panicked".into()))?
            .map_err(io_err(format!("UDP socket on :{PORT} in {ns}")))?;
        let wall0 = probe::wall0(epoch);
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (st, ar) = (stop.clone(), arrivals.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Some((from, stamp)) = receive(&sock) else {
                    continue;
                };
                let at = match stamp {
                    Some(us) => Duration::from_micros(us.saturating_sub(wall0)),
                    None => epoch.elapsed(),
                };
                ar.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arrival { from, at });
            }
        });
        Ok(Capture {
            stop,
            thread: Some(thread),
            arrivals,
        })
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every daemon's CPU ticks and RSS, every 50 ms and on demand ([`Sampler::mark`]).
struct Sampler {
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn read_proc(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((analysis::cpu_ticks(&stat)?, analysis::rss_kib(&status)?))
}

fn sample_all(pids: &Mutex<Vec<Option<u32>>>, samples: &Mutex<Vec<Sample>>, epoch: Instant) {
    let pids = pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut got = Vec::new();
    for (i, p) in pids.iter().enumerate() {
        let Some(p) = p else { continue };
        if let Some((ticks, rss_kib)) = read_proc(*p) {
            got.push(Sample {
                at: epoch.elapsed(),
                g: i + 1,
                ticks,
                rss_kib,
            });
        }
    }
    samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(got);
}

impl Sampler {
    fn start(pids: Vec<Option<u32>>, epoch: Instant) -> Sampler {
        let pids = Arc::new(Mutex::new(pids));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, st) = (pids.clone(), samples.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                sample_all(&p, &s, epoch);
                thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            pids,
            samples,
            epoch,
            stop,
            thread: Some(thread),
        }
    }

    /// Samples every daemon now; returns the moment (on the lab's clock).
    fn mark(&self) -> Duration {
        let t = self.epoch.elapsed();
        sample_all(&self.pids, &self.samples, self.epoch);
        t
    }

    /// Stops sampling gateway g (before its daemon exits: its PID may be reused).
    fn forget(&self, g: usize) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())[g - 1] = None;
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the flood's thread did.
#[derive(Debug, Clone, Copy)]
struct Sent {
    sent: u32,
    errors: u32,
    took: Duration,
}

/// Sends the flood from a thread in namespace `ns`; it stops by itself.
fn flood(ns: &str, n: u32) -> Result<JoinHandle<std::io::Result<Sent>>> {
    netns::spawn_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_broadcast(true)?;
        s.set_ttl(255)?;
        let to = SocketAddrV4::new(plan::BROADCAST, PORT);
        let mut x = SEED;
        let (mut sent, mut errors) = (0u32, 0u32);
        let t0 = Instant::now();
        for i in 0..n {
            let f = frame(i, &mut x);
            if s.send_to(&f, to).is_ok() {
                sent += 1;
            } else {
                errors += 1;
            }
        }
        Ok(Sent {
            sent,
            errors,
            took: t0.elapsed(),
        })
    })
}

/// A key file (mode 0600) with one random key, id 7, in `dir`.
fn write_key(dir: &std::path::Path) -> Result<PathBuf> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut k = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .map_err(io_err("read /dev/urandom"))?;
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(format!("create {}", path.display())))?;
    f.write_all(format!("7 {hex}\n").as_bytes())
        .map_err(io_err(format!("write {}", path.display())))?;
    Ok(path)
}

/// Every running daemon writes a status line (SIGUSR1); then each one's last counters.
fn status_counters(lab: &mut Lab) -> Result<Vec<Option<BTreeMap<String, u64>>>> {
    let g_n = lab.spec.gateways;
    for g in 1..=g_n {
        if lab.daemons.alive(g) {
            lab.daemons.signal(g, libc::SIGUSR1);
        }
    }
    scenario::nap(Duration::from_millis(500))?;
    Ok((1..=g_n)
        .map(|g| counters(&std::fs::read_to_string(lab.daemons.log(g)).unwrap_or_default()))
        .collect())
}

/// Runs the lab, writing progress to `out`; the figures.
pub fn measure(cfg: &Config, out: &mut dyn Write) -> Result<Outcome> {
    let spec = &cfg.spec;
    let g_n = spec.gateways;
    let p = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    let ims = analysis::interval_ms(&cfg.daemon.interval).unwrap_or(1000);
    let interval = Duration::from_millis(ims);
    let mut lab = Lab::up("wfl", spec, cfg.daemon.clone())?;
    lab.keep_logs = true;
    let sock = format!("{}/gw{{g}}.sock", lab.dir.display());
    lab.daemons
        .cfg
        .extra
        .extend(["--control-socket".to_owned(), sock]);
    if cfg.keyed {
        let key = write_key(&lab.dir)?;
        lab.daemons
            .cfg
            .extra
            .extend(["--key-file".to_owned(), key.display().to_string()]);
    }
    let leave = leave_wait(&lab.daemons.cfg.extra);
    p(
        out,
        format!(
            "flood lab {}: {g_n} gateways × {} VNIs, interval {}, {}; daemon flags: {}; records in {}",
            lab.name(),
            spec.vnis,
            cfg.daemon.interval,
            if cfg.keyed { "keyed" } else { "unkeyed" },
            lab.daemons.cfg.extra.join(" "),
            lab.dir.display()
        ),
    );
    let stable = Duration::from_millis(ims * 10).max(Duration::from_secs(1));
    let mut s = Session::watch(lab, LiveRule::Daemon, cfg.bound, stable)?;
    let (start, t_d0) = s.start_all()?;
    if !start.ok {
        return Err(LabError::Timeout {
            what: format!("convergence (logs in {})", s.lab.dir.display()),
            bound: cfg.bound,
        });
    }
    let converged_in = start.changed - t_d0;
    p(out, format!("converged in {}", s2(converged_in)));
    // Start-up's GARPs and link changes are over before the first window.
    scenario::nap(Duration::from_secs(3))?;
    let epoch = s.lab.epoch;
    let capture = Capture::start(&s.lab.client(), epoch)?;
    let sampler = Sampler::start((1..=g_n).map(|g| s.lab.daemons.pid(g)).collect(), epoch);
    let c0 = status_counters(&mut s.lab)?;

    let b0 = sampler.mark();
    scenario::nap(cfg.window)?;
    let backlog0 = session::backlog_drops();
    let f0 = sampler.mark();
    let t_f0 = Instant::now();
    let sender = flood(&s.lab.client(), cfg.datagrams)?;
    p(
        out,
        format!("flood: {} datagrams from {}", cfg.datagrams, s.lab.client()),
    );
    let mut stop: Option<Stop> = None;
    let mut failure: Option<Failure> = None;
    let mut stopped_at: Option<Duration> = None;
    while !sender.is_finished() {
        if scenario::interrupted() {
            return Err(LabError::Interrupted);
        }
        if cfg.stop_during && stop.is_none() && t_f0.elapsed() >= Duration::from_secs(1) {
            let g = 2;
            sampler.mark();
            sampler.forget(g);
            let acted = s.lab.act(Event::Stop, g)?;
            let (exit, gone) = acted.exit.unwrap_or((crate::Exit::NotRunning, acted.at));
            let during = !sender.is_finished();
            let links = s.lab.ifaces(g)?;
            let x = Stop {
                gateway: g,
                into_flood: acted.at - t_f0,
                during,
                took: gone - acted.at,
                exit: exit.to_string(),
                success: exit.success(),
                bound: leave + Duration::from_secs(1),
                protodown: links.values().filter(|i| i.protodown).count(),
                interfaces: links.len(),
            };
            p(
                out,
                format!(
                    "+{}: SIGTERM to gw{g}: exited after {} (status {}), {} of {} interfaces protodown",
                    s2(x.into_flood),
                    ms(x.took),
                    x.exit,
                    x.protodown,
                    x.interfaces
                ),
            );
            let at = s.lab.since_epoch(acted.at);
            stopped_at = Some(at);
            failure = Some(Failure {
                gateway: g,
                at,
                after: oracle::expected(spec, &(1..=g_n).filter(|&h| h != g).collect::<Vec<_>>()),
            });
            stop = Some(x);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let f1 = sampler.mark();
    let backlog1 = session::backlog_drops();
    if cfg.stop_during && stop.is_none() {
        p(
            out,
            "the flood ended within a second: no SIGTERM during it".to_owned(),
        );
    }
    let sent = sender
        .join()
        .map_err(|_| LabError::Spec("the flood's thread panicked".into()))?
        .map_err(io_err("the flood's socket"))?;
    p(
        out,
        format!(
            "flood over: {} sent, {} failed, in {} (window {})",
            sent.sent,
            sent.errors,
            s2(sent.took),
            s2(f1.saturating_sub(f0))
        ),
    );
    scenario::nap(cfg.window)?;
    let a1 = sampler.mark();
    let c1 = status_counters(&mut s.lab)?;
    let alive: Vec<bool> = (1..=g_n).map(|g| s.lab.daemons.alive(g)).collect();

    // The owners back to the oracle's (at once, keyed; the unkeyed flood's members are believed
    // for their hold time).
    s.bound = cfg.recover;
    let settled = s.settle(Instant::now())?;
    let end = s.lab.since_epoch(Instant::now());
    // When they last changed is the last phase's "last change" (from the timeline); settle's
    // own moment is only when it first looked, after the window after.
    p(
        out,
        format!(
            "owners {} the oracle's, {} after the flood's end",
            if settled.ok { "are" } else { "are NOT" },
            s2(end.saturating_sub(f1))
        ),
    );
    let whole = crate::loss::timeline_whole(&s)?;
    let records = s.records();
    let samples = sampler.samples();
    drop(sampler);
    let arrivals = capture.arrivals();
    drop(capture);

    let mut phases = vec![Phase {
        label: "before".into(),
        stability: stability::stability(spec, &records, b0, f0, None),
        handover: false,
    }];
    match (&stop, stopped_at) {
        (Some(x), Some(at)) if at < f1 => {
            phases.push(Phase {
                label: format!("flood, until gw{}'s SIGTERM", x.gateway),
                stability: stability::stability(spec, &records, f0, at, None),
                handover: false,
            });
            phases.push(Phase {
                label: format!("flood, from gw{}'s SIGTERM", x.gateway),
                stability: stability::stability(spec, &records, at, f1, failure.as_ref()),
                handover: true,
            });
        }
        _ => phases.push(Phase {
            label: "flood".into(),
            stability: stability::stability(spec, &records, f0, f1, failure.as_ref()),
            handover: failure.is_some(),
        }),
    }
    phases.push(Phase {
        label: "after, until settled".into(),
        stability: stability::stability(spec, &records, f1, end, None),
        handover: false,
    });

    let gw_ip = |g: usize| plan::underlay_ip(g);
    let capture_other = arrivals
        .iter()
        .filter(|a| !(1..=g_n).any(|g| gw_ip(g) == a.from))
        .count();
    let hz = {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    };
    let rows = (1..=g_n)
        .map(|g| {
            let stopped = stopped_at.filter(|_| stop.as_ref().is_some_and(|x| x.gateway == g));
            let flood_end = stopped.map_or(f1, |t| t.min(f1));
            let cpu = |t0, t1| ticks_between(&samples, g, t0, t1).map(|t| t as f64 / hz);
            let h = |t0, t1| Some(heard(&arrivals, gw_ip(g), t0, t1, interval));
            GatewayRow {
                g,
                read: delta(c0[g - 1].as_ref(), c1[g - 1].as_ref(), "frames_received"),
                drops: delta(c0[g - 1].as_ref(), c1[g - 1].as_ref(), "socket_drops"),
                cpu: Three {
                    before: cpu(b0, f0),
                    flood: cpu(f0, f1),
                    after: cpu(f1, a1),
                },
                rss: Three {
                    before: rss_at(&samples, g, f0, b0),
                    flood: rss_peak(&samples, g, f0, a1),
                    after: rss_at(&samples, g, a1, f1 + Duration::from_millis(1)),
                },
                heard: Three {
                    before: h(b0, f0),
                    flood: h(f0, flood_end),
                    after: if stopped.is_some() { None } else { h(f1, a1) },
                },
                alive: alive[g - 1],
            }
        })
        .collect();

    // The raw records beside the daemons' logs.
    s.save()?;
    let dir = s.lab.dir.clone();
    let t = |d: Duration| format!("{:.6}", d.as_secs_f64());
    let w = |name: &str, body: String| {
        std::fs::write(dir.join(name), body).map_err(io_err(format!("write {name}")))
    };
    w(
        "heartbeats.txt",
        arrivals
            .iter()
            .map(|a| format!("{} {}\n", t(a.at), a.from))
            .collect(),
    )?;
    w(
        "samples.txt",
        samples
            .iter()
            .map(|x| format!("{} gw{} {} {}\n", t(x.at), x.g, x.ticks, x.rss_kib))
            .collect(),
    )?;
    w(
        "flood.txt",
        format!(
            "before {} {}\nflood {} {}\nafter {} {}\nsettled {}\n{}",
            t(b0),
            t(f0),
            t(f0),
            t(f1),
            t(f1),
            t(a1),
            t(end),
            stopped_at.map_or(String::new(), |x| format!("sigterm {}\n", t(x)))
        ),
    )?;
    for (g, (a, b)) in c0.iter().zip(&c1).enumerate() {
        let keys = [
            "frames_received",
            "socket_drops",
            "frames_malformed",
            "frames_rejected",
            "frames_refused",
            "frames_stale",
            "local_stalls",
            "heartbeats_sent",
            "ownership_changes",
        ];
        let d: Vec<String> = keys
            .iter()
            .filter_map(|k| delta(a.as_ref(), b.as_ref(), k).map(|n| format!("{k}={n}")))
            .collect();
        p(
            out,
            format!("gw{} counters, after minus before: {}", g + 1, d.join(" ")),
        );
    }

    Ok(Outcome {
        lab: s.lab.name().to_owned(),
        dir: s.lab.dir.clone(),
        gateways: g_n,
        vnis: spec.vnis,
        interval,
        keyed: cfg.keyed,
        converged_in,
        asked: cfg.datagrams,
        sent: sent.sent,
        send_errors: sent.errors,
        send_took: sent.took,
        windows: Three {
            before: f0 - b0,
            flood: f1 - f0,
            after: a1 - f1,
        },
        backlog_drops: backlog1.saturating_sub(backlog0),
        capture_other,
        rows,
        phases,
        stop,
        converged_at_end: settled.ok,
        timeline_whole: whole,
    })
}

/// Runs the lab and prints the report; true when every verdict holds.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<bool> {
    let o = measure(cfg, out)?;
    let _ = writeln!(out, "\n{}", tables(&o));
    let v = verdicts(&o);
    for (what, ok) in &v {
        let tag = match ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "INFO",
        };
        let _ = writeln!(out, "{tag} {what}");
    }
    let _ = writeln!(out, "records and daemon logs: {}", o.dir.display());
    Ok(v.iter().all(|(_, ok)| ok.unwrap_or(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_flood_is_the_tests_mix() {
        let mut x = SEED;
        let f: Vec<Vec<u8>> = (0..6).map(|i| frame(i, &mut x)).collect();
        // A version-1 heartbeat (it decodes), a legacy 8-byte frame, garbage; again.
        for i in [0, 3] {
            assert_eq!(f[i].len(), wmgwd2::wire::FRAME_LEN);
            assert!(wmgwd2::wire::decode_full(&f[i]).is_ok(), "frame {i}");
        }
        for i in [1, 4] {
            assert_eq!(f[i].len(), 8);
            assert_eq!(f[i][7] & 1, 1, "an odd UID");
        }
        for i in [2, 5] {
            assert!(f[i].len() % 8 == 0 && (8..=72).contains(&f[i].len()));
        }
        // Deterministic: the same seed, the same flood.
        let mut y = SEED;
        assert_eq!(frame(0, &mut y), f[0]);
        // The test's generator, step by step.
        let mut z = SEED;
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        let mut w = SEED;
        next(&mut w);
        assert_eq!(w, z);
    }

    #[test]
    fn the_capture_filter_drops_one_source() {
        let f = drop_source(Ipv4Addr::new(10, 0, 1, 250));
        let raw: Vec<[u32; 4]> = f
            .iter()
            .map(|x| {
                // SockFilter is the kernel's sock_filter: code u16, jt u8, jf u8, k u32.
                // SAFETY: same size and layout.
                let s: libc::sock_filter = unsafe { std::mem::transmute_copy(x) };
                [u32::from(s.code), u32::from(s.jt), u32::from(s.jf), s.k]
            })
            .collect();
        assert_eq!(
            raw,
            vec![
                [0x20, 0, 0, 0xfff0_000c],
                [0x15, 0, 1, 0x0a00_01fa],
                [0x06, 0, 0, 0],
                [0x06, 0, 0, 0xffff_ffff],
            ]
        );
    }

    fn a(from: u8, at: u64) -> Arrival {
        Arrival {
            from: Ipv4Addr::new(10, 0, 1, from),
            at: ms(at),
        }
    }

    #[test]
    fn heartbeat_gaps_per_sender() {
        // gw1 on a 100 ms grid with one heartbeat missing in the window (a 200 ms gap); gw2
        // regular; gw3 silent in the window after 250 ms.
        let mut arr = Vec::new();
        for t in (0..=1000).step_by(100) {
            if t != 600 {
                arr.push(a(1, t + 3));
            }
            arr.push(a(2, t + 50));
        }
        arr.extend([a(3, 100), a(3, 200)]);
        arr.reverse(); // any order
        let gw = |g| Ipv4Addr::new(10, 0, 1, g);
        let h1 = heard(&arr, gw(1), ms(250), ms(950), ms(100));
        assert_eq!(
            h1,
            Heard {
                count: 6,
                gap: ms(200),
                slots: 7
            }
        );
        assert!((intervals(h1.gap, ms(100)) - 2.0).abs() < 1e-9);
        let h2 = heard(&arr, gw(2), ms(250), ms(950), ms(100));
        assert_eq!(
            h2,
            Heard {
                count: 8,
                gap: ms(100),
                slots: 7
            }
        );
        // From the last heartbeat before the window to its end.
        let h3 = heard(&arr, gw(3), ms(250), ms(950), ms(100));
        assert_eq!(
            h3,
            Heard {
                count: 0,
                gap: ms(750),
                slots: 7
            }
        );
        // Nobody at all: the whole window.
        assert_eq!(heard(&arr, gw(9), ms(0), ms(500), ms(100)).gap, ms(500));
    }

    #[test]
    fn counters_from_the_status_line() {
        let log = "\
2026-12-03T10:00:00.000001Z  INFO wmgwd2::daemon: status uid=0x1001 ready=true uplink_up=true peers=0x1002,0x1003 managed=30 owned=10 active=10 missing=0 blocked=0 counters=frames_received=120 heartbeats_sent=60
2026-12-03T10:00:05.000001Z  WARN wmgwd2::core: heartbeat socket overflowing (a flood?): members count as heard while it lasts dropped=10 total=10
2026-12-03T10:00:09.000001Z  INFO wmgwd2::daemon: status uid=0x1001 ready=true uplink_up=true peers=0x1002,0x1003 managed=30 owned=10 active=10 missing=0 blocked=0 counters=frames_malformed=333000 frames_malformed.short=333000 frames_received=400100 heartbeats_sent=160 socket_drops=600000
";
        let c = counters(log).unwrap();
        assert_eq!(c["frames_received"], 400_100);
        assert_eq!(c["socket_drops"], 600_000);
        assert_eq!(c["frames_malformed.short"], 333_000);
        assert_eq!(c["owned"], 10);
        let first = counters(log.lines().next().unwrap()).unwrap();
        assert_eq!(
            delta(Some(&first), Some(&c), "frames_received"),
            Some(399_980)
        );
        assert_eq!(delta(Some(&first), Some(&c), "socket_drops"), Some(600_000));
        assert_eq!(delta(None, Some(&c), "socket_drops"), None);
        let exit = "2026-12-03T10:00:10Z  INFO wmgwd2: counters at exit counters=\"frames_received=7 socket_drops=3\"";
        assert_eq!(counters(exit).unwrap()["socket_drops"], 3);
        assert_eq!(counters("nothing here\n"), None);
    }

    fn sample(at: u64, g: usize, ticks: u64, rss_kib: u64) -> Sample {
        Sample {
            at: ms(at),
            g,
            ticks,
            rss_kib,
        }
    }

    #[test]
    fn cpu_and_rss_from_samples() {
        let s = vec![
            sample(0, 1, 100, 5000),
            sample(50, 1, 101, 5000),
            sample(1000, 1, 110, 5200),
            sample(1500, 1, 300, 6100),
            sample(2000, 1, 400, 5300),
            sample(3000, 1, 402, 5300),
            // gw2 stopped at 1200 ms: its last sample.
            sample(0, 2, 50, 4000),
            sample(1000, 2, 60, 4000),
            sample(1200, 2, 90, 4100),
        ];
        assert_eq!(ticks_between(&s, 1, ms(0), ms(1000)), Some(10));
        assert_eq!(ticks_between(&s, 1, ms(1000), ms(2000)), Some(290));
        // Between samples: the last one at or before each edge.
        assert_eq!(ticks_between(&s, 1, ms(60), ms(1999)), Some(199));
        assert_eq!(ticks_between(&s, 2, ms(1000), ms(2000)), Some(30));
        assert_eq!(ticks_between(&s, 2, ms(2000), ms(3000)), None);
        assert_eq!(rss_at(&s, 1, ms(1000), ms(0)), Some(5200));
        assert_eq!(rss_peak(&s, 1, ms(1000), ms(3000)), Some(6100));
        assert_eq!(rss_at(&s, 1, ms(3000), ms(2001)), Some(5300));
        assert_eq!(rss_at(&s, 2, ms(3000), ms(2001)), None);
        assert_eq!(rss_peak(&s, 3, ms(0), ms(3000)), None);
    }

    #[test]
    fn the_daemons_leave_wait() {
        assert_eq!(leave_wait(&[]), ms(300));
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(leave_wait(&a(&["-v", "--leave-wait", "1s"])), ms(1000));
        assert_eq!(leave_wait(&a(&["--leave-wait=500ms"])), ms(500));
    }

    fn outcome() -> Outcome {
        let quiet = Stability {
            window: Duration::from_secs(10),
            flips: vec![0, 0, 0],
            ..Stability::default()
        };
        let mut handover = quiet.clone();
        handover.window = ms(5420);
        handover.flips = vec![5, 10, 5];
        handover.takeovers = 10;
        handover.anomalies.double_vnis = 10;
        handover.anomalies.double_time = ms(1200);
        handover.anomalies.double_max = ms(140);
        handover.anomalies.last_change = ms(150);
        let h = |count, gap, slots| {
            Some(Heard {
                count,
                gap: ms(gap),
                slots,
            })
        };
        let row = |g: usize| GatewayRow {
            g,
            read: Some(400_000),
            drops: Some(600_123),
            cpu: Three {
                before: Some(0.03),
                flood: Some(3.2),
                after: Some(0.04),
            },
            rss: Three {
                before: Some(5734),
                flood: Some(5939),
                after: Some(5837),
            },
            heard: Three {
                before: h(100, 104, 100),
                flood: h(64, 131, 64),
                after: h(100, 102, 100),
            },
            alive: true,
        };
        let mut gw2 = row(2);
        gw2.cpu.flood = Some(0.9);
        gw2.cpu.after = None;
        gw2.rss.after = None;
        gw2.heard.flood = h(10, 101, 10);
        gw2.heard.after = None;
        gw2.alive = false;
        Outcome {
            lab: "wfl1".into(),
            dir: "/tmp/x".into(),
            gateways: 3,
            vnis: 30,
            interval: ms(100),
            keyed: true,
            converged_in: ms(450),
            asked: 1_000_000,
            sent: 1_000_000,
            send_errors: 0,
            send_took: ms(6400),
            windows: Three {
                before: Duration::from_secs(10),
                flood: ms(6420),
                after: Duration::from_secs(10),
            },
            backlog_drops: 12,
            capture_other: 0,
            rows: vec![row(1), gw2, row(3)],
            phases: vec![
                Phase {
                    label: "before".into(),
                    stability: quiet.clone(),
                    handover: false,
                },
                Phase {
                    label: "flood, from gw2's SIGTERM".into(),
                    stability: handover,
                    handover: true,
                },
            ],
            stop: Some(Stop {
                gateway: 2,
                into_flood: ms(1003),
                during: true,
                took: ms(312),
                exit: "0".into(),
                success: true,
                bound: ms(1300),
                protodown: 30,
                interfaces: 30,
            }),
            converged_at_end: true,
            timeline_whole: true,
        }
    }

    #[test]
    fn the_tables() {
        let t = tables(&outcome());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "keyed, 3 gateways × 30 VNIs, 100 ms: 1 000 000 of 1 000 000 datagrams sent (0 failed) in 6.40 s \
             (156 250 per s); flood window 6.42 s; kernel input backlog drops meanwhile (all namespaces): 12"
        );
        assert_eq!(
            lines[2],
            "| gateway | datagrams read / socket drops | CPU s: before 10 s / flood 6.4 s / after 10 s \
             | RSS MiB: before / peak / after | heartbeats heard at the client: before / flood / after \
             | longest heartbeat gap, intervals: before / flood / after | stop (SIGTERM to exit, status, interfaces protodown) |"
        );
        assert_eq!(lines[2].matches('|').count(), lines[3].matches('|').count());
        assert_eq!(
            lines[4],
            "| gw1 | 400 000 / 600 123 | 0.03 / 3.20 / 0.04 | 5.6 / 5.8 / 5.7 | 100/100 / 64/64 / 100/100 \
             | 1.04 / 1.31 / 1.02 | - |"
        );
        assert_eq!(
            lines[5],
            "| gw2 | 400 000 / 600 123 | 0.03 / 0.90 to its stop / - | 5.6 / 5.8 / - | 100/100 / 10/10 / - \
             | 1.04 / 1.01 / - | 1.00 s into the flood: 312 ms, status 0, 30 of 30 |"
        );
        assert_eq!(
            lines[8],
            "| phase | window | spurious takeovers | protodown changes (gw1/gw2/gw3) | doubly owned | ownerless | last change |"
        );
        assert_eq!(lines[8].matches('|').count(), lines[9].matches('|').count());
        assert_eq!(
            lines[10],
            "| before | 10.00 s | 0 | 0 / 0 / 0 | none | none | - |"
        );
        assert_eq!(
            lines[11],
            "| flood, from gw2's SIGTERM | 5.42 s | 0 | 5 / 10 / 5 | 10 VNIs, 1.20 VNI-s, longest 140 ms | none | 0.15 s |"
        );
    }

    #[test]
    fn the_verdicts() {
        let mut o = outcome();
        let held = |o: &Outcome| {
            verdicts(o)
                .into_iter()
                .filter(|(_, ok)| *ok == Some(false))
                .map(|(w, _)| w)
                .collect::<Vec<_>>()
        };
        assert!(held(&o).is_empty(), "{:?}", held(&o));
        let v = verdicts(&o);
        assert!(v.iter().any(|(w, ok)| ok.is_none()
            && w == "RSS against before, MiB, peak / after: gw1 +0.2 / +0.1, gw2 +0.2 / -, gw3 +0.2 / +0.1"));
        // A long gap, a slow stop, a takeover no stop explains, gw3 gone.
        o.rows[0].heard.flood = Some(Heard {
            count: 60,
            gap: ms(151),
            slots: 64,
        });
        o.stop.as_mut().unwrap().took = ms(1301);
        o.phases[0].stability.spurious = 1;
        o.phases[0].stability.spurious_vnis = [4].into();
        o.rows[2].alive = false;
        assert_eq!(
            held(&o),
            vec![
                "heartbeats kept their grid during the flood: longest gap at the client under 1.5 intervals (gw1 1.51, gw2 1.01, gw3 1.31)",
                "gw2's SIGTERM 1.00 s into the flood: exit within --leave-wait + 1 s, 1300 ms (1301 ms), status 0 (0), every interface protodown (30 of 30)",
                "ownership unchanged: no spurious takeover (1), no ownerless VNI (0), no doubly owned VNI outside a handover (0), the oracle's owners at the end (yes)",
                "every daemon not stopped still runs (gone: gw3)",
            ]
        );
        // Unkeyed, ownership is reported, not judged.
        o.keyed = false;
        assert_eq!(held(&o).len(), 3);
        assert!(verdicts(&o)
            .iter()
            .any(|(w, ok)| ok.is_none() && w.ends_with("(unkeyed: not required)")));
    }
}
