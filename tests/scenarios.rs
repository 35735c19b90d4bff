//! Scenario tests as data: every file in tests/scenarios/ is an input script for the sans-I/O
//! core (frames, kernel changes, commands, time) with the effects the core must answer with, in
//! order. No root, no sockets, no clock: the script's `at <ms>` is the time, and the kernel is an
//! in-memory model that carries out the core's effects at once and reports what changed.
//!
//! Script lines (`#` starts a comment):
//!
//! ```text
//! config <daemon flags…>      before `start`; defaults: --minvni 1 --maxvni 4 --interval 100ms
//!                             --dead-after 3 --hold-down 3 --garp-count 2 --garp-spacing 200ms
//!                             --garp-refresh 0s --leave-wait 300ms --uplink-hold-down 0s
//! at <ms> <input>             advance to <ms> (firing every timer due on the way), then (before
//!                             `start`, kernel changes only shape what its first read finds):
//!   start                     the first read of the kernel
//!   hb <uid> [inc=N] [seq=N] [hold=MS] [ttl=N] [via=IFNAME] [leaving] [starting] [settling]
//!      [phase=N]              (phase: of leaving --go-compat, flag bits 3–4)
//!                             a heartbeat from <uid> (TTL 255, in through eth0 unless given)
//!                             (seq defaults to one more than that uid's last)
//!   legacy <uid>              the Go original's 8-byte frame
//!   bytes <hex>               any datagram
//!   stop                      SIGTERM
//!   drain | undrain           `wmgwd2 drain`, `wmgwd2 undrain`
//!   timer                     nothing but the time
//!   set <vni>|<name> <field>=<v>…   someone changes a link: protodown, carrier, reason, name
//!   rename <name> <new>       someone renames a link
//!   uplink up|down            the heartbeat interface's carrier
//!   uplink delete|create      the heartbeat interface goes, or comes back under a new index
//!   rebind fails|works        whether binding the heartbeat socket succeeds from now on
//!   stalled <ms>              the heartbeat task found it had been silent that long
//!   dropped <n>               the socket dropped n more datagrams (told with the next one)
//!   delete <vni> | create <vni> [ifindex=N] | address <vni> <ip>
//!   create6 <vnis> | delete6 <vni>   the VNIs' IPv6 interfaces (vrrp6-<vni>, with 2001:db8:<vni>::1
//!                             and fe80::1); `address <vni> <ipv6>` adds to the IPv6 one
//!   lost                      the kernel's event socket overran
//!   fail <vni> <errno>        the kernel refuses this VNI's protodown changes from now on
//!   heal <vni>                …and accepts them again
//!   mute on|off               kernel events are (not) delivered
//!   hold on|off               kernel events are kept back, then delivered as one batch
//! expect <effect>             the effects since the last check, one line each, in order:
//!                             protodown on|off <vnis> · flush-fdb <vnis> · flush-neigh <vnis> ·
//!                             garp <vnis> · resync · rebind · heartbeat-now · stop-beacon ·
//!                             (the IPv6 interfaces' on a line of their own: `protodown on v6
//!                             <vnis>`, `flush-fdb v6 …`, `flush-neigh v6 …`, `na <vnis>`) ·
//!                             heartbeat <flags> · hand-back <vnis> ·
//!                             exit clean | exit still-up <vnis>
//! expect nothing              no effect since the last check
//! notices on                  notices to the service manager are effects too: notify ready,
//!                             notify status <line>, notify stopping, notify watchdog
//! watchdog <ms>               (before start) keep-alives every <ms>
//! key <id> <byte>             a key of the script's ring: <byte> (two hex digits) 32 times
//! daemon-keys <id>,<id>…      (before start) the daemon's keys, the first signs; with
//!                             `config --key-file /dev/null [--auth-mode transition]`
//!   hb … sign=<id>[!]         the heartbeat signed with that key (`!`: a MAC that fails)
//! owned <vnis>|none           what the core owns now
//! active <vnis>|none          the kernel's managed links that can carry traffic
//! active6 <vnis>|none         …the IPv6 ones
//! reasons <vnis>|none         the kernel's managed links with our protodown reason bit set
//! phase <n>                   our phase of leaving --go-compat, as our heartbeats carry it
//! stat <name>=<n>             a counter (`frames_rejected.<reason>`: one reason's)
//! ```
//!
//! `<vnis>` is a list of ranges (`1-3,6`). Effects that no `expect` checked before the end of the
//! script fail it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::link;
use wmgwd2::auth::Keys;
use wmgwd2::cli::Config;
use wmgwd2::core::{Command, Core, Effect, GarpReport, Input, Notice};
use wmgwd2::kernel::{KernelError, KernelOp};
use wmgwd2::links::{KernelEvent, LinkState, Snapshot};
use wmgwd2::types::{vni_ranges, Family, IfIndex, Uid, Vni};
use wmgwd2::wire::{self, Heartbeat, FLAG_LEAVING, FLAG_SETTLING, FLAG_STARTING};

const ME: Uid = Uid(0x1001);
const MY_INC: u64 = 77;
const REASON_BIT: u8 = 3;
const OURS: u32 = 1 << REASON_BIT;
const UPLINK: IfIndex = IfIndex(2);
const VETH: IfIndex = IfIndex(200);
const VETH_PEER: IfIndex = IfIndex(201);
const BRIDGE: IfIndex = IfIndex(300);

fn ifindex(vni: u32) -> IfIndex {
    IfIndex(100 + vni)
}

fn gateway_ip(vni: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, vni as u8, 1)
}

fn ifindex6(vni: u32) -> IfIndex {
    IfIndex(400 + vni)
}

/// A VNI's IPv6 gateway addresses: a global one and the shared link-local one.
fn gateway_ips6(vni: u32) -> Vec<IpAddr> {
    vec![
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, vni as u16, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    ]
}

/// How the effect lines name a family: IPv4 unmarked (as before IPv6), IPv6 with `v6 `.
fn fam(f: Family) -> &'static str {
    match f {
        Family::V4 => "",
        Family::V6 => "v6 ",
    }
}

/// The kernel, in memory: links whose protodown follows the requests, as Linux's does.
struct Model {
    links: BTreeMap<IfIndex, LinkState>,
    addrs: BTreeMap<IfIndex, Vec<IpAddr>>,
    events: Vec<KernelEvent>,
    muted: bool,
    /// Events are kept back, to be delivered as one batch.
    held: bool,
    failing: BTreeMap<IfIndex, i32>,
    next_ifindex: u32,
    /// The heartbeat socket cannot be bound (the next rebinds fail).
    rebind_fails: bool,
}

impl Model {
    /// The uplink's current index (it changes when the uplink is re-created).
    fn uplink(&self) -> IfIndex {
        let l = self.links.values().find(|l| l.ifname == "eth0");
        l.expect("eth0").ifindex
    }

    fn new(vnis: u32) -> Model {
        let mut m = Model {
            links: BTreeMap::new(),
            addrs: BTreeMap::new(),
            events: vec![],
            muted: false,
            held: false,
            failing: BTreeMap::new(),
            next_ifindex: 1000,
            rebind_fails: false,
        };
        m.put(link(UPLINK, "eth0", None, None));
        m.put(link(VETH, "veth-gw", Some(VETH_PEER), None));
        m.put(link(VETH_PEER, "veth-br", Some(VETH), Some(BRIDGE)));
        m.put(link(BRIDGE, "br0", None, None));
        for v in 1..=vnis {
            m.create(v, ifindex(v));
        }
        m.events.clear();
        m
    }

    fn put(&mut self, l: LinkState) {
        self.links.insert(l.ifindex, l.clone());
        self.events.push(KernelEvent::Link(l));
    }

    fn create(&mut self, vni: u32, ifindex: IfIndex) {
        self.put(link(ifindex, &format!("vrrp4-{vni}"), Some(VETH), None));
        self.addrs.insert(ifindex, vec![gateway_ip(vni).into()]);
        self.events.push(KernelEvent::Address {
            ifindex,
            addr: gateway_ip(vni).into(),
            added: true,
        });
    }

    /// The VNI's IPv6 interface, on the same lower device as the IPv4 one.
    fn create6(&mut self, vni: u32, ifindex: IfIndex) {
        self.put(link(ifindex, &format!("vrrp6-{vni}"), Some(VETH), None));
        self.addrs.insert(ifindex, gateway_ips6(vni));
        for addr in gateway_ips6(vni) {
            self.events.push(KernelEvent::Address {
                ifindex,
                addr,
                added: true,
            });
        }
    }

    fn by_vni6(&self, vni: u32) -> Option<IfIndex> {
        let name = format!("vrrp6-{vni}");
        self.links
            .values()
            .find(|l| l.ifname == name)
            .map(|l| l.ifindex)
    }

    fn family_of(&self, i: IfIndex) -> Family {
        match self.links.get(&i) {
            Some(l) if l.ifname.starts_with("vrrp6-") => Family::V6,
            _ => Family::V4,
        }
    }

    fn by_vni(&self, vni: u32) -> Option<IfIndex> {
        let name = format!("vrrp4-{vni}");
        self.links
            .values()
            .find(|l| l.ifname == name)
            .map(|l| l.ifindex)
    }

    /// The VNI a link stands for: the number its name ends in (`vrrp4-3`, and `tmp3` once
    /// renamed), else its ifindex.
    fn vni_of(&self, i: IfIndex) -> u32 {
        let name = self.links.get(&i).map(|l| l.ifname.as_str()).unwrap_or("");
        let digits = name.rsplit(|c: char| !c.is_ascii_digit()).next();
        digits.and_then(|d| d.parse().ok()).unwrap_or(i.0)
    }

    fn edit(&mut self, i: IfIndex, f: impl FnOnce(&mut LinkState)) {
        if let Some(l) = self.links.get_mut(&i) {
            f(l);
            let l = l.clone();
            self.events.push(KernelEvent::Link(l));
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            links: self.links.values().cloned().collect(),
            addrs: self.addrs.clone(),
        }
    }

    /// `--go-compat`'s stop: our reason bit cleared and protodown set, in one request (Linux
    /// applies the reason first); protodown drops carrier.
    fn hand_back(&mut self, i: IfIndex) -> Result<(), KernelError> {
        if let Some(&errno) = self.failing.get(&i) {
            return Err(KernelError::Errno {
                op: KernelOp::Protodown,
                ifindex: i,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        if !self.links.contains_key(&i) {
            return Err(KernelError::NoDevice { ifindex: i });
        }
        self.edit(i, |l| {
            l.reason &= !OURS;
            l.protodown = true;
            l.carrier = false;
        });
        Ok(())
    }

    /// Linux's rules: our reason bit follows the request; protodown can only be cleared when no
    /// reason is left; protodown drops carrier, releasing it brings carrier back.
    fn set_protodown(&mut self, i: IfIndex, on: bool) -> Result<(), KernelError> {
        if let Some(&errno) = self.failing.get(&i) {
            return Err(KernelError::Errno {
                op: KernelOp::Protodown,
                ifindex: i,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        let Some(l) = self.links.get(&i) else {
            return Err(KernelError::NoDevice { ifindex: i });
        };
        let mut l = l.clone();
        if on {
            l.reason |= OURS;
        } else {
            l.reason &= !OURS;
        }
        let result = if !on && l.reason != 0 {
            Err(KernelError::Busy { ifindex: i })
        } else {
            l.protodown = on;
            l.carrier = !on;
            l.running = !on;
            Ok(())
        };
        self.links.insert(i, l.clone());
        self.events.push(KernelEvent::Link(l));
        result
    }

    fn active(&self) -> BTreeSet<u32> {
        self.active_named("vrrp4-")
    }

    fn active_named(&self, prefix: &str) -> BTreeSet<u32> {
        self.links
            .values()
            .filter(|l| l.ifname.starts_with(prefix) && l.active())
            .map(|l| self.vni_of(l.ifindex))
            .collect()
    }
}

/// `1-3,6` and back.
fn parse_vnis(s: &str) -> BTreeSet<u32> {
    if s == "none" {
        return BTreeSet::new();
    }
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

fn show_vnis(v: impl IntoIterator<Item = u32>) -> String {
    vni_ranges(v.into_iter().map(Vni))
}

fn show_flags(flags: u8) -> String {
    let mut f = vec![];
    for (bit, name) in [
        (FLAG_LEAVING, "LEAVING"),
        (FLAG_STARTING, "STARTING"),
        (FLAG_SETTLING, "SETTLING"),
    ] {
        if flags & bit != 0 {
            f.push(name);
        }
    }
    if f.is_empty() {
        "ready".into()
    } else {
        f.join("|")
    }
}

struct Run {
    name: String,
    core: Core,
    model: Model,
    t0: Instant,
    now: Instant,
    log: Vec<String>,
    seqs: BTreeMap<u64, u64>,
    /// The sequence number of "our" latest heartbeat, as the shell would report it.
    own_seq: u64,
    /// What our heartbeats carry, as last taken from the core.
    advert: wmgwd2::core::Advert,
    /// The datagrams' source address.
    from: SocketAddr,
    /// The next datagram's TTL and ingress interface, when not the segment's.
    next_ttl: Option<u8>,
    next_via: Option<String>,
    /// Whether notices to the service manager are effects to expect (`notices on`).
    notices: bool,
    /// The heartbeat socket's running drop count, reported with every datagram.
    drops: u32,
    /// Every key the script named (`key <id> <byte>`), for signing peers' frames.
    ring: BTreeMap<u8, String>,
    /// `start` came: before it, changes to the model only shape what the first read finds.
    started: bool,
}

impl Run {
    fn new(name: &str, flags: &[String]) -> Run {
        const DEFAULTS: [(&str, &str); 10] = [
            ("--minvni", "1"),
            ("--maxvni", "4"),
            ("--interval", "100ms"),
            ("--dead-after", "3"),
            ("--hold-down", "3"),
            ("--garp-count", "2"),
            ("--garp-spacing", "200ms"),
            ("--garp-refresh", "0s"),
            ("--leave-wait", "300ms"),
            ("--uplink-hold-down", "0s"),
        ];
        let mut args = vec!["wmgwd2".to_string()];
        for (flag, value) in DEFAULTS {
            if !flags.iter().any(|f| f == flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend_from_slice(flags);
        let cfg = Config::parse_from(&args).unwrap_or_else(|e| panic!("{name}: config: {e}"));
        let vnis = cfg.maxvni;
        let t0 = Instant::now();
        Run {
            name: name.into(),
            core: Core::new(cfg, ME, MY_INC),
            model: Model::new(vnis),
            t0,
            now: t0,
            log: vec![],
            seqs: BTreeMap::new(),
            own_seq: 100,
            advert: Default::default(),
            from: "10.0.1.2:3000".parse().unwrap(),
            next_ttl: None,
            next_via: None,
            notices: false,
            drops: 0,
            ring: BTreeMap::new(),
            started: false,
        }
    }

    /// Carries out the core's effects as the shell would, with the model for a kernel, and
    /// delivers the model's events, until both are quiet.
    fn settle(&mut self) {
        self.totals_agree();
        loop {
            while let Some(e) = self.core.poll_effect() {
                self.execute(e);
            }
            if self.model.held {
                return;
            }
            if self.model.muted || self.model.events.is_empty() {
                if self.model.muted {
                    self.model.events.clear();
                }
                return;
            }
            let events = std::mem::take(&mut self.model.events);
            self.core.handle(Input::Kernel(events), self.now);
        }
    }

    /// What `/metrics` renders (the report without its lists) is the full report's totals.
    fn totals_agree(&self) {
        let stats = Default::default();
        let mut full = self.core.report(self.now, 1, &stats);
        let totals = self.core.report_totals(self.now, 1, &stats);
        full.vnis.clear();
        full.transitions.clear();
        assert_eq!(
            totals, full,
            "report_totals differs from report beyond its lists"
        );
    }

    fn execute(&mut self, e: Effect) {
        let now = self.now;
        match e {
            Effect::SetProtodown(changes) => {
                for (on, family) in [
                    (true, Family::V4),
                    (true, Family::V6),
                    (false, Family::V4),
                    (false, Family::V6),
                ] {
                    let v: Vec<u32> = changes
                        .iter()
                        .filter(|c| c.on == on && c.family == family)
                        .map(|c| self.model.vni_of(c.ifindex))
                        .collect();
                    if !v.is_empty() {
                        let word = if on { "on" } else { "off" };
                        let f = fam(family);
                        self.log
                            .push(format!("protodown {word} {f}{}", show_vnis(v)));
                    }
                }
                let results = changes
                    .iter()
                    .map(|c| self.model.set_protodown(c.ifindex, c.on))
                    .collect();
                self.core.handle(Input::Applied { changes, results }, now);
            }
            Effect::HandBack(changes) => {
                let v = changes.iter().map(|c| self.model.vni_of(c.ifindex));
                self.log.push(format!("hand-back {}", show_vnis(v)));
                let results = changes
                    .iter()
                    .map(|c| self.model.hand_back(c.ifindex))
                    .collect();
                self.core.handle(Input::Applied { changes, results }, now);
            }
            Effect::FlushFdb(flushes) => {
                for family in [Family::V4, Family::V6] {
                    let v: Vec<u32> = flushes
                        .iter()
                        .filter(|f| f.family == family)
                        .map(|f| f.vni.0)
                        .collect();
                    if !v.is_empty() {
                        let f = fam(family);
                        self.log.push(format!("flush-fdb {f}{}", show_vnis(v)));
                    }
                }
                assert!(flushes.iter().all(|f| f.port == VETH_PEER), "{flushes:?}");
                let results = flushes.iter().map(|_| Ok(())).collect();
                self.core
                    .handle(Input::FdbFlushed { flushes, results }, now);
            }
            Effect::FlushNeighbours(ixs) => {
                for family in [Family::V4, Family::V6] {
                    let v: Vec<u32> = ixs
                        .iter()
                        .filter(|&&i| self.model.family_of(i) == family)
                        .map(|&i| self.model.vni_of(i))
                        .collect();
                    if !v.is_empty() {
                        let f = fam(family);
                        self.log.push(format!("flush-neigh {f}{}", show_vnis(v)));
                    }
                }
                let interfaces = ixs.len();
                self.core.handle(
                    Input::NeighboursFlushed {
                        interfaces,
                        result: Ok(0),
                    },
                    now,
                );
            }
            Effect::SendGarps(list) => {
                for (family, word) in [(Family::V4, "garp"), (Family::V6, "na")] {
                    let v: Vec<u32> = list
                        .iter()
                        .filter(|a| a.slot.family == family)
                        .map(|a| a.slot.vni.0)
                        .collect();
                    if !v.is_empty() {
                        self.log.push(format!("{word} {}", show_vnis(v)));
                    }
                }
                let mut report = GarpReport::default();
                for a in &list {
                    let l = &self.model.links[&a.ifindex];
                    assert!(l.active(), "{}: GARP on an inactive link {l:?}", self.name);
                    assert_eq!(a.mac, l.mac);
                    assert_eq!(a.slot.family, self.model.family_of(a.ifindex));
                    // The link's addresses of the slot's family, all of them, in order.
                    let want: Vec<IpAddr> = self.model.addrs[&a.ifindex]
                        .iter()
                        .filter(|ip| ip.is_ipv6() == (a.slot.family == Family::V6))
                        .copied()
                        .collect();
                    assert_eq!(a.ips, want);
                    report.sent += a.ips.len() as u64;
                }
                self.core.handle(Input::GarpsSent(report), now);
            }
            Effect::Resync => {
                self.log.push("resync".into());
                let snap = self.model.snapshot();
                self.core.handle(Input::Snapshot(Ok(snap)), now);
            }
            Effect::HeartbeatNow => self.log.push("heartbeat-now".into()),
            Effect::Notify(n) => {
                if self.notices {
                    self.log.push(match n {
                        Notice::Ready => "notify ready".into(),
                        Notice::Status(s) => format!("notify status {s}"),
                        Notice::Stopping => "notify stopping".into(),
                        Notice::Watchdog => "notify watchdog".into(),
                    });
                }
            }
            Effect::RebindSocket => {
                self.log.push("rebind".into());
                let r = if self.model.rebind_fails {
                    Err("no such device".to_string())
                } else {
                    Ok(())
                };
                self.core.handle(Input::Rebound(r), now);
            }
            Effect::StopBeacon => self.log.push("stop-beacon".into()),
            Effect::SendHeartbeat { flags } => {
                self.log.push(format!("heartbeat {}", show_flags(flags)))
            }
            Effect::Exit(exit) => {
                if exit.still_up.is_empty() {
                    self.log.push("exit clean".into());
                } else {
                    let v4 = exit.still_up.iter().filter(|s| s.family == Family::V4);
                    let v6 = exit.still_up.iter().filter(|s| s.family == Family::V6);
                    let mut line = format!("exit still-up {}", show_vnis(v4.map(|s| s.vni.0)));
                    let v6: Vec<u32> = v6.map(|s| s.vni.0).collect();
                    if !v6.is_empty() {
                        line.push_str(&format!(" v6 {}", show_vnis(v6)));
                    }
                    self.log.push(line);
                }
            }
        }
    }

    /// Fires every timer due up to `t`, at its own time.
    fn advance(&mut self, t: Instant) {
        while let Some(d) = self.core.next_deadline() {
            if d > t {
                break;
            }
            self.now = d.max(self.now);
            self.core.handle(Input::Timer, self.now);
            self.settle();
        }
        self.now = t.max(self.now);
    }

    /// A datagram from the segment: TTL 255, in through the uplink (eth0), unless the script
    /// said otherwise for this one.
    fn datagram(&mut self, bytes: &[u8]) {
        let from = self.from;
        let ttl = Some(self.next_ttl.take().unwrap_or(255));
        let via = self.next_via.take().unwrap_or_else(|| "eth0".into());
        let ifindex = self
            .model
            .links
            .values()
            .find(|l| l.ifname == via)
            .map(|l| l.ifindex);
        let input = Input::Datagram {
            bytes,
            from,
            ttl,
            ifindex,
            dropped: Some(self.drops),
            own_sequence: self.own_seq,
        };
        self.core.handle(input, self.now);
    }

    fn input(&mut self, words: &[&str], line: usize) {
        let ctx = format!("{}:{line}", self.name);
        match words {
            ["start"] => {
                self.started = true;
                let snap = self.model.snapshot();
                self.model.events.clear();
                self.core.handle(Input::Start(snap), self.now);
            }
            ["hb", uid, opts @ ..] => {
                let uid = parse_u64(uid);
                let mut sign: Option<String> = None;
                let mut ext = wire::Extensions::default();
                let mut hb = Heartbeat {
                    uid: Uid(uid),
                    incarnation: 1,
                    sequence: self.seqs.get(&uid).copied().unwrap_or(0) + 1,
                    flags: 0,
                    interval_ms: 100,
                    hold_ms: 300,
                };
                for o in opts {
                    match o.split_once('=') {
                        Some(("inc", v)) => hb.incarnation = parse_u64(v),
                        Some(("seq", v)) => hb.sequence = parse_u64(v),
                        Some(("hold", v)) => hb.hold_ms = v.parse().unwrap(),
                        Some(("ttl", v)) => self.next_ttl = Some(v.parse().unwrap()),
                        Some(("via", v)) => self.next_via = Some(v.to_string()),
                        Some(("sign", v)) => sign = Some(v.to_string()),
                        // `echo=<uid>[:<inc>[:<seq>[:<age ms>[:<loss ‰>[:i]]]]]` (`me`: our uid,
                        // incarnation and latest sequence; `i`: heard only indirectly); `echo=`
                        // alone: an empty ECHO (hears nobody).
                        Some(("echo", v)) => {
                            let list = ext.echo.get_or_insert_with(Default::default);
                            if !v.is_empty() {
                                list.entries.push(parse_echo(v, self.own_seq));
                            }
                        }
                        Some(("view", v)) => {
                            let members: Vec<Uid> =
                                v.split(',').map(|u| Uid(parse_u64(u))).collect();
                            ext.view = Some(wire::View {
                                digest: wire::view_digest(members.iter().copied()),
                                candidates: members.len() as u16,
                            });
                        }
                        // `phase=N`: the sender's phase of leaving --go-compat (flag bits 3–4).
                        Some(("phase", v)) => {
                            hb.flags |= v.parse::<u8>().unwrap() << wire::COMPAT_PHASE_SHIFT
                        }
                        Some(("blocked", v)) => {
                            ext.blocked = v.split(',').map(|x| Vni(x.parse().unwrap())).collect()
                        }
                        None if *o == "leaving" => hb.flags |= FLAG_LEAVING,
                        None if *o == "starting" => hb.flags |= FLAG_STARTING,
                        None if *o == "settling" => hb.flags |= FLAG_SETTLING,
                        _ => panic!("{ctx}: unknown heartbeat option {o}"),
                    }
                }
                self.seqs.insert(uid, hb.sequence);
                match sign {
                    None => self.datagram(&wire::encode_full(&hb, &ext, None)),
                    Some(spec) => {
                        // `sign=<id>`: with that key of the script's ring; `sign=<id>!`: a MAC
                        // that does not match.
                        let bad = spec.ends_with('!');
                        let id: u8 = spec.trim_end_matches('!').parse().unwrap();
                        let keys = Keys::parse(&format!("{id} {}", self.ring[&id])).unwrap();
                        let mut b = wire::encode_full(&hb, &ext, Some(&keys));
                        if bad {
                            let last = b.len() - 1;
                            b[last] ^= 1;
                        }
                        self.datagram(&b);
                    }
                }
            }
            ["own-seq", n] => self.own_seq = parse_u64(n),
            ["from", addr] => self.from = addr.parse().unwrap(),
            ["legacy", uid] => self.datagram(&parse_u64(uid).to_be_bytes()),
            ["bytes", hex] => {
                let b: Vec<u8> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
                self.datagram(&b);
            }
            ["stop"] => self.core.handle(Input::Command(Command::Stop), self.now),
            ["drain"] => self.core.handle(Input::Command(Command::Drain), self.now),
            ["undrain"] => self.core.handle(Input::Command(Command::Undrain), self.now),
            ["timer"] => {}
            ["set", who, fields @ ..] => {
                let i = match who.parse() {
                    Ok(vni) => self.model.by_vni(vni),
                    Err(_) => self
                        .model
                        .links
                        .values()
                        .find(|l| l.ifname == *who)
                        .map(|l| l.ifindex),
                }
                .expect("no such link");
                for f in fields {
                    let (k, v) = f.split_once('=').expect("field=value");
                    let on = matches!(v, "on" | "up" | "true");
                    self.model.edit(i, |l| match k {
                        "protodown" => l.protodown = on,
                        "carrier" => {
                            l.carrier = on;
                            l.running = on;
                        }
                        "reason" => l.reason = parse_u64(v) as u32,
                        "name" => l.ifname = v.to_string(),
                        _ => panic!("{ctx}: unknown field {k}"),
                    });
                }
            }
            ["rename", from, to] => {
                let i = self
                    .model
                    .links
                    .values()
                    .find(|l| l.ifname == *from)
                    .expect("no such link");
                let i = i.ifindex;
                self.model.edit(i, |l| l.ifname = to.to_string());
            }
            ["uplink", "delete"] => {
                let i = self.model.uplink();
                self.model.links.remove(&i);
                self.model.events.push(KernelEvent::LinkGone { ifindex: i });
            }
            ["uplink", "create"] => {
                self.model.next_ifindex += 1;
                let i = IfIndex(self.model.next_ifindex);
                self.model.put(link(i, "eth0", None, None));
            }
            ["rebind", outcome] => self.model.rebind_fails = *outcome == "fails",
            ["dropped", n] => self.drops += n.parse::<u32>().unwrap(),
            ["stalled", ms] => {
                let silent = Duration::from_millis(ms.parse().unwrap());
                self.core.handle(Input::LocalStall { silent }, self.now);
            }
            ["uplink", state] => {
                let on = *state == "up";
                let i = self.model.uplink();
                self.model.edit(i, |l| {
                    l.carrier = on;
                    l.running = on;
                });
            }
            ["delete", vni] => {
                let i = self
                    .model
                    .by_vni(vni.parse().unwrap())
                    .expect("no such link");
                self.model.links.remove(&i);
                self.model.addrs.remove(&i);
                self.model.events.push(KernelEvent::LinkGone { ifindex: i });
            }
            ["create", vni, opts @ ..] => {
                let ix = match opts {
                    [o] => IfIndex(o.strip_prefix("ifindex=").unwrap().parse().unwrap()),
                    _ => {
                        self.model.next_ifindex += 1;
                        IfIndex(self.model.next_ifindex)
                    }
                };
                self.model.create(vni.parse().unwrap(), ix);
            }
            ["create6", vnis] => {
                for v in parse_vnis(vnis) {
                    self.model.create6(v, ifindex6(v));
                }
            }
            ["delete6", vni] => {
                let i = self
                    .model
                    .by_vni6(vni.parse().unwrap())
                    .expect("no such link");
                self.model.links.remove(&i);
                self.model.addrs.remove(&i);
                self.model.events.push(KernelEvent::LinkGone { ifindex: i });
            }
            ["address", vni, ip] => {
                let addr: IpAddr = ip.parse().unwrap();
                let vni = vni.parse().unwrap();
                let i = match addr {
                    IpAddr::V4(_) => self.model.by_vni(vni),
                    IpAddr::V6(_) => self.model.by_vni6(vni),
                }
                .expect("no such link");
                self.model.addrs.entry(i).or_default().push(addr);
                self.model.events.push(KernelEvent::Address {
                    ifindex: i,
                    addr,
                    added: true,
                });
            }
            ["lost"] => self.model.events.push(KernelEvent::Lost),
            ["fail", vni, errno] => {
                let i = self
                    .model
                    .by_vni(vni.parse().unwrap())
                    .expect("no such link");
                self.model.failing.insert(i, errno.parse().unwrap());
            }
            ["heal", vni] => {
                let i = self
                    .model
                    .by_vni(vni.parse().unwrap())
                    .expect("no such link");
                self.model.failing.remove(&i);
            }
            ["mute", state] => self.model.muted = *state == "on",
            ["hold", state] => self.model.held = *state == "on",
            _ => panic!("{ctx}: unknown input {words:?}"),
        }
        if self.started {
            self.settle();
        }
    }

    fn check_effects(&mut self, expected: &[String], line: usize) {
        let got = std::mem::take(&mut self.log);
        if std::env::var_os("SCN_SHOW").is_some() {
            // Writing a script: print what happened instead of checking it.
            let t = self.now.duration_since(self.t0).as_millis();
            eprintln!("{}:{line} @{t}ms: {got:#?}", self.name);
            return;
        }
        assert_eq!(
            got,
            expected,
            "{}:{line}: at {} ms the effects differ",
            self.name,
            self.now.duration_since(self.t0).as_millis()
        );
    }
}

fn parse_u64(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

fn run_script(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = fs::read_to_string(path).unwrap();
    let mut run: Option<Run> = None;
    let mut config: Vec<String> = vec![];
    let mut expected: Vec<String> = vec![];
    let mut checked = false;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap().trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    for (idx, &(line, l)) in lines.iter().enumerate() {
        let words: Vec<&str> = l.split_whitespace().collect();
        if words[0] == "config" {
            assert!(run.is_none(), "{name}:{line}: config after the first input");
            config.extend(words[1..].iter().map(|s| s.to_string()));
            continue;
        }
        let r = run.get_or_insert_with(|| Run::new(&name, &config));
        match words[0] {
            "notices" => r.notices = words.get(1) == Some(&"on"),
            "key" => {
                let id: u8 = words[1].parse().expect("key <id> <byte>");
                r.ring.insert(id, words[2].repeat(32));
            }
            "daemon-keys" => {
                let text: String = words[1]
                    .split(',')
                    .map(|id| format!("{id} {}\n", r.ring[&id.parse::<u8>().unwrap()]))
                    .collect();
                let core =
                    std::mem::replace(&mut r.core, Core::new(Config::defaults(), ME, MY_INC));
                r.core = core.with_keys(Some(Keys::parse(&text).unwrap()));
            }
            "watchdog" => {
                let every = Duration::from_millis(words[1].parse().expect("watchdog <ms>"));
                let core =
                    std::mem::replace(&mut r.core, Core::new(Config::defaults(), ME, MY_INC));
                r.core = core.with_watchdog(every);
            }
            "expect" => {
                let e = words[1..].join(" ");
                if e != "nothing" {
                    expected.push(e);
                }
                checked = true;
                let next_is_expect = lines
                    .get(idx + 1)
                    .is_some_and(|(_, n)| n.starts_with("expect"));
                if !next_is_expect {
                    r.check_effects(&std::mem::take(&mut expected), line);
                }
            }
            // `held <ms>`: the clock moves on to <ms> without any timer firing on the way (the
            // process or host was held up); the next `at` fires what is overdue, late.
            "held" => {
                let ms: u64 = words[1].parse().expect("held <ms>");
                r.now = r.now.max(r.t0 + Duration::from_millis(ms));
            }
            "at" => {
                let ms: u64 = words[1].parse().expect("at <ms>");
                r.advance(r.t0 + Duration::from_millis(ms));
                r.input(&words[2..], line);
            }
            "owned" => {
                let got = show_vnis(r.core.owned().iter().map(|v| v.0));
                let want = show_vnis(parse_vnis(words[1]));
                assert_eq!(got, want, "{name}:{line}: owned");
            }
            "active6" => {
                let got = show_vnis(r.model.active_named("vrrp6-"));
                let want = show_vnis(parse_vnis(words[1]));
                assert_eq!(got, want, "{name}:{line}: IPv6 active in the kernel");
            }
            // `phase <n>`: our phase of leaving --go-compat, as our heartbeats say it.
            "phase" => {
                let got = (r.core.heartbeat_flags() & wire::COMPAT_PHASE_MASK)
                    >> wire::COMPAT_PHASE_SHIFT;
                assert_eq!(got, words[1].parse::<u8>().unwrap(), "{name}:{line}: phase");
                // …and `wmgwd2 status` says the same.
                let rule = r
                    .core
                    .report(r.now, 1, &Default::default())
                    .gateway
                    .go_compat;
                let want = ["original", "exit-ready", "both", "siphash"][usize::from(got)];
                assert_eq!(
                    rule.as_deref(),
                    Some(want),
                    "{name}:{line}: status go_compat"
                );
            }
            // `reasons <vnis>|none`: the managed links with our protodown reason bit set.
            "reasons" => {
                let got = show_vnis(
                    r.model
                        .links
                        .values()
                        .filter(|l| l.ifname.starts_with("vrrp4-") && l.reason & OURS != 0)
                        .map(|l| r.model.vni_of(l.ifindex)),
                );
                let want = show_vnis(parse_vnis(words[1]));
                assert_eq!(got, want, "{name}:{line}: our reason bit in the kernel");
            }
            "active" => {
                let got = show_vnis(r.model.active());
                let want = show_vnis(parse_vnis(words[1]));
                assert_eq!(got, want, "{name}:{line}: active in the kernel");
            }
            // `echoes 0x1002,0x1003p`: the members our next heartbeats list in their ECHO, in
            // order (`p`: heard, not a member yet); `echoes none`.
            "echoes" => {
                let advert = r.core.take_advert();
                if let Some(a) = advert {
                    r.advert = a;
                }
                let got: Vec<String> = r
                    .advert
                    .echoes
                    .iter()
                    .map(|e| format!("{}{}", e.uid, if e.pending { "p" } else { "" }))
                    .collect();
                let want: Vec<String> = match words[1] {
                    "none" => vec![],
                    w => w
                        .split(',')
                        .map(|u| {
                            let (n, p) = u.strip_suffix('p').map_or((u, ""), |n| (n, "p"));
                            format!("{}{p}", Uid(parse_u64(n)))
                        })
                        .collect(),
                };
                assert_eq!(got, want, "{name}:{line}: echoes");
            }
            "stat" => {
                let (k, v) = words[1].split_once('=').unwrap();
                let s = r.core.stats();
                let got = match k {
                    "frames_received" => s.frames_received,
                    "frames_malformed" => s.frames_malformed.values().sum(),
                    "frames_stale" => s.frames_stale,
                    "frames_refused" => s.frames_refused.values().sum(),
                    "frames_rejected" => s.frames_rejected.values().sum(),
                    k if k.starts_with("frames_rejected.") => {
                        let reason = &k["frames_rejected.".len()..];
                        s.frames_rejected.get(reason).copied().unwrap_or(0)
                    }
                    "leaves_refuted" => s.leaves_refuted,
                    "local_stalls" => s.local_stalls,
                    "late_wakes" => s.late_wakes,
                    "socket_drops" => s.socket_drops,
                    "uid_conflicts" => s.uid_conflicts,
                    "one_way_in" => s.one_way_in,
                    "one_way_out" => s.one_way_out,
                    "split_views" => s.split_views,
                    "actions_applied" => s.actions_applied,
                    "actions_failed" => s.actions_failed,
                    "garps_sent" => s.garps_sent,
                    "resyncs" => s.resyncs,
                    _ => panic!("{name}:{line}: unknown counter {k}"),
                };
                assert_eq!(got, v.parse::<u64>().unwrap(), "{name}:{line}: {k}");
            }
            w => panic!("{name}:{line}: unknown line '{w}'"),
        }
    }
    let r = run.expect("an empty script");
    assert!(
        checked,
        "{name}: a script without expectations tests nothing"
    );
    assert!(
        r.log.is_empty(),
        "{name}: effects no `expect` checked: {:?}",
        r.log
    );
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {dir:?}");
    let only = std::env::var("SCN_ONLY").unwrap_or_default();
    for f in files.iter().filter(|f| f.to_string_lossy().contains(&only)) {
        eprintln!("scenario {}", f.display());
        run_script(f);
    }
}

#[test]
fn vni_lists_round_trip() {
    for s in ["none", "1", "1-3", "1-3,5", "2,4,6-8"] {
        assert_eq!(show_vnis(parse_vnis(s)), s);
    }
}

/// One random step for the property below.
#[derive(Debug, Clone)]
enum Step {
    Heartbeat {
        uid: u64,
        inc: u64,
        seq: u64,
        flags: u8,
        hold: u32,
    },
    Legacy(u64),
    Garbage(Vec<u8>),
    /// Someone flips a managed link: protodown, carrier.
    Flip {
        vni: u32,
        protodown: bool,
        carrier: bool,
    },
    Delete(u32),
    Create(u32),
    Lost,
    Wait(u64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0x1002u64..0x1005, 1u64..4, 0u64..8, 0u8..8, 100u32..2000).prop_map(
            |(uid, inc, seq, flags, hold)| Step::Heartbeat { uid, inc, seq, flags, hold }
        ),
        1 => (0x1002u64..0x1005).prop_map(Step::Legacy),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Step::Garbage),
        2 => (1u32..=4, any::<bool>(), any::<bool>())
            .prop_map(|(vni, protodown, carrier)| Step::Flip { vni, protodown, carrier }),
        1 => (1u32..=4).prop_map(Step::Delete),
        1 => (1u32..=4).prop_map(Step::Create),
        1 => Just(Step::Lost),
        3 => (0u64..700).prop_map(Step::Wait),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Whatever arrives, in whatever order: the core never leaves a timer in the past (no hot
    /// loop), never panics, and once things are quiet (two seconds without input) every managed
    /// link that carries traffic is one the core owns, and every owned one is as we set it (our
    /// bit off, protodown off unless another bit holds it). Then a stop ends with every managed
    /// link down.
    #[test]
    fn the_core_settles_to_the_kernel_it_owns(steps in proptest::collection::vec(step(), 1..60)) {
        let mut r = Run::new("property", &[]);
        r.input(&["start"], 0);
        for s in &steps {
            match s.clone() {
                Step::Heartbeat { uid, inc, seq, flags, hold } => {
                    let hb = Heartbeat {
                        uid: Uid(uid), incarnation: inc, sequence: seq, flags,
                        interval_ms: 100, hold_ms: hold,
                    };
                    r.datagram(&wire::encode(&hb));
                    r.settle();
                }
                Step::Legacy(uid) => {
                    r.datagram(&uid.to_be_bytes());
                    r.settle();
                }
                Step::Garbage(b) => {
                    r.datagram(&b);
                    r.settle();
                }
                Step::Flip { vni, protodown, carrier } => {
                    if let Some(i) = r.model.by_vni(vni) {
                        r.model.edit(i, |l| {
                            l.protodown = protodown;
                            l.carrier = carrier;
                            l.running = carrier;
                        });
                        r.settle();
                    }
                }
                Step::Delete(vni) => {
                    if r.model.by_vni(vni).is_some() {
                        r.input(&["delete", &vni.to_string()], 0);
                    }
                }
                Step::Create(vni) => {
                    if r.model.by_vni(vni).is_none() {
                        r.input(&["create", &vni.to_string()], 0);
                    }
                }
                Step::Lost => r.input(&["lost"], 0),
                Step::Wait(ms) => r.advance(r.now + Duration::from_millis(ms)),
            }
            if let Some(d) = r.core.next_deadline() {
                proptest::prop_assert!(d > r.now, "a timer left in the past: {d:?} at {:?}", r.now);
            }
        }
        r.advance(r.now + Duration::from_secs(2));
        let owned: BTreeSet<u32> = r.core.owned().iter().map(|v| v.0).collect();
        let active = r.model.active();
        proptest::prop_assert!(active.is_subset(&owned), "active {active:?} but owned {owned:?}");
        for vni in &owned {
            if let Some(i) = r.model.by_vni(*vni) {
                let l = &r.model.links[&i];
                // What is ours to set: our bit off, and protodown off unless another bit holds it.
                proptest::prop_assert!(l.reason & OURS == 0, "owned {vni} with our bit: {l:?}");
                if l.reason == 0 {
                    proptest::prop_assert!(!l.protodown, "owned {vni} protodown: {l:?}");
                }
            }
        }
        r.input(&["stop"], 0);
        r.advance(r.now + Duration::from_secs(1));
        proptest::prop_assert!(r.core.done(), "the stop did not end");
        proptest::prop_assert!(r.model.active().is_empty(), "up after the stop: {:?}", r.model.active());
        r.log.clear();
    }
}

/// One ECHO entry of a script: `<uid>[:<inc>[:<seq>[:<age ms>[:<loss ‰>[:i]]]]]`, `me` for our
/// uid with our incarnation and `own_seq`.
fn parse_echo(v: &str, own_seq: u64) -> wire::Echo {
    let f: Vec<&str> = v.split(':').collect();
    let me = f[0] == "me";
    let uid = if me { ME } else { Uid(parse_u64(f[0])) };
    wire::Echo {
        uid,
        incarnation: f
            .get(1)
            .map_or(if me { MY_INC } else { 1 }, |x| parse_u64(x)),
        sequence: f
            .get(2)
            .map_or(if me { own_seq } else { 1 }, |x| parse_u64(x)),
        age_ms: f.get(3).map_or(0, |x| x.parse().unwrap()),
        loss_permille: f.get(4).map_or(0, |x| x.parse().unwrap()),
        direct: f.get(5) != Some(&"i"),
    }
}
