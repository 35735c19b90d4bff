//! wmgwd2 keeps the default gateways of VXLAN overlay networks highly available.
//!
//! Data flows one way:
//!
//! ```text
//!  UDP heartbeats ──> wire ──> liveness ──> assign ──> reconcile::plan ──> Kernel (sys) ──> protodown
//!  (announce)        decode    who is      who owns    desired vs           rtnetlink        + GARP (arp)
//!                              alive       each VNI    observed
//!                                                          ^
//!  kernel link/address events (sys) ───────────────────────┘
//! ```
//!
//! The modules `wire`, `liveness`, `assign`, `reconcile`, `arp` and `cli` are pure: no sockets, no
//! clock, no root. `kernel` is the boundary (a trait and an in-memory fake), `sys` and `announce`
//! talk to the operating system, and `daemon` is the one event loop that combines them.

pub mod announce;
pub mod arp;
pub mod assign;
pub mod cli;
pub mod daemon;
pub mod kernel;
pub mod liveness;
pub mod reconcile;
pub mod sys;
pub mod wire;
