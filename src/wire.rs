//! The heartbeat frame: encode and decode. Pure: no sockets, no clock.
//!
//! One UDP datagram per heartbeat, all integers big-endian:
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------+---------------+---------------+---------------+
//! |  'W' 0x57     |  'M' 0x4d     |  'G' 0x47     |  '2' 0x32     |  0  magic
//! +---------------+---------------+---------------+---------------+
//! |  version = 1  |     flags     |   auth kind   |  key id / 0   |  4
//! +---------------+---------------+---------------+---------------+
//! |                          uid (u64)                            |  8
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                      incarnation (u64)                        | 16
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                       sequence (u64)                          | 24
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                     interval in ms (u32)                      | 32
//! +---------------------------------------------------------------+
//! |                   hold time in ms (u32)                       | 36
//! +---------------------------------------------------------------+
//! |    auth kind 1: HMAC-SHA256 of bytes 0..40 with key `key id`   | 40
//! |                        (32 bytes)                             |
//! +---------------------------------------------------------------+ 72
//! ```
//!
//! Extensions follow the 40-byte header, before the trailer: type (u8), length of the value
//! (u16), value; unknown types are skipped, so later versions can add some. The MAC covers them.
//! See [`Extensions`]: ECHO (what the sender heard of each member), VIEW (a digest of the
//! sender's candidate set), BLOCKED (VNIs the sender cannot serve).
//!
//! Auth kind 0: no trailer, byte 7 is reserved (sent as 0, ignored). Auth kind 1: byte 7 is the
//! id (1 to 255) of the key that signed, and the frame ends in the 32-byte HMAC-SHA256 of
//! everything before it (header and extensions; see [`crate::auth`]); the receiver verifies it in
//! constant time.
//!
//! Flags: bit 0 `LEAVING` (the sender is stopping: drop it now), bit 1 `STARTING` (the sender is in
//! its start-up hold-down, or otherwise not a candidate, and owns nothing), bit 2 `SETTLING` (the
//! sender is applying a change to the kernel right now: this heartbeat does not confirm a
//! takeover), bits 3–4 the sender's phase of leaving `--go-compat` (0: not leaving it, 1: ready
//! to, 2: owning under both rules, 3: left it; docs/operations.md). Other bits are reserved: sent
//! as 0, ignored on receipt so that later versions can add hints without breaking this one.
//!
//! A datagram of exactly 8 bytes is the original Go wmgwd2's heartbeat (the UID, big-endian) and
//! decodes as [`Frame::Legacy`].

use thiserror::Error;

use crate::types::Uid;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"WMG2";
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Length of a version-1 frame without authentication trailer.
pub const FRAME_LEN: usize = 40;
/// Auth kinds.
pub const AUTH_NONE: u8 = 0;
pub const AUTH_HMAC_SHA256: u8 = 1;
/// Length of a version-1 frame with an HMAC-SHA256 trailer.
pub const SIGNED_LEN: usize = FRAME_LEN + crate::auth::MAC_LEN;
/// Length of the original program's frame.
pub const LEGACY_LEN: usize = 8;
/// Where the Go original listens, and where `--go-compat` sends its 8-byte frames: it binds this
/// address itself (not 0.0.0.0), so nothing else reaches it.
pub const LEGACY_DESTINATION: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 1, 255), 3000);
/// The Go original's heartbeat interval, which `--go-compat`'s 8-byte frames keep.
pub const LEGACY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The largest datagram worth reading (the UDP payload of one 1500-byte Ethernet frame);
/// anything longer is truncated by the receiver and rejected.
pub const MAX_DATAGRAM: usize = 1472;
/// Extension types.
pub const EXT_ECHO: u8 = 1;
pub const EXT_VIEW: u8 = 2;
pub const EXT_BLOCKED: u8 = 3;
/// Bytes per ECHO entry.
pub const ECHO_ENTRY_LEN: usize = 32;
/// At most this many members in one ECHO (a larger fleet sets [`Echoes::truncated`]); with
/// a VIEW, a full BLOCKED and the MAC the frame still fits [`MAX_DATAGRAM`].
pub const MAX_ECHOES: usize = 32;
/// At most this many VNIs in one BLOCKED.
pub const MAX_BLOCKED: usize = 64;
/// The IP TTL a version-1 frame is sent with, and must arrive with (RFC 5082, GTSM: a router on
/// the way would have decremented it).
pub const REQUIRED_TTL: u8 = 255;
/// The longest interval a receiver believes (longer ones are taken as this): `--interval`'s 60 s.
pub const MAX_INTERVAL_MS: u32 = 60_000;
/// The longest hold time a receiver grants (longer ones are taken as this): 3 × 60 s, the default
/// `--dead-after` at the longest `--interval`. `--interval` × `--dead-after` may not exceed it, so
/// no honest sender asks for more; a forged or broken frame cannot keep a phantom peer alive (or a
/// tombstone in place) for longer than 3 minutes.
pub const MAX_HOLD_MS: u32 = 180_000;

/// The sender is stopping: receivers drop it at once instead of waiting for its hold time.
pub const FLAG_LEAVING: u8 = 0x01;
/// The sender is in its start-up hold-down: alive, but not yet a candidate owner.
pub const FLAG_STARTING: u8 = 0x02;
/// The sender's loop is busy with its kernel (applying a change, or re-reading it), and the
/// heartbeat went out from its timer meanwhile: a leaving peer does not count it as confirmation
/// of the takeover (the sender may not even have read the LEAVING yet).
pub const FLAG_SETTLING: u8 = 0x04;

/// Bits 3–4: the sender's phase of leaving `--go-compat` (see [`Heartbeat::compat_phase`]).
pub const COMPAT_PHASE_SHIFT: u8 = 3;
pub const COMPAT_PHASE_MASK: u8 = 0x18;

/// A version-1 heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub uid: Uid,
    /// Random per process start: tells a restart from a stale or looped-back frame.
    pub incarnation: u64,
    /// Increases by one per frame within an incarnation.
    pub sequence: u64,
    pub flags: u8,
    /// The sender's heartbeat interval.
    pub interval_ms: u32,
    /// How long receivers keep the sender alive after this frame.
    pub hold_ms: u32,
}

impl Heartbeat {
    pub fn leaving(&self) -> bool {
        self.flags & FLAG_LEAVING != 0
    }
    pub fn starting(&self) -> bool {
        self.flags & FLAG_STARTING != 0
    }
    pub fn settling(&self) -> bool {
        self.flags & FLAG_SETTLING != 0
    }
    /// The sender's phase of leaving `--go-compat`: 0 not leaving (or not in it), 1 ready, 2
    /// owning under both rules, 3 left.
    pub fn compat_phase(&self) -> u8 {
        (self.flags & COMPAT_PHASE_MASK) >> COMPAT_PHASE_SHIFT
    }
    /// The hold time it asks for, clamped to [`MAX_HOLD_MS`].
    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.hold_ms.min(MAX_HOLD_MS)))
    }
}

/// Anything that decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Heartbeat(Heartbeat),
    /// The Go original's 8-byte frame: only a UID.
    Legacy {
        uid: Uid,
    },
}

/// Why a datagram was dropped. Every variant is counted by the daemon; none panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than a frame")]
    Truncated { len: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported authentication kind {0}")]
    UnsupportedAuth(u8),
    #[error("frame of {len} bytes, expected {expected}")]
    BadLength { len: usize, expected: usize },
    #[error("signed frame with key id 0")]
    ZeroKeyId,
    #[error("uid 0 is reserved")]
    ZeroUid,
    #[error("interval {interval_ms} ms with hold time {hold_ms} ms")]
    BadTiming { interval_ms: u32, hold_ms: u32 },
    #[error("malformed extension of type {kind}")]
    BadExtension { kind: u8 },
}

impl DecodeError {
    /// A short constant label, for counters and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnsupportedAuth(_) => "unsupported_auth",
            DecodeError::ZeroKeyId => "zero_key_id",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::ZeroUid => "zero_uid",
            DecodeError::BadTiming { .. } => "bad_timing",
            DecodeError::BadExtension { .. } => "bad_extension",
        }
    }
}

/// Writes `hb` as a version-1 frame.
pub fn encode(hb: &Heartbeat) -> [u8; FRAME_LEN] {
    let mut b = [0u8; FRAME_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[5] = hb.flags;
    b[6] = 0; // auth kind: none
    b[7] = 0;
    b[8..16].copy_from_slice(&hb.uid.0.to_be_bytes());
    b[16..24].copy_from_slice(&hb.incarnation.to_be_bytes());
    b[24..32].copy_from_slice(&hb.sequence.to_be_bytes());
    b[32..36].copy_from_slice(&hb.interval_ms.to_be_bytes());
    b[36..40].copy_from_slice(&hb.hold_ms.to_be_bytes());
    b
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// What the sender heard of one member (itself excluded): the member's incarnation and the
/// highest sequence number the sender knows of, how long before this frame was sent that frame
/// was heard (by the sender, or by a member that told it: `direct` says which), and the share of
/// that member's frames the sender lost lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub uid: Uid,
    pub incarnation: u64,
    pub sequence: u64,
    pub age_ms: u32,
    pub loss_permille: u16,
    /// The sender heard this member itself within the member's hold time.
    pub direct: bool,
}

/// The ECHO extension: one entry per live member the sender keeps (tombstones and legacy peers
/// left out), at most [`MAX_ECHOES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echoes {
    pub entries: Vec<Echo>,
    /// The sender keeps more members than it listed: a member's absence means nothing.
    pub truncated: bool,
}

/// The VIEW extension: a digest of the sender's candidate set (itself included when it is one),
/// see [`view_digest`], and its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    pub digest: u64,
    pub candidates: u16,
}

/// Everything after the header. A frame without ECHO (`echo: None`) comes from a sender that
/// does not speak it (not: one that hears nobody, which sends an empty ECHO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub echo: Option<Echoes>,
    pub view: Option<View>,
    /// VNIs the sender cannot serve (another protodown reason bit holds them down): its peers
    /// assign them as if it were not a candidate.
    pub blocked: Vec<crate::types::Vni>,
}

/// The digest a VIEW carries: SipHash-2-4 (key 0) of the candidates' UIDs in ascending order,
/// 8 bytes big-endian each. Equal sets give equal digests on every member.
pub fn view_digest(candidates: impl IntoIterator<Item = Uid>) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0, 0);
    let mut sorted: Vec<u64> = candidates.into_iter().map(|u| u.0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    for u in sorted {
        h.write(&u.to_be_bytes());
    }
    h.finish()
}

/// A whole decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub frame: Frame,
    pub sig: Option<Signature>,
    pub ext: Extensions,
}

/// Reads one datagram. Never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Result<Frame, DecodeError> {
    decode_full(b).map(|d| d.frame)
}

/// Reads one datagram with its extensions and signature. Never panics, whatever the bytes.
pub fn decode_full(b: &[u8]) -> Result<Decoded, DecodeError> {
    if b.len() == LEGACY_LEN {
        let uid = be_u64(b);
        if uid == 0 {
            return Err(DecodeError::ZeroUid);
        }
        return Ok(Decoded {
            frame: Frame::Legacy { uid: Uid(uid) },
            sig: None,
            ext: Extensions::default(),
        });
    }
    if b.len() < 8 {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    if b[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if b[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(b[4]));
    }
    let (min, trailer) = match b[6] {
        AUTH_NONE => (FRAME_LEN, 0),
        AUTH_HMAC_SHA256 => {
            if b[7] == 0 {
                return Err(DecodeError::ZeroKeyId);
            }
            (SIGNED_LEN, crate::auth::MAC_LEN)
        }
        kind => return Err(DecodeError::UnsupportedAuth(kind)),
    };
    if b.len() < FRAME_LEN {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    if b.len() < min {
        return Err(DecodeError::BadLength {
            len: b.len(),
            expected: min,
        });
    }
    let hb = Heartbeat {
        flags: b[5],
        uid: Uid(be_u64(&b[8..])),
        incarnation: be_u64(&b[16..]),
        sequence: be_u64(&b[24..]),
        interval_ms: be_u32(&b[32..]),
        hold_ms: be_u32(&b[36..]),
    };
    if hb.uid.0 == 0 {
        return Err(DecodeError::ZeroUid);
    }
    if hb.interval_ms == 0 || hb.hold_ms < hb.interval_ms {
        return Err(DecodeError::BadTiming {
            interval_ms: hb.interval_ms,
            hold_ms: hb.hold_ms,
        });
    }
    let signed_len = b.len() - trailer;
    let ext = decode_extensions(&b[FRAME_LEN..signed_len])?;
    let sig = (trailer > 0).then_some(Signature {
        key_id: b[7],
        signed_len,
    });
    Ok(Decoded {
        frame: Frame::Heartbeat(hb),
        sig,
        ext,
    })
}

fn decode_extensions(mut b: &[u8]) -> Result<Extensions, DecodeError> {
    let mut ext = Extensions::default();
    let mut seen = [false; 256];
    while !b.is_empty() {
        let kind = b[0];
        if b.len() < 3 {
            return Err(DecodeError::BadExtension { kind });
        }
        let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let Some(value) = b.get(3..3 + len) else {
            return Err(DecodeError::BadExtension { kind });
        };
        b = &b[3 + len..];
        if std::mem::replace(&mut seen[usize::from(kind)], true) {
            return Err(DecodeError::BadExtension { kind });
        }
        let bad = DecodeError::BadExtension { kind };
        match kind {
            EXT_ECHO => {
                let Some((&flags, list)) = value.split_first() else {
                    return Err(bad);
                };
                if list.len() % ECHO_ENTRY_LEN != 0 || list.len() / ECHO_ENTRY_LEN > MAX_ECHOES {
                    return Err(bad);
                }
                let entries = list
                    .chunks_exact(ECHO_ENTRY_LEN)
                    .map(|e| Echo {
                        uid: Uid(be_u64(&e[0..])),
                        incarnation: be_u64(&e[8..]),
                        sequence: be_u64(&e[16..]),
                        age_ms: be_u32(&e[24..]),
                        loss_permille: u16::from_be_bytes([e[28], e[29]]).min(1000),
                        direct: e[30] & 1 != 0,
                    })
                    .collect();
                ext.echo = Some(Echoes {
                    entries,
                    truncated: flags & 1 != 0,
                });
            }
            EXT_VIEW => {
                if value.len() != 10 {
                    return Err(bad);
                }
                ext.view = Some(View {
                    digest: be_u64(value),
                    candidates: u16::from_be_bytes([value[8], value[9]]),
                });
            }
            EXT_BLOCKED => {
                if value.len() % 4 != 0 || value.len() / 4 > MAX_BLOCKED {
                    return Err(bad);
                }
                ext.blocked = value
                    .chunks_exact(4)
                    .map(|v| crate::types::Vni(be_u32(v)))
                    .collect();
            }
            _ => {}
        }
    }
    Ok(ext)
}

/// A signed frame's signature: the key id, and where the signed bytes end and the MAC begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub key_id: u8,
    /// The signed bytes are `b[..signed_len]`, the MAC `b[signed_len..]`.
    pub signed_len: usize,
}

/// Decodes like [`decode`], and says whether (and by which key id) the frame is signed.
pub fn decode_signed(b: &[u8]) -> Result<(Frame, Option<Signature>), DecodeError> {
    decode_full(b).map(|d| (d.frame, d.sig))
}

/// Writes `hb` as a version-1 frame signed with the first of `keys`, without extensions.
pub fn encode_signed(hb: &Heartbeat, keys: &crate::auth::Keys) -> [u8; SIGNED_LEN] {
    let mut b = [0u8; SIGNED_LEN];
    b.copy_from_slice(&encode_full(hb, &Extensions::default(), Some(keys)));
    b
}

fn push_ext(b: &mut Vec<u8>, kind: u8, value: &[u8]) {
    b.push(kind);
    // Every value is bounded far below u16::MAX (MAX_ECHOES, MAX_BLOCKED).
    b.extend_from_slice(&(value.len() as u16).to_be_bytes());
    b.extend_from_slice(value);
}

/// Writes `hb` with its extensions (at most [`MAX_ECHOES`] echoes and [`MAX_BLOCKED`] VNIs are
/// written; more set the truncated flag, or are left out), signed with the first of `keys` when
/// given.
pub fn encode_full(hb: &Heartbeat, ext: &Extensions, keys: Option<&crate::auth::Keys>) -> Vec<u8> {
    let mut b = Vec::with_capacity(FRAME_LEN + 64);
    b.extend_from_slice(&encode(hb));
    if let Some(echo) = &ext.echo {
        let n = echo.entries.len().min(MAX_ECHOES);
        let mut v = Vec::with_capacity(1 + n * ECHO_ENTRY_LEN);
        v.push(u8::from(echo.truncated || echo.entries.len() > MAX_ECHOES));
        for e in &echo.entries[..n] {
            v.extend_from_slice(&e.uid.0.to_be_bytes());
            v.extend_from_slice(&e.incarnation.to_be_bytes());
            v.extend_from_slice(&e.sequence.to_be_bytes());
            v.extend_from_slice(&e.age_ms.to_be_bytes());
            v.extend_from_slice(&e.loss_permille.min(1000).to_be_bytes());
            v.push(u8::from(e.direct));
            v.push(0);
        }
        push_ext(&mut b, EXT_ECHO, &v);
    }
    if let Some(view) = &ext.view {
        let mut v = [0u8; 10];
        v[..8].copy_from_slice(&view.digest.to_be_bytes());
        v[8..].copy_from_slice(&view.candidates.to_be_bytes());
        push_ext(&mut b, EXT_VIEW, &v);
    }
    if !ext.blocked.is_empty() {
        let v: Vec<u8> = ext
            .blocked
            .iter()
            .take(MAX_BLOCKED)
            .flat_map(|v| v.0.to_be_bytes())
            .collect();
        push_ext(&mut b, EXT_BLOCKED, &v);
    }
    if let Some(keys) = keys {
        b[6] = AUTH_HMAC_SHA256;
        b[7] = keys.signing_id();
        let mac = keys.sign(&b);
        b.extend_from_slice(&mac);
    }
    b
}
