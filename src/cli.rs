//! Command line and environment: parsed by clap, validated into a [`Config`]. Pure.
//!
//! Every flag has a `WMGWD2_*` environment equivalent. A bad value is a one-line error naming the
//! flag, and exit code 2 (clap's usage-error code).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

use crate::auth::AuthMode;
use crate::links::NamePattern;
use crate::types::{Family, Slot, Uid, VniRange};
use crate::wire::MAX_HOLD_MS;

/// Largest VNI: VXLAN network identifiers are 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Linux interface names hold at most 15 bytes.
pub const IFNAMSIZ_MAX: usize = 15;
/// Shortest heartbeat interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest periodic GARP interval accepted.
pub const MAX_GARP_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Longest heartbeat interval accepted (the hold time must fit the wire's u32 milliseconds).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// The IPv6 link-local multicast group of `--ipv6` heartbeats (docs/protocol.md): `ff02::6d67`,
/// unassigned in IANA's link-local scope registry ("mg").
pub const IPV6_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x6d67);

/// Commands for the running daemon, over its control socket.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Sub {
    /// This gateway's view: itself, its members, who owns each VNI and whether it is active
    /// here, counters, the last ownership changes.
    Status {
        /// The JSON document (stable; docs/operations.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What would move where if members left (--without) or joined (--with), computed from
    /// the live members with the real assignment. Changes nothing.
    Plan {
        /// A member that would leave (its uid, hex or decimal); repeatable.
        #[arg(long, value_parser = parse_uid)]
        without: Vec<u64>,
        /// A member that would join; repeatable.
        #[arg(long, value_parser = parse_uid)]
        with: Vec<u64>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hand every VNI over, make before break as a stop does, and stay a member that owns
    /// nothing (heartbeating, not a candidate) until `undrain`.
    Drain {
        /// The answer as JSON (`{"state": …}`).
        #[arg(long)]
        json: bool,
    },
    /// Be a candidate again: after a hold-down, take back this gateway's share, with no gap.
    Undrain {
        /// The answer as JSON (`{"state": …}`).
        #[arg(long)]
        json: bool,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Be the daemon.
    Daemon(Box<Config>),
    /// Ask the daemon at `socket`.
    Client {
        socket: std::path::PathBuf,
        command: Sub,
    },
}

impl Invocation {
    pub fn parse_from<I, T>(args: I) -> Result<Invocation, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let a = Args::try_parse_from(args)?;
        match a.command.clone() {
            Some(command) => Ok(Invocation::Client {
                socket: a.control_socket,
                command,
            }),
            None => Config::try_from(a).map(|c| Invocation::Daemon(Box::new(c))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the default gateways of VXLAN overlay networks highly available.
///
/// Every gateway host runs one instance. The instances find each other with UDP heartbeats on a
/// shared L2 segment; for every VNI in [--minvni, --maxvni] rendezvous hashing over the live
/// gateways names one owner. The owner clears `protodown` on the interfaces `vrrp4-<VNI>` and
/// `vrrp6-<VNI>` (either or both) and sends gratuitous ARPs for the IPv4 addresses and unsolicited
/// neighbour advertisements for the IPv6 ones; every other gateway sets `protodown`.
#[derive(Debug, Parser)]
#[command(name = "wmgwd2", version)]
pub struct Args {
    /// This gateway's unique ID, hex (0x1a2b) or decimal, not 0. Default: derived from
    /// /etc/machine-id, so it survives restarts.
    #[arg(long, env = "WMGWD2_UID", value_parser = parse_uid)]
    pub uid: Option<u64>,

    /// First VNI managed (0 to 16777215).
    #[arg(long, env = "WMGWD2_MINVNI", default_value_t = 1, value_parser = parse_vni)]
    pub minvni: u32,

    /// Last VNI managed (0 to 16777215, not below --minvni).
    #[arg(long, env = "WMGWD2_MAXVNI", default_value_t = 100, value_parser = parse_vni)]
    pub maxvni: u32,

    /// Address heartbeats are sent to: the gateways' shared segment's broadcast address, or a
    /// single peer.
    #[arg(long, env = "WMGWD2_BROADCAST", default_value = "10.0.1.255")]
    pub broadcast: Ipv4Addr,

    /// Send heartbeats to this peer (IPv4 or IPv6 address, optionally with a port:
    /// `192.0.2.7`, `192.0.2.7:3001`, `2001:db8::7`, `[2001:db8::7]:3001`) instead of
    /// broadcasting them, and accept frames only from the listed peers; repeatable (or
    /// comma-separated). The peers may be routed: no TTL-255 rule for them, so use --key-file
    /// (docs/security.md). This gateway's own address may be listed (one list for the fleet).
    #[arg(long = "peer", env = "WMGWD2_PEERS", value_name = "ADDR[:PORT]", value_delimiter = ',', value_parser = parse_peer, conflicts_with = "broadcast")]
    pub peers: Vec<Peer>,

    /// Heartbeats over IPv6: to the link-local multicast group --ipv6-group on
    /// --bind-interface (hop limit 255 out, only 255 accepted), for an IPv6-only segment. With
    /// --peer, IPv6 peers need no flag.
    #[arg(long, env = "WMGWD2_IPV6", conflicts_with = "broadcast")]
    pub ipv6: bool,

    /// The IPv6 link-local multicast group (ff02::/16) of --ipv6 heartbeats.
    #[arg(long, env = "WMGWD2_IPV6_GROUP", default_value_t = IPV6_GROUP, requires = "ipv6")]
    pub ipv6_group: Ipv6Addr,

    /// UDP port heartbeats are sent to and received on.
    #[arg(long, env = "WMGWD2_PORT", default_value_t = 3000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Send and receive heartbeats only on this interface (SO_BINDTODEVICE).
    #[arg(long, env = "WMGWD2_BIND_INTERFACE")]
    pub bind_interface: Option<String>,

    /// Time between heartbeats (10ms to 60s; e.g. 1s, 100ms).
    #[arg(long, env = "WMGWD2_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// A peer is dead after this many intervals without a heartbeat (2 to 255; the hold time,
    /// --interval × --dead-after, at most 3 minutes). Peers use the value the sender announces,
    /// so all of them expire it at the same moment.
    #[arg(long, env = "WMGWD2_DEAD_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=255))]
    pub dead_after: u32,

    /// Keep at most this many peers (1 to 4096). Frames of further new UIDs are refused and
    /// counted, so a flood of invented UIDs cannot grow the table without bound.
    #[arg(long, env = "WMGWD2_MAX_PEERS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_peers: u16,

    /// Start drained (a maintenance boot): a member that owns nothing until `wmgwd2 undrain`.
    #[arg(long, env = "WMGWD2_START_DRAINED")]
    pub start_drained: bool,

    /// At start, listen this many intervals before owning anything (1 to 255).
    #[arg(long, env = "WMGWD2_HOLD_DOWN", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub hold_down: u32,

    /// After the --bind-interface uplink regains carrier, own nothing for at least this long
    /// (0s to 10min; the --hold-down still applies when it is longer). Peers keep our VNIs
    /// meanwhile, so it delays rebalancing and never costs an outage; it gives BGP EVPN time to
    /// re-establish this gateway's sessions before traffic is drawn to it.
    #[arg(long, env = "WMGWD2_UPLINK_HOLD_DOWN", default_value = "10s", value_parser = parse_uplink_hold_down)]
    pub uplink_hold_down: Duration,

    /// Name of the managed interface of a VNI; `{vni}` stands for the VNI in decimal.
    #[arg(long, env = "WMGWD2_INTERFACE_PATTERN", default_value = "vrrp4-{vni}")]
    pub interface_pattern: String,

    /// Name of a VNI's IPv6 gateway interface; `{vni}` stands for the VNI in decimal. A VNI may
    /// have either interface or both; its owner serves both, and sends unsolicited neighbour
    /// advertisements for the IPv6 one's addresses.
    #[arg(long, env = "WMGWD2_INTERFACE6_PATTERN", default_value = "vrrp6-{vni}")]
    pub interface6_pattern: String,

    /// Gratuitous ARPs per address when this gateway takes a VNI over (1 to 100).
    #[arg(long, env = "WMGWD2_GARP_COUNT", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub garp_count: u32,

    /// Time between the gratuitous ARPs of one takeover (1ms to 10s).
    #[arg(long, env = "WMGWD2_GARP_SPACING", default_value = "200ms", value_parser = parse_garp_spacing)]
    pub garp_spacing: Duration,

    /// Resend a gratuitous ARP for every owned VNI this often (1s to 1day); 0s turns it off.
    #[arg(long, env = "WMGWD2_GARP_REFRESH", default_value = "30s", value_parser = humantime::parse_duration)]
    pub garp_refresh: Duration,

    /// The IFLA_PROTO_DOWN_REASON bit this daemon sets and clears (0 to 31). FRR's zebra uses its
    /// own bit; the two must differ.
    #[arg(long, env = "WMGWD2_PROTODOWN_REASON", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub protodown_reason: u8,

    /// Re-read every managed interface from the kernel this often, besides following its events
    /// (100ms to 1h). A safety net: events carry every change, and lost events force a resync.
    #[arg(long, env = "WMGWD2_RESYNC", default_value = "60s", value_parser = parse_resync)]
    pub resync: Duration,

    /// On stop, wait at most this long for the peers to confirm they took over before setting
    /// protodown (0s to 10s).
    #[arg(long, env = "WMGWD2_LEAVE_WAIT", default_value = "300ms", value_parser = parse_leave_wait)]
    pub leave_wait: Duration,

    /// Sign heartbeats and verify every peer's: a file of lines `<id> <64 hex digits>` (id 1 to
    /// 255; `#` comments), readable by its owner only. The first key signs, every key verifies.
    /// With systemd credentials: `LoadCredential=wmgwd2.key:/etc/wmgwd2/key` and
    /// `--key-file ${CREDENTIALS_DIRECTORY}/wmgwd2.key`.
    #[arg(long, env = "WMGWD2_KEY_FILE")]
    pub key_file: Option<std::path::PathBuf>,

    /// With --key-file: `require` (the default) drops every frame not signed with a known key;
    /// `transition` signs ours and still accepts unsigned ones, to key a running fleet one gateway
    /// at a time. Signed frames must verify in both.
    #[arg(long, env = "WMGWD2_AUTH_MODE", value_enum, requires = "key_file")]
    pub auth_mode: Option<AuthMode>,

    /// The control socket: the daemon answers `wmgwd2 status` on it (mode 0600: root and the
    /// service's user); the subcommands ask there.
    #[arg(long, env = "WMGWD2_CONTROL_SOCKET", default_value = crate::control::DEFAULT_SOCKET, global = true)]
    pub control_socket: std::path::PathBuf,

    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9842. Off by
    /// default.
    #[arg(long, env = "WMGWD2_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Run beside the Go original, for a rolling upgrade from it (docs/operations.md, "Migrating
    /// from the Go original"): owners by the original's rule (`fmix64(vni × uid)`), and, while
    /// this gateway is a candidate, its 8-byte heartbeat to 10.0.1.255:3000 every second as well.
    /// Every gateway of the fleet must then run the original or this mode. Not with --key-file
    /// (the original's frames cannot be signed), nor with --peer or --ipv6 (the original hears
    /// only IPv4 broadcast to 10.0.1.255:3000).
    #[arg(long, env = "WMGWD2_GO_COMPAT", conflicts_with_all = ["key_file", "peers", "ipv6"])]
    pub go_compat: bool,

    /// With --go-compat: leave it, all gateways together, once no frame of the original has been
    /// heard for this long (1s to 1h) and every member allows it too (docs/operations.md,
    /// "Leaving compat mode"). Then owners by SipHash, and no more 8-byte frames.
    #[arg(long, env = "WMGWD2_GO_COMPAT_EXIT", requires = "go_compat", value_parser = parse_compat_exit)]
    pub go_compat_exit: Option<Duration>,

    /// Run a command against the running daemon instead of being one.
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// Log format.
    #[arg(long, env = "WMGWD2_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail: -v debug, -vv trace. WMGWD2_LOG (an EnvFilter directive) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What `wmgwd2 check` is, for the documentation; `main` takes the word off and parses the rest
/// with [`Args`], so clap's parser never sees it.
const CHECK_ABOUT: &str = "Preflight: with the daemon's flags, report without changing \
     anything what would make the daemon fail or misbehave on this host; exit 1 on any error";

/// The whole command line as documented (man pages, shell completions): [`Args`] plus the
/// `check` subcommand, which takes the daemon's flags.
pub fn command() -> clap::Command {
    let args = Args::command();
    let daemon_flags: Vec<clap::Arg> = args
        .get_arguments()
        .filter(|a| !a.is_global_set())
        .cloned()
        .collect();
    args.subcommand(
        clap::Command::new("check")
            .about(CHECK_ABOUT)
            .args(daemon_flags),
    )
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `None`: derive it from /etc/machine-id (done by `main`, the only place that reads files).
    pub uid: Option<Uid>,
    pub minvni: u32,
    pub maxvni: u32,
    pub broadcast: Ipv4Addr,
    /// `--peer`: heartbeats go to these addresses, and only frames from them count (empty:
    /// broadcast, or the IPv6 group).
    pub peers: Vec<SocketAddr>,
    /// `--ipv6` (without peers: the IPv6 multicast group on --bind-interface).
    pub ipv6: bool,
    pub ipv6_group: Ipv6Addr,
    pub port: u16,
    pub bind_interface: Option<String>,
    pub interval: Duration,
    pub dead_after: u32,
    pub max_peers: usize,
    pub start_drained: bool,
    pub hold_down: u32,
    pub uplink_hold_down: Duration,
    pub pattern: NamePattern,
    /// The IPv6 interface of each VNI (`--interface6-pattern`).
    pub pattern6: NamePattern,
    pub garp_count: u32,
    pub garp_spacing: Duration,
    pub garp_refresh: Option<Duration>,
    pub protodown_reason: u8,
    pub resync: Duration,
    pub leave_wait: Duration,
    pub key_file: Option<std::path::PathBuf>,
    pub auth_mode: AuthMode,
    pub control_socket: std::path::PathBuf,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    pub verbose: u8,
    /// `--go-compat`: the original's assignment rule, its frames sent too, the hand-back stop.
    pub go_compat: bool,
    /// `--go-compat-exit`: the quiet period after which this gateway allows leaving compat mode.
    pub go_compat_exit: Option<Duration>,
}

impl Config {
    /// The managed VNIs (validated: never empty).
    pub fn vnis(&self) -> VniRange {
        VniRange::spanning(self.minvni, self.maxvni)
    }

    /// The name of a slot's interface.
    pub fn ifname(&self, slot: Slot) -> String {
        match slot.family {
            Family::V4 => self.pattern.name(slot.vni),
            Family::V6 => self.pattern6.name(slot.vni),
        }
    }

    /// How long peers keep us after one heartbeat.
    pub fn hold(&self) -> Duration {
        self.interval * self.dead_after
    }

    /// The rule that names owners: the Go original's with `--go-compat`, SipHash otherwise.
    pub fn rule(&self) -> crate::assign::Rule {
        if self.go_compat {
            crate::assign::Rule::GoCompat
        } else {
            crate::assign::Rule::SipHash
        }
    }

    /// How long we listen at start before owning anything. With `--go-compat` at least two of
    /// the original's intervals (2 s), so that every running original has been heard before we
    /// take anything (one lost frame allowed).
    pub fn hold_down(&self) -> Duration {
        let d = self.interval * self.hold_down;
        if self.go_compat {
            d.max(crate::wire::LEGACY_INTERVAL * 2)
        } else {
            d
        }
    }

    /// How long we listen after the uplink regains carrier before owning anything.
    pub fn uplink_hold_down(&self) -> Duration {
        self.hold_down().max(self.uplink_hold_down)
    }

    /// Where each heartbeat goes: every `--peer`, else the IPv6 group (`--ipv6`), else the
    /// broadcast address; at the heartbeat port.
    pub fn destinations(&self) -> Vec<SocketAddr> {
        if !self.peers.is_empty() {
            self.peers.clone()
        } else if self.ipv6 {
            vec![SocketAddr::new(IpAddr::V6(self.ipv6_group), self.port)]
        } else {
            vec![SocketAddr::new(IpAddr::V4(self.broadcast), self.port)]
        }
    }

    /// Does the heartbeat socket speak IPv6 (`--ipv6`, or an IPv6 peer)? It then takes IPv4
    /// too (a dual-stack socket), for IPv4 peers in the same list.
    pub fn heartbeat_v6(&self) -> bool {
        self.ipv6 || self.peers.iter().any(SocketAddr::is_ipv6)
    }

    /// The IPv6 group the heartbeat socket joins on --bind-interface, when it is one.
    pub fn group(&self) -> Option<Ipv6Addr> {
        (self.ipv6 && self.peers.is_empty()).then_some(self.ipv6_group)
    }

    /// Is `ip` a listed peer? (IPv4-mapped IPv6 addresses count as IPv4; a link-local
    /// address's scope is the --bind-interface and not compared.)
    pub fn is_peer(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.peers.iter().any(|p| p.ip().to_canonical() == ip)
    }

    /// A configuration with the defaults, for tests and examples.
    pub fn defaults() -> Config {
        // The defaults parse; this cannot fail.
        Config::parse_from(["wmgwd2"]).unwrap_or_else(|e| e.exit())
    }

    /// Parses and validates the command line; `Err` carries clap's message and exit code 2.
    pub fn parse_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let a = Args::try_parse_from(args)?;
        Config::try_from(a)
    }
}

impl TryFrom<Args> for Config {
    type Error = clap::Error;

    fn try_from(a: Args) -> Result<Config, clap::Error> {
        let err = |msg: String| Args::command().error(ErrorKind::ValueValidation, msg);
        if a.minvni > a.maxvni {
            return Err(err(format!(
                "--minvni {} is above --maxvni {}",
                a.minvni, a.maxvni
            )));
        }
        let pattern =
            name_pattern("--interface-pattern", &a.interface_pattern, a.maxvni).map_err(err)?;
        let pattern6 =
            name_pattern("--interface6-pattern", &a.interface6_pattern, a.maxvni).map_err(err)?;
        if pattern == pattern6 {
            return Err(err(format!(
                "--interface6-pattern '{}' is --interface-pattern too: the IPv4 and IPv6 interfaces need names of their own",
                a.interface6_pattern
            )));
        }
        if let Some(dev) = &a.bind_interface {
            if dev.is_empty() || dev.len() > IFNAMSIZ_MAX {
                return Err(err(format!(
                    "--bind-interface '{dev}' is not an interface name"
                )));
            }
        }
        let hold = a.interval * a.dead_after;
        if hold > Duration::from_millis(u64::from(MAX_HOLD_MS)) {
            return Err(err(format!(
                "--interval {} × --dead-after {} is a hold time of {}, above the protocol's {} (peers would cut it short)",
                humantime::format_duration(a.interval),
                a.dead_after,
                humantime::format_duration(hold),
                humantime::format_duration(Duration::from_millis(u64::from(MAX_HOLD_MS)))
            )));
        }
        if a.broadcast.is_unspecified() {
            return Err(err("--broadcast 0.0.0.0 is not a destination".into()));
        }
        let mut peers: Vec<SocketAddr> = Vec::with_capacity(a.peers.len());
        for p in &a.peers {
            let addr = SocketAddr::new(p.ip, p.port.unwrap_or(a.port));
            if peers.iter().any(|q| q.ip() == addr.ip()) {
                return Err(err(format!("--peer {} is listed twice", p.ip)));
            }
            if is_link_local(p.ip) && a.bind_interface.is_none() {
                return Err(err(format!(
                    "--peer {} is link-local: give --bind-interface (its link)",
                    p.ip
                )));
            }
            peers.push(addr);
        }
        if a.ipv6 && peers.is_empty() && a.bind_interface.is_none() {
            return Err(err(
                "--ipv6 without --peer sends to a link-local multicast group: give --bind-interface (the segment)".into(),
            ));
        }
        let g = a.ipv6_group.segments();
        if !a.ipv6_group.is_multicast() || g[0] & 0xff0f != 0xff02 {
            return Err(err(format!(
                "--ipv6-group {} is not a link-local multicast group (ff02::/16)",
                a.ipv6_group
            )));
        }
        let garp_refresh = match a.garp_refresh {
            d if d.is_zero() => None,
            d if d < Duration::from_secs(1) || d > MAX_GARP_REFRESH => {
                return Err(err(format!(
                    "--garp-refresh {} is outside 1s to {} (0s turns it off)",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_GARP_REFRESH)
                )))
            }
            d => Some(d),
        };
        Ok(Config {
            uid: a.uid.map(Uid),
            minvni: a.minvni,
            maxvni: a.maxvni,
            broadcast: a.broadcast,
            peers,
            ipv6: a.ipv6,
            ipv6_group: a.ipv6_group,
            port: a.port,
            bind_interface: a.bind_interface,
            interval: a.interval,
            dead_after: a.dead_after,
            max_peers: usize::from(a.max_peers),
            start_drained: a.start_drained,
            hold_down: a.hold_down,
            uplink_hold_down: a.uplink_hold_down,
            pattern,
            pattern6,
            garp_count: a.garp_count,
            garp_spacing: a.garp_spacing,
            garp_refresh,
            protodown_reason: a.protodown_reason,
            resync: a.resync,
            leave_wait: a.leave_wait,
            key_file: a.key_file,
            auth_mode: a.auth_mode.unwrap_or(AuthMode::Require),
            control_socket: a.control_socket,
            metrics_listen: a.metrics_listen,
            log_format: a.log_format,
            verbose: a.verbose,
            go_compat: a.go_compat,
            go_compat_exit: a.go_compat_exit,
        })
    }
}

/// An interface name pattern (`flag`'s value): the placeholder exactly once, no character Linux
/// refuses in a name, and no name longer than Linux allows up to `maxvni`.
fn name_pattern(flag: &str, text: &str, maxvni: u32) -> Result<NamePattern, String> {
    let pattern = NamePattern::new(text).ok_or_else(|| {
        format!(
            "{flag} '{text}' must contain {} exactly once",
            NamePattern::PLACEHOLDER
        )
    })?;
    if let Some(c) = text
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{flag} '{text}' holds {c:?}, which Linux refuses in interface names"
        ));
    }
    let longest = pattern.name(crate::types::Vni(maxvni));
    if longest.len() > IFNAMSIZ_MAX {
        return Err(format!(
            "{flag} gives '{longest}', longer than {IFNAMSIZ_MAX} bytes"
        ));
    }
    Ok(pattern)
}

/// One `--peer` as given: an address, and a port when one was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// `192.0.2.7`, `192.0.2.7:3001`, `2001:db8::7`, `[2001:db8::7]` or `[2001:db8::7]:3001`: a
/// unicast address (an IPv4-mapped IPv6 one counts as IPv4), and a port from 1.
pub fn parse_peer(s: &str) -> Result<Peer, String> {
    let s = s.trim();
    if s.contains('%') {
        return Err(format!(
            "'{s}': no zone index; a link-local peer is reached on --bind-interface"
        ));
    }
    let (ip, port) = if let Ok(ip) = s.parse::<IpAddr>() {
        (ip, None)
    } else if let Ok(a) = s.parse::<SocketAddr>() {
        (a.ip(), Some(a.port()))
    } else if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
    {
        (IpAddr::V6(ip), None)
    } else {
        return Err(format!(
            "'{s}' is not an address (192.0.2.7, 2001:db8::7) with an optional port (192.0.2.7:3001, [2001:db8::7]:3001)"
        ));
    };
    let ip = ip.to_canonical();
    let bad = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err(format!("'{s}' is not a peer's unicast address"));
    }
    if port == Some(0) {
        return Err(format!("'{s}': port 0"));
    }
    Ok(Peer { ip, port })
}

/// `0x1a2b` (hex) or `6699` (decimal); 0 is reserved.
pub fn parse_uid(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|e| format!("'{s}' is not a 64-bit hex (0x...) or decimal number: {e}"))?;
    if v == 0 {
        return Err("0 is reserved (omit --uid to derive one from /etc/machine-id)".into());
    }
    Ok(v)
}

fn parse_vni(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a VNI (0 to {MAX_VNI})"))?;
    if v > MAX_VNI {
        return Err(format!("{v} is above the largest VNI {MAX_VNI}"));
    }
    Ok(v)
}

fn duration_in(s: &str, lo: Duration, hi: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}': {e}"))?;
    if d < lo || d > hi {
        return Err(format!(
            "{} is outside {} to {}",
            humantime::format_duration(d),
            humantime::format_duration(lo),
            humantime::format_duration(hi)
        ));
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = duration_in(s, MIN_INTERVAL, MAX_INTERVAL)?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "{} is not a whole number of milliseconds",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

fn parse_garp_spacing(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::from_millis(1), Duration::from_secs(10))
}

fn parse_resync(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_uplink_hold_down(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::ZERO, Duration::from_secs(600))
}

fn parse_compat_exit(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::from_secs(1), Duration::from_secs(3600))
}

fn parse_leave_wait(s: &str) -> Result<Duration, String> {
    duration_in(s, Duration::ZERO, Duration::from_secs(10))
}
