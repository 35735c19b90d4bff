//! Stall check: do the gateways expire each other at a short interval on this machine when
//! nothing but the daemons runs? A lab of G gateways and V VNIs, one daemon per gateway for S
//! seconds with no probes at all (no pings, packet capture or ip monitor), and meanwhile, in a
//! 1 ms sleep loop, how long this machine keeps a process waiting. Reports the stalls over 15 ms
//! and the "peer dead" lines in the daemons' logs (there is no failure, so each is spurious).
//! docs/benchmarks.md ("10 ms") compares this with the benchmark.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::DaemonConfig;
use crate::plan::Spec;
use crate::scenario::{self, Lab};
use crate::{LabError, Result};

pub const USAGE: &str = "\
stall-check: do the gateways expire each other at a short interval on this machine when nothing
but the daemons runs? Builds a lab (G gateways, V VNIs), runs one wmgwd2 per gateway for S
seconds with no probes at all (no pings, packet capture or ip monitor), and meanwhile measures,
in a 1 ms sleep loop, how long this machine keeps a process waiting. Prints the stalls over
15 ms and the number of spurious \"peer dead\" lines (there is no failure, so every one is
spurious). docs/benchmarks.md (\"10 ms\") compares this with the benchmark.

Usage (as root): scripts/stall-check.sh [-g G] [-v V] [-i INTERVAL] [-s SECONDS] [-b BIN]
                 [--logs DIR] [-- DAEMON ARGS]
  (the same as: cargo run --release -p wmgwd2-lab -- stall-check [OPTIONS])
  defaults: -g 3 -v 1000 -i 10ms -s 35; -b: the wmgwd2 binary (default: the one built beside
  this binary); --logs: copy the daemons' logs there (gw<g>.log); after --: more arguments for
  every daemon. Also prints each daemon's CPU seconds over the watch (the scheduler's account,
  /proc/PID/task/*/schedstat).
Namespaces wsc<pid><n>-*, removed on exit; only the daemons it started are stopped, by PID.
";

/// Stalls of a sleep loop: each wait longer than `over`, with when it ended (from the start),
/// and the longest wait.
pub fn sleep_loop(run: Duration, over: Duration) -> (Vec<(Duration, Duration)>, Duration) {
    let start = Instant::now();
    let mut prev = start;
    let (mut stalls, mut worst) = (Vec::new(), Duration::ZERO);
    while prev - start < run && !scenario::interrupted() {
        thread::sleep(Duration::from_millis(1));
        let now = Instant::now();
        let d = now - prev;
        worst = worst.max(d);
        if d > over {
            stalls.push((d, now - start));
        }
        prev = now;
    }
    (stalls, worst)
}

/// "peer dead" lines in a daemon log.
pub fn peer_dead_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("peer dead")).count()
}

/// Runs the check, writing to `out`.
pub fn run(
    spec: &Spec,
    daemon: DaemonConfig,
    secs: u64,
    logs: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut lab = Lab::up("wsc", spec, daemon)?;
    for g in 1..=spec.gateways {
        lab.start(g)?;
    }
    let _ = writeln!(
        out,
        "lab {}: {} gateways x {} VNIs, interval {}; watching for {secs} s",
        lab.name(),
        spec.gateways,
        spec.vnis,
        lab.daemons.cfg.interval
    );
    let pids: Vec<Vec<u32>> = (1..=spec.gateways).map(|g| lab.daemons.pids(g)).collect();
    let before: Vec<u64> = pids.iter().map(|p| crate::bench::cpu_ns(p)).collect();
    let (stalls, worst) = sleep_loop(Duration::from_secs(secs), Duration::from_millis(15));
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| crate::bench::cpu_ns(p).saturating_sub(*b) as f64 / 1e9)
        .collect();
    if scenario::interrupted() {
        return Err(LabError::Interrupted);
    }
    for (d, at) in stalls {
        let _ = writeln!(
            out,
            "  stall {:.0} ms at +{:.1} s",
            d.as_secs_f64() * 1000.0,
            at.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "longest wait for the CPU in a 1 ms sleep loop: {:.1} ms",
        worst.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        "CPU seconds per gateway over the {secs} s: {}",
        cpu.iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if let Some(dir) = logs {
        std::fs::create_dir_all(dir).map_err(crate::io_err(dir.display().to_string()))?;
        for g in 1..=spec.gateways {
            let to = dir.join(format!("gw{g}.log"));
            std::fs::copy(lab.daemons.log(g), &to)
                .map_err(crate::io_err(to.display().to_string()))?;
        }
    }
    let dead: usize = (1..=spec.gateways)
        .map(|g| peer_dead_lines(&std::fs::read_to_string(lab.daemons.log(g)).unwrap_or_default()))
        .sum();
    let _ = writeln!(
        out,
        "spurious 'peer dead' lines (no failure was caused): {dead}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_peer_dead_lines() {
        let log = "2026-12-01T10:00:00Z  INFO peer dead peer=0x1002\n\
                   2026-12-01T10:00:00Z  INFO owner changed vni=3\n\
                   2026-12-01T10:00:01Z  INFO peer dead peer=0x1003\n";
        assert_eq!(peer_dead_lines(log), 2);
    }
}
