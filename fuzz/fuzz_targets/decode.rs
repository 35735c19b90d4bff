//! `cargo fuzz run decode` (nightly): arbitrary datagrams into the heartbeat decoder.
//!
//! Beyond "never panics": whatever decodes must re-encode to the same meaning (header and
//! extensions), and a version-1 frame's header must re-encode to the same bytes except the
//! reserved byte 7, which receivers ignore.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wmgwd2::wire::{decode_full, encode_full, Frame, FRAME_LEN, LEGACY_LEN, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    // The daemon never hands the decoder more than one receive buffer.
    let data = &data[..data.len().min(MAX_DATAGRAM)];
    match decode_full(data).map(|d| (d.frame, d.ext, d.sig)) {
        Ok((Frame::Heartbeat(hb), ext, sig)) => {
            assert!(data.len() >= FRAME_LEN);
            assert!(hb.uid.0 != 0 && hb.interval_ms != 0 && hb.hold_ms >= hb.interval_ms);
            let again = encode_full(&hb, &ext, None);
            assert_eq!(&again[..6], &data[..6]);
            assert_eq!(&again[8..FRAME_LEN], &data[8..FRAME_LEN]);
            let d = decode_full(&again).unwrap();
            assert_eq!((d.frame, d.ext), (Frame::Heartbeat(hb), ext));
            if let Some(s) = sig {
                assert_eq!(s.signed_len + 32, data.len());
            }
        }
        Ok((Frame::Legacy { uid }, _, _)) => {
            assert_eq!(data.len(), LEGACY_LEN);
            assert_ne!(uid.0, 0);
            assert_eq!(uid.0.to_be_bytes(), data);
        }
        Err(e) => {
            assert!(!e.kind().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
});
