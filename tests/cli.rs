//! The command line: the production invocation, the documented defaults, and one bad value per
//! check, each an error with exit code 2 that names the flag.
//!
//! Every flag also reads a `WMGWD2_*` variable. The environment is process-global and the tests of
//! this file run in parallel threads, so every parse holds a read lock and the one test that sets a
//! variable holds the write lock.

use std::net::Ipv4Addr;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use wmgwd2::cli::{parse_uid, Config, LogFormat, MAX_VNI};
use wmgwd2::types::{Uid, Vni, VniRange};

static ENV: RwLock<()> = RwLock::new(());

fn env_read() -> RwLockReadGuard<'static, ()> {
    ENV.read().unwrap_or_else(|e| e.into_inner())
}

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let _g = env_read();
    Config::parse_from(std::iter::once("wmgwd2").chain(args.iter().copied()))
}

fn ok(args: &[&str]) -> Config {
    parse(args).unwrap_or_else(|e| panic!("{args:?} rejected: {e}"))
}

/// `args` are rejected with exit code 2 and a message that names `flag`.
fn rejected(args: &[&str], flag: &str) {
    match parse(args) {
        Ok(c) => panic!("{args:?} accepted: {c:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{args:?}: {msg}");
            assert!(
                msg.contains(flag),
                "{args:?}: message does not name {flag}: {msg}"
            );
        }
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn production_command_line_with_defaults() {
    let c = ok(&["--uid", "0x1a2b", "--minvni", "1", "--maxvni", "100"]);
    assert_eq!(c.uid, Some(Uid(0x1a2b)));
    assert_eq!((c.minvni, c.maxvni), (1, 100));
    assert_eq!(c.vnis(), VniRange::spanning(1, 100));
    assert_eq!(c.interval, s(1));
    assert_eq!(c.dead_after, 3);
    assert_eq!(c.hold_down, 3);
    assert_eq!(c.hold(), s(3));
    assert_eq!(c.hold_down(), s(3));
    assert_eq!(c.broadcast, Ipv4Addr::new(10, 0, 1, 255));
    assert_eq!(c.port, 3000);
    assert_eq!(c.bind_interface, None);
    assert_eq!(c.pattern.name(Vni(42)), "vrrp4-42");
    assert_eq!(c.pattern.vni("vrrp4-42"), Some(Vni(42)));
    assert_eq!(c.pattern6.name(Vni(42)), "vrrp6-42");
    assert_eq!(c.protodown_reason, 3);
    assert_eq!(c.garp_count, 3);
    assert_eq!(c.garp_spacing, ms(200));
    assert_eq!(c.garp_refresh, Some(s(30)));
    assert_eq!(c.resync, s(60));
    assert_eq!(c.leave_wait, ms(300));
    assert_eq!(c.uplink_hold_down, s(10));
    assert_eq!(c.uplink_hold_down(), s(10));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.verbose, 0);
}

#[test]
fn no_flags_at_all_is_the_defaults() {
    let c = ok(&[]);
    assert_eq!(
        c.uid, None,
        "no --uid: derived from /etc/machine-id by main"
    );
    assert_eq!(c.vnis(), VniRange::spanning(1, 100));
    let _g = env_read();
    assert_eq!(Config::defaults(), c);
}

#[test]
fn every_flag_is_read() {
    let c = ok(&[
        "--uid=42",
        "--minvni=0",
        "--maxvni=16777215",
        "--broadcast=192.0.2.255",
        "--port=4000",
        "--bind-interface=br-gw",
        "--interval=100ms",
        "--dead-after=5",
        "--hold-down=1",
        "--interface-pattern=gw{vni}",
        "--interface6-pattern=gw{vni}v6",
        "--garp-count=1",
        "--garp-spacing=1ms",
        "--garp-refresh=0s",
        "--protodown-reason=31",
        "--resync=1h",
        "--leave-wait=0s",
        "--log-format=json",
        "-vv",
    ]);
    assert_eq!(c.uid, Some(Uid(42)));
    assert_eq!(c.vnis(), VniRange::spanning(0, MAX_VNI));
    assert_eq!(c.broadcast, Ipv4Addr::new(192, 0, 2, 255));
    assert_eq!(c.port, 4000);
    assert_eq!(c.bind_interface.as_deref(), Some("br-gw"));
    assert_eq!(c.interval, ms(100));
    assert_eq!(c.dead_after, 5);
    assert_eq!(c.hold(), ms(500));
    assert_eq!(c.hold_down(), ms(100));
    assert_eq!(c.pattern.name(Vni(7)), "gw7");
    assert_eq!(c.pattern6.name(Vni(7)), "gw7v6");
    assert_eq!(c.garp_count, 1);
    assert_eq!(c.garp_spacing, ms(1));
    assert_eq!(c.garp_refresh, None, "0s turns the refresh off");
    assert_eq!(c.protodown_reason, 31);
    assert_eq!(c.resync, s(3600));
    assert_eq!(c.leave_wait, Duration::ZERO);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.verbose, 2);
}

/// `--go-compat`: the original's rule, a hold-down of at least two of its intervals, and no key
/// (its frames cannot be signed).
#[test]
fn go_compat() {
    use wmgwd2::assign::Rule;
    let plain = ok(&["--interval=100ms"]);
    assert!(!plain.go_compat);
    assert_eq!(plain.rule(), Rule::SipHash);
    assert_eq!(plain.hold_down(), ms(300));
    let c = ok(&["--go-compat", "--interval=100ms"]);
    assert!(c.go_compat);
    assert_eq!(c.rule(), Rule::GoCompat);
    assert_eq!(c.hold_down(), s(2));
    assert_eq!(ok(&["--go-compat", "--hold-down=5"]).hold_down(), s(5));
    rejected(&["--go-compat", "--key-file=/dev/null"], "--key-file");
    rejected(&["--go-compat", "--peer=10.0.2.1"], "--peer");
    rejected(
        &["--go-compat", "--ipv6", "--bind-interface=eth0"],
        "--ipv6",
    );
    assert_eq!(c.go_compat_exit, None);
    let e = ok(&["--go-compat", "--go-compat-exit=60s"]);
    assert_eq!(e.go_compat_exit, Some(s(60)));
    rejected(&["--go-compat-exit=60s"], "--go-compat");
    rejected(
        &["--go-compat", "--go-compat-exit=500ms"],
        "--go-compat-exit",
    );
    rejected(&["--go-compat", "--go-compat-exit=2h"], "--go-compat-exit");
}

#[test]
fn uid_hex_and_decimal() {
    assert_eq!(ok(&["--uid", "6699"]).uid, Some(Uid(0x1a2b)));
    assert_eq!(ok(&["--uid", "0X1A2B"]).uid, Some(Uid(0x1a2b)));
    assert_eq!(ok(&["--uid", "1"]).uid, Some(Uid(1)));
    assert_eq!(
        ok(&["--uid", "0xffffffffffffffff"]).uid,
        Some(Uid(u64::MAX))
    );
    assert_eq!(
        ok(&["--uid", "18446744073709551615"]).uid,
        Some(Uid(u64::MAX))
    );
    assert_eq!(parse_uid(" 0x10 "), Ok(16));
}

#[test]
fn bad_uid() {
    for v in [
        "0",
        "0x0",
        "xyz",
        "0x",
        "0x10000000000000000",
        "0x1_0000_0000_0000_0000",
        "18446744073709551616",
        "",
    ] {
        rejected(&["--uid", v], "--uid");
        rejected(&[&format!("--uid={v}")], "--uid");
    }
    rejected(&["--uid=-1"], "--uid");
}

#[test]
fn bad_vni_range() {
    rejected(&["--minvni", "10", "--maxvni", "9"], "--minvni");
    rejected(&["--maxvni", "16777216"], "--maxvni");
    rejected(
        &["--minvni", "16777216", "--maxvni", "16777215"],
        "--minvni",
    );
    rejected(&["--maxvni=-1"], "--maxvni");
    rejected(&["--maxvni", "ten"], "--maxvni");
    // One VNI is a valid range.
    assert_eq!(
        ok(&["--minvni", "7", "--maxvni", "7"]).vnis(),
        VniRange::spanning(7, 7)
    );
}

#[test]
fn interval_bounds() {
    assert_eq!(ok(&["--interval", "10ms"]).interval, ms(10));
    assert_eq!(ok(&["--interval", "60s"]).interval, s(60));
    assert_eq!(ok(&["--interval", "1500ms"]).interval, ms(1500));
    for v in ["5ms", "9ms", "61s", "1500us", "1m 1ms", "fast", "0s"] {
        rejected(&["--interval", v], "--interval");
    }
}

/// The wire carries whole milliseconds: an interval between two of them would be rounded.
#[test]
fn interval_must_be_whole_milliseconds() {
    for v in ["10500us", "1s 1us", "20ms 1ns"] {
        rejected(&["--interval", v], "--interval");
    }
}

#[test]
fn bad_dead_after_and_hold_down() {
    assert_eq!(ok(&["--dead-after", "2"]).dead_after, 2);
    let c = ok(&["--interval", "100ms", "--dead-after", "255"]);
    assert_eq!(c.dead_after, 255);
    rejected(&["--dead-after", "1"], "--dead-after");
    rejected(&["--dead-after", "0"], "--dead-after");
    rejected(&["--dead-after", "256"], "--dead-after");
    assert_eq!(ok(&["--hold-down", "255"]).hold_down, 255);
    rejected(&["--hold-down", "256"], "--hold-down");
}

/// The hold time (interval × dead-after) may not exceed what receivers grant (3 min), so that no
/// honest sender is cut short; the longest fits the wire's u32 milliseconds.
#[test]
fn hold_time_is_bounded_by_the_protocol() {
    let c = ok(&["--interval", "60s", "--dead-after", "3"]);
    assert_eq!(c.hold(), s(180));
    assert!(c.hold().as_millis() <= u128::from(u32::MAX));
    assert_eq!(ok(&["--dead-after", "180"]).hold(), s(180));
    rejected(&["--interval", "60s", "--dead-after", "4"], "--dead-after");
    rejected(&["--dead-after", "181"], "--interval");
}

#[test]
fn max_peers() {
    assert_eq!(ok(&[]).max_peers, 64);
    assert_eq!(ok(&["--max-peers", "1"]).max_peers, 1);
    assert_eq!(ok(&["--max-peers", "4096"]).max_peers, 4096);
    rejected(&["--max-peers", "0"], "--max-peers");
    rejected(&["--max-peers", "4097"], "--max-peers");
}

#[test]
fn bad_interface_pattern() {
    rejected(&["--interface-pattern", "vrrp4-"], "--interface-pattern");
    rejected(
        &["--interface-pattern", "{vni}-{vni}"],
        "--interface-pattern",
    );
    // "vxlan-gateway-100" is 17 bytes; Linux names hold 15.
    rejected(
        &["--interface-pattern", "vxlan-gateway-{vni}"],
        "--interface-pattern",
    );
    // The length is checked for the largest managed VNI: 15 bytes fit, 16 do not.
    let c = ok(&[
        "--interface-pattern",
        "gateway-{vni}",
        "--maxvni",
        "9999999",
    ]);
    assert_eq!(c.pattern.name(Vni(9_999_999)), "gateway-9999999");
    rejected(
        &[
            "--interface-pattern",
            "gateway-{vni}",
            "--maxvni",
            "10000000",
        ],
        "--interface-pattern",
    );
    // The default pattern fits every VNI.
    ok(&["--maxvni", "16777215"]);
}

#[test]
fn bad_interface6_pattern() {
    rejected(&["--interface6-pattern", "vrrp6-"], "--interface6-pattern");
    rejected(
        &["--interface6-pattern", "vxlan-gateway6-{vni}"],
        "--interface6-pattern",
    );
    rejected(
        &["--interface6-pattern", "gw6:{vni}"],
        "--interface6-pattern",
    );
    // The IPv4 and IPv6 interfaces need names of their own.
    rejected(
        &["--interface6-pattern", "vrrp4-{vni}"],
        "--interface6-pattern",
    );
    rejected(
        &[
            "--interface-pattern",
            "gw-{vni}",
            "--interface6-pattern",
            "gw-{vni}",
        ],
        "--interface6-pattern",
    );
}

#[test]
fn bad_garp_settings() {
    rejected(&["--garp-refresh", "500ms"], "--garp-refresh");
    assert_eq!(ok(&["--garp-refresh", "1s"]).garp_refresh, Some(s(1)));
    rejected(&["--garp-count", "0"], "--garp-count");
    rejected(&["--garp-count", "101"], "--garp-count");
    rejected(&["--garp-spacing", "0s"], "--garp-spacing");
    rejected(&["--garp-spacing", "11s"], "--garp-spacing");
}

/// A refresh period so long that `now + period` overflows `Instant` once panicked the daemon at
/// its first takeover (`Instant + Duration` in `send_due_garps`): the period is bounded (1 day).
#[test]
fn garp_refresh_has_an_upper_bound() {
    assert_eq!(
        ok(&["--garp-refresh", "1day"]).garp_refresh,
        Some(s(86_400))
    );
    rejected(&["--garp-refresh", "1day 1s"], "--garp-refresh");
    rejected(
        &["--garp-refresh", "18446744073709551615s"],
        "--garp-refresh",
    );
    rejected(&["--garp-refresh", "100years"], "--garp-refresh");
}

#[test]
fn hold_down_0_and_unusable_interface_names_are_refused() {
    // 0 would end the hold-down before the start-up protodown has been read back.
    rejected(&["--hold-down", "0"], "--hold-down");
    rejected(
        &["--interface-pattern", "vrrp4/{vni}"],
        "--interface-pattern",
    );
    rejected(
        &["--interface-pattern", "vrrp4:{vni}"],
        "--interface-pattern",
    );
    rejected(
        &["--interface-pattern", "vrrp4 {vni}"],
        "--interface-pattern",
    );
}

#[test]
fn bad_protodown_reason_port_and_the_rest() {
    rejected(&["--protodown-reason", "32"], "--protodown-reason");
    rejected(&["--port", "0"], "--port");
    rejected(&["--port", "65536"], "--port");
    rejected(&["--broadcast", "0.0.0.0"], "--broadcast");
    rejected(&["--broadcast", "10.0.1"], "--broadcast");
    rejected(&["--bind-interface", ""], "--bind-interface");
    rejected(
        &["--bind-interface", "a-very-long-ifname"],
        "--bind-interface",
    );
    rejected(&["--resync", "99ms"], "--resync");
    rejected(&["--resync", "2h"], "--resync");
    rejected(&["--leave-wait", "11s"], "--leave-wait");
    rejected(&["--uplink-hold-down", "11min"], "--uplink-hold-down");
    rejected(&["--uplink-hold-down", "soon"], "--uplink-hold-down");
    rejected(&["--log-format", "xml"], "--log-format");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let e = parse(&["--vni", "3"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn help_and_version_exit_zero() {
    for flag in ["--help", "--version"] {
        let e = parse(&[flag]).unwrap_err();
        assert_eq!(e.exit_code(), 0, "{flag}");
    }
    let help = parse(&["--help"]).unwrap_err().to_string();
    for documented in ["--uid", "--maxvni", "WMGWD2_MAXVNI", "--interface-pattern"] {
        assert!(help.contains(documented), "--help lacks {documented}");
    }
}

/// Removes the variables it set, also when the test fails.
struct EnvVars(Vec<&'static str>);

impl EnvVars {
    fn set(&mut self, k: &'static str, v: &str) {
        std::env::set_var(k, v);
        self.0.push(k);
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for k in &self.0 {
            std::env::remove_var(k);
        }
    }
}

#[test]
fn environment_equivalents() {
    let _w = ENV.write().unwrap_or_else(|e| e.into_inner());
    let mut env = EnvVars(vec![]);
    env.set("WMGWD2_UID", "0x1a2b");
    env.set("WMGWD2_MAXVNI", "200");
    env.set("WMGWD2_INTERVAL", "250ms");
    env.set("WMGWD2_GARP_REFRESH", "0s");
    let c = Config::parse_from(["wmgwd2"]).unwrap();
    assert_eq!(c.uid, Some(Uid(0x1a2b)));
    assert_eq!(c.maxvni, 200);
    assert_eq!(c.interval, ms(250));
    assert_eq!(c.garp_refresh, None);

    // A flag beats its variable.
    let c = Config::parse_from(["wmgwd2", "--maxvni", "50"]).unwrap();
    assert_eq!(c.maxvni, 50);

    // A bad variable is an error like a bad flag.
    env.set("WMGWD2_MAXVNI", "16777216");
    let e = Config::parse_from(["wmgwd2"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--maxvni"), "{e}");
    env.set("WMGWD2_MAXVNI", "5");
    env.set("WMGWD2_MINVNI", "6");
    let e = Config::parse_from(["wmgwd2"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--minvni"), "{e}");
}

#[test]
fn uplink_hold_down_is_never_shorter_than_the_start_up_hold_down() {
    let c = ok(&["--uplink-hold-down", "0s", "--interval", "2s"]);
    assert_eq!(c.uplink_hold_down(), s(6));
    let c = ok(&["--uplink-hold-down", "1m"]);
    assert_eq!(c.uplink_hold_down(), s(60));
}

#[test]
fn peers_ipv4_ipv6_with_and_without_ports() {
    use std::net::SocketAddr;
    let c = ok(&[
        "--port",
        "3005",
        "--peer",
        "192.0.2.7",
        "--peer",
        "192.0.2.8:3001",
        "--peer",
        "2001:db8::7,[2001:db8::8]:3002,[2001:db8::9]",
        "--peer",
        "::ffff:198.51.100.1",
    ]);
    let want: Vec<SocketAddr> = [
        "192.0.2.7:3005",
        "192.0.2.8:3001",
        "[2001:db8::7]:3005",
        "[2001:db8::8]:3002",
        "[2001:db8::9]:3005",
        "198.51.100.1:3005",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(c.peers, want);
    assert_eq!(c.destinations(), want);
    assert!(c.heartbeat_v6(), "an IPv6 peer makes the socket IPv6");
    assert_eq!(c.group(), None);
    assert!(c.is_peer("::ffff:192.0.2.7".parse().unwrap()));
    assert!(c.is_peer("2001:db8::8".parse().unwrap()));
    assert!(!c.is_peer("192.0.2.9".parse().unwrap()));

    let v4 = ok(&["--peer", "192.0.2.7"]);
    assert!(!v4.heartbeat_v6(), "IPv4 peers alone: an IPv4 socket");
    // No peers: the broadcast address, as before.
    assert_eq!(
        ok(&[]).destinations(),
        vec!["10.0.1.255:3000".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn bad_peers_are_refused_naming_the_flag() {
    for bad in [
        "0.0.0.0",
        "::",
        "224.0.0.18",
        "255.255.255.255",
        "ff02::12",
        "10.0.0.1:0",
        "fe80::1%eth0",
        "10.0.0",
        "[2001:db8::1",
        "host.example",
    ] {
        rejected(&["--peer", bad], "--peer");
    }
    rejected(&["--peer", "10.0.0.1", "--peer", "10.0.0.1:3001"], "--peer");
    // A link-local peer is reached on the heartbeat interface.
    rejected(&["--peer", "fe80::2"], "--peer");
    let c = ok(&["--peer", "fe80::2", "--bind-interface", "eth0"]);
    assert!(c.heartbeat_v6());
    // --broadcast and --peer say different things.
    rejected(
        &["--peer", "10.0.0.1", "--broadcast", "10.0.1.255"],
        "--broadcast",
    );
}

#[test]
fn ipv6_heartbeats_go_to_a_link_local_group_on_the_bind_interface() {
    let c = ok(&["--ipv6", "--bind-interface", "eth0"]);
    assert!(c.heartbeat_v6());
    assert_eq!(c.group(), Some(wmgwd2::cli::IPV6_GROUP));
    assert_eq!(
        c.destinations(),
        vec!["[ff02::6d67]:3000".parse::<std::net::SocketAddr>().unwrap()]
    );
    let c = ok(&[
        "--ipv6",
        "--bind-interface",
        "eth0",
        "--ipv6-group",
        "ff02::1:7",
    ]);
    assert_eq!(c.group(), Some("ff02::1:7".parse().unwrap()));
    // With peers, the peers.
    let c = ok(&["--ipv6", "--peer", "2001:db8::1"]);
    assert_eq!(c.group(), None);
    rejected(&["--ipv6"], "--bind-interface");
    rejected(
        &[
            "--ipv6",
            "--bind-interface",
            "eth0",
            "--ipv6-group",
            "ff05::1",
        ],
        "--ipv6-group",
    );
    rejected(
        &[
            "--ipv6",
            "--bind-interface",
            "eth0",
            "--ipv6-group",
            "2001:db8::1",
        ],
        "--ipv6-group",
    );
    rejected(&["--ipv6-group", "ff02::1:7"], "--ipv6");
    rejected(&["--ipv6", "--broadcast", "10.0.1.255"], "--broadcast");
}
