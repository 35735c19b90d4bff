//! `wmgwd2-lab drill [OPTIONS] [-- DAEMON-ARGS]`: the failover drill (`scripts/drill.sh`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wmgwd2_lab::drill::{self, Config, USAGE};
use wmgwd2_lab::{analysis, plan, scenario, DaemonConfig, Spec};

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("drill: {msg}");
    eprint!("{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("drill") => drill_main(&args[1..]),
        Some("-h" | "--help") => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        _ => usage_error("the only command is: drill"),
    }
}

fn drill_main(args: &[String]) -> ExitCode {
    let (mut g, mut v, mut interval, mut mac, mut bin) = (
        "3".to_owned(),
        "100".to_owned(),
        "100ms".to_owned(),
        "distinct".to_owned(),
        None,
    );
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "-g" => &mut g,
            "-v" => &mut v,
            "-i" => &mut interval,
            "-m" => &mut mac,
            "-b" => {
                match it.next() {
                    Some(b) => bin = Some(PathBuf::from(b)),
                    None => return usage_error("-b needs a value"),
                }
                continue;
            }
            "--" => {
                extra = it.by_ref().cloned().collect();
                break;
            }
            "-h" | "--help" => {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            }
            other => return usage_error(&format!("unknown argument '{other}'")),
        };
        match it.next() {
            Some(x) => *slot = x.clone(),
            None => return usage_error(&format!("{a} needs a value")),
        }
    }
    let die = |m: String| {
        eprintln!("drill: {m}");
        ExitCode::from(1)
    };
    let gateways = match g.parse::<usize>() {
        Ok(n) if (2..=200).contains(&n) => n,
        _ => return die("-g must be 2-200".into()),
    };
    let vnis = match v.parse::<u32>() {
        Ok(n) if (1..=plan::MAX_VNI).contains(&n) => n,
        _ => return die(format!("-v must be 1-{}", plan::MAX_VNI)),
    };
    let Ok(mac) = mac.parse() else {
        return die("-m must be distinct or shared".into());
    };
    let Some(ims) = analysis::interval_ms(&interval) else {
        return die("-i takes a whole number of ms or s, e.g. 100ms or 1s".into());
    };
    if ims < 10 {
        return die("-i must be at least 10ms".into());
    }
    let bound = match std::env::var("DRILL_BOUND").map(|b| b.parse::<u64>()) {
        Err(_) => 30,
        Ok(Ok(b)) if b >= 1 => b,
        Ok(_) => return die("DRILL_BOUND must be whole seconds".into()),
    };
    // At least 40 intervals.
    let bound = Duration::from_secs(bound).max(Duration::from_millis(ims * 40));
    if !wmgwd2_lab::is_root() {
        return die("must run as root (it creates network namespaces)".into());
    }
    let bin = match bin {
        Some(b) => std::path::absolute(b).unwrap_or_default(),
        None => std::env::current_exe()
            .map(|e| e.with_file_name("wmgwd2"))
            .unwrap_or_default(),
    };
    if !bin.is_file() {
        return die(format!(
            "no executable at {} (build it: cargo build --release, or give -b BIN)",
            bin.display()
        ));
    }
    let mut spec = Spec::new(gateways, vnis);
    spec.mac = mac;
    let cfg = Config {
        spec,
        daemon: DaemonConfig {
            bin,
            interval,
            extra,
        },
        bound,
        keep_logs: true,
    };
    scenario::interrupt_on_signals();
    match drill::run(&cfg, &mut std::io::stdout()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => die(e.to_string()),
    }
}
