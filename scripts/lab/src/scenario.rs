//! A running lab (topology + daemons) and the failover scenario's events, written once: crash
//! (kill -9), start (or restart), stop (SIGTERM), cut (the switch port down), restore.
//!
//! The lab also keeps the liveness record the analysis replays: a gateway is live when its
//! daemon runs and its switch port is up. A gateway whose daemon was killed keeps the protodown
//! state the daemon left (the kernel cannot know); it counts again once its daemon restarts.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::analysis::{Record, Timed};
use crate::daemon::{DaemonConfig, Daemons, Exit};
use crate::kernel::{self, Iface, OwnerMap, Ownership};
use crate::oracle::{self, Oracle};
use crate::plan::Spec;
use crate::topo::{self, Topology};
use crate::{io_err, netns, LabError, Result};

/// One lab at a time per process: the daemons of two labs would compete for the machine.
static LOCK: Mutex<()> = Mutex::new(());

/// Waits for the process's lab lock (held by every lab while it lives).
pub fn lab_lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set by [`interrupt_on_signals`]' handler: every wait returns [`LabError::Interrupted`].
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// For a binary: SIGINT and SIGTERM make waits fail, so the guards tear the lab down.
pub fn interrupt_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Has SIGINT or SIGTERM arrived (after [`interrupt_on_signals`])?
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Sleeps `d` in steps of at most 100 ms; fails at once on SIGINT/SIGTERM (after
/// [`interrupt_on_signals`]).
pub fn nap(d: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if interrupted() {
            return Err(LabError::Interrupted);
        }
        let left = d.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// What a scenario does to one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// kill -9 the daemon (and reap it).
    Crash,
    /// Start the daemon (again).
    Start,
    /// SIGTERM (systemctl stop), waiting (bounded) until it exited.
    Stop,
    /// The gateway's switch port down: cut off from the segment.
    Cut,
    /// The switch port up again.
    Restore,
}

/// What an event did.
#[derive(Debug, Clone, Copy)]
pub struct Acted {
    /// When it began.
    pub at: Instant,
    /// For a stop: how the daemon ended and when it was seen gone.
    pub exit: Option<(Exit, Instant)>,
}

/// Which gateways count in the ownership timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRule {
    /// Its daemon runs and its switch port is up (the drill).
    Daemon,
    /// Its switch port is up, whatever its daemon does: the kernel's point of view, where a
    /// killed daemon's interfaces still answer (the benchmark).
    Port,
}

/// The lab: its daemons (dropped first), its namespaces, its records.
pub struct Lab {
    pub daemons: Daemons,
    pub topo: Topology,
    pub spec: Spec,
    /// The clock of every record (probes, liveness).
    pub epoch: Instant,
    /// Where the daemons log (removed on drop unless `keep_logs`).
    pub dir: PathBuf,
    pub keep_logs: bool,
    /// What owning a VNI means (protodown off, or the gateway IP for keepalived).
    pub ownership: Ownership,
    /// Who should own what.
    pub oracle: Oracle,
    port_up: Vec<bool>,
    liveness: Vec<Timed>,
    port_liveness: Vec<Timed>,
    _lock: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds the lab under a fresh per-run name (`stem` + PID + counter); waits for the
    /// process's lab lock first.
    pub fn up(stem: &str, spec: &Spec, cfg: DaemonConfig) -> Result<Lab> {
        let lock = lab_lock();
        let name = topo::unique_name(stem);
        let dir = std::env::temp_dir().join(format!("wmgwd2-lab-{name}"));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let topo = match Topology::up(&name, spec) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Lab {
            daemons: Daemons::new(cfg, spec.gateways, &dir),
            topo,
            spec: spec.clone(),
            epoch: Instant::now(),
            dir,
            keep_logs: false,
            ownership: Ownership::Link,
            oracle: Oracle::Assign,
            port_up: vec![true; spec.gateways + 1],
            liveness: Vec::new(),
            port_liveness: Vec::new(),
            _lock: lock,
        })
    }

    pub fn name(&self) -> &str {
        &self.topo.name
    }

    pub fn gw(&self, g: usize) -> String {
        self.topo.gw(g)
    }

    pub fn client(&self) -> String {
        self.topo.client()
    }

    /// Since the epoch.
    pub fn since_epoch(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }

    /// Starts gateway g's daemon (as [`Event::Start`]).
    pub fn start(&mut self, g: usize) -> Result<()> {
        self.act(Event::Start, g).map(drop)
    }

    /// Makes `event` happen to gateway g and records g's liveness.
    /// Starts gateway g's daemon as `cfg` says (a mixed fleet: the Go original on some
    /// gateways), recorded as a start like [`Lab::act`]'s.
    pub fn start_as(&mut self, g: usize, cfg: &DaemonConfig) -> Result<Acted> {
        let at = Instant::now();
        let ns = self.gw(g);
        self.daemons.start_as(cfg, &self.spec, &ns, g)?;
        let at_live = self.since_epoch(at);
        let (live, port) = (self.is_live(g), self.port_up[g]);
        self.liveness.push(Timed {
            at: at_live,
            rec: Record::Live { g, live },
        });
        self.port_liveness.push(Timed {
            at: at_live,
            rec: Record::Live { g, live: port },
        });
        Ok(Acted { at, exit: None })
    }

    pub fn act(&mut self, event: Event, g: usize) -> Result<Acted> {
        let at = Instant::now();
        let mut exit = None;
        let mut live_at = at;
        match event {
            Event::Crash => {
                self.daemons.kill(g);
            }
            Event::Start => {
                let ns = self.gw(g);
                self.daemons.start(&self.spec, &ns, g)?;
            }
            Event::Stop => {
                let (e, gone) = self.daemons.stop(g, Duration::from_secs(30));
                // It counts as live until it exited (when its interfaces are all released).
                live_at = gone;
                exit = Some((e, gone));
            }
            Event::Cut | Event::Restore => {
                let up = event == Event::Restore;
                self.topo.set_port(g, up)?;
                self.port_up[g] = up;
            }
        }
        let (live, at_live) = (self.is_live(g), self.since_epoch(live_at));
        self.liveness.push(Timed {
            at: at_live,
            rec: Record::Live { g, live },
        });
        let port = self.port_up[g];
        self.port_liveness.push(Timed {
            at: at_live,
            rec: Record::Live { g, live: port },
        });
        Ok(Acted { at, exit })
    }

    /// Live: the daemon runs (as far as we started and stopped it) and its port is up.
    pub fn is_live(&self, g: usize) -> bool {
        self.daemons.pid(g).is_some() && self.port_up[g]
    }

    pub fn live(&self) -> Vec<usize> {
        (1..=self.spec.gateways)
            .filter(|&g| self.is_live(g))
            .collect()
    }

    /// The liveness changes so far, under `rule`.
    pub fn liveness(&self, rule: LiveRule) -> &[Timed] {
        match rule {
            LiveRule::Daemon => &self.liveness,
            LiveRule::Port => &self.port_liveness,
        }
    }

    /// The owners the lab's oracle predicts when `live` are the live gateways.
    pub fn expected(&self, live: &[usize]) -> OwnerMap {
        oracle::expected_by(self.oracle, &self.spec, live)
    }

    /// Which of gateway g's `vrrp4-<v>` are owned, by VNI.
    pub fn owned(&self, g: usize) -> Result<std::collections::BTreeMap<u32, bool>> {
        kernel::owned(&self.gw(g), self.ownership)
    }

    /// Gateway g's managed interfaces, by VNI.
    pub fn ifaces(&self, g: usize) -> Result<std::collections::BTreeMap<u32, Iface>> {
        kernel::links(&self.gw(g))
    }

    /// Gateway g's `vrrp6-<VNI>` interfaces (a lab with [`crate::plan::Spec::ipv6`]).
    pub fn ifaces6(&self, g: usize) -> Result<std::collections::BTreeMap<u32, Iface>> {
        kernel::links6(&self.gw(g))
    }

    /// The owners of every VNI among the gateways `read`, read in that order.
    pub fn owners(&self, read: &[usize]) -> Result<OwnerMap> {
        kernel::owner_map(&self.spec, read, |g| self.owned(g))
    }

    /// Are the owners among `live` exactly the oracle's?
    pub fn converged(&self, live: &[usize]) -> Result<bool> {
        Ok(kernel::converged(
            self.oracle,
            &self.spec,
            &self.owners(live)?,
            live,
        ))
    }

    /// Waits until `f` holds (polling every 20 ms), at most `bound`; returns how long it took.
    pub fn wait(
        &self,
        what: &str,
        bound: Duration,
        mut f: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        wait_for(what, bound, Duration::from_millis(20), &mut f)
    }

    /// Waits until the lab has converged over `live`.
    pub fn wait_converged(&self, live: &[usize], bound: Duration) -> Result<Duration> {
        self.wait(&format!("convergence of gateways {live:?}"), bound, || {
            self.converged(live)
        })
    }

    /// `ip -n <gateway g's namespace> ARGS`.
    pub fn ip_gw(&self, g: usize, args: &[&str]) -> Result<String> {
        netns::ip(&self.gw(g), args)
    }
}

/// Polls `f` every `poll` until it holds; fails after `bound` or on an interrupt.
pub fn wait_for(
    what: &str,
    bound: Duration,
    poll: Duration,
    f: &mut dyn FnMut() -> Result<bool>,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        if f()? {
            return Ok(t0.elapsed());
        }
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LabError::Interrupted);
        }
        if t0.elapsed() >= bound {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                bound,
            });
        }
        thread::sleep(poll);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            for g in 1..=self.spec.gateways {
                eprintln!("--- {} (last 40 lines)", self.daemons.log(g).display());
                for l in self.daemons.log_tail(g, 40) {
                    eprintln!("{l}");
                }
            }
        }
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
