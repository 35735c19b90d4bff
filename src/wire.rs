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
//! Auth kind 0: no trailer, byte 7 is reserved (sent as 0, ignored). Auth kind 1: byte 7 is the
//! id (1 to 255) of the key that signed, and the frame ends in the 32-byte HMAC-SHA256 of its
//! first 40 bytes (see [`crate::auth`]); the receiver verifies it in constant time.
//!
//! Flags: bit 0 `LEAVING` (the sender is stopping: drop it now), bit 1 `STARTING` (the sender is in
//! its start-up hold-down and owns nothing yet), bit 2 `SETTLING` (the sender is applying a change
//! to the kernel right now: this heartbeat does not confirm a takeover). Other bits are reserved: sent as 0, ignored on
//! receipt so that later versions can add hints without breaking this one.
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
/// The largest datagram worth reading; anything longer is truncated by the receiver and rejected.
pub const MAX_DATAGRAM: usize = 512;
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

/// Reads one datagram. Never panics, whatever the bytes.
pub fn decode(b: &[u8]) -> Result<Frame, DecodeError> {
    if b.len() == LEGACY_LEN {
        let uid = be_u64(b);
        if uid == 0 {
            return Err(DecodeError::ZeroUid);
        }
        return Ok(Frame::Legacy { uid: Uid(uid) });
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
    let expected = match b[6] {
        AUTH_NONE => FRAME_LEN,
        AUTH_HMAC_SHA256 => {
            if b[7] == 0 {
                return Err(DecodeError::ZeroKeyId);
            }
            SIGNED_LEN
        }
        kind => return Err(DecodeError::UnsupportedAuth(kind)),
    };
    if b.len() < FRAME_LEN {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    if b.len() != expected {
        return Err(DecodeError::BadLength {
            len: b.len(),
            expected,
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
    Ok(Frame::Heartbeat(hb))
}

/// A signed frame's signature: the key id, and where the signed bytes end and the MAC begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub key_id: u8,
}

/// Decodes like [`decode`], and says whether (and by which key id) the frame is signed. The
/// signed bytes are `b[..FRAME_LEN]`, the MAC `b[FRAME_LEN..]`.
pub fn decode_signed(b: &[u8]) -> Result<(Frame, Option<Signature>), DecodeError> {
    let frame = decode(b)?;
    let sig = match frame {
        Frame::Heartbeat(_) if b[6] == AUTH_HMAC_SHA256 => Some(Signature { key_id: b[7] }),
        _ => None,
    };
    Ok((frame, sig))
}

/// Writes `hb` as a version-1 frame signed with the first of `keys`.
pub fn encode_signed(hb: &Heartbeat, keys: &crate::auth::Keys) -> [u8; SIGNED_LEN] {
    let mut b = [0u8; SIGNED_LEN];
    b[..FRAME_LEN].copy_from_slice(&encode(hb));
    b[6] = AUTH_HMAC_SHA256;
    b[7] = keys.signing_id();
    let mac = keys.sign(&b[..FRAME_LEN]);
    b[FRAME_LEN..].copy_from_slice(&mac);
    b
}
