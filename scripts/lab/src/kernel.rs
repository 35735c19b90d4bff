//! The kernel's owner map, read in one place: `ip -j -d link show` per gateway namespace, and the
//! one definition of "converged": every VNI has exactly the owner the oracle predicts among the
//! live gateways (a gateway owns a VNI when `vrrp4-<VNI>` has protodown off).

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use crate::netns;
use crate::oracle;
use crate::plan::Spec;
use crate::{LabError, Result};

/// One managed interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub protodown: bool,
    pub lower_up: bool,
    pub mac: String,
}

impl Iface {
    /// Owned: protodown off.
    pub fn owned(&self) -> bool {
        !self.protodown
    }
}

/// For every VNI, the gateways that own it (in the order they were read).
pub type OwnerMap = BTreeMap<u32, Vec<usize>>;

/// The `vrrp4-<VNI>` links of `ip -j -d link show` output, by VNI.
pub fn parse_links(json: &str) -> Result<BTreeMap<u32, Iface>> {
    let links: serde_json::Value = serde_json::from_str(json).map_err(|e| LabError::Parse {
        what: "ip -j -d link show".into(),
        detail: e.to_string(),
    })?;
    let mut m = BTreeMap::new();
    for l in links.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or("");
        let Some(vni) = name.strip_prefix("vrrp4-").and_then(|s| s.parse().ok()) else {
            continue;
        };
        let lower_up = l["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f.as_str() == Some("LOWER_UP"));
        m.insert(
            vni,
            Iface {
                protodown: l["proto_down"].as_bool().unwrap_or(false),
                lower_up,
                mac: l["address"].as_str().unwrap_or("").to_owned(),
            },
        );
    }
    Ok(m)
}

/// The managed interfaces of namespace `ns`, by VNI. A dump racing with changes can fail
/// ("Dump was interrupted"): it is repeated a few times.
pub fn links(ns: &str) -> Result<BTreeMap<u32, Iface>> {
    let mut last = None;
    for _ in 0..5 {
        match netns::ip(ns, &["-j", "-d", "link", "show"]).and_then(|out| parse_links(&out)) {
            Ok(m) => return Ok(m),
            Err(e) => last = Some(e),
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(last.expect("an error"))
}

/// The owner map of `spec`'s VNIs built from each listed gateway's links, read in the order of
/// `read` (`links_of(g)` gives gateway g's links).
pub fn owner_map(
    spec: &Spec,
    read: &[usize],
    mut links_of: impl FnMut(usize) -> Result<BTreeMap<u32, Iface>>,
) -> Result<OwnerMap> {
    let mut m: OwnerMap = spec.vni_range().map(|v| (v, Vec::new())).collect();
    for &g in read {
        for (vni, i) in links_of(g)? {
            if i.owned() && spec.vni_range().contains(&vni) {
                m.entry(vni).or_default().push(g);
            }
        }
    }
    Ok(m)
}

/// The one definition of converged: the observed owners among the live gateways are exactly
/// the oracle's.
pub fn converged(spec: &Spec, observed: &OwnerMap, live: &[usize]) -> bool {
    let mut sorted = observed.clone();
    for o in sorted.values_mut() {
        o.sort_unstable();
    }
    sorted == oracle::expected(spec, live)
}

/// VNIs per gateway: "5/6/5", "-" for a gateway not in `live`.
pub fn owner_counts(spec: &Spec, map: &OwnerMap, live: &[usize]) -> String {
    (1..=spec.gateways)
        .map(|g| {
            if live.contains(&g) {
                map.values().filter(|o| o.contains(&g)).count().to_string()
            } else {
                "-".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: &str = include_str!("../tests/fixtures/ip-j-d-link-show.json");

    #[test]
    fn parses_the_managed_links_of_a_recorded_dump() {
        let m = parse_links(LINKS).unwrap();
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(m[&1].protodown && !m[&1].lower_up);
        assert!(!m[&2].protodown && m[&2].lower_up);
        assert!(m.values().all(|i| i.mac.len() == 17));
        assert!(parse_links("not json").is_err());
    }

    #[test]
    fn converged_means_exactly_the_oracles_owners() {
        let spec = Spec::new(3, 3);
        let live = [1, 2, 3];
        let exp = oracle::expected(&spec, &live);
        let mut map = owner_map(&spec, &live, |g| {
            Ok(spec
                .vni_range()
                .map(|v| {
                    let i = Iface {
                        protodown: exp[&v] != [g],
                        lower_up: true,
                        mac: String::new(),
                    };
                    (v, i)
                })
                .collect())
        })
        .unwrap();
        assert!(converged(&spec, &map, &live));
        assert!(!converged(&spec, &map, &[1, 2]));
        map.get_mut(&1).unwrap().push(9);
        assert!(!converged(&spec, &map, &live));
        map.get_mut(&1).unwrap().clear();
        assert!(!converged(&spec, &map, &live));
    }
}
