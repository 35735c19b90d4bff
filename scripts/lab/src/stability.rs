//! What an ownership timeline says about stability (issue 9), as pure functions tested on
//! recorded inputs: per gateway the protodown changes (flips) while it was live; the takeovers
//! (a live gateway's `vrrp4-<v>` became owned) that no failure explains (spurious); the VNIs
//! with two live owners or none, and for how long (VNI-time); and for a real failure, the time
//! from the fault until the survivors had taken the failed gateway's VNIs.
//!
//! The records are the ones [`crate::analysis::anomalies`] replays: ownership from each
//! gateway's `ip monitor` (every change, stamped by ip; not a periodic sample, so a flip shorter
//! than any polling period is still seen) and liveness from the lab's own actions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::analysis::{anomalies, Anomalies, Record, Timed};
use crate::kernel::OwnerMap;
use crate::plan::Spec;

/// A real failure: gateway `gateway` stopped being live at `at`; `after` are the owners the
/// oracle gives the survivors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub gateway: usize,
    pub at: Duration,
    pub after: OwnerMap,
}

/// How the survivors took a failed gateway's VNIs, times from the fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    /// The VNIs the failed gateway owned at the fault.
    pub vnis: usize,
    /// Of those, how many had a live owner again by the window's end (one a survivor already
    /// owned at the fault counts at once).
    pub taken: usize,
    /// The first takeover of one of them by a survivor.
    pub first: Option<Duration>,
    /// When the last of them had a live owner again (`None` unless all did).
    pub all: Option<Duration>,
}

/// The stability figures of one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stability {
    /// The window's length.
    pub window: Duration,
    /// Protodown changes per gateway (index g-1) while it was live.
    pub flips: Vec<usize>,
    /// Takeovers by live gateways.
    pub takeovers: usize,
    /// Takeovers no failure explains: every takeover, except each survivor's first takeover,
    /// after the failure, of a failed gateway's VNI that the oracle gives it.
    pub spurious: usize,
    /// The VNIs of those.
    pub spurious_vnis: BTreeSet<u32>,
    /// VNIs with two or more live owners, or none (with the VNI-time totals).
    pub anomalies: Anomalies,
    /// With a failure in the window.
    pub detection: Option<Detection>,
}

impl Stability {
    /// Protodown changes over every gateway.
    pub fn total_flips(&self) -> usize {
        self.flips.iter().sum()
    }
}

/// Replays `records` (any order; sorted here, stably, by time) and gives the figures of
/// `[t0, t1]`, with `failure` in it when given.
pub fn stability(
    spec: &Spec,
    records: &[Timed],
    t0: Duration,
    t1: Duration,
    failure: Option<&Failure>,
) -> Stability {
    let mut recs = records.to_vec();
    recs.sort_by_key(|r| r.at);
    let mut own: BTreeMap<(usize, u32), bool> = BTreeMap::new();
    let mut live = vec![false; spec.gateways + 1];
    let mut out = Stability {
        window: t1.saturating_sub(t0),
        flips: vec![0; spec.gateways],
        ..Stability::default()
    };
    // The failed gateway's VNIs at the fault, and when each had a live owner again.
    let mut dead: Option<BTreeSet<u32>> = None;
    let mut covered: BTreeMap<u32, Duration> = BTreeMap::new();
    let mut explained: BTreeSet<u32> = BTreeSet::new();
    let owned_by_other = |own: &BTreeMap<(usize, u32), bool>, live: &[bool], f: usize, v: u32| {
        (1..=spec.gateways).any(|g| g != f && live[g] && own.get(&(g, v)) == Some(&true))
    };
    for r in &recs {
        if r.at > t1 {
            break;
        }
        if let Some(f) = failure {
            if dead.is_none() && r.at >= f.at && f.at >= t0 {
                let d: BTreeSet<u32> = spec
                    .vni_range()
                    .filter(|&v| own.get(&(f.gateway, v)) == Some(&true))
                    .collect();
                for &v in &d {
                    if owned_by_other(&own, &live, f.gateway, v) {
                        covered.insert(v, Duration::ZERO);
                    }
                }
                dead = Some(d);
            }
        }
        match r.rec {
            Record::Live { g, live: l } => live[g] = l,
            Record::Own { g, vni, owned } => {
                let was = own.insert((g, vni), owned);
                if r.at < t0 || !live[g] || !spec.vni_range().contains(&vni) {
                    continue;
                }
                let Some(was) = was else { continue };
                if was == owned {
                    continue;
                }
                out.flips[g - 1] += 1;
                if !owned {
                    continue;
                }
                out.takeovers += 1;
                let mut ok = false;
                if let (Some(f), Some(d)) = (failure, dead.as_ref()) {
                    if g != f.gateway && d.contains(&vni) {
                        covered.entry(vni).or_insert(r.at - f.at);
                        ok = f.after.get(&vni).is_some_and(|o| o == &[g]) && explained.insert(vni);
                    }
                }
                if !ok {
                    out.spurious += 1;
                    out.spurious_vnis.insert(vni);
                }
            }
        }
    }
    if let Some(d) = dead.as_ref() {
        let first = covered.values().copied().filter(|t| !t.is_zero()).min();
        let all =
            (covered.len() == d.len()).then(|| covered.values().copied().max().unwrap_or_default());
        out.detection = Some(Detection {
            vnis: d.len(),
            taken: covered.len(),
            first,
            all,
        });
    }
    out.anomalies = anomalies(spec, records, t0, t1);
    out
}

/// The ownership state the records end in, per (gateway, VNI).
pub fn final_state(records: &[Timed]) -> BTreeMap<(usize, u32), bool> {
    let mut recs = records.to_vec();
    recs.sort_by_key(|r| r.at);
    let mut own = BTreeMap::new();
    for r in recs {
        if let Record::Own { g, vni, owned } = r.rec {
            own.insert((g, vni), owned);
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn own(at: u64, g: usize, vni: u32, owned: bool) -> Timed {
        Timed {
            at: ms(at),
            rec: Record::Own { g, vni, owned },
        }
    }

    fn live(at: u64, g: usize, l: bool) -> Timed {
        Timed {
            at: ms(at),
            rec: Record::Live { g, live: l },
        }
    }

    /// gw1 owns VNIs 1-2, gw2 owns 3-4, gw3 owns 5-6; all live from 0.
    fn start() -> Vec<Timed> {
        let mut r = vec![live(0, 1, true), live(0, 2, true), live(0, 3, true)];
        for v in 1..=6u32 {
            let o = (v as usize).div_ceil(2);
            for g in 1..=3 {
                r.push(own(0, g, v, g == o));
            }
        }
        r
    }

    #[test]
    fn a_quiet_window_has_nothing() {
        let spec = Spec::new(3, 6);
        let s = stability(&spec, &start(), ms(100), ms(10_000), None);
        assert_eq!(s.flips, vec![0, 0, 0]);
        assert_eq!((s.takeovers, s.spurious), (0, 0));
        assert_eq!(s.anomalies, Anomalies::default());
        assert_eq!(s.detection, None);
        assert_eq!(s.window, ms(9900));
    }

    #[test]
    fn a_missed_peer_is_a_spurious_takeover_and_a_double_owner() {
        let spec = Spec::new(3, 6);
        let mut r = start();
        // gw2 misses gw1's heartbeats: takes VNI 1 at 1000, gives it back at 1250.
        r.push(own(1000, 2, 1, true));
        r.push(own(1250, 2, 1, false));
        // Before the window: not counted.
        r.push(own(50, 3, 2, true));
        r.push(own(60, 3, 2, false));
        let s = stability(&spec, &r, ms(100), ms(5000), None);
        assert_eq!(s.flips, vec![0, 2, 0]);
        assert_eq!((s.takeovers, s.spurious), (1, 1));
        assert_eq!(s.spurious_vnis, BTreeSet::from([1]));
        assert_eq!(s.anomalies.double_vnis, 1);
        assert_eq!(s.anomalies.double_max, ms(250));
        assert_eq!(s.anomalies.double_time, ms(250));
        assert_eq!(s.anomalies.ownerless_vnis, 0);
    }

    #[test]
    fn a_failure_is_detected_when_the_survivors_take_its_vnis() {
        let spec = Spec::new(3, 6);
        let mut r = start();
        // gw3 fails at 2000 (VNIs 5 and 6); the oracle gives 5 to gw1 and 6 to gw2.
        r.push(live(2000, 3, false));
        // gw3's own release afterwards is not counted (not live).
        r.push(own(2010, 3, 5, false));
        r.push(own(2240, 1, 5, true));
        r.push(own(2260, 2, 6, true));
        // A takeover the oracle does not give: gw2 takes VNI 5 too, and releases it.
        r.push(own(2300, 2, 5, true));
        r.push(own(2350, 2, 5, false));
        let f = Failure {
            gateway: 3,
            at: ms(2000),
            after: [(5, vec![1]), (6, vec![2])].into(),
        };
        let s = stability(&spec, &r, ms(2000), ms(4000), Some(&f));
        assert_eq!(s.flips, vec![1, 3, 0]);
        assert_eq!((s.takeovers, s.spurious), (3, 1));
        assert_eq!(
            s.detection,
            Some(Detection {
                vnis: 2,
                taken: 2,
                first: Some(ms(240)),
                all: Some(ms(260)),
            })
        );
        assert_eq!(s.anomalies.ownerless_vnis, 2);
        assert_eq!(s.anomalies.ownerless_max, ms(260));
        assert_eq!(s.anomalies.ownerless_time, ms(500));
        assert_eq!(s.anomalies.double_time, ms(50));
        // Not all taken by the end of a shorter window.
        let s = stability(&spec, &r, ms(2000), ms(2250), Some(&f));
        let d = s.detection.unwrap();
        assert_eq!((d.taken, d.first, d.all), (1, Some(ms(240)), None));
    }

    #[test]
    fn a_vni_a_survivor_already_owned_counts_as_taken_at_the_fault() {
        let spec = Spec::new(3, 6);
        let mut r = start();
        r.push(own(500, 1, 5, true)); // spurious, before the failure
        r.push(live(2000, 3, false));
        r.push(own(2280, 2, 6, true));
        let f = Failure {
            gateway: 3,
            at: ms(2000),
            after: [(5, vec![1]), (6, vec![2])].into(),
        };
        let s = stability(&spec, &r, ms(100), ms(4000), Some(&f));
        let d = s.detection.unwrap();
        assert_eq!(
            (d.vnis, d.taken, d.first, d.all),
            (2, 2, Some(ms(280)), Some(ms(280)))
        );
        assert_eq!(s.spurious, 1);
        assert!(final_state(&r)[&(2, 6)]);
    }

    /// A real run, `wmgwd2-lab loss -g 3 -v 6 -i 100ms --loss 20 --duration 12s --fail-after 8`
    /// (wmgwd2 at 6258bcc, before issue 9's detection), saved its monitors, liveness and loss
    /// window; replayed here they give the table it printed:
    ///   | 20 % loss                | 8.0 s | 4 (2 VNIs) | 0 / 2 / 6 | 2 VNIs, 0.40 VNI-s, longest 99 ms | none | - |
    ///   | gw3 port down, 20 % loss | 4.0 s | 0 | 2 / 1 / - | none | 3 VNIs, 0.34 VNI-s, longest 114 ms | 113 ms / 114 ms (3 VNIs) |
    #[test]
    fn a_recorded_loss_run_replays_to_its_table() {
        use crate::analysis::timeline;
        use crate::kernel::Ownership;
        const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loss-g3-v6");
        let read = |f: &str| std::fs::read_to_string(format!("{DIR}/{f}")).unwrap();
        let secs = |w: &str| Duration::from_secs_f64(w.parse().unwrap());
        let wall0: u64 = read("wall0.txt").trim().parse().unwrap();
        let spec = Spec::new(3, 6);
        // Before the daemons start, every vrrp4-<v> is up with protodown off.
        let mut recs: Vec<Timed> = (1..=3)
            .flat_map(|g| (1..=6).map(move |vni| own(0, g, vni, true)))
            .collect();
        let mut down = None;
        for l in read("live.txt").lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (at, g, l) = (secs(w[0]), w[1].parse().unwrap(), w[2] == "1");
            if !l {
                down = Some((g, at));
            }
            recs.push(Timed {
                at,
                rec: Record::Live { g, live: l },
            });
        }
        for g in 1..=3 {
            let lines: Vec<(Duration, String)> = read(&format!("mon{g}.txt"))
                .lines()
                .map(|l| (Duration::ZERO, l.to_owned()))
                .collect();
            recs.extend(timeline(&lines, g, Ownership::Link, wall0));
        }
        let w: Vec<String> = read("loss.txt")
            .split_whitespace()
            .map(String::from)
            .collect();
        let (t_loss, t_end) = (secs(&w[1]), secs(&w[2]));
        let (gw, at) = down.unwrap();
        assert_eq!(gw, 3);
        let f = Failure {
            gateway: 3,
            at,
            after: crate::oracle::expected(&spec, &[1, 2]),
        };
        let loss = stability(&spec, &recs, t_loss, at, None);
        assert_eq!(loss.flips, vec![0, 2, 6]);
        assert_eq!((loss.spurious, loss.spurious_vnis.len()), (4, 2));
        let a = &loss.anomalies;
        assert_eq!((a.double_vnis, a.ownerless_vnis), (2, 0));
        assert_eq!(format!("{:.2}", a.double_time.as_secs_f64()), "0.40");
        assert_eq!(a.double_max.as_millis(), 99);
        let failed = stability(&spec, &recs, at, t_end, Some(&f));
        assert_eq!(&failed.flips[..2], &[2, 1]);
        assert_eq!(failed.spurious, 0);
        let a = &failed.anomalies;
        assert_eq!((a.double_vnis, a.ownerless_vnis), (0, 3));
        assert_eq!(format!("{:.2}", a.ownerless_time.as_secs_f64()), "0.34");
        assert_eq!(a.ownerless_max.as_millis(), 114);
        let d = failed.detection.unwrap();
        let ms = |t: Option<Duration>| t.map(|t| t.as_millis());
        assert_eq!(
            (d.vnis, d.taken, ms(d.first), ms(d.all)),
            (3, 3, Some(113), Some(114))
        );
        // The timeline ends in the state the kernel had (the run checked it).
        let last = final_state(&recs);
        assert_eq!(
            (1..=6).filter(|&v| last[&(3, v)]).count(),
            0,
            "gw3 released all"
        );
    }
}
