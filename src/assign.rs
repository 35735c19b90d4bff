//! Rendezvous (highest-random-weight) hashing: which gateway owns a VNI. Pure.
//!
//! `weight(uid, vni)` is SipHash-2-4 with the fixed key [`KEY`] over the 12 bytes
//! `vni (u32, big-endian) || uid (u64, big-endian)`. The owner of a VNI is the candidate with the
//! highest weight; equal weights go to the higher UID. This is a contract between gateways and
//! between versions: change it and mixed clusters disagree about owners (see the golden table in
//! tests/assign.rs).

use std::collections::BTreeSet;
use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::types::{Uid, Vni, VniRange};

/// SipHash key, fixed forever: the ASCII of "wmgwd2 rendezvous" padded, as two u64 halves.
pub const KEY: (u64, u64) = (0x776d_6777_6432_2072, 0x656e_6465_7a76_6f75);

/// The weight of candidate `uid` for `vni`.
pub fn weight(uid: Uid, vni: Vni) -> u64 {
    let mut h = SipHasher24::new_with_keys(KEY.0, KEY.1);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&vni.0.to_be_bytes());
    bytes[4..].copy_from_slice(&uid.0.to_be_bytes());
    h.write(&bytes);
    h.finish()
}

/// The owner of `vni` among `candidates`, or `None` when there is no candidate.
pub fn owner<I: IntoIterator<Item = Uid>>(vni: Vni, candidates: I) -> Option<Uid> {
    candidates
        .into_iter()
        .map(|uid| (weight(uid, vni), uid))
        .max()
        .map(|(_, uid)| uid)
}

/// The VNIs of `vnis` that `me` owns when the candidates are `others` plus `me`.
pub fn owned(me: Uid, others: &BTreeSet<Uid>, vnis: VniRange) -> BTreeSet<Vni> {
    vnis.iter()
        .filter(|&vni| {
            let mine = (weight(me, vni), me);
            others
                .iter()
                .filter(|&&uid| uid != me)
                .all(|&uid| (weight(uid, vni), uid) < mine)
        })
        .collect()
}
