//! What `wmgwd2 status` shows: one gateway's view, as a stable JSON document (docs/operations.md
//! lists its fields) and as text that fits a terminal. Pure: the core fills a [`Report`], the
//! control socket carries it, the client renders it.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The JSON document's schema version: fields are only ever added within a version.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub gateway: Gateway,
    pub members: Vec<Member>,
    pub vnis: Vec<VniState>,
    /// Every counter, by name.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The last ownership changes, oldest first.
    pub transitions: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// Hex, as in `--uid`.
    pub uid: String,
    pub incarnation: u64,
    /// `starting`, `ready`, `unseen` (a candidate peer does not hear us: stepped back),
    /// `duplicate-uid` (a later process has our UID: stepped back), `uplink-down`,
    /// `uplink-hold-down`, `draining`, `drained`, `leaving`, `stopping`.
    pub state: String,
    pub interval_ms: u64,
    /// The hold time our heartbeats ask for now (raised under loss our peers measure).
    pub hold_ms: u64,
    /// `--bind-interface`, and whether it is usable.
    pub uplink: Option<String>,
    pub uplink_up: bool,
    /// The managed range, as `first-last`.
    pub range: String,
    pub managed: usize,
    pub owned: usize,
    pub active: usize,
    /// Owned VNIs held down by another program's reason bit; managed VNIs without an interface.
    #[serde(default)]
    pub blocked: usize,
    #[serde(default)]
    pub missing: usize,
    /// With `--go-compat`, which rule names the owners: `original` (the Go original's; phase 0),
    /// `exit-ready` (still the original's; `--go-compat-exit` allows leaving and no original was
    /// heard for that long), `both` (owning under either rule while every member switches),
    /// `siphash` (left compat mode). Absent (null) without `--go-compat`.
    #[serde(default)]
    pub go_compat: Option<String>,
    /// Where our heartbeats go: the broadcast address, the IPv6 group, or each `--peer`.
    #[serde(default)]
    pub heartbeats_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub uid: String,
    pub address: String,
    /// `starting`, `ready`, `left` (a tombstone).
    pub state: String,
    /// `None` for the Go original's legacy frames.
    pub incarnation: Option<u64>,
    pub last_heard_ms_ago: u64,
    pub expires_in_ms: u64,
    pub interval_ms: u64,
    /// Frames of this incarnation heard, and sequence numbers skipped between them.
    pub frames: u64,
    pub lost: u64,
    /// The hold time its last frame asked for.
    #[serde(default)]
    pub hold_ms: u64,
    /// The share of its frames this gateway lost lately, in ‰.
    #[serde(default)]
    pub loss_permille: u16,
    /// Kept alive only by what other members heard (one-way loss from it to us).
    #[serde(default)]
    pub heard_indirectly: bool,
    /// What its heartbeats say of us: `yes`, `indirectly` (only through other members), `no`
    /// (it counts us dead: we step back); absent when it does not say.
    #[serde(default)]
    pub hears_us: Option<String>,
    /// Its candidate set has differed from ours for a while (a split view).
    #[serde(default)]
    pub view_differs: bool,
    /// The VNIs it cannot serve (BLOCKED), as ranges; empty when none.
    #[serde(default)]
    pub blocked: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VniState {
    pub vni: u32,
    /// The owner the hash names among the candidates (this gateway included once ready).
    pub owner: Option<String>,
    /// Whether this gateway's interface for it carries traffic, as the kernel last said.
    pub active: bool,
    /// Why `active` is not what `owner` says, when it is not: `missing`, `held down by reason
    /// bits 0x…`, `no carrier`, `being changed`.
    pub why: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub ms_ago: u64,
    /// VNIs as ranges (`1-3,7`), `none` when empty.
    pub taken: String,
    pub released: String,
    pub reason: String,
}

impl Report {
    /// The text form: one gateway at a glance.
    pub fn render(&self) -> String {
        let g = &self.gateway;
        let mut out = String::new();
        let uplink = match &g.uplink {
            Some(name) => format!("{name} ({})", if g.uplink_up { "up" } else { "down" }),
            None => "any interface".into(),
        };
        let _ = writeln!(
            out,
            "gateway {} ({})  incarnation {}  interval {} ms  hold {} ms  uplink {}",
            g.uid, g.state, g.incarnation, g.interval_ms, g.hold_ms, uplink
        );
        let _ = writeln!(
            out,
            "VNIs {}: {} managed, {} owned, {} active",
            g.range, g.managed, g.owned, g.active
        );
        if !g.heartbeats_to.is_empty() {
            let _ = writeln!(out, "heartbeats to {}", g.heartbeats_to.join(", "));
        }
        if let Some(rule) = &g.go_compat {
            let _ = writeln!(out, "go-compat: {rule}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:<9} {:>10} {:>10} {:>9} {:>9} {:>7} {:>6}  {:<10}",
            "member",
            "address",
            "state",
            "heard ago",
            "expires in",
            "interval",
            "frames",
            "lost",
            "loss",
            "hears us"
        );
        for m in &self.members {
            let mut notes = Vec::new();
            if m.heard_indirectly {
                notes.push("heard only through others".to_owned());
            }
            if m.view_differs {
                notes.push("view differs".to_owned());
            }
            if !m.blocked.is_empty() {
                notes.push(format!("blocked {}", m.blocked));
            }
            let _ = writeln!(
                out,
                "{:<20} {:<22} {:<9} {:>8}ms {:>8}ms {:>7}ms {:>9} {:>7} {:>5.1}%  {:<10} {}",
                m.uid,
                m.address,
                m.state,
                m.last_heard_ms_ago,
                m.expires_in_ms,
                m.interval_ms,
                m.frames,
                m.lost,
                f64::from(m.loss_permille) / 10.0,
                m.hears_us.as_deref().unwrap_or("-"),
                notes.join(", ")
            );
        }
        if self.members.is_empty() {
            let _ = writeln!(out, "(no other member heard)");
        }
        let _ = writeln!(out);
        // VNIs grouped: by owner, then the ones whose kernel state differs.
        let mut by_owner: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        for v in &self.vnis {
            let o = v.owner.clone().unwrap_or_else(|| "none".into());
            by_owner.entry(o).or_default().push(v.vni);
        }
        let _ = writeln!(out, "{:<20} {:>6}  vnis", "owner", "count");
        for (owner, vnis) in &by_owner {
            let mark = if *owner == g.uid {
                " (this gateway)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<20} {:>6}  {}{}",
                owner,
                vnis.len(),
                ranges(vnis),
                mark
            );
        }
        let mut odd: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        for v in &self.vnis {
            if let Some(why) = &v.why {
                odd.entry(why.as_str()).or_default().push(v.vni);
            }
        }
        for (why, vnis) in &odd {
            let _ = writeln!(out, "not as owned: {} ({why})", ranges(vnis));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "recent ownership changes (newest last):");
        for c in self.transitions.iter().rev().take(10).rev() {
            let _ = writeln!(
                out,
                "  {:>8} ms ago  took {}  released {}  ({})",
                c.ms_ago, c.taken, c.released, c.reason
            );
        }
        let nonzero: Vec<String> = self
            .counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out);
        let _ = writeln!(out, "counters: {}", nonzero.join(" "));
        out
    }
}

fn ranges(v: &[u32]) -> String {
    crate::types::vni_ranges(v.iter().map(|&v| crate::types::Vni(v)))
}

/// What `wmgwd2 plan` answers: the moves if members left or joined, from the live candidates
/// and the real assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    pub schema: u32,
    pub candidates_now: Vec<String>,
    pub candidates_then: Vec<String>,
    /// VNIs whose owner would change, grouped by (from, to).
    pub moves: Vec<Move>,
    /// VNIs that would move, in all.
    pub moved: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// `none` when the VNI has no owner.
    pub from: String,
    pub to: String,
    pub count: usize,
    /// As ranges (`1-3,7`).
    pub vnis: String,
}

impl PlanReport {
    /// The text form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "candidates now:  {}", self.candidates_now.join(" "));
        let _ = writeln!(out, "candidates then: {}", self.candidates_then.join(" "));
        if self.moves.is_empty() {
            let _ = writeln!(out, "no VNI would move");
        }
        for m in &self.moves {
            let _ = writeln!(
                out,
                "{:>6} VNIs {} -> {}: {}",
                m.count, m.from, m.to, m.vnis
            );
        }
        out
    }
}

/// The moves from candidates `now` to candidates `then` over `vnis`, under `rule`.
pub fn plan(
    rule: crate::assign::Rule,
    vnis: crate::types::VniRange,
    now: &std::collections::BTreeSet<crate::types::Uid>,
    then: &std::collections::BTreeSet<crate::types::Uid>,
) -> PlanReport {
    let owner = |vni, set: &std::collections::BTreeSet<crate::types::Uid>| {
        rule.owner(vni, set.iter().copied())
    };
    let mut groups: std::collections::BTreeMap<(String, String), Vec<u32>> = Default::default();
    for vni in vnis.iter() {
        let a = owner(vni, now);
        let b = owner(vni, then);
        if a != b {
            let name = |u: Option<crate::types::Uid>| u.map_or("none".into(), |u| u.to_string());
            groups.entry((name(a), name(b))).or_default().push(vni.0);
        }
    }
    let moves: Vec<Move> = groups
        .into_iter()
        .map(|((from, to), v)| Move {
            from,
            to,
            count: v.len(),
            vnis: ranges(&v),
        })
        .collect();
    PlanReport {
        schema: SCHEMA,
        candidates_now: now.iter().map(|u| u.to_string()).collect(),
        candidates_then: then.iter().map(|u| u.to_string()).collect(),
        moved: moves.iter().map(|m| m.count).sum(),
        moves,
    }
}
