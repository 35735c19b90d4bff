//! The daemons: their command line (one function) and their processes (started, signalled,
//! reaped by PID; each logs to `<dir>/gw<g>.log`). Dropping [`Daemons`] kills what still runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::plan::{self, Spec};
use crate::{io_err, Result};

/// How the daemons run: the binary, `--interval`, and extra flags for every gateway.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub bin: PathBuf,
    pub interval: String,
    pub extra: Vec<String>,
}

/// The command line of gateway g's daemon, run inside its namespace `ns`.
pub fn command_line(cfg: &DaemonConfig, spec: &Spec, ns: &str, g: usize) -> Vec<String> {
    let mut a: Vec<String> = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    a.push(cfg.bin.display().to_string());
    a.extend(
        [
            "--uid".to_owned(),
            format!("{:#x}", plan::uid(g)),
            "--minvni".to_owned(),
            spec.first().to_string(),
            "--maxvni".to_owned(),
            spec.last().to_string(),
            "--interval".to_owned(),
            cfg.interval.clone(),
            "--broadcast".to_owned(),
            plan::BROADCAST.to_string(),
            "--bind-interface".to_owned(),
            "eth0".to_owned(),
        ]
        .into_iter()
        .chain(cfg.extra.iter().cloned()),
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
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log(g))
            .map_err(io_err(format!("log of gw{g}")))?;
        let argv = command_line(&self.cfg, spec, ns, g);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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

    /// kill -9 and reap.
    pub fn kill(&mut self, g: usize) -> Exit {
        match self.procs[g - 1].take() {
            Some(mut c) => {
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
        for c in self.procs.iter_mut().flatten() {
            signal(c, libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line() {
        let cfg = DaemonConfig {
            bin: "/b/wmgwd2".into(),
            interval: "100ms".into(),
            extra: vec!["--dead-after".into(), "5".into()],
        };
        assert_eq!(
            command_line(&cfg, &Spec::new(3, 16), "wl1-gw2", 2).join(" "),
            "ip netns exec wl1-gw2 /b/wmgwd2 --uid 0x1002 --minvni 1 --maxvni 16 \
             --interval 100ms --broadcast 10.0.1.255 --bind-interface eth0 --dead-after 5"
        );
    }
}
