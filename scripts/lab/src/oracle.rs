//! Who should own VNI v: for wmgwd2 its own pure assignment (the one call into
//! `wmgwd2::assign`); for the VRRP daemon of the benchmark, the highest priority it was given.

use crate::kernel::OwnerMap;
use crate::plan::{gateway_of_uid, uid, Spec};

/// The owner of `vni` among the gateways with these UIDs (rendezvous hashing).
pub fn owner(vni: u32, uids: &[u64]) -> Option<u64> {
    use wmgwd2::types::{Uid, Vni};
    wmgwd2::assign::owner(Vni(vni), uids.iter().copied().map(Uid)).map(|u| u.0)
}

/// Which rule names the owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oracle {
    /// wmgwd2: rendezvous hashing over the live gateways' UIDs.
    Assign,
    /// wmgwd2 `--go-compat` beside the Go original: the original's rule
    /// (`wmgwd2::assign::Rule::GoCompat`) over the live gateways' UIDs.
    GoCompat,
    /// VRRP with [`vrrp_priority`]: the live gateway with the highest priority, then the highest
    /// address (gateway g's own address ends in 128+g).
    VrrpPriority,
}

/// Gateway g's VRRP priority for VNI v among `gateways`: VNI v prefers gateway (v-1)%G+1, then
/// the next one, ... (200, 150, 100, then 50 for all others).
pub fn vrrp_priority(g: usize, v: u32, gateways: usize) -> u8 {
    let n = gateways as i64;
    let rank = ((g as i64 - 1 - (i64::from(v) - 1)) % n + n) % n;
    (200 - 50 * rank.min(3)) as u8
}

/// The owners `oracle` predicts when `live` are the live gateways.
pub fn expected_by(oracle: Oracle, spec: &Spec, live: &[usize]) -> OwnerMap {
    match oracle {
        Oracle::Assign => expected(spec, live),
        Oracle::GoCompat => {
            use wmgwd2::types::{Uid, Vni};
            let uids: Vec<Uid> = live.iter().map(|&g| Uid(uid(g))).collect();
            spec.vni_range()
                .map(|v| {
                    let o = wmgwd2::assign::Rule::GoCompat.owner(Vni(v), uids.iter().copied());
                    (v, o.map(|u| gateway_of_uid(u.0)).into_iter().collect())
                })
                .collect()
        }
        Oracle::VrrpPriority => spec
            .vni_range()
            .map(|v| {
                let o = live
                    .iter()
                    .max_by_key(|&&g| (vrrp_priority(g, v, spec.gateways), g))
                    .copied();
                (v, o.into_iter().collect())
            })
            .collect(),
    }
}

/// For every VNI of `spec`, the one gateway (numbered as in [`uid`]) that owns it when `live`
/// are the live gateways (no owner when none is live).
pub fn expected(spec: &Spec, live: &[usize]) -> OwnerMap {
    let uids: Vec<u64> = live.iter().map(|&g| uid(g)).collect();
    spec.vni_range()
        .map(|v| (v, owner(v, &uids).map(gateway_of_uid).into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vni_has_one_live_owner() {
        let spec = Spec::new(3, 64);
        let e = expected(&spec, &[1, 3]);
        assert_eq!(e.len(), 64);
        assert!(e.values().all(|o| o.len() == 1 && (o[0] == 1 || o[0] == 3)));
        assert!(expected(&spec, &[]).values().all(|o| o.is_empty()));
    }

    #[test]
    fn go_compat_owners_are_the_originals() {
        // The lab fleet of shared/interop/README.md (uids 1, 2, 3 there; 0x1001.. here): one
        // live owner per VNI, and not the SipHash owners.
        let spec = Spec::new(3, 30);
        let e = expected_by(Oracle::GoCompat, &spec, &[1, 2, 3]);
        assert!(e.values().all(|o| o.len() == 1));
        assert_ne!(e, expected(&spec, &[1, 2, 3]));
        let e = expected_by(Oracle::GoCompat, &spec, &[2]);
        assert!(e.values().all(|o| o == &[2]));
    }

    #[test]
    fn vrrp_priorities_rotate_and_the_highest_live_one_owns() {
        assert_eq!(
            (1..=3).map(|g| vrrp_priority(g, 1, 3)).collect::<Vec<_>>(),
            vec![200, 150, 100]
        );
        assert_eq!(
            (1..=3).map(|g| vrrp_priority(g, 2, 3)).collect::<Vec<_>>(),
            vec![100, 200, 150]
        );
        assert_eq!(vrrp_priority(5, 1, 5), 50);
        let spec = Spec::new(3, 3);
        let e = expected_by(Oracle::VrrpPriority, &spec, &[1, 3]);
        assert_eq!(e, [(1, vec![1]), (2, vec![3]), (3, vec![3])].into());
    }
}
