//! `SdNotifier` speaks systemd's notification protocol: datagrams `READY=1`, `STATUS=…`,
//! `STOPPING=1`, `WATCHDOG=1` to the socket named by `$NOTIFY_SOCKET`. A test socket stands in
//! for systemd. (Its own test binary: it sets the process's environment.)

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use wmgwd2::core::Notice;
use wmgwd2::daemon::{Notifier, SdNotifier};

#[test]
fn sd_notifier_writes_the_notification_protocol_to_notify_socket() {
    let dir = std::env::temp_dir().join(format!("wmgwd2-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The only test in this binary: nothing else reads the environment meanwhile.
    std::env::set_var("NOTIFY_SOCKET", &path);
    let mut n = SdNotifier::default();
    for notice in [
        Notice::Ready,
        Notice::Status("owning 2 of 4 VNIs, 1 peers ready".into()),
        Notice::Watchdog,
        Notice::Stopping,
    ] {
        n.notify(&notice);
    }
    let mut got = vec![];
    let mut buf = [0u8; 256];
    for _ in 0..4 {
        let len = systemd.recv(&mut buf).expect("a notification");
        got.push(String::from_utf8_lossy(&buf[..len]).trim_end().to_string());
    }
    assert_eq!(
        got,
        [
            "READY=1",
            "STATUS=owning 2 of 4 VNIs, 1 peers ready",
            "WATCHDOG=1",
            "STOPPING=1"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
