//! `wmgwd2-lab frame-cost`: what a heartbeat costs to build and to read, with and without the
//! HMAC, with few and with the most ECHO entries. Pure (no namespaces, no root): it times the
//! daemon's own encoder and decoder and the key's sign and verify over many frames, and prints
//! nanoseconds per frame. A figure for docs/benchmarks.md, never an assertion.

use std::hint::black_box;
use std::time::Instant;

use wmgwd2::auth::Keys;
use wmgwd2::types::{Uid, Vni};
use wmgwd2::wire::{self, Echo, Echoes, Extensions, Heartbeat, View};

pub const USAGE: &str = "usage: wmgwd2-lab frame-cost [-n FRAMES]\n  \
    times encoding+signing and decoding+verifying heartbeats (default 200000 each)\n";

fn ext(members: usize) -> Extensions {
    Extensions {
        echo: Some(Echoes {
            entries: (0..members as u64)
                .map(|i| Echo {
                    uid: Uid(0x1000 + i),
                    incarnation: 1_700_000_000_000_000 + i,
                    sequence: 12345 + i,
                    age_ms: 37,
                    loss_permille: 3,
                    direct: true,
                })
                .collect(),
            truncated: false,
        }),
        view: Some(View {
            digest: 0x0123_4567_89ab_cdef,
            candidates: members as u16 + 1,
        }),
        blocked: vec![Vni(7)],
    }
}

/// One row: (what, bytes per frame, ns to build, ns to read).
pub fn measure(n: u32) -> Vec<(String, usize, f64, f64)> {
    let keys = Keys::parse(&format!("1 {}", "ab".repeat(32))).expect("key");
    let hb = Heartbeat {
        uid: Uid(0x1001),
        incarnation: 1_700_000_000_000_000,
        sequence: 1,
        flags: 0,
        interval_ms: 100,
        hold_ms: 300,
    };
    let mut rows = Vec::new();
    for members in [2usize, wire::MAX_ECHOES] {
        for signed in [false, true] {
            let e = ext(members);
            let k = signed.then_some(&keys);
            let t = Instant::now();
            let mut len = 0;
            for i in 0..n {
                let f = wire::encode_full(
                    &Heartbeat {
                        sequence: u64::from(i),
                        ..hb
                    },
                    &e,
                    k,
                );
                len = f.len();
                black_box(f);
            }
            let build = t.elapsed().as_nanos() as f64 / f64::from(n);
            let frame = wire::encode_full(&hb, &e, k);
            let t = Instant::now();
            for _ in 0..n {
                let d = wire::decode_full(black_box(&frame)).expect("decodes");
                if let Some(s) = d.sig {
                    keys.verify(s.key_id, &frame[..s.signed_len], &frame[s.signed_len..])
                        .expect("verifies");
                }
                black_box(d);
            }
            let read = t.elapsed().as_nanos() as f64 / f64::from(n);
            rows.push((
                format!(
                    "{} members, {}",
                    members + 1,
                    if signed { "HMAC-SHA256" } else { "unsigned" }
                ),
                len,
                build,
                read,
            ));
        }
    }
    rows
}

/// Prints the rows as a Markdown table.
pub fn report(rows: &[(String, usize, f64, f64)]) -> String {
    let mut s = String::from(
        "| frame | bytes | build (encode, sign) | read (decode, verify) |\n|---|---:|---:|---:|\n",
    );
    for (what, len, build, read) in rows {
        s.push_str(&format!(
            "| {what} | {len} | {build:.0} ns | {read:.0} ns |\n"
        ));
    }
    s
}
