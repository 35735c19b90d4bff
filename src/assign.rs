//! Rendezvous (highest-random-weight) hashing: which gateway owns a VNI. Pure.
//!
//! `weight(uid, vni)` is SipHash-2-4 with the fixed key [`KEY`] over the 12 bytes
//! `vni (u32, big-endian) || uid (u64, big-endian)`. The owner of a VNI is the candidate with the
//! highest weight; equal weights go to the higher UID. This is a contract between gateways and
//! between versions: change it and mixed clusters disagree about owners (see the golden table in
//! tests/assign.rs).
//!
//! [`Rule::GoCompat`] is the Go original's rule instead (`fmix64(vni × uid)`, highest wins), for a
//! rolling upgrade from it (`--go-compat`); its golden rows are the original's own
//! (`../shared/interop/go-assignments.csv`, tests/assign.rs).

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

/// Which rule names the owner of a VNI: a choice the core is configured with (`--go-compat`).
/// Both are pure functions of (candidates, VNI); every gateway of a fleet must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// [`weight`]: SipHash-2-4 rendezvous, equal weights to the higher UID. The default.
    #[default]
    SipHash,
    /// The Go original's rule ([`go_owner`]): `fmix64(vni × uid)`, the highest wins. For a fleet
    /// that still runs the original (docs/operations.md, "Migrating from the Go original").
    GoCompat,
}

/// MurmurHash3's 64-bit finalizer, as the Go original's `murmur64` computes it.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The Go original's weight of `uid` for `vni`: `fmix64(vni × uid)`, the product wrapping mod
/// 2^64. Go's VNIs are 64-bit; ours never exceed 24 bits.
pub fn go_weight(uid: u64, vni: u64) -> u64 {
    fmix64(vni.wrapping_mul(uid))
}

/// The Go original's owner of `vni`: the highest [`go_weight`], compared with a strict `>`, so
/// that among equal weights the first candidate in `candidates`' order wins. `fmix64` is a
/// bijection, so equal weights mean equal products: VNI 0 (every weight is 0), or UIDs that
/// differ only in their top bits with an even VNI. The original iterates a Go map there (a random
/// order on every call, so its own gateways can disagree); the daemon passes its candidates in
/// ascending order, so ties go to the lowest UID on every gateway (docs/protocol.md).
pub fn go_owner<I: IntoIterator<Item = u64>>(vni: u64, candidates: I) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for uid in candidates {
        let w = go_weight(uid, vni);
        if best.is_none_or(|(b, _)| w > b) {
            best = Some((w, uid));
        }
    }
    best.map(|(_, uid)| uid)
}

impl Rule {
    /// The owner of `vni` among `candidates` (ascending, as the daemon keeps them) under this
    /// rule.
    pub fn owner<I: IntoIterator<Item = Uid>>(self, vni: Vni, candidates: I) -> Option<Uid> {
        match self {
            Rule::SipHash => owner(vni, candidates),
            Rule::GoCompat => {
                go_owner(u64::from(vni.0), candidates.into_iter().map(|u| u.0)).map(Uid)
            }
        }
    }

    /// The VNIs of `vnis` that `me` owns when the candidates are `others` plus `me`: the same
    /// answer as [`Rule::owner`] over the ascending union.
    pub fn owned(self, me: Uid, others: &BTreeSet<Uid>, vnis: VniRange) -> BTreeSet<Vni> {
        match self {
            Rule::SipHash => owned(me, others, vnis),
            Rule::GoCompat => vnis
                .iter()
                .filter(|&vni| {
                    let v = u64::from(vni.0);
                    let mine = go_weight(me.0, v);
                    // Ascending order: a lower UID with an equal weight comes first and wins.
                    others.iter().filter(|&&uid| uid != me).all(|&uid| {
                        let w = go_weight(uid.0, v);
                        w < mine || (w == mine && uid > me)
                    })
                })
                .collect(),
        }
    }
}
