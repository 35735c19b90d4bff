//! Heartbeat loss, injected with nftables inside a gateway's namespace (issue 9): a table
//! `ip wmgwd2lab` with one `input` chain that drops a share of the *received* heartbeats (UDP to
//! port 3000), chosen per packet with `numgen random mod 100 < N`, independently on every
//! gateway; or every heartbeat of one peer (one-way loss: match the peer's source address at
//! the receiver). Each drop rule is preceded by a counting rule with the same match, so the
//! counters say how many heartbeats were offered to the rule and how many it dropped: the
//! measured drop share.
//!
//! ```text
//!  table ip wmgwd2lab {
//!    chain input {
//!      type filter hook input priority -10; policy accept;
//!      ip saddr 10.0.1.1 udp dport 3000 counter comment "offered:gw1"
//!      ip saddr 10.0.1.1 udp dport 3000 counter drop comment "dropped:gw1"       (100 %)
//!      ip saddr != 10.0.1.2 udp dport 3000 counter comment "offered:all"
//!      ip saddr != 10.0.1.2 udp dport 3000 numgen random mod 100 < 20 counter drop comment "dropped:all"
//!    }
//!  }
//! ```
//! The gateway's own heartbeats (the kernel loops a broadcast back to its sender) are never
//! matched. The script and the counters' parser are pure; [`apply`], [`counters`] and [`clear`]
//! run `nft` in the namespace (`ip netns exec`). Deleting the namespace deletes the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::plan;
use crate::{io_err, LabError, Result};

/// The table every rule lives in.
pub const TABLE: &str = "wmgwd2lab";
/// The heartbeat port the rules match.
pub const PORT: u16 = 3000;

/// One drop rule at a gateway: `percent` of the heartbeats received from gateway `from` (or
/// from every other host on the segment when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drop {
    pub from: Option<usize>,
    /// 1-100.
    pub percent: u8,
}

/// The loss of a whole lab: `percent` of the heartbeats each gateway receives, independently
/// per gateway, and one-way losses `(a, b)`: every heartbeat of gateway a dropped at gateway b.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loss {
    pub percent: u8,
    pub one_way: Vec<(usize, usize)>,
}

impl Loss {
    /// Gateway g's drop rules, one-way ones first (a heartbeat they drop is not offered to the
    /// independent loss).
    pub fn at(&self, g: usize) -> Vec<Drop> {
        let mut d: Vec<Drop> = self
            .one_way
            .iter()
            .filter(|&&(_, b)| b == g)
            .map(|&(a, _)| Drop {
                from: Some(a),
                percent: 100,
            })
            .collect();
        if self.percent > 0 {
            d.push(Drop {
                from: None,
                percent: self.percent,
            });
        }
        d
    }

    /// "20 % on every gateway, gw1's heartbeats dropped at gw2"
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.percent > 0 {
            parts.push(format!(
                "{} % of the heartbeats each gateway receives (independently)",
                self.percent
            ));
        }
        for (a, b) in &self.one_way {
            parts.push(format!(
                "every heartbeat of gw{a} dropped at gw{b} (one-way)"
            ));
        }
        if parts.is_empty() {
            "no loss".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The rule's label in its comments: `gw<from>` or `all`.
pub fn label(from: Option<usize>) -> String {
    from.map_or_else(|| "all".to_owned(), |g| format!("gw{g}"))
}

/// The `nft -f` script for gateway `own` with `drops` (in order); empty without drops.
pub fn ruleset(own: usize, drops: &[Drop]) -> String {
    if drops.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "table ip {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n"
    );
    for d in drops {
        let m = match d.from {
            Some(g) => format!("ip saddr {} udp dport {PORT}", plan::underlay_ip(g)),
            None => format!("ip saddr != {} udp dport {PORT}", plan::underlay_ip(own)),
        };
        let l = label(d.from);
        // numgen's range is 0-99: 100 % is a plain drop.
        let pick = if d.percent >= 100 {
            String::new()
        } else {
            format!(" numgen random mod 100 < {}", d.percent)
        };
        let _ = writeln!(s, "    {m} counter comment \"offered:{l}\"");
        let _ = writeln!(s, "    {m}{pick} counter drop comment \"dropped:{l}\"");
    }
    s.push_str("  }\n}\n");
    s
}

/// The packet counters of the table's rules (`nft -j list table ...` or `list ruleset`), by
/// comment.
pub fn parse_counters(json: &str) -> Result<BTreeMap<String, u64>> {
    parse_table_counters(json, TABLE)
}

/// The packet counters of table `table`'s rules, by comment.
pub fn parse_table_counters(json: &str, table: &str) -> Result<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| LabError::Parse {
        what: "nft -j list".into(),
        detail: e.to_string(),
    })?;
    let mut m = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        if rule["table"].as_str() != Some(table) {
            continue;
        }
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64());
        if let Some(p) = packets {
            m.insert(comment.to_owned(), p);
        }
    }
    Ok(m)
}

/// What one drop rule did: heartbeats offered to it, and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// `gw<g>` or `all`.
    pub label: String,
    pub offered: u64,
    pub dropped: u64,
}

impl Measured {
    /// The dropped share in percent (0 when nothing was offered).
    pub fn percent(&self) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            self.dropped as f64 * 100.0 / self.offered as f64
        }
    }
}

/// Pairs the `offered:` and `dropped:` counters of each rule, in label order.
pub fn measured(counters: &BTreeMap<String, u64>) -> Vec<Measured> {
    counters
        .iter()
        .filter_map(|(k, &offered)| {
            let label = k.strip_prefix("offered:")?;
            Some(Measured {
                label: label.to_owned(),
                offered,
                dropped: counters
                    .get(&format!("dropped:{label}"))
                    .copied()
                    .unwrap_or(0),
            })
        })
        .collect()
}

/// `ip netns exec NS nft ARGS` (with `stdin`), its stdout.
fn nft(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let what = format!("ip netns exec {ns} nft {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(what.clone()))?;
    let wrote = match (stdin, child.stdin.take()) {
        (Some(s), Some(mut pipe)) => pipe.write_all(s.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(io_err(what.clone()))?;
    if !out.status.success() || wrote.is_err() {
        return Err(LabError::Command {
            cmd: what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table of a routed lab's gateways: broadcast and multicast heartbeats are dropped on
/// the way in (and counted), unicast ones counted, so a test can show that the daemons live on
/// unicast alone.
pub const ROUTE_TABLE: &str = "wmgwd2route";

/// The `nft -f` script of [`ROUTE_TABLE`].
pub fn block_broadcast_script() -> String {
    format!(
        "table ip {ROUTE_TABLE} {{\n  chain input {{\n    type filter hook input priority -20; policy accept;\n    \
         udp dport {PORT} meta pkttype {{ broadcast, multicast }} counter drop comment \"dropped:broadcast\"\n    \
         udp dport {PORT} meta pkttype host counter comment \"offered:unicast\"\n  }}\n}}\n"
    )
}

/// Installs [`block_broadcast_script`] in namespace `ns`.
pub fn block_broadcast_heartbeats(ns: &str) -> Result<()> {
    nft(ns, &["-f", "-"], Some(&block_broadcast_script())).map(drop)
}

/// The counters of [`ROUTE_TABLE`] in `ns`, by comment (`dropped:broadcast`, `offered:unicast`).
pub fn route_counters(ns: &str) -> Result<BTreeMap<String, u64>> {
    parse_table_counters(
        &nft(ns, &["-j", "list", "table", "ip", ROUTE_TABLE], None)?,
        ROUTE_TABLE,
    )
}

/// The (packets, bytes) counters of [`ROUTE_TABLE`] in `ns`, by comment.
pub fn route_counter_bytes(ns: &str) -> Result<BTreeMap<String, (u64, u64)>> {
    let json = nft(ns, &["-j", "list", "table", "ip", ROUTE_TABLE], None)?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| LabError::Parse {
        what: "nft -j list".into(),
        detail: e.to_string(),
    })?;
    let mut m = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let counter = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["counter"].as_object().cloned());
        if let Some(c) = counter {
            let n = |k: &str| c.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
            m.insert(comment.to_owned(), (n("packets"), n("bytes")));
        }
    }
    Ok(m)
}

/// The table of an IPv6-heartbeat lab's gateways: IPv4 heartbeats dropped, IPv6 ones counted.
pub const V6_TABLE: &str = "wmgwd2v6";

/// The `nft -f` script of [`V6_TABLE`].
pub fn block_ipv4_script() -> String {
    format!(
        "table inet {V6_TABLE} {{\n  chain input {{\n    type filter hook input priority -20; policy accept;\n    \
         meta nfproto ipv4 udp dport {PORT} counter drop comment \"dropped:ipv4\"\n    \
         meta nfproto ipv6 udp dport {PORT} counter comment \"offered:ipv6\"\n  }}\n}}\n"
    )
}

/// Installs [`block_ipv4_script`] in namespace `ns`.
pub fn block_ipv4_heartbeats(ns: &str) -> Result<()> {
    nft(ns, &["-f", "-"], Some(&block_ipv4_script())).map(drop)
}

/// The counters of [`V6_TABLE`] in `ns`, by comment (`dropped:ipv4`, `offered:ipv6`).
pub fn v6_counters(ns: &str) -> Result<BTreeMap<String, u64>> {
    parse_table_counters(
        &nft(ns, &["-j", "list", "table", "inet", V6_TABLE], None)?,
        V6_TABLE,
    )
}

/// Is `nft` there?
pub fn available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs gateway `own`'s `drops` in namespace `ns` (replacing an earlier table of ours);
/// nothing without drops.
pub fn apply(ns: &str, own: usize, drops: &[Drop]) -> Result<()> {
    let script = ruleset(own, drops);
    if script.is_empty() {
        return Ok(());
    }
    let _ = clear(ns);
    nft(ns, &["-f", "-"], Some(&script)).map(drop)
}

/// The counters of our table in namespace `ns` (empty when it has none).
pub fn counters(ns: &str) -> Result<Vec<Measured>> {
    match nft(ns, &["-j", "list", "table", "ip", TABLE], None) {
        Ok(json) => Ok(measured(&parse_counters(&json)?)),
        Err(LabError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Removes our table from namespace `ns` (an error when there is none).
pub fn clear(ns: &str) -> Result<()> {
    nft(ns, &["delete", "table", "ip", TABLE], None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_of_independent_and_one_way_loss() {
        let loss = Loss {
            percent: 20,
            one_way: vec![(1, 2), (3, 1)],
        };
        assert_eq!(
            loss.at(2),
            vec![
                Drop {
                    from: Some(1),
                    percent: 100
                },
                Drop {
                    from: None,
                    percent: 20
                }
            ]
        );
        assert_eq!(loss.at(3).len(), 1);
        assert_eq!(
            ruleset(2, &loss.at(2)),
            "table ip wmgwd2lab {\n  chain input {\n    type filter hook input priority -10; policy accept;\n\
             \x20   ip saddr 10.0.1.1 udp dport 3000 counter comment \"offered:gw1\"\n\
             \x20   ip saddr 10.0.1.1 udp dport 3000 counter drop comment \"dropped:gw1\"\n\
             \x20   ip saddr != 10.0.1.2 udp dport 3000 counter comment \"offered:all\"\n\
             \x20   ip saddr != 10.0.1.2 udp dport 3000 numgen random mod 100 < 20 counter drop comment \"dropped:all\"\n\
             \x20 }\n}\n"
        );
        assert_eq!(ruleset(1, &Loss::default().at(1)), "");
        assert_eq!(
            loss.describe(),
            "20 % of the heartbeats each gateway receives (independently), every heartbeat of \
             gw1 dropped at gw2 (one-way), every heartbeat of gw3 dropped at gw1 (one-way)"
        );
    }

    /// `nft -j list table ip wmgwd2lab` in gw2 of a lab (3 gateways, 100 ms) 28 s into
    /// `wmgwd2-lab loss --loss 20 --one-way 1:2` (recorded): every heartbeat of gw1 dropped, and
    /// 75 of gw3's 294 (25.5 %).
    #[test]
    fn counters_of_a_recorded_table() {
        let json = include_str!("../tests/fixtures/nft-j-list-table.json");
        let m = measured(&parse_counters(json).unwrap());
        let get = |l: &str| m.iter().find(|x| x.label == l).unwrap().clone();
        assert_eq!(m.len(), 2);
        let (gw1, all) = (get("gw1"), get("all"));
        assert_eq!((gw1.offered, gw1.dropped), (295, 295));
        assert_eq!(gw1.percent(), 100.0);
        assert_eq!((all.offered, all.dropped), (294, 75));
        assert_eq!(format!("{:.1}", all.percent()), "25.5");
        assert!(parse_counters("{").is_err());
        assert_eq!(
            Measured {
                label: "x".into(),
                offered: 0,
                dropped: 0
            }
            .percent(),
            0.0
        );
    }
}
