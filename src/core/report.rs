//! The core's state as a [`Report`] (`wmgwd2 status`).

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Core, Phase, Stats};
use crate::links::LinkState;
use crate::liveness::PeerState;
use crate::status::{Change, Gateway, Member, Report, VniState, SCHEMA};
use crate::types::{vni_ranges, Uid};

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Stats {
    /// Every counter that is not zero, as `name=value` separated by spaces (for log lines).
    pub fn summary(&self) -> String {
        self.counters()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every counter by name; the counters kept by reason as `name.reason`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        for (k, v) in [
            ("frames_received", self.frames_received),
            ("frames_stale", self.frames_stale),
            ("leaves_refuted", self.leaves_refuted),
            ("log_lines_suppressed", self.log_lines_suppressed),
            ("uid_conflicts", self.uid_conflicts),
            ("one_way_in", self.one_way_in),
            ("one_way_out", self.one_way_out),
            ("split_views", self.split_views),
            ("socket_drops", self.socket_drops),
            ("local_stalls", self.local_stalls),
            ("late_wakes", self.late_wakes),
            ("heartbeats_sent", self.heartbeats_sent),
            ("send_errors", self.send_errors),
            ("actions_applied", self.actions_applied),
            ("actions_failed", self.actions_failed),
            ("garps_sent", self.garps_sent),
            ("garp_errors", self.garp_errors),
            ("resyncs", self.resyncs),
        ] {
            c.insert(k.to_owned(), v);
        }
        for (name, map) in [
            ("frames_malformed", &self.frames_malformed),
            ("frames_rejected", &self.frames_rejected),
            ("frames_refused", &self.frames_refused),
            ("ownership_changes", &self.ownership_changes),
        ] {
            c.insert(name.to_owned(), map.values().sum());
            for (reason, v) in map {
                c.insert(format!("{name}.{reason}"), *v);
            }
        }
        c
    }
}

impl Core {
    /// The candidates now (ready members, this gateway once ready), and what `wmgwd2 plan`
    /// answers when `without` leave and `with` join.
    pub fn plan(&self, without: &[Uid], with: &[Uid]) -> crate::status::PlanReport {
        let now = self.view_members();
        let mut then = now.clone();
        for u in without {
            then.remove(u);
        }
        then.extend(with.iter().copied());
        crate::status::plan(self.rule(), self.cfg.vnis(), &now, &then)
    }

    /// This gateway's view at `now`. `extra` are counters the shell keeps (heartbeats sent).
    pub fn report(&self, now: Instant, incarnation: u64, extra: &Stats) -> Report {
        self.report_with(now, incarnation, extra, true)
    }

    /// The same without the per-VNI list and the transitions (`vnis` and `transitions` empty):
    /// what `/metrics` needs, which uses only totals and counters. At 1000 VNIs those lists are
    /// nearly all of a report's cost (each kept transition's VNI sets become range strings).
    pub fn report_totals(&self, now: Instant, incarnation: u64, extra: &Stats) -> Report {
        self.report_with(now, incarnation, extra, false)
    }

    fn report_with(&self, now: Instant, incarnation: u64, extra: &Stats, per_vni: bool) -> Report {
        let state = match &self.phase {
            Phase::Leaving { exit: false, .. } => "draining",
            Phase::Leaving { .. } => "leaving",
            Phase::Stopping { .. } | Phase::Done => "stopping",
            _ if self.readiness.drained() => "drained",
            _ if self.readiness.ready() && self.yield_until.is_some() => "duplicate-uid",
            _ if self.readiness.ready() && !self.unseen_by.is_empty() => "unseen",
            _ if self.readiness.ready() => "ready",
            _ if !self.uplink_usable() && self.links.uplink_name().is_some() => "uplink-down",
            _ if self.readiness.uplink_holding() => "uplink-hold-down",
            _ => "starting",
        };
        let members: Vec<Member> = self
            .live
            .peers()
            .iter()
            .map(|(uid, p)| Member {
                uid: uid.to_string(),
                address: p.addr.to_string(),
                state: match p.state {
                    PeerState::Starting => "starting",
                    PeerState::Ready => "ready",
                    PeerState::Left => "left",
                }
                .into(),
                incarnation: p.incarnation,
                last_heard_ms_ago: ms(now.saturating_duration_since(p.last_heard)),
                expires_in_ms: ms(p.deadline.saturating_duration_since(now)),
                interval_ms: ms(p.interval),
                frames: p.frames,
                lost: p.lost,
                hold_ms: ms(p.hold),
                loss_permille: p.loss.permille(),
                heard_indirectly: p.indirect,
                hears_us: match (&p.about_us, p.state) {
                    (a, PeerState::Ready | PeerState::Starting) if a.echoes => Some(
                        if a.missing_us > 0 {
                            "no"
                        } else if a.our_sequence.is_some() && !a.direct {
                            "indirectly"
                        } else {
                            "yes"
                        }
                        .into(),
                    ),
                    _ => None,
                },
                view_differs: self.split_with.contains(uid),
                blocked: vni_ranges(p.about_us.blocked.iter().copied()),
            })
            .collect();
        let (candidates, mine) = if per_vni {
            (self.view_members(), self.unservable())
        } else {
            Default::default()
        };
        let vnis = per_vni
            .then(|| self.cfg.vnis().iter())
            .into_iter()
            .flatten()
            .map(|vni| {
                let owner = self.owner_of(vni, &candidates, &mine);
                // A VNI's interfaces (IPv4, IPv6, or both): it is active when any of them is;
                // the first one that is not as its owner wants it says why.
                let links: Vec<&LinkState> = self.links.of_vni(vni).map(|(_, l)| l).collect();
                let active = links.iter().any(|l| l.active());
                let ours = owner == Some(self.me);
                let wrong = links.iter().find(|l| l.active() != ours).copied();
                let why = match (links.is_empty(), wrong) {
                    (true, _) => Some("missing".to_owned()),
                    (false, None) => None,
                    (false, Some(_)) if self.blocked.contains_key(&vni) => Some(format!(
                        "held down by reason bits {:#x}",
                        self.blocked[&vni]
                    )),
                    (false, Some(l)) if ours && !l.protodown && !(l.carrier && l.running) => {
                        Some("no carrier".to_owned())
                    }
                    (false, Some(_)) => Some("being changed".to_owned()),
                };
                VniState {
                    vni: vni.0,
                    owner: owner.map(|u| u.to_string()),
                    active,
                    why,
                }
            })
            .collect();
        let mut stats = self.stats.clone();
        stats.heartbeats_sent = extra.heartbeats_sent;
        stats.send_errors = extra.send_errors;
        Report {
            schema: SCHEMA,
            gateway: Gateway {
                uid: self.me.to_string(),
                incarnation,
                state: state.into(),
                interval_ms: ms(self.cfg.interval),
                hold_ms: ms(self.hold),
                uplink: self.links.uplink_name().map(str::to_owned),
                uplink_up: self.uplink_usable(),
                range: self.cfg.vnis().to_string(),
                managed: self.links.managed_vnis(),
                owned: self.owned.len(),
                active: crate::types::count_vnis(self.garps.active().keys()),
                blocked: self.blocked.len(),
                missing: self.missing.len(),
                go_compat: self.cfg.go_compat.then(|| {
                    match self.compat_phase {
                        0 => "original",
                        super::compat::READY => "exit-ready",
                        super::compat::UNION => "both",
                        _ => "siphash",
                    }
                    .to_owned()
                }),
                heartbeats_to: self
                    .cfg
                    .destinations()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            members,
            vnis,
            counters: stats.counters(),
            transitions: self
                .transitions
                .iter()
                .filter(|_| per_vni)
                .map(|t| Change {
                    ms_ago: ms(now.saturating_duration_since(t.at)),
                    taken: vni_ranges(t.taken.iter().copied()),
                    released: vni_ranges(t.released.iter().copied()),
                    reason: t.reason.clone(),
                })
                .collect(),
        }
    }
}
