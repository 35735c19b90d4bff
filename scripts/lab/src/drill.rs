//! The failover drill: G gateways, one daemon each, then the scenario's six steps while the
//! probes record what the kernel did and what a client saw; one row per step.
//!
//! Steps (targets: crash gw1, stop gw2, cut gw3; gw1 when G = 2):
//!   1 crash (kill -9)  2 restart  3 stop (SIGTERM)  4 start  5 cut link  6 restore
//! After each event the drill waits (bounded, polling the kernel) until the lab has converged
//! (every VNI has exactly the oracle's owner among the live gateways) and the owner map has been
//! still for max(1 s, 10 intervals). The columns are explained in [`USAGE`].

use std::io::Write;
use std::time::{Duration, Instant};

use crate::analysis::{self, secs};
use crate::daemon::DaemonConfig;
use crate::kernel;
use crate::nft;
use crate::plan::{Spec, Underlay};
use crate::scenario::{self, Event, Lab, LiveRule};
use crate::session::{backlog_drops, Session};
use crate::Result;

/// The options and columns (`wmgwd2-lab drill -h`, `scripts/drill.sh -h`).
pub const USAGE: &str = "\
drill: a failover drill on a real lab. Builds G gateways + a client in network namespaces, runs
one wmgwd2 per gateway, then crashes, stops, cuts and brings back gateways while it measures,
from the kernel and the wire, what a client lives through.

Usage (as root; scripts/drill.sh builds the binaries and apt-get installs iproute2 if missing):
  scripts/drill.sh [-g G] [-v V] [-i INTERVAL] [-m distinct|shared] [-u segment|routed|ipv6]
                   [-b BIN] [-- DAEMON-ARGS...]
  (the same as: cargo run --release -p wmgwd2-lab -- drill [OPTIONS])
    -g G         gateways (2-200, default 3)
    -v V         VNIs 1..V (default 100)
    -i INTERVAL  heartbeat interval, ms or s (default 100ms)
    -m MODE      MAC of the vrrp4-<VNI> macvlans: distinct per gateway (default) or shared
    -u UNDERLAY  segment (default: one L2 segment, broadcast heartbeats), routed (a subnet per
                 host behind a router namespace, --peer heartbeats, broadcast ones dropped by
                 nftables; prints the measured control traffic) or ipv6 (the segment, --ipv6
                 heartbeats, IPv4 ones dropped)
    -b BIN       run this wmgwd2 binary (default: the wmgwd2 built beside this binary)
    -- ARGS      extra daemon flags, e.g. -- --dead-after 5 --garp-count 1
  Exit status 0 when every step passed, 1 when one failed, 2 on a usage error.
  Environment: DRILL_BOUND (seconds, default 30): the longest wait for any condition.

Steps (targets: crash gw1, stop gw2, cut gw3 (gw1 when G=2)):
  1 crash      kill -9 the daemon          2 restart    start it again
  3 stop       SIGTERM (systemctl stop)    4 start      start it again
  5 cut link   switch port p<g> down       6 restore    switch port up
After each event the drill waits (bounded, polling the kernel) until every VNI has exactly the
owner that wmgwd2's own assignment predicts among the live gateways, and the owner map has been
still for max(1 s, 10 intervals).

Columns, each measured live for the one step:
  moved      VNIs whose owner changed (kernel: proto_down of vrrp4-<VNI> on each gateway)
  converged  event -> the last change of a live gateway's protodown state (ip monitor): the
             owner map took its final form
  GARPed     event -> the last moved VNI's first gratuitous ARP from its new owner, as seen by
             the client (a packet socket in the client namespace; sender MAC = new owner's)
  GARPs      moved VNIs announced by their new owner / moved VNIs, x GARPs seen per such VNI
             (the daemon sends --garp-count, default 3, per takeover)
  max gap    longest time between two ping replies (every 20 ms to up to 8 sampled gateway
             IPs, sampled among the VNIs of the targeted gateways) around the event
  ownerless  VNIs with no live owner at some moment, and the longest such moment
  2 owners   VNIs with two or more live owners at some moment, and the longest such moment
             (moments under 5 ms are not counted: each gateway's monitor stamps its records
             when it reads them, so two gateways' records are ordered only to a few ms)
  owners     VNIs per gateway afterwards (- = not live)
\"Live\" gateway: its daemon runs and its switch port is up. A gateway whose daemon was killed
keeps the protodown state the daemon left (the kernel cannot know); it counts again from the
moment its daemon is restarted.
A step FAILs when it did not converge in time, a moved VNI got no GARP from its new owner, a
daemon exited badly or died, or a \"bring back\" step did not restore the starting owner map
(rendezvous hashing is deterministic, so it must).

Everything runs in namespaces named wmd<pid><n>-*, removed on exit, failure or Ctrl-C; the drill
stops only the processes it started, by PID. The daemons' logs and the raw records (monitors,
GARPs, pings, liveness) stay in /tmp/wmgwd2-lab-wmd*/ (printed).
";

/// One drill's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    pub daemon: DaemonConfig,
    /// The longest wait for any condition.
    pub bound: Duration,
    /// Keep the daemons' logs afterwards.
    pub keep_logs: bool,
}

/// The scenario's steps for G gateways: (label, event, gateway, brings back the start map).
pub fn steps(gateways: usize) -> Vec<(String, Event, usize, bool)> {
    let (crash, stop, cut) = (1, 2, if gateways >= 3 { 3 } else { 1 });
    vec![
        (
            format!("crash gw{crash} (kill -9)"),
            Event::Crash,
            crash,
            false,
        ),
        (format!("restart gw{crash}"), Event::Start, crash, true),
        (format!("stop gw{stop} (SIGTERM)"), Event::Stop, stop, false),
        (format!("start gw{stop}"), Event::Start, stop, true),
        (format!("cut gw{cut} link (p{cut})"), Event::Cut, cut, false),
        (format!("restore gw{cut} link"), Event::Restore, cut, true),
    ]
}

/// The table's row format.
pub fn row(cols: [&str; 11]) -> String {
    format!(
        "{:<2} {:<22} {:>5} {:>9} {:>9} {:>11} {:>13} {:>15} {:>15} {:<11} {}",
        cols[0],
        cols[1],
        cols[2],
        cols[3],
        cols[4],
        cols[5],
        cols[6],
        cols[7],
        cols[8],
        cols[9],
        cols[10]
    )
}

fn header() -> String {
    row([
        "#",
        "step",
        "moved",
        "converged",
        "GARPed",
        "GARPs",
        "max gap",
        "ownerless",
        "2 owners",
        "owners",
        "result",
    ])
}

fn s3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn anomaly(n: usize, max: Duration) -> String {
    if n == 0 {
        "none".into()
    } else {
        format!("{n} VNIs {} s", s3(max))
    }
}

/// The heartbeats every gateway received over a 5 s window of the converged routed lab (its
/// nftables counters of unicast heartbeats), per interval: G-1 each with unicast peers, so the
/// lab carries G x (G-1) frames per interval.
fn control_traffic(lab: &Lab, interval_ms: u64) -> Result<String> {
    let g_n = lab.spec.gateways;
    let read = |g: usize| -> Result<(u64, u64)> {
        let c = nft::route_counter_bytes(&lab.gw(g))?;
        Ok(c.get("offered:unicast").copied().unwrap_or((0, 0)))
    };
    let before: Vec<(u64, u64)> = (1..=g_n).map(read).collect::<Result<_>>()?;
    let t0 = Instant::now();
    scenario::nap(Duration::from_secs(5))?;
    let after: Vec<(u64, u64)> = (1..=g_n).map(read).collect::<Result<_>>()?;
    let intervals = t0.elapsed().as_secs_f64() * 1000.0 / interval_ms as f64;
    let (mut frames, mut bytes) = (0u64, 0u64);
    let per: Vec<String> = before
        .iter()
        .zip(&after)
        .enumerate()
        .map(|(i, (b, a))| {
            frames += a.0 - b.0;
            bytes += a.1 - b.1;
            format!("gw{} {:.2}", i + 1, (a.0 - b.0) as f64 / intervals)
        })
        .collect();
    Ok(format!(
        "control traffic (nftables, 5 s converged): heartbeats received per interval: {}; all gateways: {:.1} frames per interval (G x (G-1) = {}), {:.0} bytes each (IP)",
        per.join(", "),
        frames as f64 / intervals,
        g_n * (g_n - 1),
        if frames > 0 { bytes as f64 / frames as f64 } else { 0.0 }
    ))
}

/// Runs the drill, writing progress and the table to `out`; true when every step passed.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<bool> {
    let spec = &cfg.spec;
    let g_n = spec.gateways;
    let p = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    let t = Instant::now();
    let mut lab = Lab::up("wmd", spec, cfg.daemon.clone())?;
    lab.keep_logs = cfg.keep_logs;
    p(
        out,
        format!(
            "lab: {}, {g_n} gateways, VNIs {}-{}, MAC {}, interval {}",
            lab.name(),
            spec.first(),
            spec.last(),
            spec.mac,
            cfg.daemon.interval
        ),
    );
    p(out, format!("lab up in {} s", secs(t.elapsed())));

    let interval_ms = analysis::interval_ms(&cfg.daemon.interval).unwrap_or(1000);
    let stable = Duration::from_millis(interval_ms * 10).max(Duration::from_secs(1));
    let mut d = Session::watch(lab, LiveRule::Daemon, cfg.bound, stable)?;

    p(out, format!("starting {g_n} daemons"));
    let (start, t_d0) = d.start_all()?;
    if !start.ok {
        p(
            out,
            format!(
                "drill: no convergence within {} s after start; see {}/gw*.log",
                cfg.bound.as_secs(),
                d.lab.dir.display()
            ),
        );
        d.lab.keep_logs = true;
        d.save()?;
        return Ok(false);
    }
    let map0 = start.map;
    let all = spec.all_gateways();
    p(
        out,
        format!(
            "converged in {} s; VNIs owned: {}",
            secs(start.changed - t_d0),
            all.iter()
                .map(|&g| format!("gw{g} {}", map0.values().filter(|o| o.contains(&g)).count()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    if spec.underlay == Underlay::Routed {
        p(out, control_traffic(&d.lab, interval_ms)?);
    }

    // Sampled VNIs for pings: among those of the gateways the steps take away.
    let steps = steps(g_n);
    let targets: Vec<usize> = steps.iter().filter(|s| !s.3).map(|s| s.2).collect();
    d.start_pings(&map0, &targets, Duration::from_millis(20))?;
    let sampled = d
        .samples
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    p(
        out,
        format!("pinging gateway IPs of VNIs {sampled} every 20 ms from the client"),
    );
    p(out, String::new());
    p(out, header());

    let mut rows = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failed = false;
    let mut prev = map0.clone();
    for (i, (label, event, g, back)) in steps.iter().enumerate() {
        let n = i + 1;
        let mut why: Vec<String> = Vec::new();
        let drops0 = backlog_drops();
        if *event == Event::Start && d.lab.daemons.pid(*g).is_some() {
            why.push(format!("gw{g} was still running"));
        }
        let acted = d.lab.act(*event, *g)?;
        let t0 = acted.at;
        if let Some((exit, gone)) = acted.exit {
            notes.push(format!(
                "step {n}: gw{g} exited {} s after SIGTERM, status {exit}",
                secs(gone - t0)
            ));
            if !exit.success() {
                why.push(format!("exit status {exit} after SIGTERM"));
            }
        }
        let settled = d.settle(t0)?;
        let map = settled.map;
        let f = d.figures(&prev, &map, t0, Instant::now());
        let (an, ga) = (f.anomalies, f.garps);
        let drops = backlog_drops().saturating_sub(drops0);
        if drops > 0 {
            let max = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
                .unwrap_or_default();
            notes.push(format!(
                "step {n}: the kernel dropped {drops} packets machine-wide for a full input \
                 backlog (net.core.netdev_max_backlog={}); lost GARPs or pings may be among them",
                max.trim()
            ));
        }
        let conv = if settled.ok {
            format!("{} s", s3(an.last_change))
        } else {
            why.push(format!("no convergence in {}s", cfg.bound.as_secs()));
            "timeout".into()
        };
        if ga.announced != f.moved.len() {
            why.push(format!(
                "{} moved VNIs got no GARP from their new owner",
                f.moved.len() - ga.announced
            ));
        }
        if *back {
            let m = analysis::moved(&map0, &map).len();
            if m != 0 {
                why.push(format!("{m} VNIs not back with their starting owner"));
            }
        }
        for gw in 1..=g_n {
            if d.lab.daemons.pid(gw).is_some() && !d.lab.daemons.alive(gw) {
                why.push(format!("daemon gw{gw} died (see gw{gw}.log)"));
            }
        }
        if matches!(event, Event::Crash | Event::Cut) {
            let m = d.lab.owned(*g)?.values().filter(|&&o| o).count();
            notes.push(if *event == Event::Crash {
                format!(
                    "step {n}: the killed daemon left {m} vrrp4 links of gw{g} protodown off \
                     (the kernel keeps the last state)"
                )
            } else {
                format!(
                    "step {n}: cut off, gw{g} holds {m} vrrp4 links protodown off \
                     (unreachable; not counted)"
                )
            });
        }
        let result = if why.is_empty() { "ok" } else { "FAIL" };
        if !why.is_empty() {
            failed = true;
            notes.extend(why.iter().map(|w| format!("step {n} FAIL: {w}")));
        }
        let gap_vni = f.gap_vni.map(|v| v.to_string()).unwrap_or_default();
        let r = row([
            &n.to_string(),
            label,
            &f.moved.len().to_string(),
            &conv,
            &if ga.announced > 0 {
                format!("{} s", s3(ga.first_max))
            } else {
                "-".into()
            },
            &format!("{}/{} x{:.1}", ga.announced, f.moved.len(), ga.per_vni),
            &format!("{} s v{gap_vni}", s3(f.gap)),
            &anomaly(an.ownerless_vnis, an.ownerless_max),
            &anomaly(an.double_vnis, an.double_max),
            &kernel::owner_counts(spec, &map, &d.lab.live()),
            result,
        ]);
        p(out, r.clone());
        rows.push(r);
        prev = map;
        // Let this step's tail (late GARPs, pings) pass before the next event.
        scenario::nap(Duration::from_millis(500))?;
    }

    p(out, String::new());
    p(
        out,
        format!(
            "=== wmgwd2 drill: {g_n} gateways, {} VNIs, interval {}, MAC {} ===",
            spec.vnis, cfg.daemon.interval, spec.mac
        ),
    );
    p(
        out,
        format!(
            "start: VNIs per gateway {}; pinged VNIs {sampled}",
            kernel::owner_counts(spec, &map0, &all)
        ),
    );
    p(out, header());
    for r in &rows {
        p(out, r.clone());
    }
    p(
        out,
        "(columns: see scripts/drill.sh -h; times are from the event; owners = VNIs per gateway)"
            .into(),
    );
    for n in &notes {
        p(out, format!("note: {n}"));
    }
    p(
        out,
        format!("RESULT: {}", if failed { "FAIL" } else { "PASS" }),
    );
    if cfg.keep_logs || failed {
        d.lab.keep_logs = true;
        d.save()?;
        p(out, format!("logs: {}", d.lab.dir.display()));
    }
    Ok(!failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_steps_and_their_targets() {
        let s = steps(3);
        assert_eq!(
            s.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
            vec![
                (Event::Crash, 1),
                (Event::Start, 1),
                (Event::Stop, 2),
                (Event::Start, 2),
                (Event::Cut, 3),
                (Event::Restore, 3)
            ]
        );
        assert_eq!(steps(2)[4].2, 1);
    }

    #[test]
    fn the_table_lines_up() {
        let h = header();
        let r = row([
            "1",
            "crash gw1 (kill -9)",
            "5",
            "0.412 s",
            "0.415 s",
            "5/5 x3.0",
            "0.520 s v7",
            "none",
            "none",
            "-/6/5",
            "ok",
        ]);
        assert!(h.starts_with("#  step                   moved converged"));
        assert_eq!(h.rfind("owners"), r.find("-/6/5"));
        assert_eq!(h.find("result"), r.find("ok"));
    }
}
