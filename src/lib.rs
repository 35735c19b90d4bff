//! wmgwd2 keeps the default gateways of VXLAN overlay networks highly available.
//!
//! Data flows one way:
//!
//! ```text
//!  heartbeats ─┐                         ┌─────────────── core (pure) ───────────────┐
//!  (announce)  ├─ Input ─> daemon ─────> │ wire ─> liveness ─> assign ─> reconcile    │
//!  kernel      │           (async shell) │ links    readiness          garp schedule │
//!  events (sys)┘   <─ Effect ──────────  └───────────────────────────────────────────┘
//!                  │
//!                  └─> Kernel (sys): protodown, FDB and neighbour flushes, GARP frames, re-reads
//! ```
//!
//! [`core::Core`] makes every decision: it takes inputs (datagrams, kernel events, timers,
//! commands, the results of its own effects) with the time they happened, and returns effects as
//! data. The modules it is built from (`wire`, `liveness`, `assign`, `links`, `readiness`,
//! `reconcile`, `garp`, `types`, and `cli` for the configuration) are pure: no sockets, no clock,
//! no root. `kernel` is the boundary (a trait and an in-memory fake), `sys` and `announce` talk to
//! the operating system, and `daemon` is the async shell that waits, feeds the core and carries out
//! its effects.

pub mod announce;
pub mod assign;
pub mod auth;
mod beacon;
pub mod check;
pub mod cli;
pub mod control;
pub mod core;
pub mod daemon;
pub mod garp;
pub mod kernel;
pub mod links;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod readiness;
pub mod reconcile;
pub mod status;
pub mod sys;
pub mod types;
pub mod wire;
