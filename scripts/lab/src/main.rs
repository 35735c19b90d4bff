//! `wmgwd2-lab COMMAND [OPTIONS] [-- DAEMON-ARGS]`, the lab's entry points:
//!   drill         the failover drill (`scripts/drill.sh`)
//!   stall-check   short intervals on a quiet machine (`scripts/stall-check.sh`)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wmgwd2_lab::drill::{self, Config};
use wmgwd2_lab::{analysis, plan, scenario, stall, DaemonConfig, Spec};

const COMMANDS: &str = "usage: wmgwd2-lab drill|stall-check [OPTIONS] (-h for each)\n";

/// A failed command line: exit 2 with the usage, or 1 with a message.
enum Fail {
    Usage(String),
    Run(String),
}

/// Options `-x VALUE` among `known`, then `-- ARGS`; `-h` asks for the usage.
fn parse(args: &[String], known: &[&str]) -> Result<(BTreeMap<String, String>, Vec<String>), Fail> {
    let mut opts = BTreeMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => return Ok((opts, it.cloned().collect())),
            "-h" | "--help" => return Err(Fail::Usage(String::new())),
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
    let (opts, extra) = parse(args, &["-g", "-v", "-i", "-m", "-b"])?;
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
    let bound = match std::env::var("DRILL_BOUND").map(|b| b.parse::<u64>()) {
        Err(_) => 30,
        Ok(Ok(b)) if b >= 1 => b,
        Ok(_) => return Err(Fail::Run("DRILL_BOUND must be whole seconds".into())),
    };
    need_root()?;
    let bin = binary(&opts)?;
    let mut spec = Spec::new(gateways, vnis);
    spec.mac = mac;
    let cfg = Config {
        spec,
        daemon: DaemonConfig {
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
    let (opts, extra) = parse(args, &["-g", "-v", "-i", "-s", "-b"])?;
    if !extra.is_empty() {
        return Err(Fail::Usage("no daemon arguments here".into()));
    }
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
        bin,
        interval,
        extra: Vec::new(),
    };
    scenario::interrupt_on_signals();
    stall::run(
        &Spec::new(gateways, vnis),
        daemon,
        secs,
        &mut std::io::stdout(),
    )
    .map(|()| true)
    .map_err(|e| Fail::Run(e.to_string()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, usage, r) = match args.first().map(String::as_str) {
        Some("drill") => ("drill", drill::USAGE, drill_main(&args[1..])),
        Some("stall-check") => ("stall-check", stall::USAGE, stall_main(&args[1..])),
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
