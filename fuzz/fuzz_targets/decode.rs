//! `cargo fuzz run decode` (nightly): arbitrary datagrams into the heartbeat decoder.
//!
//! Beyond "never panics": whatever decodes must re-encode to the same meaning, and a version-1
//! frame must re-encode to the same bytes except the reserved byte 7, which receivers ignore.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wmgwd2::wire::{decode, encode, Frame, FRAME_LEN, LEGACY_LEN, MAX_DATAGRAM};

fuzz_target!(|data: &[u8]| {
    // The daemon never hands the decoder more than one receive buffer.
    let data = &data[..data.len().min(MAX_DATAGRAM)];
    match decode(data) {
        Ok(Frame::Heartbeat(hb)) => {
            assert_eq!(data.len(), FRAME_LEN);
            assert!(hb.uid.0 != 0 && hb.interval_ms != 0 && hb.hold_ms >= hb.interval_ms);
            let again = encode(&hb);
            assert_eq!(&again[..7], &data[..7]);
            assert_eq!(&again[8..], &data[8..]);
            assert_eq!(decode(&again), Ok(Frame::Heartbeat(hb)));
        }
        Ok(Frame::Legacy { uid }) => {
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
