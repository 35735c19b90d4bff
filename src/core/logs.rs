//! Rate limits for the core's log lines: one line per kind per 10 s for repeated warnings, and
//! a budget for membership and ownership lines, so that a flood cannot turn into a log flood.

use std::time::{Duration, Instant};

use tracing::warn;

use super::Stats;

/// At most one line per this period for each kind of repeated warning.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line at most once per period.
#[derive(Debug, Default, Clone)]
pub(super) struct Throttle(Option<Instant>);

impl Throttle {
    pub(super) fn ready(&mut self, now: Instant) -> bool {
        match self.0 {
            Some(t) if now < t + LOG_EVERY => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Throttles {
    pub(super) malformed: Throttle,
    pub(super) conflict: Throttle,
    pub(super) garp: Throttle,
    pub(super) apply: Throttle,
    pub(super) refused: Throttle,
    pub(super) refuted: Throttle,
    pub(super) rejected: Throttle,
    pub(super) drops: Throttle,
    pub(super) lines: LineBudget,
}

/// Info lines about membership and ownership: at most [`LINES_PER_WINDOW`] per [`LOG_EVERY`];
/// beyond that they are counted, and summed up in one line when the next window opens. Normal
/// operation never comes near it; a flood of invented UIDs would otherwise write a line per
/// datagram (and per moved VNI range).
#[derive(Debug, Default, Clone)]
pub(super) struct LineBudget {
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

const LINES_PER_WINDOW: u32 = 100;

impl LineBudget {
    pub(super) fn allow(&mut self, now: Instant, stats: &mut Stats) -> bool {
        match self.window {
            Some(t) if now < t + LOG_EVERY => {}
            _ => {
                if self.suppressed > 0 {
                    warn!(
                        suppressed = self.suppressed,
                        "membership and ownership log lines suppressed in the last 10 s"
                    );
                }
                *self = LineBudget {
                    window: Some(now),
                    ..LineBudget::default()
                };
            }
        }
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            stats.log_lines_suppressed += 1;
            false
        }
    }
}
