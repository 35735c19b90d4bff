//! `cargo fuzz run core` (nightly): arbitrary datagrams and time steps into the sans-I/O core,
//! past the decoder: liveness, assignment, planning and the leave protocol all see what the
//! fuzzer makes. Effects are carried out by an always-successful kernel. Beyond "never panics":
//! no timer is left in the past after an input (a hot loop), and a stop always ends.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wmgwd2::cli::Config;
use wmgwd2::core::{Command, Core, Effect, GarpReport, Input};
use wmgwd2::links::{LinkState, Snapshot};
use wmgwd2::types::{IfIndex, Uid};

fn links() -> Snapshot {
    let links = (1..=4u32)
        .map(|v| LinkState {
            ifindex: IfIndex(100 + v),
            ifname: format!("vrrp4-{v}"),
            protodown: false,
            reason: 0,
            admin_up: true,
            carrier: true,
            running: true,
            mac: [2, 0, 0, 0, 0, v as u8],
            lower: None,
            master: None,
        })
        .collect();
    Snapshot {
        links,
        addrs: Default::default(),
    }
}

fn drain(core: &mut Core, now: Instant) -> bool {
    while let Some(e) = core.poll_effect() {
        match e {
            Effect::SetProtodown(changes) => {
                let results = changes.iter().map(|_| Ok(())).collect();
                core.handle(Input::Applied { changes, results }, now);
            }
            Effect::FlushFdb(flushes) => {
                let results = flushes.iter().map(|_| Ok(())).collect();
                core.handle(Input::FdbFlushed { flushes, results }, now);
            }
            Effect::FlushNeighbours(ix) => core.handle(
                Input::NeighboursFlushed {
                    interfaces: ix.len(),
                    result: Ok(0),
                },
                now,
            ),
            Effect::SendGarps(_) => core.handle(Input::GarpsSent(GarpReport::default()), now),
            Effect::Resync => core.handle(Input::Snapshot(Ok(links())), now),
            Effect::RebindSocket => core.handle(Input::Rebound(Ok(())), now),
            Effect::Exit(_) => return true,
            _ => {}
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config::parse_from(["wmgwd2", "--minvni", "1", "--maxvni", "4", "--interval", "100ms"])
        .expect("config");
    let mut core = Core::new(cfg, Uid(0x1001), 7);
    let t0 = Instant::now();
    let mut now = t0;
    core.handle(Input::Start(links()), now);
    drain(&mut core, now);
    let from: SocketAddr = "10.0.1.2:3000".parse().expect("addr");
    // Each chunk: a byte of time (x 10 ms) and then a datagram of up to 80 bytes.
    for chunk in data.chunks(81) {
        now += Duration::from_millis(u64::from(chunk[0]) * 10);
        while let Some(d) = core.next_deadline().filter(|d| *d <= now) {
            core.handle(Input::Timer, d.max(t0));
            drain(&mut core, now);
        }
        let input = Input::Datagram {
            bytes: &chunk[1..],
            from,
            ttl: Some(255),
            ifindex: None,
            dropped: None,
            own_sequence: u64::from(chunk[0]),
        };
        core.handle(input, now);
        drain(&mut core, now);
        if let Some(d) = core.next_deadline() {
            assert!(d > now, "a timer left in the past");
        }
    }
    core.handle(Input::Command(Command::Stop), now);
    let mut ended = drain(&mut core, now);
    for _ in 0..100 {
        if ended {
            break;
        }
        now += Duration::from_millis(100);
        core.handle(Input::Timer, now);
        ended = drain(&mut core, now);
    }
    assert!(ended, "the stop did not end");
});
