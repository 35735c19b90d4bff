//! wmgwd2's lab, written once: the topology of network namespaces, the daemons' command line and
//! their processes, the kernel's owner map, the oracle, the probes (gratuitous ARPs, pings, the
//! protodown timeline), their analysis, the failover scenario, and heartbeat loss injected with
//! nftables ([`nft`], [`loss`], [`stability`]), what metrics and status cost ([`cost`]), and a
//! flood at the heartbeat port ([`flood`]). `tests/lab.rs` and the `wmgwd2-lab` binary
//! (`scripts/drill.sh`, `scripts/loss.sh`, ...) are built on it.
//!
//! ```text
//!  plan (addresses, names) ──> topo (namespaces, ip -batch) ──> Lab (+ daemon) ──> scenario (act)
//!                                                              │
//!  kernel (ip -j link: owner map) ── oracle (wmgwd2::assign) ──┤  converged = kernel == oracle
//!  probe (AF_PACKET ARP, ICMP, ip monitor) ──> analysis (pure) ┴──> drill (the table)
//! ```
//!
//! Everything runs in namespaces whose names carry a per-run prefix; a guard deletes them, also
//! on a panic or an error. Processes are started and stopped by PID only.

pub mod analysis;
pub mod bench;
pub mod cost;
pub mod daemon;
pub mod drill;
pub mod evpn;
pub mod evpn_drill;
pub mod flood;
pub mod frame_cost;
pub mod kernel;
pub mod loss;
pub mod netns;
pub mod nft;
pub mod oracle;
pub mod plan;
pub mod probe;
pub mod scenario;
pub mod session;
pub mod stability;
pub mod stall;
pub mod topo;

use std::time::Duration;

pub use daemon::{DaemonConfig, DaemonKind, Daemons, Exit};
pub use kernel::{Iface, OwnerMap};
pub use plan::{GatewayIp, MacMode, Spec};
pub use scenario::{Event, Lab};

/// What can go wrong while running a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {bound:?} waiting for {what}")]
    Timeout { what: String, bound: Duration },
    #[error("{what}: unexpected output: {detail}")]
    Parse { what: String, detail: String },
    #[error("bad lab specification: {0}")]
    Spec(String),
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, LabError>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Are we root (needed to create namespaces)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// For root-only tests: true when root; otherwise prints `SKIPPED <name>: <why>` and returns
/// false.
pub fn root_or_skip(name: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {name}: lab tests need root to create network namespaces");
    false
}
