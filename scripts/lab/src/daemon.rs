//! The daemons: their command line (one function per daemon: wmgwd2, and keepalived for the
//! benchmark) and their processes (started, signalled, reaped by PID; each logs to
//! `<dir>/gw<g>.log`). Dropping [`Daemons`] kills what still runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::analysis;
use crate::oracle::vrrp_priority;
use crate::plan::{self, Spec};
use crate::{io_err, Result};

/// Which daemon runs on the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonKind {
    Wmgwd2,
    /// keepalived (VRRPv3), one instance per VNI on `vrrp4-<v>` ([`keepalived_conf`]); the lab
    /// must be built with [`plan::GatewayIp::Vrrp`].
    Keepalived,
    /// The Go original (`../shared/interop/wmgwd2-go`): `-uid`, `-minvni`, `-maxvni`, nothing
    /// else ([`go_command_line`]); for the rolling upgrade from it (`--go-compat`).
    GoOriginal,
}

/// How the daemons run: which, the binary, `--interval`, and extra flags for every gateway
/// (`{g}` in one stands for the gateway's number).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub kind: DaemonKind,
    pub bin: PathBuf,
    pub interval: String,
    pub extra: Vec<String>,
}

impl DaemonConfig {
    /// The Go original from `bin`.
    pub fn go_original(bin: impl Into<PathBuf>) -> DaemonConfig {
        DaemonConfig {
            kind: DaemonKind::GoOriginal,
            bin: bin.into(),
            interval: "1s".into(),
            extra: Vec::new(),
        }
    }

    /// wmgwd2 from `bin`.
    pub fn wmgwd2(bin: impl Into<PathBuf>, interval: &str, extra: &[&str]) -> DaemonConfig {
        DaemonConfig {
            kind: DaemonKind::Wmgwd2,
            bin: bin.into(),
            interval: interval.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// keepalived's configuration for gateway g: one `vrrp_instance` per VNI on `vrrp4-<v>`
/// (VRRPv3, advert_int = the interval, priorities [`vrrp_priority`], default GARP settings),
/// virtual_ipaddress = the gateway IP.
pub fn keepalived_conf(spec: &Spec, g: usize, interval_ms: u64) -> String {
    let adv = interval_ms as f64 / 1000.0;
    let mut s = String::from("global_defs {\n  vrrp_version 3\n}\n");
    for v in spec.vni_range() {
        s.push_str(&format!(
            "vrrp_instance vni{v} {{\n  state BACKUP\n  interface {}\n  virtual_router_id {}\n  \
             priority {}\n  advert_int {adv}\n  virtual_ipaddress {{\n    {}/24 dev {}\n  }}\n}}\n",
            plan::ifname(v),
            (v - 1) % 255 + 1,
            vrrp_priority(g, v, spec.gateways),
            plan::gateway_ip(v),
            plan::ifname(v),
        ));
    }
    s
}

/// The Go original's command line for gateway g in namespace `ns`: the same UID as wmgwd2's
/// gateway g (decimal: its parser reads a leading 0 as octal), the spec's VNIs. It has no other
/// option: it sends to and listens on 10.0.1.255:3000, the lab's segment.
pub fn go_command_line(bin: &Path, spec: &Spec, ns: &str, g: usize) -> Vec<String> {
    let mut a: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    a.push(bin.display().to_string());
    a.extend([
        "-uid".to_owned(),
        plan::uid(g).to_string(),
        "-minvni".to_owned(),
        spec.first().to_string(),
        "-maxvni".to_owned(),
        spec.last().to_string(),
    ]);
    a
}

/// keepalived's command line for gateway g, its files in `dir`.
pub fn keepalived_command_line(bin: &Path, ns: &str, g: usize, dir: &Path) -> Vec<String> {
    let f = |x: &str| dir.join(format!("gw{g}.{x}")).display().to_string();
    let mut a: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    a.push(bin.display().to_string());
    a.extend(
        [
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "--vrrp",
            "--use-file",
        ]
        .map(String::from),
    );
    a.extend([
        f("conf"),
        "--pid".into(),
        f("pid"),
        "--vrrp_pid".into(),
        f("vrrp.pid"),
    ]);
    a
}

/// The command line of gateway g's daemon, run inside its namespace `ns`.
pub fn command_line(cfg: &DaemonConfig, spec: &Spec, ns: &str, g: usize) -> Vec<String> {
    let mut a: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    a.push(cfg.bin.display().to_string());
    // An extra `--uid` replaces the gateway's own (a duplicate-UID test).
    if !cfg.extra.iter().any(|x| x == "--uid") {
        a.extend(["--uid".to_owned(), format!("{:#x}", plan::uid(g))]);
    }
    // Where the heartbeats go: the segment's broadcast address, or every other gateway.
    let to: Vec<String> = match spec.underlay {
        plan::Underlay::Segment => vec!["--broadcast".to_owned(), plan::BROADCAST.to_string()],
        plan::Underlay::Ipv6 => vec!["--ipv6".to_owned()],
        plan::Underlay::Routed => spec
            .all_gateways()
            .into_iter()
            .filter(|&p| p != g)
            .flat_map(|p| ["--peer".to_owned(), spec.underlay_of(Some(p)).to_string()])
            .collect(),
    };
    a.extend(
        [
            "--minvni".to_owned(),
            spec.first().to_string(),
            "--maxvni".to_owned(),
            spec.last().to_string(),
            "--interval".to_owned(),
            cfg.interval.clone(),
        ]
        .into_iter()
        .chain(to)
        .chain(["--bind-interface".to_owned(), "eth0".to_owned()])
        // `{g}` in an extra flag stands for the gateway's number (a socket path of its own).
        .chain(cfg.extra.iter().map(|x| x.replace("{g}", &g.to_string()))),
    );
    a
}

/// How a daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Status(ExitStatus),
    /// It did not exit within the bound and was killed.
    Hung,
    NotRunning,
}

impl Exit {
    pub fn success(&self) -> bool {
        matches!(self, Exit::Status(s) if s.success())
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Status(s) => match s.code() {
                Some(c) => write!(f, "{c}"),
                None => write!(f, "{s}"),
            },
            Exit::Hung => f.write_str("hung"),
            Exit::NotRunning => f.write_str("not running"),
        }
    }
}

/// One daemon slot per gateway (index g-1).
#[derive(Debug)]
pub struct Daemons {
    pub cfg: DaemonConfig,
    procs: Vec<Option<Child>>,
    logs: PathBuf,
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill on the PID of a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}

impl Daemons {
    pub fn new(cfg: DaemonConfig, gateways: usize, logs: &Path) -> Daemons {
        Daemons {
            cfg,
            procs: (0..gateways).map(|_| None).collect(),
            logs: logs.to_owned(),
        }
    }

    pub fn log(&self, g: usize) -> PathBuf {
        self.logs.join(format!("gw{g}.log"))
    }

    /// Starts gateway g's daemon in namespace `ns` (its log appended to).
    pub fn start(&mut self, spec: &Spec, ns: &str, g: usize) -> Result<()> {
        let cfg = self.cfg.clone();
        self.start_as(&cfg, spec, ns, g)
    }

    /// Starts gateway g's daemon as `cfg` says rather than as the lab's (a mixed fleet).
    pub fn start_as(&mut self, cfg: &DaemonConfig, spec: &Spec, ns: &str, g: usize) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log(g))
            .map_err(io_err(format!("log of gw{g}")))?;
        let argv = match cfg.kind {
            DaemonKind::Wmgwd2 => command_line(cfg, spec, ns, g),
            DaemonKind::GoOriginal => go_command_line(&cfg.bin, spec, ns, g),
            DaemonKind::Keepalived => {
                let ms = analysis::interval_ms(&cfg.interval).unwrap_or(1000);
                let conf = self.logs.join(format!("gw{g}.conf"));
                std::fs::write(&conf, keepalived_conf(spec, g, ms))
                    .map_err(io_err(format!("write {}", conf.display())))?;
                // A killed keepalived leaves its pid files; a recycled PID in them makes it
                // refuse to start.
                for f in ["pid", "vrrp.pid"] {
                    let _ = std::fs::remove_file(self.logs.join(format!("gw{g}.{f}")));
                }
                keepalived_command_line(&cfg.bin, ns, g, &self.logs)
            }
        };
        let out = log.try_clone().map_err(io_err("log file"))?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(if cfg.kind == DaemonKind::Keepalived {
                Stdio::from(out)
            } else {
                Stdio::null()
            })
            .stderr(log)
            .spawn()
            .map_err(io_err(format!("start gw{g}: {argv:?}")))?;
        self.procs[g - 1] = Some(child);
        Ok(())
    }

    pub fn pid(&self, g: usize) -> Option<u32> {
        self.procs[g - 1].as_ref().map(Child::id)
    }

    /// Has gateway g a daemon that has not exited?
    pub fn alive(&mut self, g: usize) -> bool {
        match self.procs[g - 1].as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends a signal to gateway g's daemon and leaves it running (SIGUSR1 for example).
    pub fn signal(&self, g: usize, sig: i32) {
        if let Some(c) = &self.procs[g - 1] {
            signal(c, sig);
        }
    }

    /// Gateway g's processes: the daemon and its children (keepalived's VRRP process).
    pub fn pids(&self, g: usize) -> Vec<u32> {
        let Some(p) = self.pid(g) else {
            return Vec::new();
        };
        let mut v = vec![p];
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            v.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
        v
    }

    /// kill -9 (children first: keepalived's VRRP process must not see its parent go and clean
    /// up) and reap.
    pub fn kill(&mut self, g: usize) -> Exit {
        let pids = self.pids(g);
        match self.procs[g - 1].take() {
            Some(mut c) => {
                for &p in pids.iter().skip(1).rev() {
                    // SAFETY: kill on a child of a process we started (a PID of ours).
                    unsafe { libc::kill(p as i32, libc::SIGKILL) };
                }
                signal(&c, libc::SIGKILL);
                c.wait().map(Exit::Status).unwrap_or(Exit::Hung)
            }
            None => Exit::NotRunning,
        }
    }

    /// SIGTERM, then waits up to `bound` for it to exit (polling, so it is seen gone at once);
    /// kills it when it does not. Returns how it ended and when it was seen gone.
    pub fn stop(&mut self, g: usize, bound: Duration) -> (Exit, Instant) {
        let Some(mut c) = self.procs[g - 1].take() else {
            return (Exit::NotRunning, Instant::now());
        };
        signal(&c, libc::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return (Exit::Status(s), Instant::now());
            }
            if t0.elapsed() > bound {
                signal(&c, libc::SIGKILL);
                let _ = c.wait();
                return (Exit::Hung, Instant::now());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last `n` lines of gateway g's log.
    pub fn log_tail(&self, g: usize, n: usize) -> Vec<String> {
        let s = std::fs::read_to_string(self.log(g)).unwrap_or_default();
        let mut tail: Vec<String> = s.lines().rev().take(n).map(str::to_owned).collect();
        tail.reverse();
        tail
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for g in 1..=self.procs.len() {
            self.kill(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line() {
        let cfg = DaemonConfig::wmgwd2("/b/wmgwd2", "100ms", &["--dead-after", "5"]);
        assert_eq!(
            command_line(&cfg, &Spec::new(3, 16), "wl1-gw2", 2).join(" "),
            "ip netns exec wl1-gw2 /b/wmgwd2 --uid 0x1002 --minvni 1 --maxvni 16 \
             --interval 100ms --broadcast 10.0.1.255 --bind-interface eth0 --dead-after 5"
        );
    }

    #[test]
    fn the_go_originals_command_line() {
        assert_eq!(
            go_command_line(Path::new("/s/wmgwd2-go"), &Spec::new(3, 30), "wg1-gw3", 3).join(" "),
            "ip netns exec wg1-gw3 /s/wmgwd2-go -uid 4099 -minvni 1 -maxvni 30"
        );
    }

    #[test]
    fn keepalived_configuration_and_command_line() {
        let c = keepalived_conf(&Spec::new(3, 2), 2, 100);
        assert_eq!(
            c,
            "global_defs {\n  vrrp_version 3\n}\n\
             vrrp_instance vni1 {\n  state BACKUP\n  interface vrrp4-1\n  virtual_router_id 1\n  \
             priority 150\n  advert_int 0.1\n  virtual_ipaddress {\n    10.100.1.1/24 dev vrrp4-1\n  }\n}\n\
             vrrp_instance vni2 {\n  state BACKUP\n  interface vrrp4-2\n  virtual_router_id 2\n  \
             priority 200\n  advert_int 0.1\n  virtual_ipaddress {\n    10.100.2.1/24 dev vrrp4-2\n  }\n}\n"
        );
        assert!(keepalived_conf(&Spec::new(3, 1), 1, 1000).contains("advert_int 1\n"));
        assert_eq!(
            keepalived_command_line(Path::new("/usr/sbin/keepalived"), "wb1-gw2", 2, Path::new("/d")).join(" "),
            "ip netns exec wb1-gw2 /usr/sbin/keepalived --dont-fork --log-console --no-syslog --vrrp \
             --use-file /d/gw2.conf --pid /d/gw2.pid --vrrp_pid /d/gw2.vrrp.pid"
        );
    }
}
