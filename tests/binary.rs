//! The real binary's command-line contract: a bad value is one line on stderr naming the flag,
//! exit code 2, and no daemon starts. Needs no root (it exits before opening any socket).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wmgwd2");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("WMGWD2_UID")
        .output()
        .expect("run wmgwd2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_values_are_one_line_naming_the_flag_with_exit_code_2() {
    for (args, flag) in [
        (&["--uid", "0"][..], "--uid"),
        (&["--uid", "0xzz"][..], "--uid"),
        (&["--minvni", "5", "--maxvni", "3"][..], "--minvni"),
        (&["--maxvni", "16777216"][..], "--maxvni"),
        (&["--interval", "5ms"][..], "--interval"),
        (&["--dead-after", "1"][..], "--dead-after"),
        (
            &["--interface-pattern", "vrrp4-"][..],
            "--interface-pattern",
        ),
        (&["--broadcast", "10.0.1.300"][..], "--broadcast"),
        (&["--protodown-reason", "32"][..], "--protodown-reason"),
        (&["--log-format", "xml"][..], "--log-format"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: exit {code}, stderr {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.contains(flag), "{args:?}: {err:?} does not name {flag}");
        assert!(!err.contains("panicked"), "{args:?}: {err:?}");
    }
}

#[test]
fn environment_values_are_validated_like_flags() {
    let out = Command::new(BIN)
        .env("WMGWD2_INTERVAL", "1h")
        .output()
        .expect("run wmgwd2");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--interval"), "{err}");
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "--version"] {
        let out = Command::new(BIN).arg(flag).output().expect("run wmgwd2");
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(!out.stdout.is_empty(), "{flag}");
    }
}

/// A key file that others can read, or that does not parse, stops the start with exit code 1 and
/// an error naming the file and why, before any socket is opened; so does `--auth-mode` without a
/// key file (exit 2: a usage error).
#[test]
fn key_file_problems_stop_the_start_and_say_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("wmgwd2-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    let good = format!("1 {}\n", "ab".repeat(32));
    for (text, mode, why) in [
        (good.as_str(), 0o644, "mode 644"),
        (good.as_str(), 0o640, "mode 640"),
        ("1 abcd\n", 0o600, "64 hex digits"),
        ("", 0o600, "no key"),
    ] {
        std::fs::write(&key, text).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = run(&["--uid", "0x1", "--key-file", key.to_str().unwrap()]);
        assert_eq!(code, 1, "{why}: {err}");
        assert!(
            err.contains(key.to_str().unwrap()) && err.contains(why),
            "{why}: {err}"
        );
    }
    let missing = dir.join("missing");
    let (code, err) = run(&["--uid", "0x1", "--key-file", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let (code, err) = run(&["--uid", "0x1", "--auth-mode", "transition"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key-file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `wmgwd2 status` with no daemon listening: one line saying so, exit 1.
#[test]
fn status_without_a_daemon_says_so() {
    let (code, err) = run(&[
        "status",
        "--control-socket",
        "/nonexistent/wmgwd2/control.sock",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is the daemon running"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
