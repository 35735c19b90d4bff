//! Who should own VNI v: the daemon's own pure assignment, the one call into `wmgwd2::assign`.

use crate::kernel::OwnerMap;
use crate::plan::{gateway_of_uid, uid, Spec};

/// The owner of `vni` among the gateways with these UIDs (rendezvous hashing).
pub fn owner(vni: u32, uids: &[u64]) -> Option<u64> {
    wmgwd2::assign::owner(vni, uids.iter().copied())
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
}
