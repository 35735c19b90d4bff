//! `wmgwd2-lab COMMAND [OPTIONS] [-- DAEMON-ARGS]`, the lab's entry points:
//!   drill         the failover drill (`scripts/drill.sh`)
//!   stall-check   short intervals on a quiet machine (`scripts/stall-check.sh`)
//!   bench         wmgwd2 against keepalived (`scripts/bench.sh`)
//!   evpn-drill    the handover through real FRR BGP EVPN (`scripts/evpn-drill.sh`)
//!   frame-cost    what a heartbeat costs to build and read, signed or not (no root)
//!   loss          heartbeat loss and failure detection (`scripts/loss.sh`)
//!   cost          what serving metrics and status costs the daemons (`scripts/cost.sh`)
//!   flood         a flood at the heartbeat port: gaps, CPU, RSS, ownership (`scripts/flood.sh`)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use wmgwd2_lab::drill::{self, Config};
use wmgwd2_lab::{
    analysis, bench, cost, evpn_drill, flood, frame_cost, loss, nft, plan, scenario, stall,
    DaemonConfig, DaemonKind, Spec,
};

const COMMANDS: &str =
    "usage: wmgwd2-lab drill|stall-check|bench|evpn-drill|loss|frame-cost|cost|flood [OPTIONS] (-h for each)\n";

/// A failed command line: exit 2 with the usage, or 1 with a message.
enum Fail {
    Usage(String),
    Run(String),
}

/// Options `-x VALUE` among `known`, then `-- ARGS`; `-h` asks for the usage.
fn parse(args: &[String], known: &[&str]) -> Result<(BTreeMap<String, String>, Vec<String>), Fail> {
    parse_with_flags(args, known, &[])
}

/// As [`parse`], and `flags` (options without a value) read as "1".
fn parse_with_flags(
    args: &[String],
    known: &[&str],
    flags: &[&str],
) -> Result<(BTreeMap<String, String>, Vec<String>), Fail> {
    let mut opts = BTreeMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => return Ok((opts, it.cloned().collect())),
            "-h" | "--help" => return Err(Fail::Usage(String::new())),
            f if flags.contains(&f) => {
                opts.insert(f.to_owned(), "1".to_owned());
            }
            o if known.contains(&o) => match it.next() {
                Some(v) => {
                    opts.insert(o.to_owned(), v.clone());
                }
                None => return Err(Fail::Usage(format!("{o} needs a value"))),
            },
            o => return Err(Fail::Usage(format!("unknown argument '{o}'"))),
        }
    }
    Ok((opts, Vec::new()))
}

fn number<T: std::str::FromStr + PartialOrd>(
    opts: &BTreeMap<String, String>,
    o: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, Fail> {
    match opts.get(o) {
        None => Ok(default),
        Some(s) => match s.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Fail::Run(format!("{o} must be {what}"))),
        },
    }
}

/// The interval option (-i): its text and milliseconds, at least 10 ms.
fn interval(opts: &BTreeMap<String, String>, default: &str) -> Result<(String, u64), Fail> {
    let i = opts.get("-i").map_or(default, String::as_str).to_owned();
    let ms = analysis::interval_ms(&i)
        .ok_or_else(|| Fail::Run("-i takes a whole number of ms or s, e.g. 100ms or 1s".into()))?;
    if ms < 10 {
        return Err(Fail::Run("-i must be at least 10ms".into()));
    }
    Ok((i, ms))
}

/// The wmgwd2 binary: -b (relative to the current directory) or the one beside this binary.
fn binary(opts: &BTreeMap<String, String>) -> Result<PathBuf, Fail> {
    let bin = match opts.get("-b") {
        Some(b) => std::path::absolute(b).unwrap_or_default(),
        None => std::env::current_exe()
            .map(|e| e.with_file_name("wmgwd2"))
            .unwrap_or_default(),
    };
    if !bin.is_file() {
        return Err(Fail::Run(format!(
            "no executable at {} (build it: cargo build --release, or give -b BIN)",
            bin.display()
        )));
    }
    Ok(bin)
}

fn need_root() -> Result<(), Fail> {
    if wmgwd2_lab::is_root() {
        Ok(())
    } else {
        Err(Fail::Run(
            "must run as root (it creates network namespaces)".into(),
        ))
    }
}

fn drill_main(args: &[String]) -> Result<bool, Fail> {
    let (opts, extra) = parse(args, &["-g", "-v", "-i", "-m", "-b", "-u"])?;
    let gateways = number(&opts, "-g", 3usize, 2..=200, "2-200")?;
    let vnis = number(
        &opts,
        "-v",
        100u32,
        1..=plan::MAX_VNI,
        &format!("1-{}", plan::MAX_VNI),
    )?;
    let mac = opts
        .get("-m")
        .map_or(Ok(plan::MacMode::Distinct), |m| m.parse())
        .map_err(|_| Fail::Run("-m must be distinct or shared".into()))?;
    let (interval, ims) = interval(&opts, "100ms")?;
    let bound = bound_secs("DRILL_BOUND", 30)?;
    need_root()?;
    let bin = binary(&opts)?;
    let mut spec = Spec::new(gateways, vnis);
    spec.mac = mac;
    spec.underlay = match opts.get("-u").map(String::as_str) {
        None | Some("segment") => plan::Underlay::Segment,
        Some("routed") => plan::Underlay::Routed,
        Some("ipv6") => plan::Underlay::Ipv6,
        Some(_) => return Err(Fail::Usage("-u must be segment, routed or ipv6".into())),
    };
    let cfg = Config {
        spec,
        daemon: DaemonConfig {
            kind: DaemonKind::Wmgwd2,
            bin,
            interval,
            extra,
        },
        // At least 40 intervals.
        bound: Duration::from_secs(bound).max(Duration::from_millis(ims * 40)),
        keep_logs: true,
    };
    scenario::interrupt_on_signals();
    drill::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))
}

fn stall_main(args: &[String]) -> Result<bool, Fail> {
    let (opts, extra) = parse(args, &["-g", "-v", "-i", "-s", "-b", "--logs"])?;
    let gateways = number(&opts, "-g", 3usize, 1..=plan::MAX_GATEWAYS, "1-200")?;
    let vnis = number(
        &opts,
        "-v",
        1000u32,
        1..=plan::MAX_VNI,
        &format!("1-{}", plan::MAX_VNI),
    )?;
    let secs = number(&opts, "-s", 35u64, 1..=86_400, "whole seconds")?;
    let (interval, _) = interval(&opts, "10ms")?;
    need_root()?;
    let bin = binary(&opts)?;
    let daemon = DaemonConfig {
        kind: DaemonKind::Wmgwd2,
        bin,
        interval,
        extra,
    };
    let logs = opts.get("--logs").map(PathBuf::from);
    scenario::interrupt_on_signals();
    stall::run(
        &Spec::new(gateways, vnis),
        daemon,
        secs,
        logs.as_deref(),
        &mut std::io::stdout(),
    )
    .map(|()| true)
    .map_err(|e| Fail::Run(e.to_string()))
}

/// The repository (this crate is scripts/lab in it).
fn repo() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&r).unwrap_or(r)
}

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn sh(cmd: &mut Command) -> Result<(), Fail> {
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(Fail::Run(format!("{cmd:?} failed"))),
    }
}

/// scripts/bench_report.py with Debian's interpreter (the one python3-matplotlib installs into).
fn report(out: &Path) -> Result<(), Fail> {
    let py = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let csv = out.join("bench.csv");
    sh(Command::new(py)
        .arg(repo().join("scripts/bench_report.py"))
        .arg("--csv")
        .arg(&csv)
        .arg("--doc")
        .arg(out.join("benchmarks.md"))
        .arg("--png")
        .arg(out.join("bench.png"))
        .arg("--meta")
        .arg(out.join("bench.csv.meta")))
}

fn bench_main(args: &[String]) -> Result<bool, Fail> {
    let known = [
        "--vnis",
        "--intervals",
        "--daemons",
        "-g",
        "--steady",
        "-o",
        "-b",
        "--rev",
    ];
    let (opts, extra) = parse_with_flags(args, &known, &["--quick", "--report-only"])?;
    if !extra.is_empty() {
        return Err(Fail::Usage("no daemon arguments here".into()));
    }
    let out = opts.get("-o").map_or_else(
        || repo().join("docs"),
        |o| std::path::absolute(o).unwrap_or_default(),
    );
    if opts.contains_key("--report-only") {
        if !out.join("bench.csv").is_file() || !out.join("bench.csv.meta").is_file() {
            return Err(Fail::Run(
                "--report-only needs bench.csv and bench.csv.meta".into(),
            ));
        }
        return report(&out).map(|()| true);
    }
    let list = |o: &str, d: &str| -> Vec<String> {
        opts.get(o)
            .map_or(d, String::as_str)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let mut vnis = Vec::new();
    let vdefault = if opts.contains_key("--quick") {
        "10 100"
    } else {
        "10 100 1000"
    };
    for v in list("--vnis", vdefault) {
        match v.parse::<u32>() {
            Ok(n) if (1..=plan::MAX_VNI).contains(&n) => vnis.push(n),
            _ => return Err(Fail::Run(format!("--vnis: bad V '{v}'"))),
        }
    }
    let intervals = list("--intervals", "1s 100ms 10ms");
    for i in &intervals {
        match analysis::interval_ms(i) {
            Some(ms) if ms >= 10 => {}
            Some(_) => return Err(Fail::Run("--intervals: at least 10ms".into())),
            None => {
                return Err(Fail::Run(format!(
                    "--intervals: '{i}' is not a whole number of ms or s"
                )))
            }
        }
    }
    let mut daemons = Vec::new();
    for d in list("--daemons", "wmgwd2 keepalived") {
        daemons.push(match d.as_str() {
            "wmgwd2" => DaemonKind::Wmgwd2,
            "keepalived" => DaemonKind::Keepalived,
            _ => return Err(Fail::Run(format!("--daemons: unknown daemon '{d}'"))),
        });
    }
    let gateways = number(&opts, "-g", 3usize, 2..=9, "2-9")?;
    let steady = number(&opts, "--steady", 20u64, 1..=3600, "whole seconds")?;
    let bound = bound_secs("BENCH_BOUND", 60)?;
    need_root()?;
    if opts.contains_key("-b") && opts.contains_key("--rev") {
        return Err(Fail::Run("-b and --rev exclude each other".into()));
    }
    let (wmgwd2, built) = if let Some(rev) = opts.get("--rev") {
        let rev = git(&["rev-parse", "--short", &format!("{rev}^{{commit}}")])
            .ok_or_else(|| Fail::Run(format!("--rev: no commit '{rev}'")))?;
        let target = repo().join("target/bench");
        let src = target.join(format!("src-{rev}"));
        println!(
            "building: wmgwd2 at {rev} (git archive into {}, cargo build --release)",
            src.display()
        );
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(|e| Fail::Run(e.to_string()))?;
        sh(Command::new("sh").arg("-c").arg(format!(
            "git -C '{}' archive '{rev}' | tar -x -C '{}'",
            repo().display(),
            src.display()
        )))?;
        sh(Command::new("cargo")
            .args([
                "build",
                "--release",
                "--quiet",
                "--bin",
                "wmgwd2",
                "--manifest-path",
            ])
            .arg(src.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target))?;
        (target.join("release/wmgwd2"), format!("(git {rev})"))
    } else if let Some(b) = opts.get("-b") {
        (binary(&opts)?, format!("(given as {b})"))
    } else {
        let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&[
            "diff",
            "--quiet",
            "HEAD",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .is_none();
        let note = if dirty {
            ", work tree with uncommitted changes in src"
        } else {
            ""
        };
        (binary(&opts)?, format!("(git {head}{note})"))
    };
    let keepalived = PathBuf::from("keepalived");
    let command = std::iter::once("scripts/bench.sh".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let cfg = bench::Config {
        vnis,
        intervals,
        daemons,
        gateways,
        steady: Duration::from_secs(steady),
        out: out.clone(),
        wmgwd2,
        keepalived,
        bound: Duration::from_secs(bound),
        built,
        command,
    };
    scenario::interrupt_on_signals();
    bench::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))?;
    report(&out)?;
    println!(
        "wrote {}, {}, {}",
        out.join("benchmarks.md").display(),
        out.join("bench.csv").display(),
        out.join("bench.png").display()
    );
    Ok(true)
}

fn evpn_drill_main(args: &[String]) -> Result<bool, Fail> {
    let known = [
        "--mac", "--cycles", "--pause", "--bin", "-b", "--logs", "--doc",
    ];
    let (mut opts, extra) = parse_with_flags(args, &known, &["--frr-debug"])?;
    let conventions = match opts.get("--mac").map_or("both", String::as_str) {
        "both" => vec![plan::MacMode::Shared, plan::MacMode::Distinct],
        "shared" => vec![plan::MacMode::Shared],
        "distinct" => vec![plan::MacMode::Distinct],
        _ => return Err(Fail::Usage("--mac must be shared, distinct or both".into())),
    };
    let cycles = number(&opts, "--cycles", 4u32, 0..=1000, "a whole number")?;
    let pause = number(&opts, "--pause", 2u64, 0..=3600, "whole seconds")?;
    if let Err(why) = wmgwd2_lab::evpn::available() {
        return Err(Fail::Run(why));
    }
    if let Some(b) = opts.remove("--bin") {
        opts.insert("-b".into(), b);
    }
    let bin = binary(&opts)?;
    let abs = |o: &str| {
        opts.get(o)
            .map(|p| std::path::absolute(p).unwrap_or_default())
    };
    let command = std::iter::once("scripts/evpn-drill.sh".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let cfg = evpn_drill::Config {
        conventions,
        cycles,
        pause: Duration::from_secs(pause),
        bin,
        logs: abs("--logs"),
        frr_debug: opts.contains_key("--frr-debug"),
        doc: abs("--doc"),
        extra,
        command,
    };
    scenario::interrupt_on_signals();
    evpn_drill::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))?;
    Ok(true)
}

fn frame_cost_main(args: &[String]) -> Result<bool, Fail> {
    let (opts, _) = parse(args, &["-n"])?;
    let n = number(
        &opts,
        "-n",
        200_000u32,
        1..=100_000_000,
        "a number of frames",
    )?;
    print!("{}", frame_cost::report(&frame_cost::measure(n)));
    Ok(true)
}

/// "60s", "500ms" or "60" (seconds).
fn duration(opts: &BTreeMap<String, String>, o: &str, default: Duration) -> Result<Duration, Fail> {
    let Some(s) = opts.get(o) else {
        return Ok(default);
    };
    let ms = analysis::interval_ms(s).or_else(|| s.parse::<u64>().ok().map(|n| n * 1000));
    ms.map(Duration::from_millis).ok_or_else(|| {
        Fail::Run(format!(
            "{o} takes a whole number of ms or s, e.g. 500ms or 60s"
        ))
    })
}

/// "1:2,3:1" -> [(1, 2), (3, 1)]
fn one_way(s: &str) -> Option<Vec<(usize, usize)>> {
    s.split(',')
        .map(|p| {
            let (a, b) = p.split_once(':')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

fn loss_main(args: &[String]) -> Result<bool, Fail> {
    let known = [
        "-g",
        "-v",
        "-i",
        "-b",
        "--loss",
        "--one-way",
        "--duration",
        "--fail-after",
    ];
    let (opts, extra) = parse(args, &known)?;
    let gateways = number(&opts, "-g", 3usize, 2..=200, "2-200")?;
    let vnis = number(
        &opts,
        "-v",
        30u32,
        1..=plan::MAX_VNI,
        &format!("1-{}", plan::MAX_VNI),
    )?;
    let (interval, _) = interval(&opts, "100ms")?;
    let percent = number(&opts, "--loss", 20u8, 0..=100, "0-100 (percent)")?;
    let pairs = match opts.get("--one-way") {
        None => Vec::new(),
        Some(s) => one_way(s).ok_or_else(|| {
            Fail::Run("--one-way takes A:B (gateway numbers), several as A:B,C:D".into())
        })?,
    };
    for &(a, b) in &pairs {
        if a == b || !(1..=gateways).contains(&a) || !(1..=gateways).contains(&b) {
            return Err(Fail::Run(format!(
                "--one-way {a}:{b}: two different gateways of 1-{gateways}"
            )));
        }
    }
    let dur = duration(&opts, "--duration", Duration::from_secs(60))?;
    let fail_after = match opts.get("--fail-after") {
        None => None,
        Some(_) => Some(duration(&opts, "--fail-after", Duration::ZERO)?),
    };
    if let Some(f) = fail_after {
        if f + Duration::from_secs(2) > dur {
            return Err(Fail::Run(
                "--fail-after must leave at least 2 s of the --duration after it".into(),
            ));
        }
    }
    let bound = bound_secs("LOSS_BOUND", 30)?;
    need_root()?;
    if !nft::available() {
        return Err(Fail::Run(
            "nft not found (apt-get install nftables; scripts/loss.sh does)".into(),
        ));
    }
    let bin = binary(&opts)?;
    let cfg = loss::Config {
        spec: Spec::new(gateways, vnis),
        daemon: DaemonConfig {
            kind: DaemonKind::Wmgwd2,
            bin,
            interval,
            extra,
        },
        loss: nft::Loss {
            percent,
            one_way: pairs,
        },
        duration: dur,
        fail_after,
        bound: Duration::from_secs(bound),
        keep_logs: true,
    };
    scenario::interrupt_on_signals();
    loss::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))
}

/// An executable named `name` in PATH.
fn in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn cost_main(args: &[String]) -> Result<bool, Fail> {
    let known = [
        "-g", "-v", "-i", "-b", "--rounds", "--window", "--every", "--ask",
    ];
    let (opts, extra) = parse_with_flags(args, &known, &["--prometheus"])?;
    let gateways = number(&opts, "-g", 3usize, 2..=9, "2-9")?;
    let vnis = number(
        &opts,
        "-v",
        1000u32,
        1..=plan::MAX_VNI,
        &format!("1-{}", plan::MAX_VNI),
    )?;
    let (interval, _) = interval(&opts, "100ms")?;
    let rounds = number(&opts, "--rounds", 4usize, 1..=1000, "1-1000")?;
    let window = duration(&opts, "--window", Duration::from_secs(60))?;
    let every = duration(&opts, "--every", Duration::from_secs(1))?;
    let ask = opts
        .get("--ask")
        .map_or(Ok(cost::Ask::Both), |a| a.parse())
        .map_err(|_| Fail::Run("--ask must be both, metrics or status".into()))?;
    if window < Duration::from_secs(1) || every < Duration::from_millis(100) || every > window {
        return Err(Fail::Run(
            "--window must be at least 1s, --every at least 100ms and at most the window".into(),
        ));
    }
    if extra
        .iter()
        .any(|x| x == "--metrics-listen" || x == "--control-socket")
    {
        return Err(Fail::Usage(
            "--metrics-listen and --control-socket are set by the run".into(),
        ));
    }
    let bound = bound_secs("COST_BOUND", 60)?;
    need_root()?;
    let prometheus = if opts.contains_key("--prometheus") {
        Some(in_path("prometheus").ok_or_else(|| {
            Fail::Run("--prometheus: no prometheus in PATH (apt-get install prometheus)".into())
        })?)
    } else {
        None
    };
    let bin = binary(&opts)?;
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "diff",
        "--quiet",
        "HEAD",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .is_none();
    println!(
        "scripts/cost.sh {}
date: {}; wmgwd2 at git {head}{}; load average {}; other namespaces: {}",
        args.join(" "),
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        if dirty { " (src changed since)" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        wmgwd2_lab::netns::list().len()
    );
    let cfg = cost::Config {
        spec: Spec::new(gateways, vnis),
        daemon: DaemonConfig {
            kind: DaemonKind::Wmgwd2,
            bin,
            interval,
            extra,
        },
        rounds,
        window,
        every,
        ask,
        prometheus,
        bound: Duration::from_secs(bound),
    };
    scenario::interrupt_on_signals();
    cost::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))
}

/// "date: ...; wmgwd2 at git ...; load average ...; other namespaces: N", for a run's header.
fn run_facts() -> String {
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "diff",
        "--quiet",
        "HEAD",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .is_none();
    format!(
        "date: {}; wmgwd2 at git {head}{}; load average {}; other namespaces: {}",
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        if dirty { " (src changed since)" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        wmgwd2_lab::netns::list().len()
    )
}

fn flood_main(args: &[String]) -> Result<bool, Fail> {
    let known = ["-g", "-v", "-i", "-n", "-b", "--window", "--recover"];
    let (opts, extra) = parse_with_flags(args, &known, &["--unkeyed", "--stop-during"])?;
    let gateways = number(&opts, "-g", 3usize, 2..=9, "2-9")?;
    let vnis = number(
        &opts,
        "-v",
        30u32,
        1..=plan::MAX_VNI,
        &format!("1-{}", plan::MAX_VNI),
    )?;
    let (interval, _) = interval(&opts, "100ms")?;
    let datagrams = number(&opts, "-n", 1_000_000u32, 1..=1_000_000_000, "1-1000000000")?;
    let window = duration(&opts, "--window", Duration::from_secs(10))?;
    let recover = duration(&opts, "--recover", Duration::from_secs(240))?;
    if window < Duration::from_secs(1) {
        return Err(Fail::Run("--window must be at least 1s".into()));
    }
    if extra
        .iter()
        .any(|x| x == "--key-file" || x == "--control-socket")
    {
        return Err(Fail::Usage(
            "--key-file and --control-socket are set by the run (--unkeyed for no key)".into(),
        ));
    }
    let bound = bound_secs("FLOOD_BOUND", 60)?;
    need_root()?;
    let bin = binary(&opts)?;
    println!("scripts/flood.sh {}\n{}", args.join(" "), run_facts());
    let cfg = flood::Config {
        spec: Spec::new(gateways, vnis),
        daemon: DaemonConfig {
            kind: DaemonKind::Wmgwd2,
            bin,
            interval,
            extra,
        },
        keyed: !opts.contains_key("--unkeyed"),
        datagrams,
        stop_during: opts.contains_key("--stop-during"),
        window,
        bound: Duration::from_secs(bound),
        recover,
    };
    scenario::interrupt_on_signals();
    flood::run(&cfg, &mut std::io::stdout()).map_err(|e| Fail::Run(e.to_string()))
}

/// A bound in whole seconds from the environment variable `name`, `default` when it is unset.
fn bound_secs(name: &str, default: u64) -> Result<u64, Fail> {
    match std::env::var(name).map(|b| b.parse::<u64>()) {
        Err(_) => Ok(default),
        Ok(Ok(b)) if b >= 1 => Ok(b),
        Ok(_) => Err(Fail::Run(format!("{name} must be whole seconds"))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, usage, r) = match args.first().map(String::as_str) {
        Some("drill") => ("drill", drill::USAGE, drill_main(&args[1..])),
        Some("stall-check") => ("stall-check", stall::USAGE, stall_main(&args[1..])),
        Some("bench") => ("bench", bench::USAGE, bench_main(&args[1..])),
        Some("evpn-drill") => ("evpn-drill", evpn_drill::USAGE, evpn_drill_main(&args[1..])),
        Some("frame-cost") => ("frame-cost", frame_cost::USAGE, frame_cost_main(&args[1..])),
        Some("loss") => ("loss", loss::USAGE, loss_main(&args[1..])),
        Some("cost") => ("cost", cost::USAGE, cost_main(&args[1..])),
        Some("flood") => ("flood", flood::USAGE, flood_main(&args[1..])),
        _ => {
            eprint!("{COMMANDS}");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Fail::Usage(m)) => {
            if !m.is_empty() {
                eprintln!("{name}: {m}");
            }
            eprint!("{usage}");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("{name}: {m}");
            ExitCode::from(1)
        }
    }
}
