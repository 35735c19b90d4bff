//! The kernel's owner map, read in one place: `ip -j -d link show` per gateway namespace, and the
//! one definition of "converged": every VNI has exactly the owner the oracle predicts among the
//! live gateways. A gateway owns a VNI when `vrrp4-<VNI>` has protodown off (wmgwd2), or, for a
//! VRRP daemon that moves the address instead ([`Ownership::Addr`]), when the gateway IP is on it
//! (`ip -j addr show`).

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use crate::netns;
use crate::oracle::{self, Oracle};
use crate::plan::{self, Spec};
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

/// What owning a VNI means in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// `vrrp4-<v>` has protodown off (wmgwd2).
    Link,
    /// The gateway IP is on `vrrp4-<v>` (a VRRP daemon such as keepalived adds and removes it).
    Addr,
}

/// For every VNI, the gateways that own it (in the order they were read).
pub type OwnerMap = BTreeMap<u32, Vec<usize>>;

/// The `vrrp4-<VNI>` links of `ip -j -d link show` output, by VNI.
pub fn parse_links(json: &str) -> Result<BTreeMap<u32, Iface>> {
    parse_links_named(json, "vrrp4-")
}

/// The links named `<prefix><VNI>` of `ip -j -d link show` output, by VNI (`vrrp6-`: the IPv6
/// gateway interfaces).
pub fn parse_links_named(json: &str, prefix: &str) -> Result<BTreeMap<u32, Iface>> {
    let links: serde_json::Value = serde_json::from_str(json).map_err(|e| LabError::Parse {
        what: "ip -j -d link show".into(),
        detail: e.to_string(),
    })?;
    let mut m = BTreeMap::new();
    for l in links.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or("");
        let Some(vni) = name.strip_prefix(prefix).and_then(|s| s.parse().ok()) else {
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

/// The `vrrp4-<v>` links holding their gateway IP, from `ip -j addr show` output.
pub fn parse_addrs(json: &str) -> Result<BTreeMap<u32, bool>> {
    let links: serde_json::Value = serde_json::from_str(json).map_err(|e| LabError::Parse {
        what: "ip -j addr show".into(),
        detail: e.to_string(),
    })?;
    let mut m = BTreeMap::new();
    for l in links.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or("");
        let Some(vni) = name
            .strip_prefix("vrrp4-")
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let gw = plan::gateway_ip(vni).to_string();
        let has = l["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str() == Some(gw.as_str()));
        m.insert(vni, has);
    }
    Ok(m)
}

/// Which `vrrp4-<v>` of namespace `ns` are owned, by VNI.
pub fn owned(ns: &str, how: Ownership) -> Result<BTreeMap<u32, bool>> {
    match how {
        Ownership::Link => Ok(links(ns)?
            .into_iter()
            .map(|(v, i)| (v, i.owned()))
            .collect()),
        Ownership::Addr => {
            retry(|| netns::ip(ns, &["-j", "-4", "addr", "show"]).and_then(|out| parse_addrs(&out)))
        }
    }
}

/// A dump racing with changes can fail ("Dump was interrupted"): it is repeated a few times.
fn retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut last = None;
    for _ in 0..5 {
        match f() {
            Ok(m) => return Ok(m),
            Err(e) => last = Some(e),
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(last.expect("an error"))
}

/// The managed interfaces (macvlans) of namespace `ns`, by VNI.
pub fn links(ns: &str) -> Result<BTreeMap<u32, Iface>> {
    retry(|| {
        netns::ip(ns, &["-j", "-d", "link", "show", "type", "macvlan"])
            .and_then(|out| parse_links(&out))
    })
}

/// The `vrrp6-<VNI>` links of namespace `ns`, by VNI.
pub fn links6(ns: &str) -> Result<BTreeMap<u32, Iface>> {
    retry(|| {
        netns::ip(ns, &["-j", "-d", "link", "show", "type", "macvlan"])
            .and_then(|out| parse_links_named(&out, "vrrp6-"))
    })
}

/// The owner map of `spec`'s VNIs built from each listed gateway's links, read in the order of
/// `read` (`owned_of(g)`: which of gateway g's links are owned).
pub fn owner_map(
    spec: &Spec,
    read: &[usize],
    mut owned_of: impl FnMut(usize) -> Result<BTreeMap<u32, bool>>,
) -> Result<OwnerMap> {
    let mut m: OwnerMap = spec.vni_range().map(|v| (v, Vec::new())).collect();
    for &g in read {
        for (vni, owned) in owned_of(g)? {
            if owned && spec.vni_range().contains(&vni) {
                m.entry(vni).or_default().push(g);
            }
        }
    }
    Ok(m)
}

/// The one definition of converged: the observed owners among the live gateways are exactly
/// the oracle's.
pub fn converged(oracle: Oracle, spec: &Spec, observed: &OwnerMap, live: &[usize]) -> bool {
    let mut sorted = observed.clone();
    for o in sorted.values_mut() {
        o.sort_unstable();
    }
    sorted == oracle::expected_by(oracle, spec, live)
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
    const ADDRS: &str = include_str!("../tests/fixtures/ip-j-4-addr-show.json");

    #[test]
    fn parses_which_links_hold_their_gateway_ip() {
        let m = parse_addrs(ADDRS).unwrap();
        assert_eq!(m, [(1, true), (2, false)].into());
    }

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
            Ok(spec.vni_range().map(|v| (v, exp[&v] == [g])).collect())
        })
        .unwrap();
        let a = Oracle::Assign;
        assert!(converged(a, &spec, &map, &live));
        assert!(!converged(a, &spec, &map, &[1, 2]));
        map.get_mut(&1).unwrap().push(9);
        assert!(!converged(a, &spec, &map, &live));
        map.get_mut(&1).unwrap().clear();
        assert!(!converged(a, &spec, &map, &live));
    }
}
