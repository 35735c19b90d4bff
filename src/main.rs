//! The `wmgwd2` binary: parse the command line, set up logging, open the sockets, run the
//! daemon until SIGTERM or SIGINT, and map errors to exit codes (2: bad flags, 1: start-up failed).

use std::hash::Hasher;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher24;
use thiserror::Error;
use tokio::signal::unix::SignalKind;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use wmgwd2::announce::{heartbeat_socket, SocketError};
use wmgwd2::auth::Keys;
use wmgwd2::check;
use wmgwd2::cli::{Config, Invocation, LogFormat, Sub};
use wmgwd2::control;
use wmgwd2::daemon::{Daemon, DaemonError, SdNotifier};
use wmgwd2::kernel::Kernel;
use wmgwd2::kernel::KernelError;
use wmgwd2::status::{PlanReport, Report};
use wmgwd2::sys::NetlinkKernel;
use wmgwd2::types::Uid;

const MACHINE_ID: &str = "/etc/machine-id";
/// Key for deriving a UID from /etc/machine-id (not the assignment key).
const UID_KEY: (u64, u64) = (0x776d_6777_6432_2075, 0x6964_2066_726f_6d20);

/// Log lines queued for stderr at most; beyond this, lines are dropped (and counted) rather than
/// block the event loop on a stalled journal.
const LOG_QUEUE: usize = 16_384;

/// Logging to stderr from a thread of its own: the event loop only queues lines. If stderr
/// blocks (a stalled journald, a full pipe), lines are dropped and counted
/// ([`tracing_appender::non_blocking::ErrorCounter`]) and the heartbeats go on. The guard flushes
/// what is queued when it is dropped, at exit.
fn init_logging(cfg: &Config) -> (WorkerGuard, ErrorCounter) {
    let level = match cfg.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("WMGWD2_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("wmgwd2-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    // Colours only on a terminal: journald and log files get plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match cfg.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
    (guard, dropped)
}

/// Why the daemon could not start or did not stop cleanly: exit code 1. (Bad flags are exit code
/// 2, by clap, before any of this.)
#[derive(Debug, Error)]
enum Fatal {
    #[error("no --uid given and {MACHINE_ID} is unreadable: {0}")]
    MachineIdUnreadable(#[source] std::io::Error),
    #[error("no --uid given and {MACHINE_ID} is empty")]
    MachineIdEmpty,
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening netlink: {0}")]
    Netlink(#[source] KernelError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("--key-file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// Reads the key file: it must exist, be a regular file readable by its owner only (a key that
/// other users can read is a key anyone on the host can sign with), and parse.
fn read_keys(path: &std::path::Path) -> Result<Keys, Fatal> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |reason: String| Fatal::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {mode:03o} lets other users read or change the key; make it 600 (or 400) and owned by the service's user"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    Keys::parse(&text).map_err(|e| fail(e.to_string()))
}

/// A stable UID from /etc/machine-id: SipHash of its contents, never 0.
fn uid_from_machine_id() -> Result<Uid, Fatal> {
    let id = std::fs::read_to_string(MACHINE_ID).map_err(Fatal::MachineIdUnreadable)?;
    let id = id.trim();
    if id.is_empty() {
        return Err(Fatal::MachineIdEmpty);
    }
    let mut h = SipHasher24::new_with_keys(UID_KEY.0, UID_KEY.1);
    h.write(id.as_bytes());
    Ok(Uid(h.finish().max(1)))
}

/// Distinguishes this process from earlier ones with the same UID: microseconds since the epoch,
/// so a restart normally carries a larger incarnation.
fn incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        .max(1)
}

/// `--help` and `--version` as clap prints them; any other error as one line naming the flag,
/// exit code 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let text = e.render().to_string();
    // The message's first line, and when it ends in a colon ("the following required arguments
    // were not provided:"), the lines it introduces, up to the usage: one line in all.
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"));
    let mut line = lines.next().unwrap_or("error").to_string();
    if line.ends_with(':') {
        for more in lines {
            line.push(' ');
            line.push_str(more);
        }
    }
    eprintln!("wmgwd2: {}", line.trim_start_matches("error: "));
    std::process::exit(2);
}

/// The current-thread runtime a subcommand runs on (exit 1, said, if there is none).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("wmgwd2: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

/// Turns the daemon's JSON answer into text (`None`: it is not the document expected).
type Render = fn(&str) -> Option<String>;

/// `{"state": "drained"}` as `state: drained`.
fn state_line(answer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    Some(format!("state: {}\n", v.get("state")?.as_str()?))
}

/// `wmgwd2 status [--json]`: asks the running daemon and prints its answer. Exit 1 when no
/// daemon answers.
fn client(socket: &std::path::Path, command: Sub) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (request, json, render): (String, bool, Render) = match command {
        Sub::Status { json } => ("status".into(), json, |a| {
            serde_json::from_str::<Report>(a).ok().map(|r| r.render())
        }),
        Sub::Drain { json } => ("drain".into(), json, state_line),
        Sub::Undrain { json } => ("undrain".into(), json, state_line),
        Sub::Plan {
            without,
            with,
            json,
        } => {
            let mut r = String::from("plan");
            for u in without {
                r.push_str(&format!(" without={u:#x}"));
            }
            for u in with {
                r.push_str(&format!(" with={u:#x}"));
            }
            (r, json, |a| {
                serde_json::from_str::<PlanReport>(a)
                    .ok()
                    .map(|r| r.render())
            })
        }
    };
    match rt.block_on(control::ask(socket, &request)) {
        Ok(answer) if json => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(answer) => match render(&answer) {
            Some(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("wmgwd2: the daemon answered: {}", answer.trim());
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("wmgwd2: {e} (is the daemon running? --control-socket names its socket)");
            ExitCode::from(1)
        }
    }
}

/// `wmgwd2 check [daemon flags]`: gathers the facts (a netlink dump, sysctls, interface
/// addresses, a trial bind of the port; nothing is changed) and prints what `check::judge`
/// makes of them. Exit 1 when anything would make the daemon fail.
fn preflight(cfg: &Config) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let facts = rt.block_on(async {
        let (kernel, _events) = NetlinkKernel::open(cfg.protodown_reason)?;
        Ok::<_, KernelError>((kernel.snapshot().await?, kernel.link_kinds().await?))
    });
    let (snapshot, kinds) = match facts {
        Ok(f) => f,
        Err(e) => {
            println!("ERROR reading the kernel's links (root or CAP_NET_ADMIN needed): {e}");
            return ExitCode::from(1);
        }
    };
    let mut host = check::Host {
        port_free: std::net::UdpSocket::bind(("0.0.0.0", cfg.port)).is_ok(),
        peer_routes: cfg
            .peers
            .iter()
            .map(|&p| (p, route_to(p, cfg.bind_interface.as_deref())))
            .collect(),
        keyed: cfg.key_file.is_some(),
        kinds,
        ..check::Host::default()
    };
    // `net.<family>.conf.<name>.<key>`, stored as (name, key) for IPv4 and (name, `ipv6.<key>`).
    let mut read = |family: &str, name: &str, key: &str| {
        let path = format!("/proc/sys/net/{family}/conf/{name}/{key}");
        let value = std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        if let Some(v) = value {
            let key = match family {
                "ipv4" => key.to_owned(),
                _ => format!("{family}.{key}"),
            };
            host.sysctls.insert((name.to_owned(), key), v);
        }
    };
    let mut names = vec!["all".to_owned()];
    names.extend(cfg.bind_interface.clone());
    for name in names {
        for key in ["arp_ignore", "arp_announce", "rp_filter"] {
            read("ipv4", &name, key);
        }
    }
    if let (true, Some(dev)) = (cfg.heartbeat_v6(), &cfg.bind_interface) {
        read("ipv6", dev, "disable_ipv6");
    }
    // The IPv6 managed interfaces: their sysctls (and below, their addresses' DAD flags).
    let present: std::collections::BTreeSet<&str> =
        snapshot.links.iter().map(|l| l.ifname.as_str()).collect();
    for vni in cfg.vnis().iter() {
        let name = cfg.ifname(wmgwd2::types::Slot::v6(vni));
        if present.contains(name.as_str()) {
            for key in ["disable_ipv6", "accept_dad", "addr_gen_mode"] {
                read("ipv6", &name, key);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        host.inet6 = check::parse_if_inet6(&text);
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let v4 = |s: Option<nix::sys::socket::SockaddrStorage>| {
                s.and_then(|s| s.as_sockaddr_in().map(|x| x.ip()))
            };
            if let (Some(addr), Some(netmask)) = (v4(a.address), v4(a.netmask)) {
                host.addrs.push(check::IfAddr {
                    ifname: a.interface_name.clone(),
                    addr,
                    netmask,
                });
            }
        }
    }
    host.snapshot = snapshot;
    let findings = check::judge(cfg, &host);
    for f in &findings {
        println!("{f}");
    }
    if findings.iter().any(|f| f.level == check::Level::Error) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The source address the kernel would send to `peer` from, and the interface holding it: a
/// UDP `connect` does the route lookup and sends nothing. Not bound to `device` (a bound socket
/// takes any destination as on-link), except for an IPv6 link-local peer, which has no route
/// but its link.
fn route_to(
    peer: std::net::SocketAddr,
    device: Option<&str>,
) -> Result<(std::net::IpAddr, Option<String>), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| e.to_string())?;
    let link_local =
        matches!(peer.ip(), std::net::IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    if let (true, Some(dev)) = (link_local, device) {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| format!("binding to {dev}: {e}"))?;
    }
    s.connect(&peer.into()).map_err(|e| e.to_string())?;
    let src = s
        .local_addr()
        .map_err(|e| e.to_string())?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| "no local address".to_owned())?;
    let holder = nix::ifaddrs::getifaddrs().ok().and_then(|mut all| {
        all.find(|a| {
            a.address.is_some_and(|x| {
                x.as_sockaddr_in().map(|v| std::net::IpAddr::V4(v.ip())) == Some(src)
                    || x.as_sockaddr_in6().map(|v| std::net::IpAddr::V6(v.ip())) == Some(src)
            })
        })
        .map(|a| a.interface_name)
    });
    Ok((src, holder))
}

fn main() -> ExitCode {
    // `wmgwd2 check` takes the daemon's flags: the word is taken off before they are parsed.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let checking = args.get(1).is_some_and(|a| a == "check");
    if checking {
        args.remove(1);
    }
    let cfg = match Invocation::parse_from(args) {
        Ok(Invocation::Daemon(c)) if checking => return preflight(&c),
        Ok(Invocation::Daemon(c)) => *c,
        Ok(Invocation::Client { socket, command }) => return client(&socket, command),
        Err(e) => usage_error(e),
    };
    let (_flush_at_exit, dropped) = init_logging(&cfg);
    // The event loop runs on this thread (`block_on`); the heartbeat task and the small tasks
    // (signals, control connections) on one worker thread of their own, so that heartbeats go
    // out on time while the loop is held in a long system call (a netlink batch of hundreds of
    // protodown changes runs in the kernel inside one sendmsg) or in a long computation. A
    // stuck loop is still caught: the systemd watchdog is fed by the loop alone.
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wmgwd2-beacon")
        .enable_all()
        .build()
        .map_err(Fatal::Runtime)
        .and_then(|rt| rt.block_on(run(cfg)));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "wmgwd2 failed");
            ExitCode::from(1)
        }
    };
    if dropped.dropped_lines() > 0 {
        warn!(
            dropped = dropped.dropped_lines(),
            "log lines dropped because stderr did not keep up"
        );
    }
    code
}

async fn run(cfg: Config) -> Result<(), Fatal> {
    let uid = match cfg.uid {
        Some(u) => u,
        None => {
            let u = uid_from_machine_id()?;
            info!(uid = %u, source = MACHINE_ID, "derived uid");
            u
        }
    };
    // Before any socket: a key that cannot be used is a start-up failure, said at once.
    let keys = cfg.key_file.as_deref().map(read_keys).transpose()?;
    let inc = incarnation();
    let shutdown = CancellationToken::new();
    let handler = |kind: SignalKind, signal: &'static str| {
        tokio::signal::unix::signal(kind).map_err(|source| Fatal::Signal { signal, source })
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let token = shutdown.clone();
    let mut hup = handler(SignalKind::hangup(), "SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => info!(signal = "SIGTERM", "stop requested"),
                _ = int.recv() => info!(signal = "SIGINT", "stop requested"),
                // Operators send it by habit (`systemctl reload`): nothing is reloaded (every
                // setting is a flag; restart to change one), and the daemon goes on.
                _ = hup.recv() => {
                    info!(signal = "SIGHUP", "nothing to reload: settings are flags, restart the service to change them");
                    continue;
                }
            }
            break;
        }
        token.cancel();
    });

    // SIGUSR1: one status line in the log.
    let mut usr1 = handler(SignalKind::user_defined1(), "SIGUSR1")?;
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            if status_tx.send(()).is_err() {
                return;
            }
        }
    });

    let (kernel, events) = NetlinkKernel::open(cfg.protodown_reason).map_err(Fatal::Netlink)?;
    let socket = heartbeat_socket(&wmgwd2::announce::SocketSpec::of(&cfg))?;
    let to: Vec<String> = cfg.destinations().iter().map(|d| d.to_string()).collect();
    info!(
        uid = %uid,
        minvni = cfg.minvni,
        maxvni = cfg.maxvni,
        heartbeats_to = %to.join(","),
        port = cfg.port,
        interval_ms = cfg.interval.as_millis() as u64,
        dead_after = cfg.dead_after,
        hold_down = cfg.hold_down,
        "wmgwd2 starting"
    );
    if !cfg.peers.is_empty() && keys.is_none() {
        warn!("--peer without --key-file: frames from the peers' addresses are believed unsigned, and routed frames carry no TTL proof; anyone who can send with a peer's source address can move VNIs (docs/security.md)");
    }
    let socket_path = cfg.control_socket.clone();
    let metrics_addr = cfg.metrics_listen;
    let mut daemon = Daemon::new(cfg, uid, inc, kernel)
        .with_status_requests(status_rx)
        .with_notifier(Box::new(SdNotifier::default()));
    if let Some(keys) = keys {
        let ids: Vec<String> = keys.ids().map(|i| i.to_string()).collect();
        info!(key_ids = %ids.join(","), signing = keys.signing_id(), "heartbeats signed and verified (HMAC-SHA256)");
        daemon = daemon.with_keys(keys);
    }
    // The control socket: a daemon without one still serves (its state is only not shown).
    match control::listen(&socket_path).await {
        Ok(rx) => {
            info!(path = %socket_path.display(), "control socket ready");
            daemon = daemon.with_control(rx);
        }
        Err(e) => {
            warn!(error = %e, "no control socket: `wmgwd2 status` will not reach this daemon")
        }
    }
    if let Some(addr) = metrics_addr {
        match wmgwd2::metrics::listen(addr).await {
            Ok((rx, addr)) => {
                info!(%addr, "metrics on http://{addr}/metrics");
                daemon = daemon.with_metrics(rx);
            }
            Err(e) => warn!(%addr, error = %e, "no metrics: cannot listen there"),
        }
    }
    // WatchdogSec= in the unit: a keep-alive at half the period, from the event loop.
    if let Some(period) = sd_notify::watchdog_enabled() {
        info!(
            watchdog_ms = period.as_millis() as u64,
            "systemd watchdog on"
        );
        daemon = daemon.with_watchdog(period / 2);
    }
    let stats = daemon.run(socket, events, shutdown).await?;
    info!(counters = %stats.summary(), "counters at exit");
    Ok(())
}
