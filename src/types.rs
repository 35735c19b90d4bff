//! Identifiers that say what they are: a VNI, a gateway's UID and an interface index are all
//! integers, and side by side in one map they were easy to mix up. Pure.
//!
//! Each is a transparent newtype with a public field, so tests and the wire codec can build and
//! read them without ceremony; the type, not the field, is what the rest of the code passes around.

use std::fmt;

/// A VXLAN network identifier (24 bits; [`crate::cli`] checks the range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vni(pub u32);

/// A gateway's unique ID (never 0 on the wire). Shown in hex, as operators write it in `--uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uid(pub u64);

/// A Linux interface index in the daemon's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IfIndex(pub u32);

/// The address family a managed interface serves: each VNI may have an IPv4 interface
/// (`--interface-pattern`), an IPv6 one (`--interface6-pattern`), or both. Ownership is per VNI,
/// both families together; what is per family is the interface (its protodown, its announcements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Family {
    #[default]
    V4,
    V6,
}

/// One managed interface's place: its VNI and family. Ordered by VNI first, so a VNI's slots are
/// neighbours in an ordered map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Slot {
    pub vni: Vni,
    pub family: Family,
}

impl Slot {
    pub fn v4(vni: Vni) -> Slot {
        Slot {
            vni,
            family: Family::V4,
        }
    }

    pub fn v6(vni: Vni) -> Slot {
        Slot {
            vni,
            family: Family::V6,
        }
    }

    /// Both slots of `vni`, in order: the bounds of its range in a map keyed by slot.
    pub fn both(vni: Vni) -> std::ops::RangeInclusive<Slot> {
        Slot::v4(vni)..=Slot::v6(vni)
    }
}

/// How many VNIs the slots (in order) belong to: a VNI with both interfaces counts once.
pub fn count_vnis<'a>(slots: impl IntoIterator<Item = &'a Slot>) -> usize {
    let mut last = None;
    let mut n = 0;
    for s in slots {
        if last != Some(s.vni) {
            n += 1;
            last = Some(s.vni);
        }
    }
    n
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for IfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The managed VNIs: `lo..=hi`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VniRange {
    lo: Vni,
    hi: Vni,
}

impl VniRange {
    /// `None` when `lo > hi`.
    pub fn new(lo: u32, hi: u32) -> Option<VniRange> {
        (lo <= hi).then_some(VniRange {
            lo: Vni(lo),
            hi: Vni(hi),
        })
    }

    /// From the smaller of `a` and `b` to the larger.
    pub fn spanning(a: u32, b: u32) -> VniRange {
        VniRange {
            lo: Vni(a.min(b)),
            hi: Vni(a.max(b)),
        }
    }

    pub fn first(&self) -> Vni {
        self.lo
    }

    pub fn last(&self) -> Vni {
        self.hi
    }

    pub fn contains(&self, v: Vni) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// How many VNIs the range holds.
    pub fn len(&self) -> usize {
        (self.hi.0 - self.lo.0) as usize + 1
    }

    /// Never true; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every VNI of the range, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Vni> + Clone {
        (self.lo.0..=self.hi.0).map(Vni)
    }
}

impl fmt::Display for VniRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// VNIs as ranges, the way operators read them: `1-3,7,9-12` (`none` when empty).
pub fn vni_ranges(vnis: impl IntoIterator<Item = Vni>) -> String {
    let mut v: Vec<u32> = vnis.into_iter().map(|v| v.0).collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return "none".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}
