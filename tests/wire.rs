//! The heartbeat frame is a contract between gateways and versions: fixed byte vectors checked
//! both ways, one test per `DecodeError`, and properties over arbitrary bytes.

use proptest::prelude::*;
use wmgwd2::auth::{AuthError, KeyError, Keys};
use wmgwd2::types::{Uid, Vni};
use wmgwd2::wire::{
    decode, decode_full, decode_signed, encode, encode_full, encode_signed, view_digest,
    DecodeError, Echo, Echoes, Extensions, Frame, Heartbeat, Signature, View, ECHO_ENTRY_LEN,
    EXT_BLOCKED, EXT_ECHO, EXT_VIEW, FLAG_LEAVING, FLAG_STARTING, FRAME_LEN, LEGACY_LEN,
    MAX_DATAGRAM, MAX_ECHOES, SIGNED_LEN,
};

const HB: Heartbeat = STARTING_HB;

/// A starting heartbeat, and the bytes it is on the wire, written out by hand from the diagram in
/// docs/protocol.md.
const STARTING_HB: Heartbeat = Heartbeat {
    uid: Uid(0x1a2b),
    incarnation: 0x0102_0304_0506_0708,
    sequence: 42,
    flags: FLAG_STARTING,
    interval_ms: 1000,
    hold_ms: 3000,
};
#[rustfmt::skip]
const STARTING_BYTES: [u8; 40] = [
    0x57, 0x4d, 0x47, 0x32,                         // magic "WMG2"
    0x01, 0x02, 0x00, 0x00,                         // version 1, flags STARTING, auth 0, reserved
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1a, 0x2b, // uid
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // incarnation
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // sequence 42
    0x00, 0x00, 0x03, 0xe8,                         // interval 1000 ms
    0x00, 0x00, 0x0b, 0xb8,                         // hold 3000 ms
];

/// A leaving heartbeat with every multi-byte field using its high byte.
const LEAVING_HB: Heartbeat = Heartbeat {
    uid: Uid(0xfedc_ba98_7654_3210),
    incarnation: 0x8000_0000_0000_0001,
    sequence: u64::MAX,
    flags: FLAG_LEAVING,
    interval_ms: 0x0102_0304,
    hold_ms: 0xf0e0_d0c0,
};
#[rustfmt::skip]
const LEAVING_BYTES: [u8; 40] = [
    0x57, 0x4d, 0x47, 0x32,
    0x01, 0x01, 0x00, 0x00,
    0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x01, 0x02, 0x03, 0x04,
    0xf0, 0xe0, 0xd0, 0xc0,
];

#[test]
fn constants_are_the_documented_ones() {
    assert_eq!(FRAME_LEN, 40);
    assert_eq!(LEGACY_LEN, 8);
    assert_eq!(FLAG_LEAVING, 0x01);
    assert_eq!(FLAG_STARTING, 0x02);
    assert_eq!(MAX_DATAGRAM, 1472);
}

#[test]
fn encode_writes_the_literal_bytes() {
    assert_eq!(encode(&STARTING_HB), STARTING_BYTES);
    assert_eq!(encode(&LEAVING_HB), LEAVING_BYTES);
}

#[test]
fn literal_bytes_decode_to_the_heartbeat() {
    assert_eq!(decode(&STARTING_BYTES), Ok(Frame::Heartbeat(STARTING_HB)));
    assert_eq!(decode(&LEAVING_BYTES), Ok(Frame::Heartbeat(LEAVING_HB)));
    let Ok(Frame::Heartbeat(hb)) = decode(&STARTING_BYTES) else {
        unreachable!()
    };
    assert!(hb.starting() && !hb.leaving());
    let Ok(Frame::Heartbeat(hb)) = decode(&LEAVING_BYTES) else {
        unreachable!()
    };
    assert!(hb.leaving() && !hb.starting());
}

#[test]
fn legacy_frame_is_the_big_endian_uid() {
    assert_eq!(
        decode(&[0, 0, 0, 0, 0, 0, 0x1a, 0x2b]),
        Ok(Frame::Legacy { uid: Uid(0x1a2b) })
    );
    assert_eq!(
        decode(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]),
        Ok(Frame::Legacy {
            uid: Uid(0xdead_beef_0000_0001)
        })
    );
    // Length decides: eight bytes that start like a version-1 frame are still a legacy UID.
    assert_eq!(
        decode(b"WMG2\x01\x00\x00\x00"),
        Ok(Frame::Legacy {
            uid: Uid(0x574d_4732_0100_0000)
        })
    );
}

/// `STARTING_BYTES` with one byte changed.
fn with(i: usize, v: u8) -> [u8; 40] {
    let mut b = STARTING_BYTES;
    b[i] = v;
    b
}

#[test]
fn error_truncated() {
    for len in [0, 1, 7] {
        let e = decode(&STARTING_BYTES[..len]).unwrap_err();
        assert_eq!(e, DecodeError::Truncated { len });
        assert_eq!(e.kind(), "truncated");
    }
    // A valid header that stops short of the full frame.
    for len in [9, 16, 39] {
        assert_eq!(
            decode(&STARTING_BYTES[..len]),
            Err(DecodeError::Truncated { len })
        );
    }
}

#[test]
fn error_bad_magic() {
    for i in 0..4 {
        let e = decode(&with(i, b'X')).unwrap_err();
        assert_eq!(e, DecodeError::BadMagic);
        assert_eq!(e.kind(), "bad_magic");
    }
    // Magic is checked before the length: a short datagram of garbage is bad magic.
    assert_eq!(decode(b"hello world"), Err(DecodeError::BadMagic));
}

#[test]
fn error_unsupported_version() {
    for v in [0, 2, 0xff] {
        let e = decode(&with(4, v)).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedVersion(v));
        assert_eq!(e.kind(), "unsupported_version");
    }
    // A later version may be longer: its length must not hide the version.
    let mut long = STARTING_BYTES.to_vec();
    long[4] = 2;
    long.extend_from_slice(&[0; 32]);
    assert_eq!(decode(&long), Err(DecodeError::UnsupportedVersion(2)));
}

#[test]
fn error_unsupported_auth() {
    for a in [2, 0x80, 0xff] {
        let e = decode(&with(6, a)).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedAuth(a));
        assert_eq!(e.kind(), "unsupported_auth");
    }
    // A frame with a trailer: the auth kind is reported, not the length.
    let mut trailer = with(6, 2).to_vec();
    trailer.extend_from_slice(&[0xaa; 32]);
    assert_eq!(decode(&trailer), Err(DecodeError::UnsupportedAuth(2)));
}

#[test]
fn error_zero_key_id() {
    let mut signed = with(6, 1).to_vec();
    signed.extend_from_slice(&[0xaa; 32]);
    let e = decode(&signed).unwrap_err();
    assert_eq!(e, DecodeError::ZeroKeyId);
    assert_eq!(e.kind(), "zero_key_id");
}

/// A signed frame: kind 1, key id in byte 7, the HMAC-SHA256 of the first 40 bytes after them
///.
#[test]
fn signed_frame_layout_and_verification() {
    let keys = Keys::parse(&format!("7 {}\n3 {}\n", "11".repeat(32), "22".repeat(32))).unwrap();
    let b = encode_signed(&HB, &keys);
    assert_eq!(b.len(), SIGNED_LEN);
    assert_eq!(SIGNED_LEN, 72);
    assert_eq!((b[6], b[7]), (1, 7));
    assert_eq!(&b[8..40], &encode(&HB)[8..40]);
    let (frame, sig) = decode_signed(&b).unwrap();
    assert_eq!(frame, Frame::Heartbeat(HB));
    assert_eq!(
        sig,
        Some(Signature {
            key_id: 7,
            signed_len: FRAME_LEN
        })
    );
    assert_eq!(keys.verify(7, &b[..40], &b[40..]), Ok(()));
    // The MAC is HMAC-SHA256(key 7, bytes 0..40), computed here from the definition.
    assert_eq!(&b[40..], &hmac_sha256(&[0x11; 32], &b[..40]));
    // Any changed bit, in the header or in the MAC, fails; so do another key and an unknown id.
    for i in [0, 5, 8, 20, 39, 40, 71] {
        let mut bad = b;
        bad[i] ^= 1;
        let (signed, mac) = bad.split_at(40);
        assert_ne!(keys.verify(7, signed, mac), Ok(()), "byte {i}");
    }
    assert_eq!(keys.verify(3, &b[..40], &b[40..]), Err(AuthError::BadMac));
    assert_eq!(
        keys.verify(9, &b[..40], &b[40..]),
        Err(AuthError::UnknownKey(9))
    );
    // Unsigned frames decode with no signature.
    assert_eq!(decode_signed(&encode(&HB)).unwrap().1, None);
}

/// HMAC (RFC 2104) over SHA-256, written out from the definition.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn key_file_parsing() {
    let text = format!(
        "# wmgwd2 keys\n\n  12 {}   # new\n4 {}\n",
        "ab".repeat(32),
        "CD".repeat(32)
    );
    let k = Keys::parse(&text).unwrap();
    assert_eq!(k.ids().collect::<Vec<_>>(), [12, 4]);
    assert_eq!(k.signing_id(), 12);
    assert!(
        !format!("{k:?}").contains("abab"),
        "Debug must not print key material"
    );
    let key = "00".repeat(32);
    for (bad, err) in [
        (String::new(), KeyError::Empty),
        ("# nothing\n".to_string(), KeyError::Empty),
        (format!("0 {key}"), KeyError::BadId { line: 1 }),
        (format!("256 {key}"), KeyError::BadId { line: 1 }),
        (format!("x {key}"), KeyError::BadId { line: 1 }),
        ("1 abcd".to_string(), KeyError::BadKey { line: 1 }),
        (
            format!("1 {}", "zz".repeat(32)),
            KeyError::BadKey { line: 1 },
        ),
        (format!("1 {key} extra"), KeyError::Syntax { line: 1 }),
        ("1".to_string(), KeyError::Syntax { line: 1 }),
        (
            format!("1 {key}\n1 {key}"),
            KeyError::DuplicateId { line: 2, id: 1 },
        ),
    ] {
        assert_eq!(Keys::parse(&bad), Err(err), "{bad:?}");
    }
}

#[test]
fn error_bad_length() {
    // A signed frame shorter than header and MAC.
    for len in [41, 64, 71] {
        let mut b = STARTING_BYTES.to_vec();
        b[6] = 1;
        b[7] = 1;
        b.resize(len, 0);
        let e = decode(&b).unwrap_err();
        assert_eq!(
            e,
            DecodeError::BadLength {
                len,
                expected: SIGNED_LEN
            }
        );
        assert_eq!(e.kind(), "bad_length");
    }
    // Bytes after an unsigned header that are no extensions: too short for type and length, a
    // value longer than the datagram, the same type twice.
    for (tail, kind) in [
        (vec![0u8], 0u8),
        (vec![5, 0, 9, 1], 5),
        (vec![7, 0, 0, 7, 0, 0], 7),
    ] {
        let mut b = STARTING_BYTES.to_vec();
        b.extend_from_slice(&tail);
        let e = decode(&b).unwrap_err();
        assert_eq!(e, DecodeError::BadExtension { kind }, "{tail:?}");
        assert_eq!(e.kind(), "bad_extension");
    }
}

fn ext() -> Extensions {
    Extensions {
        echo: Some(Echoes {
            entries: vec![
                Echo {
                    uid: Uid(0x1002),
                    incarnation: 5,
                    sequence: 77,
                    age_ms: 120,
                    loss_permille: 200,
                    direct: true,
                },
                Echo {
                    uid: Uid(0x1003),
                    incarnation: 6,
                    sequence: 1,
                    age_ms: 0,
                    loss_permille: 0,
                    direct: false,
                },
            ],
            truncated: false,
        }),
        view: Some(View {
            digest: view_digest([Uid(3), Uid(1), Uid(2)]),
            candidates: 3,
        }),
        blocked: vec![Vni(7), Vni(4000)],
    }
}

#[test]
fn extensions_round_trip_signed_and_unsigned() {
    let e = ext();
    let b = encode_full(&HB, &e, None);
    // 40 + ECHO (3 + 1 + 2 × 32) + VIEW (3 + 10) + BLOCKED (3 + 8).
    assert_eq!(b.len(), 40 + 68 + 13 + 11);
    assert_eq!(&b[40..44], &[EXT_ECHO, 0, 65, 0]);
    let d = decode_full(&b).unwrap();
    assert_eq!(d.frame, Frame::Heartbeat(HB));
    assert_eq!(d.ext, e);
    assert_eq!(d.sig, None);

    let keys = Keys::parse(&format!("3 {}", "ab".repeat(32))).unwrap();
    let b = encode_full(&HB, &e, Some(&keys));
    assert_eq!(b.len(), 40 + 68 + 13 + 11 + 32);
    let d = decode_full(&b).unwrap();
    assert_eq!(d.ext, e);
    let sig = d.sig.unwrap();
    assert_eq!(sig.signed_len, b.len() - 32);
    assert!(keys
        .verify(3, &b[..sig.signed_len], &b[sig.signed_len..])
        .is_ok());
    // The MAC covers the extensions: change one bit of an echo's age and it no longer verifies.
    let mut t = b.clone();
    t[40 + 4 + 24 + 3] ^= 1;
    let d = decode_full(&t).unwrap();
    assert_ne!(d.ext, e);
    assert!(keys
        .verify(3, &t[..sig.signed_len], &t[sig.signed_len..])
        .is_err());
}

#[test]
fn unknown_extensions_are_skipped_and_limits_hold() {
    let mut b = encode(&HB).to_vec();
    b.extend_from_slice(&[200, 0, 3, 1, 2, 3]);
    assert_eq!(decode_full(&b).unwrap().ext, Extensions::default());
    // An ECHO whose length is not 1 + n × 32, a VIEW of the wrong size, too many entries.
    for tail in [
        vec![EXT_ECHO, 0, 2, 0, 0],
        vec![EXT_VIEW, 0, 2, 0, 0],
        vec![EXT_BLOCKED, 0, 3, 0, 0, 0],
    ] {
        let mut b = encode(&HB).to_vec();
        b.extend_from_slice(&tail);
        assert!(
            matches!(decode(&b), Err(DecodeError::BadExtension { .. })),
            "{tail:?}"
        );
    }
    let mut many = encode(&HB).to_vec();
    let n = MAX_ECHOES + 1;
    many.extend_from_slice(&[EXT_ECHO]);
    many.extend_from_slice(&((1 + n * ECHO_ENTRY_LEN) as u16).to_be_bytes());
    many.push(0);
    many.extend(std::iter::repeat_n(1u8, n * ECHO_ENTRY_LEN));
    assert!(matches!(
        decode(&many),
        Err(DecodeError::BadExtension { kind: EXT_ECHO })
    ));
    // The encoder writes at most MAX_ECHOES and says the list was cut.
    let mut e = ext();
    let one = e.echo.as_ref().unwrap().entries[0];
    e.echo.as_mut().unwrap().entries = vec![one; MAX_ECHOES + 5];
    let b = encode_full(&HB, &e, None);
    assert!(b.len() <= MAX_DATAGRAM);
    let got = decode_full(&b).unwrap().ext.echo.unwrap();
    assert_eq!(got.entries.len(), MAX_ECHOES);
    assert!(got.truncated);
}

#[test]
fn the_view_digest_depends_on_the_set_only() {
    assert_eq!(
        view_digest([Uid(1), Uid(2), Uid(3)]),
        view_digest([Uid(3), Uid(2), Uid(1), Uid(2)])
    );
    assert_ne!(view_digest([Uid(1), Uid(2)]), view_digest([Uid(1), Uid(3)]));
    // Pinned: every member must compute the same digest.
    assert_eq!(view_digest([]), 0x1e92_4b9d_7377_00d7);
}

#[test]
fn error_zero_uid_legacy_and_v1() {
    let e = decode(&[0; 8]).unwrap_err();
    assert_eq!(e, DecodeError::ZeroUid);
    assert_eq!(e.kind(), "zero_uid");

    let mut b = STARTING_BYTES;
    b[8..16].fill(0);
    assert_eq!(decode(&b), Err(DecodeError::ZeroUid));
    // uid 1 is fine.
    b[15] = 1;
    assert!(matches!(decode(&b), Ok(Frame::Heartbeat(h)) if h.uid == Uid(1)));
}

#[test]
fn error_bad_timing() {
    let timing = |interval_ms: u32, hold_ms: u32| {
        let mut b = STARTING_BYTES;
        b[32..36].copy_from_slice(&interval_ms.to_be_bytes());
        b[36..40].copy_from_slice(&hold_ms.to_be_bytes());
        decode(&b)
    };
    let e = timing(0, 3000).unwrap_err();
    assert_eq!(
        e,
        DecodeError::BadTiming {
            interval_ms: 0,
            hold_ms: 3000
        }
    );
    assert_eq!(e.kind(), "bad_timing");
    assert_eq!(
        timing(0, 0),
        Err(DecodeError::BadTiming {
            interval_ms: 0,
            hold_ms: 0
        })
    );
    assert_eq!(
        timing(1000, 999),
        Err(DecodeError::BadTiming {
            interval_ms: 1000,
            hold_ms: 999
        })
    );
    // The boundaries are accepted: hold equal to the interval, and an interval of 1 ms.
    assert!(timing(1000, 1000).is_ok());
    assert!(timing(1, 1).is_ok());
    assert!(timing(u32::MAX, u32::MAX).is_ok());
}

#[test]
fn settling_is_bit_2() {
    let Ok(Frame::Heartbeat(hb)) = decode(&with(5, 0x04)) else {
        unreachable!()
    };
    assert!(hb.settling() && !hb.leaving() && !hb.starting());
    let Ok(Frame::Heartbeat(hb)) = decode(&with(5, 0x03)) else {
        unreachable!()
    };
    assert!(!hb.settling());
}

#[test]
fn unknown_flag_bits_are_accepted_and_preserved() {
    for flags in [0x04, 0x08, 0x80, 0xf8, 0xfc, 0xfd, 0xfe, 0xff] {
        let b = with(5, flags);
        let Ok(Frame::Heartbeat(hb)) = decode(&b) else {
            panic!("flags {flags:#x} rejected: {:?}", decode(&b))
        };
        assert_eq!(hb.flags, flags);
        assert_eq!(hb.leaving(), flags & 0x01 != 0, "flags {flags:#x}");
        assert_eq!(hb.starting(), flags & 0x02 != 0, "flags {flags:#x}");
        assert_eq!(hb.settling(), flags & 0x04 != 0, "flags {flags:#x}");
        assert_eq!(encode(&hb), b, "flags {flags:#x} re-encoded");
    }
}

fn valid_heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        1..=u64::MAX,
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        1..=u32::MAX,
        any::<u32>(),
    )
        .prop_map(
            |(uid, incarnation, sequence, flags, interval_ms, extra)| Heartbeat {
                uid: Uid(uid),
                incarnation,
                sequence,
                flags,
                interval_ms,
                hold_ms: interval_ms.saturating_add(extra),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
    }

    /// Random bytes almost never carry the magic: also feed frames with a valid header prefix and
    /// random rest, so every check after the magic is exercised.
    #[test]
    fn decode_never_panics_behind_a_valid_header(
        version in prop_oneof![Just(1u8), any::<u8>()],
        auth in prop_oneof![Just(0u8), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut b = b"WMG2".to_vec();
        b.push(version);
        b.extend_from_slice(&rest);
        if b.len() > 6 {
            b[6] = auth;
        }
        match decode(&b) {
            Ok(Frame::Heartbeat(hb)) => {
                prop_assert_eq!(b.len(), FRAME_LEN);
                prop_assert_eq!(decode(&encode(&hb)), Ok(Frame::Heartbeat(hb)));
            }
            Ok(Frame::Legacy { .. }) => prop_assert_eq!(b.len(), LEGACY_LEN),
            Err(_) => {}
        }
    }

    #[test]
    fn encode_decode_round_trips(hb in valid_heartbeat()) {
        let b = encode(&hb);
        prop_assert_eq!(&b[..5], b"WMG2\x01");
        prop_assert_eq!(decode(&b), Ok(Frame::Heartbeat(hb)));
    }

    #[test]
    fn any_nonzero_legacy_uid_decodes(uid in 1..=u64::MAX) {
        prop_assert_eq!(decode(&uid.to_be_bytes()), Ok(Frame::Legacy { uid: Uid(uid) }));
    }
}
