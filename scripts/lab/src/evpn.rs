//! The BGP EVPN lab: wmgwd2's gateways beside real FRR (zebra + bgpd per namespace), seen from a
//! remote leaf. Built once here for tests/evpn.rs and `wmgwd2-lab evpn-drill`.
//!
//! ```text
//!  NAME-sw    underlay switch: br0 (mtu 1600), ports p1..pG, prr, plf; also the heartbeat
//!             segment (10.0.1.0/24, broadcast 10.0.1.255)
//!  NAME-rr    eth0 10.0.1.254: FRR route reflector (iBGP, AS 65000, l2vpn evpn)
//!  NAME-gwG   eth0 10.0.1.G/24; per VNI V in 100 101: br<V> with ports vxlan<V> (nolearning,
//!             bridge port learning off: zebra installs the remote MACs) and gwp<V>, a veth whose
//!             peer gwl<V> is the lower device of vrrp4-<V> (macvlan, the gateway IP; shared MAC
//!             00:00:5e:00:01:<V%256> or the kernel's); arp_ignore=1, arp_announce=2; FRR from
//!             deploy/frr.conf.example (what is tested is what is shipped)
//!  NAME-lf    the remote leaf: eth0 10.0.1.200; per VNI br<V>, vxlan<V>, and a veth h<V> to
//!  NAME-h<V>  a host in VNI V: the client address, default route via the gateway IP
//! ```
//! FRR's state (frr.conf, pid files, vty sockets, frr.log) is in /run/lab-evpn/NAME/ROLE, owned
//! by frr:frr. Dropping the lab stops FRR (by its pid files, checked against each process's
//! command line), the daemons, and deletes the namespaces.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{DaemonConfig, Daemons};
use crate::netns;
use crate::plan::{self, GatewayIp, MacMode, Spec};
use crate::scenario;
use crate::topo::{self, Topology};
use crate::{io_err, LabError, Result};

pub const VNIS: [u32; 2] = [100, 101];
pub const RR_IP: &str = "10.0.1.254";
pub const LEAF_IP: &str = "10.0.1.200";
pub const FRR: &str = "/usr/lib/frr";
const STATE: &str = "/run/lab-evpn";
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/frr.conf.example");

/// The shared gateway MAC of VNI v (VRRP style).
pub fn shared_mac(v: u32) -> String {
    format!("00:00:5e:00:01:{:02x}", v & 255)
}

/// The shared MAC of VNI v's IPv6 gateway interface (VRRP's IPv6 style).
pub fn shared6_mac(v: u32) -> String {
    format!("00:00:5e:00:02:{:02x}", v & 255)
}

/// The daemons' view: G gateways, VNIs 100 and 101.
pub fn spec(gateways: usize, mac: MacMode) -> Spec {
    Spec {
        gateways,
        vni_base: VNIS[0],
        vnis: VNIS.len() as u32,
        mac,
        gateway_ip: GatewayIp::Shared,
        ipv6: false,
        underlay: crate::plan::Underlay::Segment,
    }
}

/// Is the EVPN lab possible here? `Err(why)` when not root or FRR is missing.
pub fn available() -> std::result::Result<(), String> {
    if !crate::is_root() {
        return Err("the EVPN lab needs root to create network namespaces".into());
    }
    if !Path::new(FRR).join("zebra").exists() {
        return Err(format!(
            "FRR is not installed ({FRR}/zebra missing; apt-get install frr)"
        ));
    }
    Ok(())
}

/// The switch's `ip -batch` script.
pub fn switch_batch(name: &str, gateways: usize) -> String {
    let mut s = String::from(
        "link set lo up\nlink add br0 mtu 1600 type bridge stp_state 0 forward_delay 0\n",
    );
    let mut port = |p: &str, role: &str| {
        let _ = writeln!(
            s,
            "link add {p} mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns {}",
            topo::ns_name(name, role)
        );
    };
    for g in 1..=gateways {
        port(&format!("p{g}"), &format!("gw{g}"));
    }
    port("prr", "rr");
    port("plf", "lf");
    s.push_str("link set br0 up\n");
    s
}

/// The `ip -batch` script of a gateway (`mac` given) or of the leaf (`None`, hosts `name`-h<V>).
pub fn vtep_batch(name: &str, local: &str, gateway: Option<MacMode>) -> String {
    let mut s = topo::eth0_batch(local);
    for v in VNIS {
        let _ = writeln!(
            s,
            "link add br{v} mtu 1500 type bridge stp_state 0 forward_delay 0"
        );
        let _ = writeln!(
            s,
            "link add vxlan{v} mtu 1500 master br{v} type vxlan id {v} local {local} dstport 4789 nolearning dev eth0"
        );
        match gateway {
            Some(mac) => {
                let _ = writeln!(
                    s,
                    "link add gwp{v} mtu 1500 master br{v} type veth peer name gwl{v} mtu 1500"
                );
                let _ = writeln!(s, "link set gwl{v} up");
                let address = match mac {
                    MacMode::Shared => format!(" address {}", shared_mac(v)),
                    MacMode::Distinct => String::new(),
                };
                let vrrp = plan::ifname(v);
                let _ = writeln!(
                    s,
                    "link add link gwl{v} name {vrrp}{address} type macvlan mode bridge"
                );
                let _ = writeln!(s, "addr add {}/24 dev {vrrp}", plan::gateway_ip(v));
                let _ = writeln!(s, "link set gwp{v} up");
                let _ = writeln!(s, "link set {vrrp} up");
            }
            None => {
                let _ = writeln!(
                    s,
                    "link add h{v} mtu 1500 master br{v} up type veth peer name eth0 mtu 1500 netns {}",
                    topo::ns_name(name, &format!("h{v}"))
                );
            }
        }
        let _ = writeln!(s, "link set vxlan{v} up");
        let _ = writeln!(s, "link set br{v} up");
    }
    s
}

/// The `bridge -batch` script of a VTEP: learning off on its vxlan ports.
pub fn learning_off_batch() -> String {
    VNIS.iter()
        .map(|v| format!("link set dev vxlan{v} learning off\n"))
        .collect()
}

/// The `ip -batch` script of the host of VNI v.
pub fn host_batch(v: u32) -> String {
    format!(
        "link set lo up\nlink set eth0 up\naddr add {}/24 dev eth0\nroute add default via {}\n",
        plan::client_ip(v),
        plan::gateway_ip(v)
    )
}

/// The IPv6 part of a gateway's `ip -batch` script (a lab with IPv6 gateways): per VNI a
/// `vrrp6-<V>` on the same veth as `vrrp4-<V>`, with the router's link-local and the gateway
/// address, both `nodad` (docs/operations.md, "IPv6 gateways"; the gateway namespaces generate no
/// link-local addresses of their own).
pub fn gateway6_batch(mac: MacMode) -> String {
    let mut s = String::new();
    for v in VNIS {
        let address = match mac {
            MacMode::Shared => format!(" address {}", shared6_mac(v)),
            MacMode::Distinct => String::new(),
        };
        let vrrp = plan::ifname6(v);
        let _ = writeln!(
            s,
            "link add link gwl{v} name {vrrp}{address} type macvlan mode bridge\n\
             addr add {}/64 dev {vrrp} nodad\naddr add {}/64 dev {vrrp} nodad\nlink set {vrrp} up",
            plan::gateway6_ip(v),
            plan::GATEWAY6_LL
        );
    }
    s
}

/// The IPv6 part of the host of VNI v's script: its address, and the default route via the
/// gateways' shared link-local address.
pub fn host6_batch(v: u32) -> String {
    format!(
        "addr add {}/64 dev eth0 nodad\nroute add default via {} dev eth0\n",
        plan::client6_ip(v),
        plan::GATEWAY6_LL
    )
}

/// The route reflector's frr.conf: every VTEP of `peers` a client.
pub fn rr_conf(dir: &Path, peers: &[String]) -> String {
    let mut s = format!(
        "frr defaults datacenter\nlog file {}/frr.log informational\n!\nrouter bgp 65000\n \
         bgp router-id {RR_IP}\n bgp cluster-id {RR_IP}\n no bgp default ipv4-unicast\n \
         neighbor vteps peer-group\n neighbor vteps remote-as internal\n neighbor vteps timers 1 3\n \
         neighbor vteps timers connect 1\n",
        dir.display()
    );
    for p in peers {
        let _ = writeln!(s, " neighbor {p} peer-group vteps");
    }
    s.push_str(
        " !\n address-family l2vpn evpn\n  neighbor vteps activate\n  \
         neighbor vteps route-reflector-client\n exit-address-family\nexit\n",
    );
    s
}

/// A VTEP's frr.conf: deploy/frr.conf.example with its addresses and its log line replaced.
pub fn vtep_conf(example: &str, dir: &Path, ip: &str) -> String {
    example
        .lines()
        .map(|l| {
            if l.starts_with("log syslog") {
                format!("log file {}/frr.log informational", dir.display())
            } else {
                l.replace("192.0.2.11", ip).replace("192.0.2.254", RR_IP)
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// FRR's daemons of a lab, stopped on drop.
struct Frr {
    root: PathBuf,
    started: Vec<(PathBuf, String)>,
}

impl Frr {
    fn dir(&self, role: &str) -> PathBuf {
        self.root.join(role)
    }

    /// zebra, then bgpd, then `vtysh -b` loads frr.conf into both.
    fn start(&mut self, ns: &str, role: &str) -> Result<()> {
        let dir = self.dir(role);
        let d = dir.display().to_string();
        for daemon in ["zebra", "bgpd"] {
            self.started.push((dir.clone(), ns.to_owned()));
            // -N: the pathspace; -P 0: no TCP vty; -F datacenter: read at start, not from frr.conf.
            netns::run(
                Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(Path::new(FRR).join(daemon))
                    .args([
                        "-d",
                        "-F",
                        "datacenter",
                        "-N",
                        ns,
                        "-P",
                        "0",
                        "--vty_socket",
                        &d,
                    ])
                    .args(["-z", &format!("{d}/zserv.api")])
                    .args(["-i", &format!("{d}/{daemon}.pid")])
                    .args(["-f", &format!("{d}/{daemon}.conf")]),
            )?;
            let sock = dir.join(format!("{daemon}.vty"));
            scenario::wait_for(
                &format!("{daemon}'s vty socket in {ns}"),
                Duration::from_secs(10),
                Duration::from_millis(100),
                &mut || Ok(sock.exists()),
            )?;
        }
        let zserv = dir.join("zserv.api");
        scenario::wait_for(
            &format!("zebra's zserv socket in {ns}"),
            Duration::from_secs(10),
            Duration::from_millis(100),
            &mut || Ok(zserv.exists()),
        )?;
        netns::run(Command::new("vtysh").args(["--vty_socket", &d, "--config_dir", &d, "-b"]))
            .map(drop)
    }

    /// Stops the daemons whose pid files are in `dir`: SIGTERM, then SIGKILL after 5 s; only a
    /// process whose command line names this pid file is signalled.
    fn stop_dir(dir: &Path) {
        for daemon in ["bgpd", "zebra"] {
            let pidfile = dir.join(format!("{daemon}.pid"));
            let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&format!("-i {}", pidfile.display())) {
                let gone = || {
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                        s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
                    })
                };
                // SAFETY: kill on the PID of an FRR daemon this lab started (checked above).
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let t0 = Instant::now();
                while !gone() && t0.elapsed() < Duration::from_secs(5) {
                    thread::sleep(Duration::from_millis(100));
                }
                if !gone() {
                    eprintln!("lab: {daemon} ({pid}) ignored SIGTERM; killing it");
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = std::fs::remove_file(&pidfile);
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let mut done: Vec<PathBuf> = Vec::new();
        for (dir, ns) in &self.started {
            if !done.contains(dir) {
                Frr::stop_dir(dir);
                // FRR's -N pathspace creates an empty /var/run/frr/NS even when every path is given.
                let _ = std::fs::remove_dir(format!("/var/run/frr/{ns}"));
                done.push(dir.clone());
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The EVPN lab: daemons (dropped first), FRR, namespaces.
pub struct EvpnLab {
    pub daemons: Daemons,
    frr: Frr,
    pub topo: Topology,
    pub spec: Spec,
    pub name: String,
    pub dir: PathBuf,
    pub keep_logs: bool,
    /// The clock of the probes' records.
    pub epoch: Instant,
    _lock: MutexGuard<'static, ()>,
}

impl EvpnLab {
    /// Builds the lab (G gateways, the MAC convention) under a fresh name, starts FRR
    /// everywhere, and returns once every BGP session is up and every VTEP knows every other one
    /// for each VNI. It starts no wmgwd2.
    pub fn up(stem: &str, gateways: usize, mac: MacMode, cfg: DaemonConfig) -> Result<EvpnLab> {
        EvpnLab::up_with(stem, gateways, mac, false, cfg)
    }

    /// [`EvpnLab::up`], with IPv6 gateways too when `ipv6` ([`gateway6_batch`], [`host6_batch`]).
    pub fn up_with(
        stem: &str,
        gateways: usize,
        mac: MacMode,
        ipv6: bool,
        cfg: DaemonConfig,
    ) -> Result<EvpnLab> {
        if !(2..=9).contains(&gateways) {
            return Err(LabError::Spec(format!(
                "gateways must be 2-9, got {gateways}"
            )));
        }
        let lock = scenario::lab_lock();
        let name = topo::unique_name(stem);
        let mut spec = spec(gateways, mac);
        spec.ipv6 = ipv6;
        let dir = std::env::temp_dir().join(format!("wmgwd2-lab-{name}"));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let root = Path::new(STATE).join(&name);
        if root.exists() {
            return Err(LabError::Spec(format!("{} exists", root.display())));
        }
        let mut lab = EvpnLab {
            daemons: Daemons::new(cfg, gateways, &dir),
            frr: Frr {
                root,
                started: Vec::new(),
            },
            topo: Topology::empty(&name, &spec)?,
            spec,
            name,
            dir,
            keep_logs: false,
            epoch: Instant::now(),
            _lock: lock,
        };
        lab.build(mac)?;
        scenario::wait_for(
            &format!("BGP sessions and EVPN VTEPs in {}", lab.name),
            Duration::from_secs(60),
            Duration::from_millis(100),
            &mut || Ok(lab.ready()),
        )?;
        Ok(lab)
    }

    fn build(&mut self, mac: MacMode) -> Result<()> {
        let (name, g_n) = (self.name.clone(), self.spec.gateways);
        let sw = self.topo.add("sw", false)?;
        let rr = self.topo.add("rr", false)?;
        let lf = self.topo.add("lf", false)?;
        for g in 1..=g_n {
            self.topo.add(&format!("gw{g}"), true)?;
        }
        for v in VNIS {
            self.topo.add(&format!("h{v}"), false)?;
        }
        netns::batch("ip", &sw, &switch_batch(&name, g_n))?;
        netns::batch("ip", &rr, &topo::eth0_batch(RR_IP))?;
        let mut jobs = vec![(lf.clone(), vtep_batch(&name, LEAF_IP, None))];
        for g in 1..=g_n {
            let ip = plan::underlay_ip(g).to_string();
            let mut script = vtep_batch(&name, &ip, Some(mac));
            if self.spec.ipv6 {
                script.push_str(&gateway6_batch(mac));
            }
            jobs.push((self.ns(&format!("gw{g}")), script));
        }
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(ns, script)| {
                thread::spawn(move || {
                    netns::batch("ip", &ns, &script)?;
                    netns::batch("bridge", &ns, &learning_off_batch())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(LabError::Spec("a build thread panicked".into())))?;
        }
        for v in VNIS {
            let mut script = host_batch(v);
            if self.spec.ipv6 {
                script.push_str(&host6_batch(v));
            }
            netns::batch("ip", &self.ns(&format!("h{v}")), &script)?;
        }
        // FRR: the route reflector first, so the VTEPs' first connects find it listening.
        let example = std::fs::read_to_string(EXAMPLE).map_err(io_err(EXAMPLE))?;
        let mut peers: Vec<String> = (1..=g_n)
            .map(|g| plan::underlay_ip(g).to_string())
            .collect();
        peers.push(LEAF_IP.into());
        let mut roles = vec![
            ("rr".to_owned(), RR_IP.to_owned()),
            ("lf".into(), LEAF_IP.into()),
        ];
        roles.extend((1..=g_n).map(|g| (format!("gw{g}"), plan::underlay_ip(g).to_string())));
        for (role, ip) in &roles {
            let dir = self.frr.dir(role);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
            let conf = if role == "rr" {
                rr_conf(&dir, &peers)
            } else {
                vtep_conf(&example, &dir, ip)
            };
            for (f, text) in [
                ("frr.conf", conf.as_str()),
                ("zebra.conf", ""),
                ("bgpd.conf", ""),
                ("vtysh.conf", ""),
            ] {
                std::fs::write(dir.join(f), text).map_err(io_err(format!("write {f}")))?;
            }
        }
        netns::run(
            Command::new("chown")
                .args(["-R", "frr:frr"])
                .arg(&self.frr.root),
        )?;
        for (role, _) in &roles {
            let ns = self.ns(role);
            self.frr.start(&ns, role)?;
        }
        Ok(())
    }

    pub fn ns(&self, role: &str) -> String {
        topo::ns_name(&self.name, role)
    }

    /// FRR's state directory of a namespace.
    pub fn frr_dir(&self, role: &str) -> PathBuf {
        self.frr.dir(role)
    }

    /// `vtysh -c CMD...` against a namespace's FRR; its output, `None` on failure.
    pub fn vtysh(&self, role: &str, cmds: &[&str]) -> Option<String> {
        let d = self.frr.dir(role).display().to_string();
        let mut c = Command::new("vtysh");
        c.args(["--vty_socket", &d, "--config_dir", &d]);
        for x in cmds {
            c.args(["-c", x]);
        }
        netns::run(&mut c).ok()
    }

    /// One vtysh command's JSON output.
    pub fn vtysh_json(&self, role: &str, cmd: &str) -> Option<Value> {
        serde_json::from_str(&self.vtysh(role, &[cmd])?).ok()
    }

    /// Every BGP session at the route reflector is up, and the leaf and every gateway know every
    /// other VTEP for every VNI (type-3 routes).
    pub fn ready(&self) -> bool {
        let n = self.spec.gateways + 1;
        let up = self
            .vtysh_json("rr", "show bgp l2vpn evpn summary json")
            .and_then(|j| {
                let peers = j["peers"].as_object()?;
                Some(
                    peers
                        .values()
                        .filter(|p| p["state"] == "Established")
                        .count(),
                )
            });
        if up != Some(n) {
            return false;
        }
        let roles = std::iter::once("lf".to_owned())
            .chain((1..=self.spec.gateways).map(|g| format!("gw{g}")));
        for role in roles {
            for v in VNIS {
                let remote = self
                    .vtysh_json(&role, &format!("show evpn vni {v} json"))
                    .and_then(|j| match &j["numRemoteVteps"] {
                        Value::Array(a) => Some(a.len() as u64),
                        x => x.as_u64(),
                    });
                if remote != Some(n as u64 - 1) {
                    return false;
                }
            }
        }
        true
    }

    pub fn start(&mut self, g: usize) -> Result<()> {
        let ns = self.ns(&format!("gw{g}"));
        self.daemons.start(&self.spec, &ns, g)
    }

    /// Gateway g's underlay switch port down or up: its BGP session and heartbeats go together.
    pub fn link(&self, g: usize, up: bool) -> Result<()> {
        let port = format!("p{g}");
        netns::ip(
            &self.ns("sw"),
            &["link", "set", &port, if up { "up" } else { "down" }],
        )
        .map(drop)
    }

    /// `TOOL -n <role's namespace> -j ARGS...` (ip or bridge), parsed; `None` on any failure.
    pub fn json(&self, tool: &str, role: &str, args: &[&str]) -> Option<Value> {
        let out = netns::run(
            Command::new(tool)
                .args(["-n", &self.ns(role), "-j"])
                .args(args),
        )
        .ok()?;
        serde_json::from_str(&out).ok()
    }

    /// The MAC of gateway g's vrrp4-<v>.
    pub fn gw_mac(&self, g: usize, v: u32) -> Option<String> {
        let j = self.json("ip", &format!("gw{g}"), &["link", "show", &plan::ifname(v)])?;
        j[0]["address"].as_str().map(str::to_owned)
    }

    /// The MAC of gateway g's vrrp6-<v>.
    pub fn gw6_mac(&self, g: usize, v: u32) -> Option<String> {
        let j = self.json(
            "ip",
            &format!("gw{g}"),
            &["link", "show", &plan::ifname6(v)],
        )?;
        j[0]["address"].as_str().map(str::to_owned)
    }

    /// The MAC in the host's neighbour entry for its IPv6 gateway address.
    pub fn host_nd(&self, v: u32) -> Option<String> {
        let gw = plan::gateway6_ip(v).to_string();
        let j = self.json("ip", &format!("h{v}"), &["-6", "neigh", "show", &gw])?;
        j[0]["lladdr"].as_str().map(str::to_owned)
    }

    /// The MAC in the host's neighbour entry for its gateway IP.
    pub fn host_arp(&self, v: u32) -> Option<String> {
        let gw = plan::gateway_ip(v).to_string();
        let j = self.json("ip", &format!("h{v}"), &["neigh", "show", &gw])?;
        j[0]["lladdr"].as_str().map(str::to_owned)
    }

    /// Is gateway g's vrrp4-<v> active (protodown off)?
    pub fn active(&self, g: usize, v: u32) -> bool {
        self.json(
            "ip",
            &format!("gw{g}"),
            &["-d", "link", "show", &plan::ifname(v)],
        )
        .is_some_and(|j| !j[0]["proto_down"].as_bool().unwrap_or(false))
    }

    /// The gateway whose vrrp4-<v> is active, when exactly one of `gws` has it so.
    pub fn owner_among(&self, v: u32, gws: &[usize]) -> Option<usize> {
        let active: Vec<usize> = gws.iter().copied().filter(|&g| self.active(g, v)).collect();
        (active.len() == 1).then(|| active[0])
    }

    /// The VTEP the leaf's kernel forwards `mac` to in VNI v.
    pub fn leaf_fdb_dst(&self, v: u32, mac: &str) -> Option<String> {
        let j = self.json(
            "bridge",
            "lf",
            &["fdb", "show", "dev", &format!("vxlan{v}")],
        )?;
        j.as_array()?
            .iter()
            .find(|e| e["mac"] == mac && e["dst"].is_string())
            .and_then(|e| e["dst"].as_str().map(str::to_owned))
    }

    /// `show evpn mac vni V mac MAC json` at a namespace's zebra.
    pub fn mac_json(&self, role: &str, v: u32, mac: &str) -> Option<Value> {
        self.vtysh_json(role, &format!("show evpn mac vni {v} mac {mac} json"))
    }

    /// Where zebra at `role` has `mac`: "local", the remote VTEP, or "none".
    pub fn mac_where(&self, role: &str, v: u32, mac: &str) -> String {
        let Some(j) = self.mac_json(role, v, mac) else {
            return "none".into();
        };
        let m = j
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or_default();
        match m["type"].as_str() {
            Some("local") => "local".into(),
            Some("remote") => m["remoteVtep"].as_str().unwrap_or("none").to_owned(),
            _ => "none".into(),
        }
    }

    /// Where the leaf sends `mac` in VNI v: (BGP best path's next hop, zebra's remote VTEP, the
    /// kernel FDB's dst).
    pub fn leaf_view(&self, v: u32, mac: &str) -> [Option<String>; 3] {
        let best = self
            .vtysh_json(
                "lf",
                &format!("show bgp l2vpn evpn route vni {v} mac {mac} json"),
            )
            .and_then(|j| {
                j["paths"]
                    .as_array()?
                    .iter()
                    .flat_map(|p| p.as_array().cloned().unwrap_or_default())
                    .find(|p| p["bestpath"]["overall"].as_bool() == Some(true))
                    .and_then(|p| p["nexthops"][0]["ip"].as_str().map(str::to_owned))
            });
        let zebra = self
            .mac_json("lf", v, mac)
            .and_then(|j| j[mac]["remoteVtep"].as_str().map(str::to_owned));
        [best, zebra, self.leaf_fdb_dst(v, mac)]
    }

    /// The leaf's EVPN mobility sequence number for `mac` in VNI v (0 when unknown).
    pub fn leaf_seq(&self, v: u32, mac: &str) -> u64 {
        self.mac_json("lf", v, mac)
            .and_then(|j| {
                j.as_object()?
                    .values()
                    .flat_map(|m| [m["remoteSequence"].as_u64(), m["localSequence"].as_u64()])
                    .flatten()
                    .max()
            })
            .unwrap_or(0)
    }

    /// "dup@ROLE ..." for every node where FRR flags `mac` as a duplicate (else "-"), then
    /// "n=N": the highest move count FRR's duplicate-address detection holds for it.
    pub fn dad_state(&self, v: u32, mac: &str) -> String {
        let mut dup = Vec::new();
        let mut max = 0;
        let roles = std::iter::once("lf".to_owned())
            .chain((1..=self.spec.gateways).map(|g| format!("gw{g}")));
        for role in roles {
            let Some(j) = self.mac_json(&role, v, mac) else {
                continue;
            };
            let Some(o) = j.as_object() else { continue };
            if o.values().any(|m| m["isDuplicate"].as_bool() == Some(true)) {
                dup.push(format!("dup@{role}"));
            }
            max = o
                .values()
                .filter_map(|m| m["detectionCount"].as_u64())
                .fold(max, u64::max);
        }
        if dup.is_empty() {
            dup.push("-".into());
        }
        format!("{} n={max}", dup.join(" "))
    }
}

impl Drop for EvpnLab {
    fn drop(&mut self) {
        for g in 1..=self.spec.gateways {
            self.daemons.kill(g);
        }
        if thread::panicking() {
            for g in 1..=self.spec.gateways {
                eprintln!("--- {} (last 30 lines)", self.daemons.log(g).display());
                for l in self.daemons.log_tail(g, 30) {
                    eprintln!("{l}");
                }
            }
        }
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_and_the_leaf() {
        let gw = vtep_batch("e1", "10.0.1.2", Some(MacMode::Shared));
        assert!(gw.starts_with(
            "link set lo up\nlink set eth0 up\naddr add 10.0.1.2/24 brd 10.0.1.255 dev eth0\n"
        ));
        assert!(gw.contains("link add vxlan100 mtu 1500 master br100 type vxlan id 100 local 10.0.1.2 dstport 4789 nolearning dev eth0\n"));
        assert!(gw.contains("link add link gwl101 name vrrp4-101 address 00:00:5e:00:01:65 type macvlan mode bridge\naddr add 10.100.101.1/24 dev vrrp4-101\n"));
        let lf = vtep_batch("e1", LEAF_IP, None);
        assert!(lf.contains("link add h100 mtu 1500 master br100 up type veth peer name eth0 mtu 1500 netns e1-h100\n"));
        assert!(!lf.contains("vrrp4"));
        assert_eq!(
            learning_off_batch(),
            "link set dev vxlan100 learning off\nlink set dev vxlan101 learning off\n"
        );
        assert!(switch_batch("e1", 2).contains(
            "link add plf mtu 1600 master br0 up type veth peer name eth0 mtu 1600 netns e1-lf\n"
        ));
        assert_eq!(host_batch(100), "link set lo up\nlink set eth0 up\naddr add 10.100.100.100/24 dev eth0\nroute add default via 10.100.100.1\n");
    }

    #[test]
    fn ipv6_gateways_and_hosts() {
        let gw = gateway6_batch(MacMode::Shared);
        assert!(gw.contains("link add link gwl100 name vrrp6-100 address 00:00:5e:00:02:64 type macvlan mode bridge\naddr add 2001:db8:0:64::1/64 dev vrrp6-100 nodad\naddr add fe80::1/64 dev vrrp6-100 nodad\nlink set vrrp6-100 up\n"), "{gw}");
        assert_eq!(
            host6_batch(100),
            "addr add 2001:db8:0:64::100/64 dev eth0 nodad\nroute add default via fe80::1 dev eth0\n"
        );
    }

    #[test]
    fn frr_configurations() {
        let example = std::fs::read_to_string(EXAMPLE).unwrap();
        let c = vtep_conf(&example, Path::new("/run/x/gw1"), "10.0.1.1");
        assert!(c.contains(" bgp router-id 10.0.1.1\n"));
        assert!(c.contains(" neighbor 10.0.1.254 remote-as internal\n"));
        assert!(c.contains("log file /run/x/gw1/frr.log informational\n"));
        assert!(!c.contains("192.0.2.") && !c.contains("log syslog"));
        let r = rr_conf(Path::new("/run/x/rr"), &["10.0.1.1".into(), LEAF_IP.into()]);
        assert!(r.contains(
            " neighbor 10.0.1.1 peer-group vteps\n neighbor 10.0.1.200 peer-group vteps\n"
        ));
        assert!(r.contains("  neighbor vteps route-reflector-client\n"));
    }
}
