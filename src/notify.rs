//! Telling the service manager: readiness, a status line, the stop, watchdog keep-alives.

use tracing::warn;

use crate::core::Notice;

/// Where [`Notice`]s go.
pub trait Notifier {
    fn notify(&mut self, notice: &Notice);
}

/// Tells nobody.
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&mut self, _: &Notice) {}
}

/// systemd's sd_notify protocol, to `$NOTIFY_SOCKET` (nothing happens without one). A failure is
/// logged once: the daemon works on without its service manager's attention.
#[derive(Default)]
pub struct SdNotifier {
    failed: bool,
}

impl Notifier for SdNotifier {
    fn notify(&mut self, notice: &Notice) {
        use sd_notify::NotifyState;
        let state = match notice {
            Notice::Ready => NotifyState::Ready,
            Notice::Status(s) => NotifyState::Status(s),
            Notice::Stopping => NotifyState::Stopping,
            Notice::Watchdog => NotifyState::Watchdog,
        };
        if let Err(e) = sd_notify::notify(&[state]) {
            if !self.failed {
                self.failed = true;
                warn!(error = %e, "telling systemd failed (sd_notify)");
            }
        }
    }
}
