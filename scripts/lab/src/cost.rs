//! `wmgwd2-lab cost`: what serving metrics and status costs the daemons (issue 10). One lab of
//! G gateways × V VNIs, every daemon with `--metrics-listen` and a control socket of its own;
//! after convergence, rounds of two windows each: a quiet one (nothing asks the daemons anything)
//! and a scraped one (every second, for every gateway, from inside its namespace: an HTTP
//! `GET /metrics` and `wmgwd2 status --json`). Per window each daemon's CPU seconds, read from
//! `/proc` as the benchmark's steady window does ([`bench::steady`]), the windows placed so that
//! each holds the same share of the daemons' own periodic work ([`boundary`]); per scrape its
//! response time and size. With `--prometheus`, afterwards a real Prometheus server in the client's
//! namespace scrapes the gateways over the segment, and its query API must report the owner
//! counts the kernels show.
//!
//! ```text
//!  Lab::up ── start all ── converged ── [quiet window │ scraped window] × rounds ── table
//!                                        bench::steady  bench::steady + Scraper
//!                                                                   └─ --prometheus: check
//! ```
//! The pure parts (statistics, the table, HTTP and Prometheus answers) are tested below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::bench::{self, Steady};
use crate::daemon::DaemonConfig;
use crate::kernel::OwnerMap;
use crate::plan::{self, Spec};
use crate::scenario::{self, Lab};
use crate::{io_err, netns, LabError, Result};

pub const USAGE: &str = "\
cost: what serving metrics and status costs the daemons (issue 10). One lab (G gateways, V VNIs,
interval I), every daemon with --metrics-listen 127.0.0.1:9842 (0.0.0.0:9842 with --prometheus)
and --control-socket <lab dir>/gw<g>.sock. After convergence, R rounds of two windows of W
seconds each: quiet (nothing asks the daemons anything), then scraped (every E, for every
gateway, from inside its namespace: HTTP GET /metrics over TCP to 127.0.0.1:9842, and
`ip netns exec <gw> wmgwd2 status --json --control-socket <sock>`). Per window, each daemon's
CPU seconds (the scheduler's account of every thread, /proc/PID/task/*/schedstat, in ns; scaled to exactly W, as the
benchmark's steady window); per scrape its response time and size. Prints a Markdown table:
quiet and scraped CPU per gateway (mean, min-max over the rounds), the difference per round,
the /metrics body and status JSON sizes, the median (and longest) response times.

The windows lie back to back on a grid anchored at the daemons' start, their edges 15 s into
each 30 s from it: the daemons' own periodic work (a GARP for every owned VNI every 30 s,
--garp-refresh, and a re-read of every link every 60 s, --resync) comes in bursts a few
seconds into those 30 s. Only a window that is a multiple of 60 s holds the same amount of it
whatever its place; shorter ones catch it unevenly, which biases the difference (a note says
so).

Usage (as root, on a quiet machine):
  scripts/cost.sh [-g G] [-v V] [-i INTERVAL] [--rounds R] [--window W] [--every E]
                  [--ask both|metrics|status] [--prometheus] [-b BIN] [-- DAEMON-ARGS...]
  (the same as: cargo run --release -p wmgwd2-lab -- cost [OPTIONS])
    defaults: -g 3 -v 1000 -i 100ms --rounds 4 --window 60s --every 1s --ask both
    --ask         what the scraped windows ask: both (GET /metrics, then status), or one
    --prometheus  afterwards, start Prometheus (prometheus in PATH, Debian's package) in the
                  client's namespace, scraping the gateways' 10.0.1.<g>:9842 every second
                  (storage in the lab directory, web on 127.0.0.1:9090 in that namespace);
                  after 15 s ask its API for wmgwd2_vnis_owned, up and
                  scrape_duration_seconds; the owned counts must be the kernels'
    -b BIN        the wmgwd2 binary (default: the one built beside this binary)
  Environment: COST_BOUND (seconds, default 60): the longest wait for convergence.

Namespaces wco<pid><n>-*, removed on exit, failure or Ctrl-C; only processes this run started
are stopped, by PID. The daemons' logs stay in /tmp/wmgwd2-lab-wco*/ (printed).
Exit status 1 when a scrape failed or a figure disagreed with the kernel.
";

/// What the scraped windows ask every gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `GET /metrics`, then `wmgwd2 status --json`.
    Both,
    Metrics,
    Status,
}

impl Ask {
    pub fn metrics(self) -> bool {
        self != Ask::Status
    }

    pub fn status(self) -> bool {
        self != Ask::Metrics
    }
}

impl std::str::FromStr for Ask {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Ask, ()> {
        match s {
            "both" => Ok(Ask::Both),
            "metrics" => Ok(Ask::Metrics),
            "status" => Ok(Ask::Status),
            _ => Err(()),
        }
    }
}

/// The port every daemon serves `/metrics` on.
pub const METRICS_PORT: u16 = 9842;
/// Prometheus's web port inside the client's namespace.
pub const PROMETHEUS_PORT: u16 = 9090;

/// The run's options.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    /// The daemons; `--metrics-listen` and `--control-socket` are added.
    pub daemon: DaemonConfig,
    pub rounds: usize,
    pub window: Duration,
    /// How often the scraper asks every gateway.
    pub every: Duration,
    /// What it asks.
    pub ask: Ask,
    /// The Prometheus binary, for the check after the rounds.
    pub prometheus: Option<PathBuf>,
    /// The longest wait for convergence.
    pub bound: Duration,
}

// ---------------------------------------------------------------------------------------------
// Pure: statistics, the table, HTTP and Prometheus answers.

/// Mean, least and greatest of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of `xs`; None when empty.
pub fn spread(xs: &[f64]) -> Option<Spread> {
    if xs.is_empty() {
        return None;
    }
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Spread {
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        min,
        max,
    })
}

/// The median of `xs` (the mean of the middle two for an even count); None when empty.
pub fn median(xs: &[Duration]) -> Option<Duration> {
    let mut v = xs.to_vec();
    v.sort();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// One gateway's figures over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub interval: String,
    pub gateway: usize,
    /// CPU seconds per window, one per round.
    pub quiet: Vec<f64>,
    pub scraped: Vec<f64>,
    /// Per `GET /metrics`: response time and body bytes.
    pub metrics: Vec<(Duration, usize)>,
    /// Per `wmgwd2 status --json`: the command's time and its output's bytes.
    pub status: Vec<(Duration, usize)>,
    /// Scrapes made (each a GET and a status), and the requests of them that failed.
    pub scrapes: usize,
    pub failed: usize,
}

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn spread_cell(xs: &[f64]) -> String {
    match spread(xs) {
        Some(s) => format!("{} ({}–{})", f3(s.mean), f3(s.min), f3(s.max)),
        None => "-".into(),
    }
}

fn bytes_cell(xs: &[(Duration, usize)]) -> String {
    let min = xs.iter().map(|x| x.1).min();
    let max = xs.iter().map(|x| x.1).max();
    match (min, max) {
        (Some(a), Some(b)) if a == b => format!("{a} B"),
        (Some(a), Some(b)) => format!("{a}–{b} B"),
        _ => "-".into(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn latency_cell(xs: &[(Duration, usize)]) -> String {
    let ts: Vec<Duration> = xs.iter().map(|x| x.0).collect();
    match (median(&ts), ts.iter().max()) {
        (Some(m), Some(&x)) => format!("{} ({})", ms(m), ms(x)),
        _ => "-".into(),
    }
}

/// The rows as a Markdown table; `window` names the CPU column's unit.
pub fn table(rows: &[Row], window: Duration) -> String {
    let w = window.as_secs_f64();
    let mut s = format!(
        "| interval | gateway | rounds | quiet: CPU s per {w} s, mean (min–max) | scraped: CPU s per {w} s | \
         scraped − quiet, per round: mean (min–max) | /metrics body | status JSON | \
         GET /metrics: median (max) | `wmgwd2 status --json`: median (max) | scrapes (failed requests) |\n\
         |---|---|---:|---|---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let diff: Vec<f64> = r.scraped.iter().zip(&r.quiet).map(|(s, q)| s - q).collect();
        let _ = writeln!(
            s,
            "| {} | gw{} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) |",
            r.interval,
            r.gateway,
            r.quiet.len().min(r.scraped.len()),
            spread_cell(&r.quiet),
            spread_cell(&r.scraped),
            spread_cell(&diff),
            bytes_cell(&r.metrics),
            bytes_cell(&r.status),
            latency_cell(&r.metrics),
            latency_cell(&r.status),
            r.scrapes,
            r.failed,
        );
    }
    s
}

/// An HTTP response: its status code and body. Checks `Content-Length` when there is one.
pub fn parse_http(raw: &[u8]) -> std::result::Result<(u16, &[u8]), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("no status line")?;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().map_err(|_| "bad Content-Length")?;
                if n != body.len() {
                    return Err(format!("Content-Length {n}, body {} bytes", body.len()));
                }
            }
        }
    }
    Ok((status, body))
}

/// The value of the sample `name` (without labels) in a text exposition.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Prometheus's configuration: one job scraping `targets` every `every`.
pub fn prometheus_config(targets: &[SocketAddr], every: Duration) -> String {
    let e = format!("{}ms", every.as_millis());
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "global:\n  scrape_interval: {e}\n  scrape_timeout: {e}\n  evaluation_interval: {e}\n\
         scrape_configs:\n  - job_name: wmgwd2\n    static_configs:\n      - targets: [{list}]\n"
    )
}

/// An instant vector from `/api/v1/query`: the value per `instance` label.
pub fn parse_vector(json: &str) -> std::result::Result<BTreeMap<String, f64>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("status {}", v["status"]));
    }
    let mut m = BTreeMap::new();
    for r in v["data"]["result"].as_array().ok_or("no data.result")? {
        let inst = r["metric"]["instance"]
            .as_str()
            .ok_or("no instance label")?;
        let x = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or("no value")?;
        m.insert(inst.to_owned(), x);
    }
    Ok(m)
}

/// The daemon's periodic work at its defaults: a gratuitous ARP for every owned VNI every 30 s
/// (`--garp-refresh`, clustered: the VNIs were taken together) and a re-read of every managed
/// link every 60 s (`--resync`). A window that is a multiple of 60 s holds the same amount of
/// it wherever it starts; its edges are put half a period away from it.
pub const PERIOD: Duration = Duration::from_secs(30);
/// Where the windows' edges lie in each [`PERIOD`], from the daemons' start: the refresh and
/// the resync come 0-5 s into it (the takeover after the hold-down, the start itself).
pub const PHASE: Duration = Duration::from_secs(15);

/// The first edge `phase + n × period` (n ≥ 0) at or after `elapsed`.
pub fn boundary(elapsed: Duration, phase: Duration, period: Duration) -> Duration {
    if elapsed <= phase {
        return phase;
    }
    let n = (elapsed - phase).as_nanos().div_ceil(period.as_nanos());
    phase + period * n as u32
}

/// A warning when windows of `window` hold different amounts of the daemon's periodic work.
pub fn periodic_note(window: Duration, extra: &[String]) -> Option<String> {
    if extra
        .iter()
        .any(|x| x.starts_with("--resync") || x.starts_with("--garp-refresh"))
    {
        return Some(
            "--resync or --garp-refresh given: windows should be a multiple of both periods".into(),
        );
    }
    let m = (2 * PERIOD).as_millis();
    (window.as_millis() % m != 0).then(|| {
        format!(
            "a window of {} s is not a multiple of 60 s: the daemons' GARP refresh (30 s) and \
             resync (60 s) fall unevenly into the windows and the difference is biased",
            window.as_secs_f64()
        )
    })
}

/// How many VNIs each gateway owns alone in the kernel's owner map (index g-1).
pub fn owned_counts(map: &OwnerMap, gateways: usize) -> Vec<usize> {
    (1..=gateways)
        .map(|g| map.values().filter(|o| o.as_slice() == [g]).count())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Effects: HTTP, the scraper, Prometheus, the run.

/// `GET path` over HTTP/1.0 (so no chunked answer) to `addr`, from the calling thread's
/// namespace; the time from connecting to the last byte, the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(Duration, u16, Vec<u8>)> {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let took = t0.elapsed();
    let (code, body) = parse_http(&raw).map_err(std::io::Error::other)?;
    Ok((took, code, body.to_vec()))
}

/// What one gateway's scraper saw over a window.
#[derive(Debug, Default)]
pub struct Scrapes {
    /// Scrapes made.
    pub made: usize,
    pub metrics: Vec<(Duration, usize)>,
    pub status: Vec<(Duration, usize)>,
    pub failures: Vec<String>,
    pub last_metrics: String,
    pub last_status: String,
}

fn loopback_metrics() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, METRICS_PORT))
}

/// Gateway `g`'s control socket in the lab directory.
pub fn socket_path(dir: &Path, g: usize) -> PathBuf {
    dir.join(format!("gw{g}.sock"))
}

/// One scrape of a gateway from a thread inside its namespace: `GET /metrics`, then
/// `ip netns exec NS wmgwd2 status --json --control-socket SOCK` (or one of them).
fn scrape_once(s: &mut Scrapes, ask: Ask, ns: &str, bin: &Path, sock: &Path) {
    s.made += 1;
    if ask.metrics() {
        get_metrics(s);
    }
    if ask.status() {
        get_status(s, ns, bin, sock);
    }
}

fn get_metrics(s: &mut Scrapes) {
    match http_get(loopback_metrics(), "/metrics") {
        Ok((took, 200, body)) => {
            s.metrics.push((took, body.len()));
            s.last_metrics = String::from_utf8_lossy(&body).into_owned();
        }
        Ok((_, code, _)) => s.failures.push(format!("GET /metrics: HTTP {code}")),
        Err(e) => s.failures.push(format!("GET /metrics: {e}")),
    }
}

fn get_status(s: &mut Scrapes, ns: &str, bin: &Path, sock: &Path) {
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(["status", "--json", "--control-socket"])
        .arg(sock)
        .stdin(Stdio::null())
        .output();
    let took = t0.elapsed();
    match out {
        Ok(o) if o.status.success() => {
            s.status.push((took, o.stdout.len()));
            s.last_status = String::from_utf8_lossy(&o.stdout).into_owned();
        }
        Ok(o) => s.failures.push(format!(
            "status: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => s.failures.push(format!("status: {e}")),
    }
}

/// One thread per gateway, inside its namespace, scraping every `every` (the first half an
/// `every` after the start) until stopped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Scrapes>>,
}

impl Scraper {
    pub fn start(lab: &Lab, bin: &Path, every: Duration, ask: Ask) -> Result<Scraper> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let t0 = Instant::now();
        for g in 1..=lab.spec.gateways {
            let (ns, bin, sock) = (lab.gw(g), bin.to_owned(), socket_path(&lab.dir, g));
            let stop2 = stop.clone();
            let spawned = netns::spawn_in(&lab.gw(g), move || {
                let mut s = Scrapes::default();
                for k in 0u32.. {
                    let next = t0 + every / 2 + every * k;
                    loop {
                        if stop2.load(Ordering::SeqCst) || scenario::interrupted() {
                            return s;
                        }
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        thread::sleep((next - now).min(Duration::from_millis(50)));
                    }
                    scrape_once(&mut s, ask, &ns, &bin, &sock);
                }
                s
            });
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // Stop those already started before failing.
                    Scraper { stop, threads }.finish();
                    return Err(e);
                }
            }
        }
        Ok(Scraper { stop, threads })
    }

    /// Stops and joins the threads; what each gateway's saw (index g-1).
    pub fn finish(self) -> Vec<Scrapes> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Scrapes {
                    failures: vec!["the scraper thread panicked".into()],
                    ..Scrapes::default()
                })
            })
            .collect()
    }
}

/// A Prometheus server started by this run; killed by PID when dropped.
struct Prometheus {
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_api(ns: &str, path: String) -> Result<(u16, String)> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, PROMETHEUS_PORT));
    let what = format!("GET {path} from Prometheus in {ns}");
    let h = netns::spawn_in(ns, move || http_get(addr, &path))?;
    let (_, code, body) = h
        .join()
        .map_err(|_| LabError::Spec("the HTTP thread panicked".into()))?
        .map_err(io_err(what))?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn query(ns: &str, q: &str) -> Result<BTreeMap<String, f64>> {
    let (code, body) = prometheus_api(ns, format!("/api/v1/query?query={q}"))?;
    if code != 200 {
        return Err(LabError::Parse {
            what: format!("query {q}"),
            detail: format!("HTTP {code}: {body}"),
        });
    }
    parse_vector(&body).map_err(|detail| LabError::Parse {
        what: format!("query {q}"),
        detail,
    })
}

/// Prometheus in the client's namespace scraping every gateway's `10.0.1.<g>:9842`; after
/// `wait` its API must report, per instance, the kernel's owned count. Returns whether it did.
fn prometheus_check(
    lab: &Lab,
    bin: &Path,
    every: Duration,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<bool> {
    let g_n = lab.spec.gateways;
    let target = |g: usize| SocketAddr::V4(SocketAddrV4::new(plan::underlay_ip(g), METRICS_PORT));
    let targets: Vec<SocketAddr> = (1..=g_n).map(target).collect();
    let conf = lab.dir.join("prometheus.yml");
    std::fs::write(&conf, prometheus_config(&targets, every))
        .map_err(io_err(format!("write {}", conf.display())))?;
    let storage = lab.dir.join("prometheus");
    let log = lab.dir.join("prometheus.log");
    let logf = std::fs::File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
    let ns = lab.client();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(bin)
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .map_err(io_err(format!("start {}", bin.display())))?;
    let prom = Prometheus { child };
    let _ = writeln!(
        out,
        "Prometheus (PID {}) in {ns}: scraping {} every {} ms; log {}",
        prom.child.id(),
        targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        every.as_millis(),
        log.display()
    );
    let ready = scenario::wait_for(
        "Prometheus ready",
        Duration::from_secs(30),
        Duration::from_millis(250),
        &mut || {
            Ok(matches!(
                prometheus_api(&ns, "/-/ready".into()),
                Ok((200, _))
            ))
        },
    )?;
    let _ = writeln!(out, "  ready after {:.1} s", ready.as_secs_f64());
    // The daemons' CPU meanwhile (Prometheus itself runs beside them on this machine).
    let st = bench::steady(lab, wait)?;
    let _ = writeln!(
        out,
        "  daemons' CPU s over those {} s: {}",
        wait.as_secs(),
        cpu_list(&st)
    );
    let up = query(&ns, "up")?;
    let owned = query(&ns, "wmgwd2_vnis_owned")?;
    let took = query(&ns, "scrape_duration_seconds")?;
    let samples = query(&ns, "scrape_samples_scraped")?;
    let kernel = owned_counts(&lab.owners(&lab.spec.all_gateways())?, g_n);
    let mut ok = true;
    for g in 1..=g_n {
        let inst = target(g).to_string();
        let p = owned.get(&inst).copied();
        let agree = p == Some(kernel[g - 1] as f64) && up.get(&inst) == Some(&1.0);
        ok &= agree;
        let _ = writeln!(
            out,
            "  {inst} (gw{g}): up {}, wmgwd2_vnis_owned {}, kernel {}: {}; \
             scrape_duration_seconds {}, samples {}",
            up.get(&inst).map_or("-".into(), |x| x.to_string()),
            p.map_or("-".into(), |x| x.to_string()),
            kernel[g - 1],
            if agree { "agree" } else { "DIFFER" },
            took.get(&inst)
                .map_or("-".into(), |x| format!("{:.2} ms", x * 1000.0)),
            samples.get(&inst).map_or("-".into(), |x| x.to_string()),
        );
    }
    if owned.len() != g_n {
        ok = false;
        let _ = writeln!(
            out,
            "  wmgwd2_vnis_owned has {} series, not {g_n}",
            owned.len()
        );
    }
    let pid = prom.child.id();
    drop(prom);
    let _ = writeln!(out, "  Prometheus (PID {pid}) killed");
    Ok(ok)
}

/// A measured window ending at `end`: [`bench::steady`] until then, its CPU scaled to `window`
/// (the time left may be a few milliseconds short of it).
fn window(lab: &Lab, end: Instant, window: Duration) -> Result<Steady> {
    let left = end
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let mut st = bench::steady(lab, left)?;
    let k = window.as_secs_f64() / left.as_secs_f64();
    for c in &mut st.cpu_s {
        *c *= k;
    }
    Ok(st)
}

fn cpu_list(st: &Steady) -> String {
    st.cpu_s
        .iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn median_ms(xs: &[(Duration, usize)]) -> String {
    let ts: Vec<Duration> = xs.iter().map(|x| x.0).collect();
    median(&ts).map_or("-".into(), ms)
}

/// Runs the measurement, writing progress and the table to `out`; Ok(false) when a scrape
/// failed or a figure disagreed with the kernel.
pub fn run(cfg: &Config, out: &mut dyn Write) -> Result<bool> {
    let g_n = cfg.spec.gateways;
    let mut lab = Lab::up("wco", &cfg.spec, cfg.daemon.clone())?;
    lab.keep_logs = true;
    let listen = if cfg.prometheus.is_some() {
        format!("0.0.0.0:{METRICS_PORT}")
    } else {
        format!("127.0.0.1:{METRICS_PORT}")
    };
    let sock = format!("{}/gw{{g}}.sock", lab.dir.display());
    lab.daemons.cfg.extra.extend([
        "--metrics-listen".to_owned(),
        listen,
        "--control-socket".to_owned(),
        sock,
    ]);
    let _ = writeln!(
        out,
        "lab {}: {g_n} gateways × {} VNIs, interval {}; records in {}",
        lab.name(),
        cfg.spec.vnis,
        cfg.daemon.interval,
        lab.dir.display()
    );
    let started = Instant::now();
    for g in 1..=g_n {
        lab.start(g)?;
    }
    let all = cfg.spec.all_gateways();
    let took = lab.wait_converged(&all, cfg.bound)?;
    let _ = writeln!(out, "converged in {:.2} s", took.as_secs_f64());
    // Start-up's GARPs and link changes are over before the first window.
    scenario::nap(Duration::from_secs(5))?;
    let bin = cfg.daemon.bin.clone();
    // Both endpoints answer before anything is measured.
    for g in 1..=g_n {
        let (ns, bin, sock) = (lab.gw(g), bin.clone(), socket_path(&lab.dir, g));
        let s = netns::spawn_in(&lab.gw(g), move || {
            let mut s = Scrapes::default();
            scrape_once(&mut s, Ask::Both, &ns, &bin, &sock);
            s
        })?
        .join()
        .map_err(|_| LabError::Spec("the scraper thread panicked".into()))?;
        if let Some(f) = s.failures.first() {
            return Err(LabError::Spec(format!(
                "gw{g} before the first window: {f}"
            )));
        }
    }

    let mut rows: Vec<Row> = (1..=g_n)
        .map(|g| Row {
            interval: cfg.daemon.interval.clone(),
            gateway: g,
            ..Row::default()
        })
        .collect();
    let mut last: Vec<Scrapes> = Vec::new();
    let mut ok = true;
    // The windows lie back to back on a grid anchored at the daemons' start, away from their
    // periodic work (see [`boundary`]).
    let first = started + boundary(started.elapsed(), PHASE, PERIOD);
    let _ = writeln!(
        out,
        "windows of {} s back to back from {:.1} s after the daemons' start",
        cfg.window.as_secs_f64(),
        (first - started).as_secs_f64()
    );
    if let Some(n) = periodic_note(cfg.window, &cfg.daemon.extra) {
        let _ = writeln!(out, "note: {n}");
    }
    let end = |k: u32| first + cfg.window * (k + 1);
    scenario::nap(first.saturating_duration_since(Instant::now()))?;
    for r in 1..=cfg.rounds {
        let k = 2 * (r as u32 - 1);
        let st = window(&lab, end(k), cfg.window)?;
        let _ = writeln!(
            out,
            "round {r}/{} quiet:   CPU s {} (control {:.1} pkt/s)",
            cfg.rounds,
            cpu_list(&st),
            st.ctl_pps
        );
        for (row, c) in rows.iter_mut().zip(&st.cpu_s) {
            row.quiet.push(*c);
        }
        let scraper = Scraper::start(&lab, &bin, cfg.every, cfg.ask)?;
        let st = window(&lab, end(k + 1), cfg.window);
        let scrapes = scraper.finish();
        let st = st?;
        let n: usize = scrapes.iter().map(|s| s.metrics.len()).sum();
        let failed: usize = scrapes.iter().map(|s| s.failures.len()).sum();
        let _ = writeln!(
            out,
            "round {r}/{} scraped: CPU s {} (control {:.1} pkt/s); {n} GETs, median {}; \
             status median {}; {failed} failed",
            cfg.rounds,
            cpu_list(&st),
            st.ctl_pps,
            median_ms(
                &scrapes
                    .iter()
                    .flat_map(|s| s.metrics.clone())
                    .collect::<Vec<_>>()
            ),
            median_ms(
                &scrapes
                    .iter()
                    .flat_map(|s| s.status.clone())
                    .collect::<Vec<_>>()
            ),
        );
        for ((row, c), s) in rows.iter_mut().zip(&st.cpu_s).zip(&scrapes) {
            row.scraped.push(*c);
            row.metrics.extend(&s.metrics);
            row.status.extend(&s.status);
            row.scrapes += s.made;
            row.failed += s.failures.len();
            for f in s.failures.iter().take(3) {
                ok = false;
                let _ = writeln!(out, "  gw{}: {f}", row.gateway);
            }
        }
        last = scrapes;
    }

    // The last scrape against the kernel: what the daemons report is what the kernel shows.
    let kernel = owned_counts(&lab.owners(&all)?, g_n);
    for (g, s) in last.iter().enumerate() {
        let m = metric_value(&s.last_metrics, "wmgwd2_vnis_owned");
        let j: Option<serde_json::Value> = serde_json::from_str(&s.last_status).ok();
        let st = j.as_ref().and_then(|j| j["gateway"]["owned"].as_u64());
        let agree = (!cfg.ask.metrics() || m == Some(kernel[g] as f64))
            && (!cfg.ask.status() || st == Some(kernel[g] as u64));
        ok &= agree;
        let _ = writeln!(
            out,
            "gw{}: owned per /metrics {}, per status {}, per the kernel {}: {}",
            g + 1,
            m.map_or("-".into(), |x| x.to_string()),
            st.map_or("-".into(), |x| x.to_string()),
            kernel[g],
            if agree { "agree" } else { "DIFFER" }
        );
    }
    let _ = writeln!(out);
    let _ = write!(out, "{}", table(&rows, cfg.window));
    let _ = writeln!(out);
    if let Some(p) = &cfg.prometheus {
        ok &= prometheus_check(&lab, p, cfg.every, Duration::from_secs(15), out)?;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_median() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[0.08, 0.07, 0.09, 0.08]).unwrap();
        assert!((s.mean - 0.08).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.07, 0.09));
        let d = |m| Duration::from_millis(m);
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[d(5), d(1), d(3)]), Some(d(3)));
        assert_eq!(median(&[d(4), d(1), d(2), d(8)]), Some(d(3)));
    }

    #[test]
    fn the_table() {
        let d = |us| Duration::from_micros(us);
        let row = Row {
            interval: "100ms".into(),
            gateway: 2,
            quiet: vec![0.08, 0.07, 0.09, 0.08],
            scraped: vec![0.09, 0.08, 0.09, 0.10],
            metrics: vec![(d(400), 3000), (d(600), 3002), (d(500), 3001)],
            status: vec![(d(9000), 80000), (d(11000), 80000)],
            scrapes: 3,
            failed: 1,
        };
        let t = table(&[row], Duration::from_secs(20));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| interval | gateway | rounds | quiet: CPU s per 20 s"));
        assert_eq!(lines[0].matches('|').count(), lines[1].matches('|').count());
        assert_eq!(
            lines[2],
            "| 100ms | gw2 | 4 | 0.080 (0.070–0.090) | 0.090 (0.080–0.100) | 0.010 (0.000–0.020) \
             | 3000–3002 B | 80000 B | 0.50 ms (0.60 ms) | 10.00 ms (11.00 ms) | 3 (1) |"
        );
        let empty = table(
            &[Row {
                gateway: 1,
                ..Row::default()
            }],
            Duration::from_secs(20),
        );
        assert!(empty.ends_with("|  | gw1 | 0 | - | - | - | - | - | - | - | 0 (0) |\n"));
    }

    #[test]
    fn http_answers() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_http(raw), Ok((200, &b"hello"[..])));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert_eq!(
            parse_http(short),
            Err("Content-Length 9, body 5 bytes".into())
        );
        assert_eq!(
            parse_http(b"HTTP/1.0 404 Not Found\r\n\r\n"),
            Ok((404, &b""[..]))
        );
        assert!(parse_http(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn a_sample_from_the_exposition() {
        let body = "# HELP wmgwd2_vnis_owned Managed VNIs owned.\n# TYPE wmgwd2_vnis_owned gauge\n\
                    wmgwd2_vnis_owned_total 9\nwmgwd2_vnis_owned 333\nwmgwd2_members{state=\"ready\"} 2\n# EOF\n";
        assert_eq!(metric_value(body, "wmgwd2_vnis_owned"), Some(333.0));
        assert_eq!(metric_value(body, "wmgwd2_members"), None);
        assert_eq!(metric_value(body, "wmgwd2_ready"), None);
    }

    #[test]
    fn prometheus_configuration_and_answers() {
        let t: Vec<SocketAddr> = ["10.0.1.1:9842", "10.0.1.2:9842"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            prometheus_config(&t, Duration::from_secs(1)),
            "global:\n  scrape_interval: 1000ms\n  scrape_timeout: 1000ms\n  evaluation_interval: 1000ms\n\
             scrape_configs:\n  - job_name: wmgwd2\n    static_configs:\n      \
             - targets: ['10.0.1.1:9842', '10.0.1.2:9842']\n"
        );
        let json = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"wmgwd2_vnis_owned","instance":"10.0.1.1:9842","job":"wmgwd2"},"value":[1764756000.123,"333"]},
            {"metric":{"__name__":"wmgwd2_vnis_owned","instance":"10.0.1.2:9842","job":"wmgwd2"},"value":[1764756000.123,"334"]}]}}"#;
        let v = parse_vector(json).unwrap();
        assert_eq!(v["10.0.1.1:9842"], 333.0);
        assert_eq!(v["10.0.1.2:9842"], 334.0);
        assert!(parse_vector(r#"{"status":"error","error":"bad"}"#).is_err());
    }

    #[test]
    fn window_edges_away_from_the_periodic_work() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(boundary(s(3), PHASE, PERIOD), s(15));
        assert_eq!(boundary(s(15), PHASE, PERIOD), s(15));
        assert_eq!(boundary(ms(15_001), PHASE, PERIOD), s(45));
        assert_eq!(boundary(s(46), PHASE, PERIOD), s(75));
        assert_eq!(periodic_note(s(60), &[]), None);
        assert_eq!(periodic_note(s(120), &["--dead-after".into()]), None);
        assert!(periodic_note(s(20), &[])
            .unwrap()
            .contains("not a multiple of 60 s"));
        assert!(periodic_note(s(60), &["--resync".into(), "1h".into()]).is_some());
        assert!(periodic_note(s(60), &["--garp-refresh=0s".into()]).is_some());
    }

    #[test]
    fn owned_counts_from_the_owner_map() {
        let map: OwnerMap = [
            (1, vec![1]),
            (2, vec![2]),
            (3, vec![1]),
            (4, vec![]),
            (5, vec![1, 3]),
        ]
        .into();
        assert_eq!(owned_counts(&map, 3), vec![2, 1, 0]);
    }
}
