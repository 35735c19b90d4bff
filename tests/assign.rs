//! The assignment hash is a contract between gateways and between versions: a golden table of
//! owners and weights written out literally, and the properties rendezvous hashing promises.

use std::collections::BTreeSet;

use proptest::prelude::*;
use std::ops::RangeInclusive;

use wmgwd2::assign::{self, KEY};
use wmgwd2::types::{Uid, Vni, VniRange};

// The tables below are written in plain integers, as operators and docs/protocol.md write them;
// these three call the typed functions with them.

fn weight(uid: u64, vni: u32) -> u64 {
    assign::weight(Uid(uid), Vni(vni))
}

fn owner(vni: u32, candidates: impl IntoIterator<Item = u64>) -> Option<u64> {
    assign::owner(Vni(vni), candidates.into_iter().map(Uid)).map(|u| u.0)
}

fn owned(me: u64, others: &BTreeSet<u64>, vnis: RangeInclusive<u32>) -> BTreeSet<u32> {
    let others = others.iter().copied().map(Uid).collect();
    let range = VniRange::new(*vnis.start(), *vnis.end()).expect("a non-empty range");
    assign::owned(Uid(me), &others, range)
        .into_iter()
        .map(|v| v.0)
        .collect()
}

/// The owner of VNIs 1..=16 among the lab's three gateways. Computed once (version 0.1.0) and
/// frozen: if this table changes, gateways of different versions disagree about owners.
const GOLDEN: [(u32, u64); 16] = [
    (1, 0x1003),
    (2, 0x1002),
    (3, 0x1001),
    (4, 0x1002),
    (5, 0x1003),
    (6, 0x1003),
    (7, 0x1001),
    (8, 0x1001),
    (9, 0x1001),
    (10, 0x1002),
    (11, 0x1003),
    (12, 0x1003),
    (13, 0x1002),
    (14, 0x1002),
    (15, 0x1003),
    (16, 0x1003),
];

/// A few weights, frozen likewise.
const WEIGHTS: [(u64, u32, u64); 6] = [
    (0x1001, 1, 0x96f1_433b_3d63_99f4),
    (0x1002, 1, 0x35fb_f4db_6feb_1bd6),
    (0x1003, 16, 0x721d_a439_404d_1504),
    (0x1, 0, 0xb03f_d4f8_fa72_e8b5),
    (u64::MAX, 16_777_215, 0xf3c9_7651_b6b6_3de1),
    (0x1a2b, 4242, 0xaada_1dac_4a45_e9d7),
];

const LAB: [u64; 3] = [0x1001, 0x1002, 0x1003];

#[test]
fn golden_owner_table() {
    for (vni, expected) in GOLDEN {
        assert_eq!(owner(vni, LAB), Some(expected), "vni {vni}");
    }
}

#[test]
fn golden_owned_sets() {
    for me in LAB {
        let others: BTreeSet<u64> = LAB.into_iter().filter(|&u| u != me).collect();
        let expected: BTreeSet<u32> = GOLDEN
            .iter()
            .filter(|&&(_, o)| o == me)
            .map(|&(v, _)| v)
            .collect();
        assert_eq!(owned(me, &others, 1..=16), expected, "me {me:#x}");
    }
}

#[test]
fn golden_weights() {
    for (uid, vni, w) in WEIGHTS {
        assert_eq!(weight(uid, vni), w, "weight({uid:#x}, {vni})");
    }
}

/// The formula in docs/protocol.md, computed with the standard library's own SipHash-2-4 (the
/// deprecated `std::hash::SipHasher`), not with the crate the daemon uses.
#[test]
#[allow(deprecated)]
fn weight_is_the_documented_siphash() {
    use std::hash::{Hasher, SipHasher};
    assert_eq!(KEY, (0x776d_6777_6432_2072, 0x656e_6465_7a76_6f75));
    for (uid, vni, _) in WEIGHTS {
        let mut h = SipHasher::new_with_keys(KEY.0, KEY.1);
        let mut bytes = vni.to_be_bytes().to_vec();
        bytes.extend_from_slice(&uid.to_be_bytes());
        h.write(&bytes);
        assert_eq!(weight(uid, vni), h.finish(), "weight({uid:#x}, {vni})");
    }
}

#[test]
fn no_candidate_no_owner() {
    assert_eq!(owner(7, []), None);
    // Alone, we own everything.
    assert_eq!(owned(0x1001, &BTreeSet::new(), 1..=5), (1..=5).collect());
    // Our own UID among the others is not a second candidate.
    assert_eq!(
        owned(0x1001, &BTreeSet::from([0x1001]), 1..=5),
        (1..=5).collect()
    );
}

/// The candidates other than `me` as a set, and all of them as a set.
fn split(me: u64, all: &BTreeSet<u64>) -> BTreeSet<u64> {
    all.iter().copied().filter(|&u| u != me).collect()
}

fn owners_of(all: &BTreeSet<u64>, vnis: std::ops::RangeInclusive<u32>) -> Vec<Option<u64>> {
    vnis.map(|v| owner(v, all.iter().copied())).collect()
}

fn uids(n: std::ops::Range<usize>) -> impl Strategy<Value = BTreeSet<u64>> {
    proptest::collection::btree_set(1..=u64::MAX, n)
}

proptest! {
    #[test]
    fn owner_ignores_candidate_order(
        set in uids(1..8),
        vni in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let sorted: Vec<u64> = set.iter().copied().collect();
        let mut reversed = sorted.clone();
        reversed.reverse();
        let mut rotated = sorted.clone();
        rotated.rotate_left((seed % sorted.len() as u64) as usize);
        let mut duplicated = sorted.clone();
        duplicated.extend_from_slice(&rotated);
        let o = owner(vni, sorted.iter().copied());
        prop_assert!(o.is_some_and(|u| set.contains(&u)));
        prop_assert_eq!(owner(vni, reversed), o);
        prop_assert_eq!(owner(vni, rotated), o);
        prop_assert_eq!(owner(vni, duplicated), o);
        // Deterministic: the same question, the same answer.
        prop_assert_eq!(owner(vni, sorted.iter().copied()), o);
    }

    #[test]
    fn owned_is_where_owner_is_me(
        set in uids(1..6),
        pick in any::<prop::sample::Index>(),
        start in 0u32..(1 << 24) - 300,
    ) {
        let all: Vec<u64> = set.iter().copied().collect();
        let me = all[pick.index(all.len())];
        let others = split(me, &set);
        let range = start..=start + 299;
        let expected: BTreeSet<u32> = range
            .clone()
            .filter(|&v| owner(v, set.iter().copied()) == Some(me))
            .collect();
        prop_assert_eq!(owned(me, &others, range.clone()), expected);
        // `others` may contain `me`: same answer.
        prop_assert_eq!(owned(me, &set, range.clone()), owned(me, &others, range));
    }

    #[test]
    fn owned_sets_partition_the_range(set in uids(1..6)) {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for &me in &set {
            let mine = owned(me, &split(me, &set), 1..=500);
            total += mine.len();
            seen.extend(mine);
        }
        prop_assert_eq!(total, 500);
        prop_assert_eq!(seen, (1..=500).collect::<BTreeSet<u32>>());
    }

    #[test]
    fn removing_a_member_moves_only_its_vnis(set in uids(2..7), pick in any::<prop::sample::Index>()) {
        let all: Vec<u64> = set.iter().copied().collect();
        let gone = all[pick.index(all.len())];
        let mut after = set.clone();
        after.remove(&gone);
        let before_owners = owners_of(&set, 1..=1000);
        let after_owners = owners_of(&after, 1..=1000);
        for (i, (b, a)) in before_owners.iter().zip(&after_owners).enumerate() {
            if *b == Some(gone) {
                prop_assert_ne!(*a, Some(gone));
            } else {
                prop_assert_eq!(a, b, "vni {} moved though its owner stayed", i + 1);
            }
        }
    }

    #[test]
    fn adding_a_member_moves_vnis_only_to_it(set in uids(1..6), new in 1..=u64::MAX) {
        prop_assume!(!set.contains(&new));
        let mut after = set.clone();
        after.insert(new);
        let before_owners = owners_of(&set, 1..=1000);
        let after_owners = owners_of(&after, 1..=1000);
        let mut gained = 0;
        for (b, a) in before_owners.iter().zip(&after_owners) {
            if a != b {
                prop_assert_eq!(*a, Some(new));
                gained += 1;
            }
        }
        // The newcomer wins something out of 1000 (expected 1000 / (n + 1) >= 166).
        prop_assert!(gained > 0);
    }

    #[test]
    fn three_gateways_share_3000_vnis_evenly(set in uids(3..4)) {
        for &me in &set {
            let n = owned(me, &split(me, &set), 1..=3000).len();
            prop_assert!((750..=1260).contains(&n), "{:#x} owns {} of 3000", me, n);
        }
    }
}

/// Two UIDs whose weights for VNI 1 are equal: a real SipHash collision, found once with Pollard's
/// rho (iterating `uid -> weight(uid, 1)`), so that the tie-break rule is tested where it applies.
const TIE: (u64, u64) = (0xe586_cfdb_7ec9_2b4c, 0x84af_92b8_14b1_1aa3);
const TIE_VNI: u32 = 1;
const TIE_WEIGHT: u64 = 0xb5b1_08fe_7775_2a25;

/// Equal weights go to the larger UID, whatever the order, and both gateways agree.
#[test]
fn tie_break_goes_to_the_larger_uid() {
    let (hi, lo) = TIE;
    assert!(hi > lo);
    assert_eq!(weight(hi, TIE_VNI), TIE_WEIGHT);
    assert_eq!(weight(lo, TIE_VNI), TIE_WEIGHT);
    assert_eq!(owner(TIE_VNI, [hi, lo]), Some(hi));
    assert_eq!(owner(TIE_VNI, [lo, hi]), Some(hi));
    assert_eq!(owner(TIE_VNI, [lo, hi, lo]), Some(hi));
    assert_eq!(
        owned(hi, &BTreeSet::from([lo]), TIE_VNI..=TIE_VNI),
        BTreeSet::from([TIE_VNI])
    );
    assert_eq!(
        owned(lo, &BTreeSet::from([hi]), TIE_VNI..=TIE_VNI),
        BTreeSet::new()
    );
    // A third candidate that outweighs both takes it from them.
    let third = (1..).find(|&u| weight(u, TIE_VNI) > TIE_WEIGHT).unwrap();
    assert_eq!(owner(TIE_VNI, [lo, third, hi]), Some(third));
    // On other VNIs the two are ordinary candidates.
    assert_ne!(weight(hi, 2), weight(lo, 2));
}

/// Every gateway agrees on the owner: exactly one of them considers itself the owner.
#[test]
fn exactly_one_gateway_owns_each_vni() {
    for vni in 1..=64 {
        let o = owner(vni, LAB).unwrap();
        assert_eq!(owner(vni, [o, 0x1001, o, 0x1002, 0x1003]), Some(o));
        let owners: Vec<u64> = LAB
            .into_iter()
            .filter(|&me| owned(me, &split(me, &BTreeSet::from(LAB)), vni..=vni).contains(&vni))
            .collect();
        assert_eq!(owners, vec![o], "vni {vni}");
    }
}
