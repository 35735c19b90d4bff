//! The EVPN drill: does BGP EVPN (real FRR) move the gateway when wmgwd2 does, as a remote host
//! sees it? For each MAC convention an EVPN lab ([`crate::evpn`]), the failover cases, one table
//! (case, convention, host outage, whether the leaf's route follows the owner, the EVPN MAC
//! moves each handover cost), then a duplicate-address-detection drill.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::analysis::{self, FdbEvent};
use crate::daemon::DaemonConfig;
use crate::evpn::{EvpnLab, VNIS};
use crate::plan::{self, MacMode};
use crate::probe::{self, LineReader, Pinger};
use crate::scenario::nap;
use crate::{io_err, Result};

pub const USAGE: &str = "\
evpn-drill: does BGP EVPN (real FRR) move the gateway when wmgwd2 does, as a remote host sees
it? Builds the EVPN lab (the lab crate's evpn module) for each MAC convention, runs the failover
cases, and prints one table: case, convention, host outage, whether the leaf's route follows the
owner, and the EVPN MAC moves each handover cost. Then a duplicate-address-detection drill.

Usage (as root): scripts/evpn-drill.sh [--mac shared|distinct|both] [--cycles N] [--pause S]
                                       [--bin PATH] [--logs DIR] [--frr-debug] [--doc FILE]
                                       [-- WMGWD2 ARGS]
  (the same as: cargo run --release -p wmgwd2-lab -- evpn-drill [OPTIONS])
  --mac     the conventions to run (default both)
  --cycles  stop/start cycles of the DAD drill per convention (default 4; 0 skips it)
  --pause   seconds between the drill's handovers (default 2)
  --bin     the wmgwd2 binary (default: the one built beside this binary)
  --logs    keep the daemons' logs, the ping and leaf traces and FRR's logs here (default: not
            kept)
  --frr-debug  FRR's EVPN debug logs (zebra vxlan/kernel, bgp zebra/updates), kept with --logs
  --doc FILE   also write the report, with the command and the machine, into FILE between the
            lines <!-- evpn:begin --> and <!-- evpn:end --> (appended when FILE has none; the
            rest of FILE is kept). docs/benchmarks.md's EVPN section is written this way.
  -- ARGS   more wmgwd2 flags for every gateway (e.g. -- --hold-down 40)

The lab (per convention, namespaces ed<pid><n>-*): 2 gateways (uid 0x1001, 0x1002), VNIs 100
and 101; gw1 owns 100 and gw2 owns 101 while both run, so \"sigterm gw1\" moves 100 gw1->gw2 and
\"sigterm gw2\" moves 101 gw2->gw1. Hosts h100, h101 behind the remote leaf ping their gateway
IP every 10 ms the whole time.

Columns:
  outage   the longest gap between two ping replies of the moved VNI's host, from 1 s before
           the event until the case is over (leaf follows + 2 s, or 20 s), in ms
  leaf     yes when the leaf's kernel FDB entry for the MAC the host uses points at the new
           owner's VTEP and zebra's MAC table agrees; then the ms from the event to the last
           change of that entry (from the leaf's `bridge -timestamp monitor fdb`)
  leaf fdb changes  how often that entry changed destination (or went away) in the case
  seq+     EVPN MAC mobility sequence increase at the leaf (it restarts at 0 when a MAC is
           withdrawn everywhere before it is advertised again)
  dad      FRR duplicate-address detection: \"dup@ROLE\" where it flags the MAC, else \"-\"; then
           n=N, the highest move count FRR holds for the MAC on any node (it flags at 5)
";

/// The drill's options.
#[derive(Debug, Clone)]
pub struct Config {
    pub conventions: Vec<MacMode>,
    pub cycles: u32,
    pub pause: Duration,
    pub bin: PathBuf,
    pub logs: Option<PathBuf>,
    pub frr_debug: bool,
    pub doc: Option<PathBuf>,
    pub extra: Vec<String>,
    pub command: String,
}

/// What one convention's lab is doing: the lab, the hosts' pingers, the leaf's FDB monitor.
struct Run<'a> {
    lab: EvpnLab,
    conv: MacMode,
    cfg: &'a Config,
    pingers: Vec<(u32, Pinger)>,
    fdb: LineReader,
    wall0: u64,
    rows: Vec<String>,
    drill: Vec<String>,
    starts: Vec<String>,
}

fn log(s: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let day = t.as_secs() % 86_400;
    eprintln!(
        "{:02}:{:02}:{:02}.{:03} {s}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        t.subsec_millis()
    );
}

/// One row of the case table.
pub fn case_row(cols: [&str; 9]) -> String {
    format!(
        "{:<16} {:<9} {:<4} {:<8} {:<7} {:<16} {:<8} {:<5} {}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8]
    )
}

/// One row of the duplicate-detection drill's table.
pub fn drill_row(cols: [&str; 7]) -> String {
    format!(
        "{:<9} {:<6} {:<6} {:<5} {:<8} {:<6} {}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]
    )
}

impl Run<'_> {
    fn now(&self) -> Duration {
        self.lab.epoch.elapsed()
    }

    /// The gateway whose vrrp4-<v> is active, when exactly one of both is.
    fn is_owner(&self, g: usize, v: u32) -> bool {
        self.lab.owner_among(v, &[1, 2]) == Some(g)
    }

    fn follows(&self, v: u32, g: usize) -> bool {
        let Some(mac) = self.lab.host_arp(v) else {
            return false;
        };
        self.lab.leaf_fdb_dst(v, &mac) == Some(plan::underlay_ip(g).to_string())
    }

    fn macs(&self, v: u32) -> Vec<String> {
        let mut m: Vec<String> = (1..=2).filter_map(|g| self.lab.gw_mac(g, v)).collect();
        m.sort();
        m.dedup();
        m
    }

    fn seq_sum(&self, v: u32) -> i64 {
        self.macs(v)
            .iter()
            .map(|m| self.lab.leaf_seq(v, m) as i64)
            .sum()
    }

    fn gap_ms(&self, v: u32, from: Duration, to: Duration) -> u128 {
        let replies = self
            .pingers
            .iter()
            .find(|(x, _)| *x == v)
            .map(|(_, p)| p.replies(plan::gateway_ip(v)))
            .unwrap_or_default();
        analysis::max_gap(&replies, from, to).as_millis()
    }

    fn fdb_events(&self) -> Vec<FdbEvent> {
        analysis::parse_fdb_monitor(&self.fdb.lines(), self.wall0)
    }

    fn act(&mut self, a: &Action) -> Result<()> {
        match *a {
            Action::Stop(g) => {
                self.lab.daemons.stop(g, Duration::from_secs(30));
            }
            Action::Kill(g) => {
                self.lab.daemons.kill(g);
            }
            Action::Start(g) => self.lab.start(g)?,
            Action::Link(g, up) => self.lab.link(g, up)?,
        }
        Ok(())
    }

    /// Runs the action, waits until `to` owns `v` and the leaf forwards the host's gateway MAC
    /// to it (at most 20 s), lets 2 s pass, and records the row.
    fn case(&mut self, name: &str, v: u32, from: usize, to: usize, a: Action) -> Result<()> {
        log(&format!("case: {name} (vni {v}: gw{from} -> gw{to})"));
        let seq0 = self.seq_sum(v);
        let t0 = self.now();
        self.act(&a)?;
        let start = Instant::now();
        while !(self.is_owner(to, v) && self.follows(v, to))
            && start.elapsed() < Duration::from_secs(20)
        {
            nap(Duration::from_millis(50))?;
        }
        nap(Duration::from_secs(2))?;
        let t1 = self.now();
        self.record(name, v, from, to, t0, t1, seq0);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        name: &str,
        v: u32,
        from: usize,
        to: usize,
        t0: Duration,
        t1: Duration,
        seq0: i64,
    ) {
        let want = plan::underlay_ip(to).to_string();
        let mac = self.lab.host_arp(v).unwrap_or_default();
        let gap = self.gap_ms(v, t0.saturating_sub(Duration::from_secs(1)), t1);
        let ev = self.fdb_events();
        let (changes, last) = analysis::fdb_changes(&ev, &mac, &format!("vxlan{v}"), t0, t1);
        let dst = self.lab.leaf_fdb_dst(v, &mac);
        let follows =
            if dst.as_deref() == Some(want.as_str()) && self.lab.mac_where("lf", v, &mac) == want {
                match &last {
                    Some((at, d)) if *d == want => format!("yes {}", (*at - t0).as_millis()),
                    _ => "yes".into(),
                }
            } else {
                format!("no ({})", dst.unwrap_or_default())
            };
        let seq1 = self.seq_sum(v);
        let conv = self.conv.to_string();
        self.rows.push(case_row([
            name,
            &conv,
            &v.to_string(),
            &format!("{from}>{to}"),
            &gap.to_string(),
            &follows,
            &changes.to_string(),
            &(seq1 - seq0).to_string(),
            &self.lab.dad_state(v, &mac),
        ]));
        log(&format!("  outage {gap} ms, leaf follows: {follows}, leaf fdb changes {changes}, seq {seq0} -> {seq1}"));
    }

    /// Both gateways started: gw1 should own 100 and gw2 101, and the leaf should follow. Not
    /// fatal when the leaf does not (that is a finding): the rows show it.
    fn wait_converged(&mut self) -> Result<()> {
        let start = Instant::now();
        while !(self.is_owner(1, 100)
            && self.is_owner(2, 101)
            && self.follows(100, 1)
            && self.follows(101, 2))
        {
            if start.elapsed() >= Duration::from_secs(30) {
                let dst = |v| {
                    let mac = self.lab.host_arp(v).unwrap_or_default();
                    self.lab.leaf_fdb_dst(v, &mac).unwrap_or_default()
                };
                let w = format!(
                    "{}: leaf not following at start: vni 100 -> {}, vni 101 -> {}",
                    self.conv,
                    dst(100),
                    dst(101)
                );
                log(&format!("WARNING: after 30 s: {w}"));
                self.starts.push(w);
                return Ok(());
            }
            nap(Duration::from_millis(100))?;
        }
        Ok(())
    }

    /// Repeated planned stop/start of gw1 every `pause`: does FRR's duplicate detection trip, and
    /// does the leaf still follow when it has?
    fn dad_drill(&mut self) -> Result<()> {
        for c in 1..=self.cfg.cycles {
            for stop in [true, false] {
                nap(self.cfg.pause)?;
                let t0 = self.now();
                let to = if stop { 2 } else { 1 };
                self.act(&if stop {
                    Action::Stop(1)
                } else {
                    Action::Start(1)
                })?;
                let start = Instant::now();
                while !(self.follows(100, to) && self.is_owner(to, 100))
                    && start.elapsed() < Duration::from_secs(10)
                {
                    nap(Duration::from_millis(20))?;
                }
                let ok = if self.follows(100, to) { "yes" } else { "no" };
                nap(Duration::from_secs(1))?;
                let mac = self.lab.host_arp(100).unwrap_or_default();
                let row = drill_row([
                    &self.conv.to_string(),
                    &c.to_string(),
                    if stop { "stop" } else { "start" },
                    ok,
                    &self
                        .gap_ms(100, t0.saturating_sub(Duration::from_secs(1)), self.now())
                        .to_string(),
                    &self.lab.leaf_seq(100, &mac).to_string(),
                    &self.lab.dad_state(100, &mac),
                ]);
                log(&format!("  drill {row}"));
                self.drill.push(row);
            }
        }
        Ok(())
    }

    fn frr_debug(&self) {
        for role in ["lf", "gw1", "gw2"] {
            let log = format!(
                "log file {}/frr.log debugging",
                self.lab.frr_dir(role).display()
            );
            self.lab.vtysh(
                role,
                &[
                    "configure terminal",
                    "debug zebra vxlan",
                    "debug zebra kernel",
                    "debug bgp zebra",
                    "debug bgp updates",
                    &log,
                    "log timestamp precision 3",
                ],
            );
        }
    }

    /// Copies the lab's records into `dir`: daemons' logs, pings, the leaf's FDB trace, FRR logs.
    fn save(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let name = &self.lab.name;
        let w = |f: String, s: String| {
            std::fs::write(dir.join(&f), s).map_err(io_err(format!("write {f}")))
        };
        for g in 1..=2 {
            let log = std::fs::read_to_string(self.lab.daemons.log(g)).unwrap_or_default();
            w(format!("{name}-gw{g}.log"), log)?;
        }
        for (v, p) in &self.pingers {
            let r: String = p
                .replies(plan::gateway_ip(*v))
                .iter()
                .map(|t| format!("{:.6}\n", t.as_secs_f64()))
                .collect();
            w(format!("{name}-ping{v}.txt"), r)?;
        }
        let fdb: String = self
            .fdb
            .lines()
            .into_iter()
            .map(|(_, l)| l + "\n")
            .collect();
        w(format!("{name}-leaf-fdb.txt"), fdb)?;
        for role in ["rr", "lf", "gw1", "gw2"] {
            let f =
                std::fs::read_to_string(self.lab.frr_dir(role).join("frr.log")).unwrap_or_default();
            w(format!("{name}-frr-{role}.log"), f)?;
        }
        Ok(())
    }
}

enum Action {
    Stop(usize),
    Kill(usize),
    Start(usize),
    Link(usize, bool),
}

/// One convention: the lab, both daemons, the cases, the drill; appends rows.
fn run_convention(cfg: &Config, conv: MacMode, out: &mut Report) -> Result<()> {
    let mut extra: Vec<&str> = vec!["-v"];
    extra.extend(cfg.extra.iter().map(String::as_str));
    let daemon = DaemonConfig::wmgwd2(&cfg.bin, "100ms", &extra);
    let lab = EvpnLab::up("ed", 2, conv, daemon)?;
    log(&format!("convention {conv}: lab {}", lab.name));
    let epoch = lab.epoch;
    let mut pingers = Vec::new();
    for v in VNIS {
        pingers.push((
            v,
            Pinger::start(
                &lab.ns(&format!("h{v}")),
                &[plan::gateway_ip(v)],
                Duration::from_millis(10),
                epoch,
            )?,
        ));
    }
    let lf = lab.ns("lf");
    let fdb = LineReader::start(
        &["bridge", "-n", &lf, "-timestamp", "monitor", "fdb"],
        &[("TZ", "UTC")],
        epoch,
    )?;
    let mut r = Run {
        lab,
        conv,
        cfg,
        pingers,
        fdb,
        wall0: probe::wall0(epoch),
        rows: Vec::new(),
        drill: Vec::new(),
        starts: Vec::new(),
    };
    r.lab.start(1)?;
    r.lab.start(2)?;
    if cfg.frr_debug {
        r.frr_debug();
    }
    r.wait_converged()?;
    nap(Duration::from_secs(2))?;
    // No event: the noise floor of the 10 ms ping on this machine.
    let t0 = r.now();
    nap(Duration::from_secs(5))?;
    let (seq, t1) = (r.seq_sum(100), r.now());
    r.record("baseline", 100, 1, 1, t0, t1, seq);

    r.case("sigterm gw1", 100, 1, 2, Action::Stop(1))?;
    r.case("rejoin gw1", 100, 2, 1, Action::Start(1))?;
    nap(Duration::from_secs(1))?;
    r.case("sigterm gw2", 101, 2, 1, Action::Stop(2))?;
    r.case("rejoin gw2", 101, 1, 2, Action::Start(2))?;
    nap(Duration::from_secs(1))?;
    r.case("kill -9 gw1", 100, 1, 2, Action::Kill(1))?;
    r.case("restart gw1", 100, 2, 1, Action::Start(1))?;
    nap(Duration::from_secs(1))?;
    r.case("link cut gw1", 100, 1, 2, Action::Link(1, false))?;
    r.case("link back gw1", 100, 2, 1, Action::Link(1, true))?;

    r.dad_drill()?;
    if let Some(dir) = &cfg.logs {
        r.save(dir)?;
    }
    out.rows.append(&mut r.rows);
    out.drill.append(&mut r.drill);
    out.starts.append(&mut r.starts);
    Ok(())
}

/// The tables of every convention.
#[derive(Default)]
struct Report {
    rows: Vec<String>,
    drill: Vec<String>,
    starts: Vec<String>,
}

fn frr_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "frr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn text(cfg: &Config, r: &Report) -> String {
    let mut s = format!(
        "wmgwd2 EVPN drill: FRR {}, kernel {}, wmgwd2 --interval 100ms {}, BGP timers 1 3\n",
        frr_version(),
        kernel(),
        cfg.extra.join(" ")
    );
    s += &(case_row([
        "case",
        "mac",
        "vni",
        "gw",
        "outage",
        "leaf follows",
        "leaf fdb",
        "seq+",
        "dad",
    ]) + "\n");
    s += &(case_row([
        "",
        "",
        "",
        "from>to",
        "ms",
        "(ms to last chg)",
        "changes",
        "",
        "",
    ]) + "\n");
    for row in &r.rows {
        s += &(row.clone() + "\n");
    }
    for w in &r.starts {
        s += &format!("WARNING {w}\n");
    }
    if cfg.cycles > 0 {
        s += &format!(
            "\nduplicate-address detection drill: gw1 stopped/started every {}s (VNI 100; FRR default 5 moves in 180 s)\n",
            cfg.pause.as_secs()
        );
        s += &(drill_row(["mac", "cycle", "step", "leaf", "gap(ms)", "seq", "dad"]) + "\n");
        for row in &r.drill {
            s += &(row.clone() + "\n");
        }
    }
    s
}

/// The markdown section for --doc: how it was measured, then the report as printed.
fn doc_section(cfg: &Config, report: &str) -> String {
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|m| m.split_once(": "))
                .map(|(_, m)| m.to_owned())
        })
        .unwrap_or_default();
    let nproc = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let rev = cmd(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    format!(
        "<!-- evpn:begin -->\n<!-- Written by scripts/evpn-drill.sh --doc; rerun it rather than editing this section. -->\n\
## BGP EVPN handover (real FRR)\n\n\
What a host behind a remote leaf lives through when wmgwd2 hands its gateway over, with real\n\
FRR (zebra + bgpd per namespace, a route reflector) in the EVPN lab of the lab crate: 2\n\
gateways, VNIs 100 and 101, each host pinging its gateway IP every 10 ms. The columns are\n\
explained in `scripts/evpn-drill.sh -h`; [evpn.md](evpn.md) reads them and recommends a\n\
MAC convention. outage = the longest gap between ping replies of the moved VNI's host.\n\n\
- Command (as root): `{}`\n- Date: {}; wmgwd2 {}\n- Machine: {nproc} cores, {cpu}, kernel {}, FRR {}\n\n```\n{report}```\n<!-- evpn:end -->\n",
        cfg.command,
        cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        if rev.is_empty() { "?".into() } else { rev },
        kernel(),
        frr_version(),
    )
}

/// Replaces the evpn section of `old` (or appends one).
pub fn with_section(old: Option<&str>, section: &str) -> String {
    match old {
        Some(o) if o.lines().any(|l| l == "<!-- evpn:begin -->") => {
            let mut out = String::new();
            let mut skip = false;
            for l in o.lines() {
                if l == "<!-- evpn:begin -->" {
                    out += section;
                    skip = true;
                } else if l == "<!-- evpn:end -->" {
                    skip = false;
                } else if !skip {
                    out += l;
                    out += "\n";
                }
            }
            out
        }
        Some(o) => format!("{o}\n{section}"),
        None => section.to_owned(),
    }
}

/// Runs every convention, prints the report, writes the document section when asked.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<()> {
    let mut r = Report::default();
    for &c in &cfg.conventions {
        run_convention(cfg, c, &mut r)?;
    }
    let report = text(cfg, &r);
    let _ = writeln!(out, "\n{report}");
    if let Some(doc) = &cfg.doc {
        let old = std::fs::read_to_string(doc).ok();
        let new = with_section(old.as_deref(), &doc_section(cfg, &report));
        std::fs::write(doc, new).map_err(io_err(format!("write {}", doc.display())))?;
        let _ = writeln!(out, "wrote the EVPN section of {}", doc.display());
    }
    if let Some(dir) = &cfg.logs {
        let _ = writeln!(out, "logs: {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_or_appended() {
        let doc = "# B\n\nbefore\n<!-- evpn:begin -->\nold\n<!-- evpn:end -->\nafter\n";
        let sec = "<!-- evpn:begin -->\nnew\n<!-- evpn:end -->\n";
        assert_eq!(
            with_section(Some(doc), sec),
            "# B\n\nbefore\n<!-- evpn:begin -->\nnew\n<!-- evpn:end -->\nafter\n"
        );
        assert_eq!(with_section(Some("# B\n"), sec), format!("# B\n\n{sec}"));
        assert_eq!(with_section(None, sec), sec);
    }

    #[test]
    fn rows_line_up_as_before() {
        assert_eq!(
            case_row(["sigterm gw1", "shared", "100", "1>2", "128", "yes 113", "2", "1", "- n=1"]),
            "sigterm gw1      shared    100  1>2      128     yes 113          2        1     - n=1"
        );
        assert_eq!(
            drill_row(["shared", "1", "stop", "yes", "128", "3", "- n=1"]),
            "shared    1      stop   yes   128      3      - n=1"
        );
    }
}
