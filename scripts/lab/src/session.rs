//! A measured lab: the lab plus its probes (one ownership monitor per gateway, the GARP capture
//! and the pings at the client), the starting state, the wait for a settled owner map, and the
//! figures of one event. The drill and the benchmark are built on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use crate::analysis::{self, Anomalies, GarpStats, Record, Timed};
use crate::kernel::{self, OwnerMap};
use crate::plan;
use crate::probe::{GarpSniffer, Monitor, Pinger};
use crate::scenario::{self, Lab, LiveRule};
use crate::{LabError, Result};

/// The lab and its probes (dropped first, then the lab).
pub struct Session {
    /// Who counts in the ownership timeline.
    pub rule: LiveRule,
    /// The longest wait for any condition.
    pub bound: Duration,
    /// How long the owner map must be still to count as settled.
    pub stable: Duration,
    /// How often the owner map is read while waiting.
    pub poll: Duration,
    /// The VNIs whose gateway IPs the client pings.
    pub samples: Vec<u32>,
    monitors: Vec<Monitor>,
    sniffer: GarpSniffer,
    pinger: Option<Pinger>,
    snapshot: Vec<Timed>,
    macs: BTreeMap<(usize, u32), String>,
    pub lab: Lab,
}

/// The owner map after an event.
#[derive(Debug, Clone)]
pub struct Settled {
    pub map: OwnerMap,
    /// When it last changed.
    pub changed: Instant,
    /// Converged (and still) within the bound.
    pub ok: bool,
}

/// What one event did, from the event to now.
#[derive(Debug, Clone)]
pub struct Figures {
    /// VNIs whose owner changed, with the new owners.
    pub moved: OwnerMap,
    pub garps: GarpStats,
    /// The longest time without a ping reply, and its VNI.
    pub gap: Duration,
    pub gap_vni: Option<u32>,
    pub anomalies: Anomalies,
}

impl Session {
    /// Starts the watchers on a lab whose daemons have not started: a monitor per gateway, the
    /// GARP capture, the starting state and every `vrrp4-<v>`'s MAC.
    pub fn watch(lab: Lab, rule: LiveRule, bound: Duration, stable: Duration) -> Result<Session> {
        let epoch = lab.epoch;
        let monitors = (1..=lab.spec.gateways)
            .map(|g| Monitor::start(&lab.gw(g), g, lab.ownership, epoch, bound))
            .collect::<Result<Vec<_>>>()?;
        let sniffer = GarpSniffer::start(&lab.client(), epoch)?;
        let at = lab.since_epoch(Instant::now());
        let mut snapshot = Vec::new();
        let mut macs = BTreeMap::new();
        for g in 1..=lab.spec.gateways {
            for (vni, owned) in lab.owned(g)? {
                snapshot.push(Timed {
                    at,
                    rec: Record::Own { g, vni, owned },
                });
            }
            for (vni, i) in lab.ifaces(g)? {
                macs.insert((g, vni), i.mac);
            }
        }
        Ok(Session {
            lab,
            rule,
            bound,
            stable,
            poll: Duration::from_millis(50),
            samples: Vec::new(),
            monitors,
            sniffer,
            pinger: None,
            snapshot,
            macs,
        })
    }

    /// Every ownership and liveness record so far.
    pub fn records(&self) -> Vec<Timed> {
        let mut r = self.snapshot.clone();
        r.extend_from_slice(self.lab.liveness(self.rule));
        for m in &self.monitors {
            r.extend(m.records());
        }
        r
    }

    /// Waits until the lab has converged among its live gateways (daemon running, port up) and
    /// the owner map has been still for `stable`, at most `bound` after `t0`.
    pub fn settle(&self, t0: Instant) -> Result<Settled> {
        let live = self.lab.live();
        let mut last: Option<OwnerMap> = None;
        let mut changed = Instant::now();
        loop {
            let m = self.lab.owners(&live)?;
            let now = Instant::now();
            if last.as_ref() != Some(&m) {
                last = Some(m.clone());
                changed = now;
            }
            let conv = kernel::converged(self.lab.oracle, &self.lab.spec, &m, &live);
            if conv && now - changed >= self.stable {
                return Ok(Settled {
                    map: m,
                    changed,
                    ok: true,
                });
            }
            if now - t0 > self.bound {
                return Ok(Settled {
                    map: m,
                    changed: now,
                    ok: false,
                });
            }
            if scenario::interrupted() {
                return Err(LabError::Interrupted);
            }
            thread::sleep(self.poll);
        }
    }

    /// Starts every gateway's daemon and waits until settled; also returns when they started.
    pub fn start_all(&mut self) -> Result<(Settled, Instant)> {
        let t0 = Instant::now();
        for g in 1..=self.lab.spec.gateways {
            self.lab.start(g)?;
        }
        Ok((self.settle(t0)?, t0))
    }

    /// Picks up to 3 VNIs owned (in `map`) by each of `gws` (every 7th one), 8 at most, pings
    /// their gateway IPs from the client every `every`, and waits (bounded) for a first reply
    /// from each.
    pub fn start_pings(&mut self, map: &OwnerMap, gws: &[usize], every: Duration) -> Result<()> {
        let mut samples: Vec<u32> = Vec::new();
        for &g in gws {
            let owned = map.iter().filter(|(_, o)| o.contains(&g)).map(|(v, _)| *v);
            for v in owned.step_by(7).take(3) {
                if !samples.contains(&v) {
                    samples.push(v);
                }
            }
        }
        samples.truncate(8);
        let targets: Vec<Ipv4Addr> = samples.iter().map(|&v| plan::gateway_ip(v)).collect();
        let pinger = Pinger::start(&self.lab.client(), &targets, every, self.lab.epoch)?;
        scenario::wait_for(
            "a first ping reply from every sampled gateway IP",
            self.bound,
            self.poll,
            &mut || Ok(targets.iter().all(|&t| !pinger.replies(t).is_empty())),
        )?;
        self.pinger = Some(pinger);
        self.samples = samples;
        Ok(())
    }

    /// The reply times of sampled VNI v's gateway IP so far.
    pub fn replies(&self, v: u32) -> Vec<Duration> {
        self.pinger
            .as_ref()
            .map(|p| p.replies(plan::gateway_ip(v)))
            .unwrap_or_default()
    }

    /// The figures of an event at `t0`, up to `t1`, against the owner maps before and after.
    pub fn figures(&self, prev: &OwnerMap, map: &OwnerMap, t0: Instant, t1: Instant) -> Figures {
        let (e0, e1) = (self.lab.since_epoch(t0), self.lab.since_epoch(t1));
        let moved = analysis::moved(prev, map);
        let shared = self.lab.spec.mac == plan::MacMode::Shared;
        let garps = analysis::garp_stats(&self.sniffer.garps(), &moved, &self.macs, shared, e0, e1);
        let (gap, gap_vni) = self
            .samples
            .iter()
            .map(|&v| (analysis::max_gap(&self.replies(v), e0, e1), Some(v)))
            .max()
            .unwrap_or_default();
        let anomalies = analysis::anomalies(&self.lab.spec, &self.records(), e0, e1);
        Figures {
            moved,
            garps,
            gap,
            gap_vni,
            anomalies,
        }
    }
}

impl Session {
    /// Writes the raw records into the lab's directory, beside the daemons' logs: `mon<g>.txt`
    /// (each gateway's monitor, as ip printed it), `wall0.txt` (the lab's epoch in µs since the
    /// Unix epoch: ip's stamps minus this are the lab's clock), `garps.txt` ("t vni mac"),
    /// `ping<v>.txt` (reply times) and `live.txt` ("t g live"); times in seconds on the lab's
    /// clock.
    pub fn save(&self) -> Result<()> {
        let dir = &self.lab.dir;
        let w = |name: String, s: String| {
            std::fs::write(dir.join(&name), s).map_err(crate::io_err(format!("write {name}")))
        };
        let t = |d: Duration| format!("{:.6}", d.as_secs_f64());
        for m in &self.monitors {
            let lines: String = m.lines().into_iter().map(|(_, l)| l + "\n").collect();
            w(format!("mon{}.txt", m.gateway()), lines)?;
        }
        if let Some(m) = self.monitors.first() {
            w("wall0.txt".into(), format!("{}\n", m.wall0()))?;
        }
        let garps: String = self
            .sniffer
            .garps()
            .iter()
            .map(|x| format!("{} {} {}\n", t(x.at), x.vni, x.mac))
            .collect();
        w("garps.txt".into(), garps)?;
        for &v in &self.samples {
            let r: String = self.replies(v).into_iter().map(|x| t(x) + "\n").collect();
            w(format!("ping{v}.txt"), r)?;
        }
        let live: String = self
            .lab
            .liveness(self.rule)
            .iter()
            .filter_map(|r| match r.rec {
                Record::Live { g, live } => Some(format!("{} {g} {}\n", t(r.at), u8::from(live))),
                Record::Own { .. } => None,
            })
            .collect();
        w("live.txt".into(), live)
    }
}

/// Packets the kernel dropped machine-wide for a full input backlog.
pub fn backlog_drops() -> u64 {
    analysis::softnet_drops(&std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default())
}
