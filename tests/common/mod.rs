//! Helpers shared by the test binaries that drive the core or the daemon against an in-memory
//! kernel (`tests/daemon.rs`, `tests/scenarios.rs`).

use wmgwd2::links::LinkState;
use wmgwd2::types::IfIndex;

/// A link as the kernel reports a healthy one: up, with carrier, running, not protodown, with a
/// MAC unique to its index.
pub fn link(
    ifindex: IfIndex,
    ifname: &str,
    lower: Option<IfIndex>,
    master: Option<IfIndex>,
) -> LinkState {
    LinkState {
        ifindex,
        ifname: ifname.to_owned(),
        protodown: false,
        reason: 0,
        admin_up: true,
        carrier: true,
        running: true,
        mac: [0x02, 0xee, 0, 0, (ifindex.0 >> 8) as u8, ifindex.0 as u8],
        lower,
        master,
    }
}
