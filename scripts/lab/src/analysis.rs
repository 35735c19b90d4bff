//! The probes' records and what they mean, as pure functions (tested on recorded inputs).
//!
//! Times are [`Duration`]s since the lab's epoch (one `Instant` shared by every probe), so
//! records of different probes compare directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::kernel::{OwnerMap, Ownership};
use crate::plan::{self, Spec};

/// A gratuitous ARP for a gateway IP, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garp {
    pub at: Duration,
    pub vni: u32,
    /// The ARP sender MAC, lowercase `aa:bb:...`.
    pub mac: String,
}

/// Decodes an Ethernet frame: a gratuitous ARP (sender IP = target IP) for a gateway IP gives
/// its VNI and sender MAC.
pub fn parse_garp(f: &[u8]) -> Option<(u32, String)> {
    if f.len() < 42 || f[12..14] != [0x08, 0x06] {
        return None;
    }
    let (spa, tpa) = (&f[28..32], &f[38..42]);
    if spa != tpa {
        return None;
    }
    let vni = plan::vni_of_gateway_ip(Ipv4Addr::new(spa[0], spa[1], spa[2], spa[3]))?;
    let mac = f[22..28]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Some((vni, mac))
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An ICMP echo request (16 bytes) with identifier `id` and sequence `seq`.
pub fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"wmgwd2la");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Decodes an IPv4 packet read from a raw ICMP socket: an echo reply with identifier `id` gives
/// the address that answered.
pub fn parse_echo_reply(p: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p.len() < ihl + 8 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let icmp = &p[ihl..];
    (icmp[0] == 0 && icmp[4..6] == id.to_be_bytes())
        .then(|| Ipv4Addr::new(p[12], p[13], p[14], p[15]))
}

/// An ICMPv6 echo request (16 bytes: type 128) with identifier `id` and sequence `seq`; the
/// checksum is left zero: the kernel computes it on a raw ICMPv6 socket (RFC 3542 3.1).
pub fn echo6_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 128;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"wmgwd2la");
    p
}

/// Decodes an ICMPv6 message read from a raw ICMPv6 socket (no IP header): the identifier of an
/// echo reply (type 129).
pub fn parse_echo6_reply(p: &[u8]) -> Option<u16> {
    (p.len() >= 8 && p[0] == 129).then(|| u16::from_be_bytes([p[4], p[5]]))
}

/// The stamp of an `ip -ts` line, `[2026-12-03T09:26:06.971974] ...` in UTC (run it with
/// `TZ=UTC`), as microseconds since the Unix epoch, and the rest of the line.
pub fn parse_ts(line: &str) -> Option<(u64, &str)> {
    let (ts, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<u64>().ok()?,
    );
    let (ss, frac) = t
        .next()?
        .split_once('.')
        .unwrap_or((time.rsplit(':').next()?, "0"));
    let ss: u64 = ss.parse().ok()?;
    let us: u64 = format!("{frac:0<6}")[..6].parse().ok()?;
    let days = days_from_civil(y, m, day)?;
    Some((
        ((days * 24 + hh) * 60 + mm) * 60 * 1_000_000 + ss * 1_000_000 + us,
        rest,
    ))
}

/// Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, day: i64) -> Option<u64> {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

/// A change of a bridge FDB entry, from `bridge -timestamp monitor fdb` (run with `TZ=UTC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEvent {
    pub at: Duration,
    pub mac: String,
    pub dev: String,
    /// The VTEP it points at; `None` when the entry went away.
    pub dst: Option<String>,
}

/// The FDB events of `bridge -timestamp monitor fdb` lines: each entry line follows its
/// `Timestamp: Thu Dec  3 09:46:10 2026 820793 usec` line; times relative to `wall0` (the lab's
/// epoch, µs since the Unix epoch). Entries without a `dst` (local ones) are left out.
pub fn parse_fdb_monitor(lines: &[(Duration, String)], wall0: u64) -> Vec<FdbEvent> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let stamp = |w: &[&str]| -> Option<u64> {
        let m = MONTHS.iter().position(|&x| x == w[2])? as i64 + 1;
        let d: i64 = w[3].parse().ok()?;
        let y: i64 = w[5].parse().ok()?;
        let mut hms = w[4].split(':').map(|x| x.parse::<u64>().ok());
        let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
        let us: u64 = w[6].parse().ok()?;
        let days = days_from_civil(y, m, d)?;
        Some((((days * 24 + h) * 60 + mi) * 60 + s) * 1_000_000 + us)
    };
    let mut at = None;
    let mut out = Vec::new();
    for (_, l) in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"Timestamp:") && w.len() >= 7 {
            at = stamp(&w).map(|us| Duration::from_micros(us.saturating_sub(wall0)));
            continue;
        }
        let (deleted, w) = match w.split_first() {
            Some((&"Deleted", rest)) => (true, rest),
            _ => (false, w.as_slice()),
        };
        if let (Some(at), [mac, "dev", dev, "dst", dst, ..]) = (at, w) {
            out.push(FdbEvent {
                at,
                mac: mac.to_string(),
                dev: dev.to_string(),
                dst: (!deleted).then(|| dst.to_string()),
            });
        }
    }
    out
}

/// For `mac` on `dev` in `[t0, t1]`: how often its destination changed (a first event counts),
/// and the last event (when, and its destination or "none").
pub fn fdb_changes(
    events: &[FdbEvent],
    mac: &str,
    dev: &str,
    t0: Duration,
    t1: Duration,
) -> (usize, Option<(Duration, String)>) {
    let mut prev: Option<String> = None;
    let mut n = 0;
    let mut last = None;
    for e in events
        .iter()
        .filter(|e| e.mac == mac && e.dev == dev && e.at >= t0 && e.at <= t1)
    {
        let dst = e.dst.clone().unwrap_or_else(|| "none".into());
        if prev.as_deref() != Some(dst.as_str()) {
            n += 1;
        }
        prev = Some(dst.clone());
        last = Some((e.at, dst));
    }
    (n, last)
}

/// One line of `ip -o monitor link`: the VNI of a `vrrp4-<VNI>` record, and whether the link is
/// owned (protodown off; a deleted link is not owned).
pub fn parse_monitor_line(line: &str) -> Option<(u32, bool)> {
    let i = line.find(" vrrp4-")?;
    let rest = &line[i + 7..];
    let end = rest.find(['@', ':'])?;
    let vni = rest[..end].parse().ok()?;
    let deleted = line.trim_start().starts_with("Deleted");
    Some((vni, !deleted && !line.contains(" protodown on")))
}

/// One line of `ip -o -4 monitor address`: a gateway IP added to (true) or deleted from (false)
/// its `vrrp4-<VNI>`; other addresses give nothing.
pub fn parse_monitor_addr_line(line: &str) -> Option<(u32, bool)> {
    let i = line.find(" vrrp4-")?;
    let mut w = line[i + 1..].split_whitespace();
    let vni: u32 = w.next()?.strip_prefix("vrrp4-")?.parse().ok()?;
    if w.next()? != "inet" {
        return None;
    }
    let addr: Ipv4Addr = w.next()?.split('/').next()?.parse().ok()?;
    (addr == plan::gateway_ip(vni)).then(|| (vni, !line.trim_start().starts_with("Deleted")))
}

/// A control packet of either daemon, as it crosses the switch: a wmgwd2 heartbeat (UDP to port
/// 3000), or a VRRP advertisement (IP protocol 112) inside VXLAN (UDP to 4789).
pub fn is_control_frame(f: &[u8]) -> bool {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = &f[14 + ihl..];
    if udp.len() < 8 {
        return false;
    }
    match u16::from_be_bytes([udp[2], udp[3]]) {
        3000 => true,
        // UDP 8 + VXLAN 8 + inner Ethernet 14: the inner IPv4 header.
        4789 => udp.len() > 39 && udp[28..30] == [0x08, 0x00] && udp[39] == 112,
        _ => false,
    }
}

/// The CPU time in `/proc/PID/task/TID/schedstat` (its first field, nanoseconds on a CPU).
pub fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// User + system CPU ticks from a `/proc/PID/stat` line.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command's closing parenthesis start at field 3 (state); utime and stime
    // are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS in KiB from `/proc/PID/status`.
pub fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Gateway g's ownership records from its monitor's lines (each with when it was read): placed
/// at ip's own stamp (`-ts`, relative to `wall0`, the lab's epoch in µs since the Unix epoch),
/// or when read for a line without one.
pub fn timeline(lines: &[(Duration, String)], g: usize, how: Ownership, wall0: u64) -> Vec<Timed> {
    let parse = match how {
        Ownership::Link => parse_monitor_line,
        Ownership::Addr => parse_monitor_addr_line,
    };
    lines
        .iter()
        .filter_map(|(read, line)| {
            let (at, rest) = match parse_ts(line) {
                Some((us, rest)) => (Duration::from_micros(us.saturating_sub(wall0)), rest),
                None => (*read, line.as_str()),
            };
            let (vni, owned) = parse(rest)?;
            Some(Timed {
                at,
                rec: Record::Own { g, vni, owned },
            })
        })
        .collect()
}

/// Packets dropped machine-wide for a full input backlog (`/proc/net/softnet_stat`, the second
/// column, hex, summed over CPUs).
pub fn softnet_drops(stat: &str) -> u64 {
    stat.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

/// "100ms" -> 100, "1s" -> 1000 (whole numbers only).
pub fn interval_ms(s: &str) -> Option<u64> {
    if let Some(n) = s.strip_suffix("ms") {
        n.parse().ok()
    } else {
        s.strip_suffix('s')?.parse::<u64>().ok().map(|n| n * 1000)
    }
}

/// A change of ownership or liveness, in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Gateway g's `vrrp4-<vni>` became owned or not (from its monitor, or the first snapshot).
    Own { g: usize, vni: u32, owned: bool },
    /// Gateway g became live (daemon runs and port up) or not.
    Live { g: usize, live: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub at: Duration,
    pub rec: Record,
}

/// Ownership anomalies among live gateways in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// VNIs with no live owner at some moment, and the longest such moment.
    pub ownerless_vnis: usize,
    pub ownerless_max: Duration,
    /// The sum of those moments over every VNI (VNI-time).
    pub ownerless_time: Duration,
    /// VNIs with two or more live owners at some moment, and the longest such moment.
    pub double_vnis: usize,
    pub double_max: Duration,
    /// The sum of those moments over every VNI (VNI-time).
    pub double_time: Duration,
    /// From the window's start to the last ownership change of a live gateway (zero: none).
    pub last_change: Duration,
    /// VNIs without exactly one live owner at the window's end.
    pub open: usize,
}

/// Moments shorter than this are not counted: each gateway's monitor (`ip -ts monitor`) stamps
/// its records when it reads them, so records of two gateways are ordered only as well as those
/// processes get the CPU. On the 2-core CI machine under load one monitor stamped a gateway's
/// protodown-off 2.7 ms after another's protodown-on that the daemons' logs show came 2 ms
/// later (the keyed roll-out test, a false "ownerless" moment); 1 ms was too tight.
pub const MIN_MOMENT: Duration = Duration::from_millis(5);

/// Replays `records` (in any order; sorted here, stably, by time) and reports the anomalies in
/// `[t0, t1]`.
pub fn anomalies(spec: &Spec, records: &[Timed], t0: Duration, t1: Duration) -> Anomalies {
    let mut recs = records.to_vec();
    recs.sort_by_key(|r| r.at);
    let vnis: Vec<u32> = spec.vni_range().collect();
    let mut own: HashMap<(usize, u32), bool> = HashMap::new();
    let mut live = vec![false; spec.gateways + 1];
    // Per VNI: 0 owners, 1, or 2 (= two or more), and since when when not 1.
    let mut st: HashMap<u32, u8> = HashMap::new();
    let mut since: HashMap<u32, Duration> = HashMap::new();
    let (mut none, mut dbl) = (BTreeSet::new(), BTreeSet::new());
    let mut out = Anomalies::default();
    let mut started = false;

    let state = |own: &HashMap<(usize, u32), bool>, live: &[bool], v: u32| -> u8 {
        let c = (1..=spec.gateways)
            .filter(|&g| live[g] && own.get(&(g, v)).copied().unwrap_or(false))
            .count();
        c.min(2) as u8
    };
    let mut close = |v: u32, s: u8, from: Duration, t: Duration, out: &mut Anomalies| {
        let d = t.saturating_sub(from);
        if d < MIN_MOMENT {
            return;
        }
        if s == 0 {
            none.insert(v);
            out.ownerless_max = out.ownerless_max.max(d);
            out.ownerless_time += d;
        } else if s == 2 {
            dbl.insert(v);
            out.double_max = out.double_max.max(d);
            out.double_time += d;
        }
    };
    macro_rules! update {
        ($v:expr, $t:expr) => {{
            let v = $v;
            let s = state(&own, &live, v);
            let old = st[&v];
            if s != old {
                if old != 1 {
                    close(v, old, since[&v], $t, &mut out);
                }
                st.insert(v, s);
                if s != 1 {
                    since.insert(v, $t);
                }
            }
        }};
    }
    let begin = |own: &HashMap<(usize, u32), bool>,
                 live: &[bool],
                 st: &mut HashMap<u32, u8>,
                 since: &mut HashMap<u32, Duration>| {
        for &v in &vnis {
            let s = state(own, live, v);
            st.insert(v, s);
            if s != 1 {
                since.insert(v, t0);
            }
        }
    };
    for r in &recs {
        if r.at > t1 {
            break;
        }
        if !started && r.at >= t0 {
            begin(&own, &live, &mut st, &mut since);
            started = true;
        }
        match r.rec {
            Record::Live { g, live: l } => {
                live[g] = l;
                if started {
                    for &v in &vnis {
                        update!(v, r.at);
                    }
                }
            }
            Record::Own { g, vni, owned } => {
                let was = own.get(&(g, vni)).copied().unwrap_or(false);
                if started && live[g] && was != owned {
                    out.last_change = r.at - t0;
                }
                own.insert((g, vni), owned);
                if started && spec.vni_range().contains(&vni) {
                    update!(vni, r.at);
                }
            }
        }
    }
    if !started {
        begin(&own, &live, &mut st, &mut since);
    }
    for &v in &vnis {
        if st[&v] != 1 {
            close(v, st[&v], since[&v], t1, &mut out);
            out.open += 1;
        }
    }
    out.ownerless_vnis = none.len();
    out.double_vnis = dbl.len();
    out
}

/// The longest time without a reply around `[t0, t1]`: between two replies, from the last reply
/// before `t0` (or `t0`) to the first in the window, and from the last one to `t1`. `replies`
/// sorted.
pub fn max_gap(replies: &[Duration], t0: Duration, t1: Duration) -> Duration {
    let mut prev = replies
        .iter()
        .rev()
        .find(|&&t| t < t0)
        .copied()
        .unwrap_or(t0);
    let mut m = Duration::ZERO;
    for &t in replies.iter().filter(|&&t| t >= t0 && t <= t1) {
        m = m.max(t - prev);
        prev = t;
    }
    m.max(t1.saturating_sub(prev))
}

/// VNIs whose owners differ between two maps, with the new owners.
pub fn moved(before: &OwnerMap, after: &OwnerMap) -> OwnerMap {
    after
        .iter()
        .filter(|(v, o)| before.get(v) != Some(o))
        .map(|(v, o)| (*v, o.clone()))
        .collect()
}

/// How the moved VNIs were announced in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GarpStats {
    /// Moved VNIs announced by their new owner (its MAC, or any with a shared MAC).
    pub announced: usize,
    /// From the window's start to the first such GARP: the latest and the earliest over VNIs.
    pub first_max: Duration,
    pub first_min: Duration,
    /// Such GARPs per announced VNI.
    pub per_vni: f64,
}

/// GARPs in `[t0, t1]` for the `moved` VNIs from their new owner: `macs[(g, v)]` is gateway
/// g's MAC on `vrrp4-<v>`; with `shared` the MAC is the same everywhere and any GARP counts.
pub fn garp_stats(
    garps: &[Garp],
    moved: &OwnerMap,
    macs: &BTreeMap<(usize, u32), String>,
    shared: bool,
    t0: Duration,
    t1: Duration,
) -> GarpStats {
    let mut first: BTreeMap<u32, Duration> = BTreeMap::new();
    let mut total = 0usize;
    for x in garps.iter().filter(|x| x.at >= t0 && x.at <= t1) {
        let Some(owners) = moved.get(&x.vni) else {
            continue;
        };
        let from_owner = match owners.as_slice() {
            [g] => {
                shared
                    || macs
                        .get(&(*g, x.vni))
                        .is_some_and(|m| m.eq_ignore_ascii_case(&x.mac))
            }
            _ => false,
        };
        if !from_owner {
            continue;
        }
        total += 1;
        first.entry(x.vni).or_insert(x.at - t0);
    }
    let n = first.len();
    GarpStats {
        announced: n,
        first_max: first.values().max().copied().unwrap_or_default(),
        first_min: first.values().min().copied().unwrap_or_default(),
        per_vni: if n > 0 { total as f64 / n as f64 } else { 0.0 },
    }
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A gratuitous ARP request for 10.100.7.1 from 02:00:5e:00:00:07, as captured.
    const GARP: &str = "ffffffffffff 02005e000007 0806 0001 0800 06 04 0001 \
                        02005e000007 0a640701 000000000000 0a640701";

    #[test]
    fn a_garp_for_a_gateway_ip_and_nothing_else() {
        let f = hex(GARP);
        assert_eq!(parse_garp(&f), Some((7, "02:00:5e:00:00:07".to_owned())));
        let mut req = f.clone();
        req[41] = 2; // who-has 10.100.7.2: not gratuitous
        assert_eq!(parse_garp(&req), None);
        let mut ip = f.clone();
        ip[12] = 0x08;
        ip[13] = 0x00;
        assert_eq!(parse_garp(&ip), None);
        assert_eq!(parse_garp(&f[..41]), None);
    }

    #[test]
    fn echo_request_and_reply() {
        let q = echo_request(0x1234, 7);
        assert_eq!(checksum(&q), 0, "a valid checksum sums to zero");
        // The reply as a raw socket reads it: 20-byte IPv4 header from 10.100.3.1, ICMP type 0.
        let mut p = hex("4500 0024 0000 4000 4001 0000 0a640301 0a640364");
        let mut r = q;
        r[0] = 0;
        p.extend_from_slice(&r);
        assert_eq!(
            parse_echo_reply(&p, 0x1234),
            Some(Ipv4Addr::new(10, 100, 3, 1))
        );
        assert_eq!(parse_echo_reply(&p, 0x4321), None);
        p[20] = 8; // our own request, looped back
        assert_eq!(parse_echo_reply(&p, 0x1234), None);
        assert_eq!(parse_echo_reply(&[], 1), None);
    }

    #[test]
    fn echo6_request_and_reply() {
        let q = echo6_request(0x1234, 7);
        assert_eq!(&q[..8], &[128, 0, 0, 0, 0x12, 0x34, 0, 7]);
        let mut r = q;
        r[0] = 129;
        assert_eq!(parse_echo6_reply(&r), Some(0x1234));
        assert_eq!(parse_echo6_reply(&q), None, "our own request");
        assert_eq!(parse_echo6_reply(&r[..7]), None);
    }

    #[test]
    fn monitor_lines_recorded_from_ip_monitor() {
        let lines = include_str!("../tests/fixtures/ip-o-monitor-link.txt");
        let got: Vec<_> = lines.lines().filter_map(parse_monitor_line).collect();
        assert_eq!(
            got,
            vec![(1, false), (2, true), (3, false), (3, true), (16, false)]
        );
    }

    #[test]
    fn ip_ts_stamps() {
        let (us, rest) = parse_ts("[2026-12-03T09:26:06.971974] 2: lab-mark: <BROADCAST>").unwrap();
        assert_eq!(us, 1_796_289_966_971_974);
        assert_eq!(rest, "2: lab-mark: <BROADCAST>");
        assert_eq!(
            parse_ts("[1970-01-01T00:00:01.5] x").map(|x| x.0),
            Some(1_500_000)
        );
        assert_eq!(
            parse_ts("[2000-03-01T00:00:00.000000] x").map(|x| x.0),
            Some(951_868_800_000_000)
        );
        assert_eq!(parse_ts("2: lab-mark"), None);
    }

    #[test]
    fn fdb_monitor_lines_as_bridge_prints_them() {
        let text = include_str!("../tests/fixtures/bridge-timestamp-monitor-fdb.txt");
        let lines: Vec<(Duration, String)> = text
            .lines()
            .map(|l| (Duration::ZERO, l.to_owned()))
            .collect();
        // 2026-12-03T09:46:10.000000Z
        let wall0 = 1_796_291_170_000_000;
        let ev = parse_fdb_monitor(&lines, wall0);
        let dsts: Vec<_> = ev.iter().map(|e| (e.at, e.dst.as_deref())).collect();
        assert_eq!(
            dsts,
            vec![
                (Duration::from_micros(820_793), Some("10.0.1.1")),
                (Duration::from_micros(822_249), Some("10.0.1.2")),
                (Duration::from_micros(823_598), None),
            ]
        );
        assert!(ev
            .iter()
            .all(|e| e.mac == "00:00:5e:00:01:64" && e.dev == "vxlan100"));
        let (n, last) = fdb_changes(&ev, "00:00:5e:00:01:64", "vxlan100", ms(0), ms(1000));
        assert_eq!(
            (n, last),
            (3, Some((Duration::from_micros(823_598), "none".into())))
        );
        assert_eq!(
            fdb_changes(&ev, "00:00:5e:00:01:64", "vxlan101", ms(0), ms(1000)),
            (0, None)
        );
    }

    #[test]
    fn address_monitor_lines() {
        let lines = include_str!("../tests/fixtures/ip-o-4-monitor-address.txt");
        let got: Vec<_> = lines.lines().filter_map(parse_monitor_addr_line).collect();
        assert_eq!(got, vec![(1, true), (1, false)]);
    }

    #[test]
    fn control_frames_of_both_daemons() {
        // Ethernet + IPv4 (UDP) + UDP to port 3000: a heartbeat.
        let eth = hex("ffffffffffff 020000000001 0800");
        let ip = hex("4500 0044 0000 4000 4011 0000 0a000101 0a0001ff");
        let mut hb = [eth.clone(), ip.clone(), hex("c350 0bb8 0030 0000")].concat();
        hb.extend_from_slice(&[0; 40]);
        assert!(is_control_frame(&hb));
        // VXLAN carrying VRRP (protocol 112), and VXLAN carrying ICMP.
        let vx = hex("c350 12b5 0050 0000 08000000 00000100");
        let inner_eth = hex("01005e000012 00005e000101 0800");
        let inner_ip = |proto: u8| {
            let mut h = hex("4500 0020 0000 0000 ff00 0000 0a640181 e0000012");
            h[9] = proto;
            h
        };
        let vrrp = [
            eth.clone(),
            ip.clone(),
            vx.clone(),
            inner_eth.clone(),
            inner_ip(112),
            vec![0; 12],
        ]
        .concat();
        assert!(is_control_frame(&vrrp));
        let icmp = [
            eth.clone(),
            ip.clone(),
            vx,
            inner_eth,
            inner_ip(1),
            vec![0; 12],
        ]
        .concat();
        assert!(!is_control_frame(&icmp));
        assert!(!is_control_frame(&hb[..30]));
    }

    #[test]
    fn cpu_and_memory_of_a_process() {
        let stat = "4242 (wmgwd2 (x)) S 1 4242 4242 0 -1 4194560 300 0 0 0 17 5 0 0 20 0 2 0 100 9000000 1200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(22));
        assert_eq!(schedstat_ns("192771685 16433227 679\n"), Some(192_771_685));
        assert_eq!(schedstat_ns(""), None);
        assert_eq!(rss_kib("Name:\twmgwd2\nVmRSS:\t    4812 kB\n"), Some(4812));
    }

    #[test]
    fn softnet_and_intervals() {
        let stat = "0000a1b2 00000002 00000000 00000000\n0000c3d4 00000010 00000000 00000000\n";
        assert_eq!(softnet_drops(stat), 18);
        assert_eq!(interval_ms("100ms"), Some(100));
        assert_eq!(interval_ms("2s"), Some(2000));
        assert_eq!(interval_ms("2"), None);
        assert_eq!(interval_ms("1.5s"), None);
    }

    fn own(at: u64, g: usize, vni: u32, owned: bool) -> Timed {
        Timed {
            at: ms(at),
            rec: Record::Own { g, vni, owned },
        }
    }

    fn live(at: u64, g: usize, l: bool) -> Timed {
        Timed {
            at: ms(at),
            rec: Record::Live { g, live: l },
        }
    }

    #[test]
    fn a_crash_leaves_a_vni_ownerless_until_the_takeover() {
        let spec = Spec::new(2, 2);
        // gw1 owns 1, gw2 owns 2; gw1 crashes at 1000, gw2 takes VNI 1 at 1300.
        let recs = vec![
            own(0, 1, 1, true),
            own(0, 1, 2, false),
            own(0, 2, 1, false),
            own(0, 2, 2, true),
            live(10, 1, true),
            live(10, 2, true),
            live(1000, 1, false),
            own(1300, 2, 1, true),
        ];
        let a = anomalies(&spec, &recs, ms(1000), ms(2000));
        assert_eq!(a.ownerless_vnis, 1);
        assert_eq!(a.ownerless_max, ms(300));
        assert_eq!(a.ownerless_time, ms(300));
        assert_eq!(a.double_vnis, 0);
        assert_eq!(a.last_change, ms(300));
        assert_eq!(a.open, 0);
        // Before the crash: nothing wrong.
        assert_eq!(
            anomalies(&spec, &recs, ms(100), ms(900)),
            Anomalies::default()
        );
    }

    #[test]
    fn a_rejoin_overlap_counts_as_two_owners_and_short_moments_do_not() {
        let spec = Spec::new(2, 1);
        let recs = vec![
            own(0, 1, 1, false),
            own(0, 2, 1, true),
            live(0, 2, true),
            live(100, 1, true),
            own(200, 1, 1, true),  // two owners from 200 ...
            own(250, 2, 1, false), // ... to 250
            own(400, 2, 1, true),  // two again, for half a millisecond
            Timed {
                at: Duration::from_micros(400_500),
                rec: Record::Own {
                    g: 1,
                    vni: 1,
                    owned: false,
                },
            },
        ];
        let a = anomalies(&spec, &recs, ms(100), ms(1000));
        assert_eq!(a.double_vnis, 1);
        assert_eq!(a.double_max, ms(50));
        assert_eq!(a.double_time, ms(50), "the half millisecond is not counted");
        assert_eq!(a.ownerless_vnis, 0);
        assert_eq!(a.last_change, Duration::from_micros(300_500));
        // Still two owners at the end of a window that closes at 225: open, counted to the end.
        let a = anomalies(&spec, &recs, ms(100), ms(225));
        assert_eq!((a.open, a.double_max), (1, ms(25)));
    }

    /// A real drill (G = 2, V = 4, 100 ms; `wmgwd2-lab drill -g 2 -v 4 -- --uplink-hold-down 1s`)
    /// saved its monitors and liveness; replayed here, they give the figures its table printed:
    ///   1 crash gw1     converged 0.229 s, ownerless 2 VNIs 0.229 s, 2 owners none
    ///   2 restart gw1   converged 0.309 s, ownerless none, 2 owners 2 VNIs 0.006 s
    ///   5 cut gw1 link  converged 0.259 s, ownerless 2 VNIs 0.259 s, 2 owners none
    ///   6 restore       converged 1.005 s, ownerless none, 2 owners none
    #[test]
    fn a_recorded_drill_replays_to_its_table() {
        const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drill-g2-v4");
        let read = |f: &str| std::fs::read_to_string(format!("{DIR}/{f}")).unwrap();
        let wall0: u64 = read("wall0.txt").trim().parse().unwrap();
        let spec = Spec::new(2, 4);
        // Before the daemons start, every vrrp4-<v> is up with protodown off.
        let mut recs: Vec<Timed> = (1..=2)
            .flat_map(|g| (1..=4).map(move |vni| own(0, g, vni, true)))
            .collect();
        let mut events = Vec::new();
        for l in read("live.txt").lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = Duration::from_secs_f64(w[0].parse().unwrap());
            let (g, live) = (w[1].parse().unwrap(), w[2] == "1");
            events.push(at);
            recs.push(Timed {
                at,
                rec: Record::Live { g, live },
            });
        }
        for g in 1..=2 {
            let lines: Vec<(Duration, String)> = read(&format!("mon{g}.txt"))
                .lines()
                .map(|l| (Duration::ZERO, l.to_owned()))
                .collect();
            let t = timeline(&lines, g, Ownership::Link, wall0);
            assert!(t.len() > 10 && t.iter().all(|r| r.at > Duration::ZERO));
            recs.extend(t);
        }
        // Each window is the step's: from the event until the drill had settled (converged,
        // then still for 1 s), before the next event.
        let step = |t0: Duration, secs: f64| {
            let a = anomalies(&spec, &recs, t0, t0 + Duration::from_secs_f64(secs));
            let f = |d: Duration| format!("{:.3}", d.as_secs_f64());
            (
                f(a.last_change),
                a.ownerless_vnis,
                f(a.ownerless_max),
                a.double_vnis,
                f(a.double_max),
                a.open,
            )
        };
        // events: start gw1, start gw2, crash gw1, restart gw1, stop gw2 (gone), start gw2,
        // cut gw1, restore gw1.
        let row = |c: &str, n: usize, o: &str, d: usize, m: &str| {
            (c.to_owned(), n, o.to_owned(), d, m.to_owned(), 0)
        };
        assert_eq!(step(events[2], 1.5), row("0.229", 2, "0.229", 0, "0.000"));
        assert_eq!(step(events[3], 1.5), row("0.309", 0, "0.000", 2, "0.006"));
        assert_eq!(step(events[6], 1.5), row("0.259", 2, "0.259", 0, "0.000"));
        assert_eq!(step(events[7], 2.5), row("1.005", 0, "0.000", 0, "0.000"));
    }

    #[test]
    fn ping_gaps() {
        let r: Vec<Duration> = [0, 20, 40, 60, 500, 520, 540].map(ms).to_vec();
        assert_eq!(max_gap(&r, ms(50), ms(545)), ms(440));
        assert_eq!(max_gap(&r, ms(530), ms(600)), ms(60));
        assert_eq!(max_gap(&[], ms(0), ms(100)), ms(100));
    }

    #[test]
    fn garps_from_the_new_owner_only() {
        let before: OwnerMap = [(1, vec![1]), (2, vec![2]), (3, vec![1])].into();
        let after: OwnerMap = [(1, vec![2]), (2, vec![2]), (3, vec![2])].into();
        let mv = moved(&before, &after);
        assert_eq!(mv, [(1, vec![2]), (3, vec![2])].into());
        let macs: BTreeMap<(usize, u32), String> = [
            ((1, 1), "aa:00:00:00:01:01".to_owned()),
            ((2, 1), "aa:00:00:00:02:01".to_owned()),
            ((2, 3), "aa:00:00:00:02:03".to_owned()),
        ]
        .into();
        let g = |at, vni, mac: &str| Garp {
            at: ms(at),
            vni,
            mac: mac.into(),
        };
        let garps = vec![
            g(5, 1, "aa:00:00:00:01:01"), // the old owner: not counted
            g(110, 1, "aa:00:00:00:02:01"),
            g(120, 3, "AA:00:00:00:02:03"),
            g(310, 1, "aa:00:00:00:02:01"),
            g(900, 3, "aa:00:00:00:02:03"), // after the window
        ];
        let s = garp_stats(&garps, &mv, &macs, false, ms(100), ms(500));
        assert_eq!((s.announced, s.first_min, s.first_max), (2, ms(10), ms(20)));
        assert!((s.per_vni - 1.5).abs() < 1e-9);
        let s = garp_stats(&garps, &mv, &macs, true, ms(0), ms(500));
        assert_eq!(s.announced, 2);
    }
}
