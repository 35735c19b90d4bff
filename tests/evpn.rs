//! EVPN lab test: the real binary beside real FRR (zebra + bgpd per namespace, a route
//! reflector, a remote leaf with a host), built by scripts/lab-evpn.sh. It checks what a remote
//! host sees: when wmgwd2 hands a gateway over, BGP EVPN moves the gateway MAC to the new owner's
//! VTEP, the host's ARP entry names the owner's MAC and its ping to the gateway IP recovers. Both
//! conventions: the shared MAC (the same MAC on every gateway's vrrp4-<V>, VRRP style), where only
//! EVPN can tell the leaf that the gateway moved, and a distinct MAC per gateway, where the GARP
//! must move the host's ARP entry. Cases: planned stop both ways, crash, the underlay link cut (BGP
//! and heartbeats die together), and the rejoin after each.
//!
//! Needs root and FRR (`apt-get install frr`, `/usr/lib/frr/zebra`); without either it says it
//! was skipped and why. Every wait is on a condition with a generous bound; nothing asserts on
//! how long a step took (scripts/evpn-drill.sh measures that).
//!
//! The topology and FRR still come from scripts/lab-evpn.sh; the daemons (their command line and
//! processes), the address plan, the UIDs and the pinger come from the lab crate (`wmgwd2-lab`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use wmgwd2_lab::plan::{self, GatewayIp, MacMode, Spec};
use wmgwd2_lab::probe::Pinger;
use wmgwd2_lab::{DaemonConfig, Daemons};

const BIN: &str = env!("CARGO_BIN_EXE_wmgwd2");
const ZEBRA: &str = "/usr/lib/frr/zebra";
/// Bound for anything EVPN should do in well under a few seconds (BGP hold time is 3 s).
const BOUND: Duration = Duration::from_secs(60);
/// One EVPN lab at a time: each runs six FRR daemons, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gateway_ip(v: u32) -> String {
    plan::gateway_ip(v).to_string()
}

fn vtep(g: usize) -> String {
    plan::underlay_ip(g).to_string()
}

/// The daemons' view of the lab: 2 gateways, VNIs 100 and 101 (gw1 owns 100 and gw2 owns 101
/// while both run: rendezvous hashing over the lab's UIDs).
fn spec(mac: MacMode) -> Spec {
    Spec {
        gateways: 2,
        vni_base: 100,
        vnis: 2,
        mac,
        gateway_ip: GatewayIp::Shared,
    }
}

/// The EVPN lab with two gateways; daemons started and stopped by PID, torn down on drop.
struct Evpn {
    _serial: std::sync::MutexGuard<'static, ()>,
    name: String,
    spec: Spec,
    daemons: Daemons,
    logs: PathBuf,
}

impl Evpn {
    /// `mac`: "shared" or "distinct" (scripts/lab-evpn.sh --mac).
    fn up(test: &str, mac: &str) -> Option<Evpn> {
        if !is_root() {
            eprintln!("SKIPPED {test}: the EVPN lab needs root to create network namespaces");
            return None;
        }
        if !Path::new(ZEBRA).exists() {
            eprintln!(
                "SKIPPED {test}: FRR is not installed ({ZEBRA} missing; apt-get install frr)"
            );
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("we{:05}{}", std::process::id() % 100_000, &mac[..1]);
        let logs = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");
        let spec = spec(mac.parse().expect("shared or distinct"));
        let daemons = Daemons::new(
            DaemonConfig::wmgwd2(BIN, "100ms", &["-v"]),
            spec.gateways,
            &logs,
        );
        let lab = Evpn {
            _serial: serial,
            name,
            spec,
            daemons,
            logs,
        };
        // lab-evpn.sh removes what it built when it fails; Drop runs `down` in any case.
        run(Command::new("bash").arg(lab.script()).args([
            "up",
            &lab.name,
            "--gateways",
            "2",
            "--mac",
            mac,
        ]));
        Some(lab)
    }

    fn script(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lab-evpn.sh")
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    fn start(&mut self, g: usize) {
        let ns = self.ns(&format!("gw{g}"));
        self.daemons
            .start(&self.spec, &ns, g)
            .expect("start wmgwd2");
    }

    /// SIGTERM: the graceful handover; waits for the exit and checks its status.
    fn stop(&mut self, g: usize) {
        let (exit, _) = self.daemons.stop(g, BOUND);
        assert!(exit.success(), "gw{g} exited with {exit} on SIGTERM");
    }

    /// kill -9: the daemon cannot hand anything over; its interfaces stay as they were.
    fn crash(&mut self, g: usize) {
        self.daemons.kill(g);
    }

    /// The underlay switch port of gateway `g`, down or up: its BGP session and heartbeats go
    /// together.
    fn link(&self, g: usize, up: bool) {
        run(Command::new("ip").args([
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &format!("p{g}"),
            if up { "up" } else { "down" },
        ]));
    }

    /// `TOOL -n <role's namespace> -j ARGS...` (ip or bridge), parsed; `None` on any failure.
    fn json(&self, tool: &str, role: &str, args: &[&str]) -> Option<serde_json::Value> {
        let s = output(
            Command::new(tool)
                .args(["-n", &self.ns(role), "-j"])
                .args(args),
        )?;
        serde_json::from_str(&s).ok()
    }

    /// The MAC of gateway `g`'s vrrp4-<v> (the same on both in the shared convention).
    fn gw_mac(&self, g: usize, v: u32) -> Option<String> {
        let vrrp = format!("vrrp4-{v}");
        let j = self.json("ip", &format!("gw{g}"), &["link", "show", &vrrp])?;
        j[0]["address"].as_str().map(str::to_owned)
    }

    /// The MAC in the host's ARP entry for its gateway IP.
    fn host_arp(&self, v: u32) -> Option<String> {
        let j = self.json("ip", &format!("h{v}"), &["neigh", "show", &gateway_ip(v)])?;
        j[0]["lladdr"].as_str().map(str::to_owned)
    }

    fn vtysh(&self, role: &str, cmd: &str) -> Option<serde_json::Value> {
        let out = output(
            Command::new("bash")
                .arg(self.script())
                .args(["vtysh", &self.name, role, cmd]),
        )?;
        serde_json::from_str(&out).ok()
    }

    /// The gateway whose vrrp4-<v> is active (protodown off), when exactly one gateway whose
    /// daemon runs has it so (a crashed daemon leaves its interfaces as they were).
    fn owner(&self, v: u32) -> Option<usize> {
        let active: Vec<usize> = (1..=2)
            .filter(|&g| self.daemons.pid(g).is_some())
            .filter(|&g| {
                let vrrp = format!("vrrp4-{v}");
                self.json("ip", &format!("gw{g}"), &["-d", "link", "show", &vrrp])
                    .is_some_and(|j| !j[0]["proto_down"].as_bool().unwrap_or(false))
            })
            .collect();
        (active.len() == 1).then(|| active[0])
    }

    /// Where the leaf sends `mac` in VNI `v`, as (BGP best path's next hop, zebra's remote VTEP,
    /// the kernel FDB's dst); each `None` when it has none.
    fn leaf_view(&self, v: u32, mac: &str) -> [Option<String>; 3] {
        let mac = mac.to_owned();
        let best = self
            .vtysh(
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
            .vtysh("lf", &format!("show evpn mac vni {v} mac {mac} json"))
            .and_then(|j| j[&mac]["remoteVtep"].as_str().map(str::to_owned));
        let vxlan = format!("vxlan{v}");
        let kernel = self
            .json("bridge", "lf", &["fdb", "show", "dev", &vxlan])
            .and_then(|j| {
                j.as_array()?
                    .iter()
                    .find(|e| e["mac"] == mac.as_str() && e["dst"].is_string())
                    .and_then(|e| e["dst"].as_str().map(str::to_owned))
            });
        [best, zebra, kernel]
    }

    /// A ping from the host of VNI `v` to its gateway IP, answered within a second (the lab
    /// crate's pinger: one echo request every 100 ms until then).
    fn ping(&self, v: u32) -> bool {
        let target = plan::gateway_ip(v);
        let ns = self.ns(&format!("h{v}"));
        let Ok(p) = Pinger::start(&ns, &[target], Duration::from_millis(100), Instant::now())
        else {
            return false;
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            if !p.replies(target).is_empty() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < BOUND,
                "timed out after {BOUND:?} waiting for {what}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until gateway `g` owns VNI `v`, the host's ping to the gateway IP gets an answer,
    /// the host's ARP entry names g's MAC, and the leaf's best route, zebra and kernel send that
    /// MAC to g's VTEP.
    fn wait_moved(&self, v: u32, g: usize, why: &str) {
        self.wait(&format!("gw{g} to own vni {v} ({why})"), || {
            self.owner(v) == Some(g)
        });
        let mac = self.gw_mac(g, v).expect("the owner's MAC");
        self.wait(&format!("the host's ping in vni {v} ({why})"), || {
            self.ping(v)
        });
        self.wait(
            &format!("the host's ARP entry in vni {v} to name gw{g}'s {mac} ({why})"),
            || self.host_arp(v).as_deref() == Some(mac.as_str()),
        );
        let want = Some(vtep(g));
        self.wait(
            &format!("the leaf to send vni {v}'s {mac} to gw{g} ({why})"),
            || self.leaf_view(v, &mac).iter().all(|s| *s == want),
        );
    }
}

impl Drop for Evpn {
    fn drop(&mut self) {
        for g in 1..=self.spec.gateways {
            self.daemons.kill(g);
        }
        if thread::panicking() {
            for v in [100, 101] {
                for g in 1..=2 {
                    let Some(mac) = self.gw_mac(g, v) else {
                        continue;
                    };
                    let view = self.leaf_view(v, &mac);
                    eprintln!(
                        "--- leaf: vni {v}, gw{g}'s {mac} goes to (bgp, zebra, kernel) {view:?}"
                    );
                }
                eprintln!("--- host h{v}: ARP entry {:?}", self.host_arp(v));
            }
            for g in 1..=2 {
                let log = self.logs.join(format!("gw{g}.log"));
                if let Ok(s) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = s.lines().rev().take(30).collect();
                    eprintln!("--- {} (last 30 lines)", log.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let _ = Command::new("bash")
            .arg(self.script())
            .args(["down", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// Planned stops both ways, a crash, a link cut, and the rejoin after each: the host's gateway
/// follows the owner every time.
fn handovers(lab: &mut Evpn) {
    lab.start(1);
    lab.start(2);
    lab.wait_moved(100, 1, "start");
    lab.wait_moved(101, 2, "start");

    // Planned stop of gw1: VNI 100 moves gw1 -> gw2, and EVPN follows.
    lab.stop(1);
    lab.wait_moved(100, 2, "SIGTERM of gw1");
    lab.wait_moved(101, 2, "SIGTERM of gw1, untouched");

    // gw1 rejoins: VNI 100 moves back gw2 -> gw1 (the same MAC, the other direction).
    lab.start(1);
    lab.wait_moved(100, 1, "gw1 rejoined");

    // Planned stop of gw2: VNI 101 moves gw2 -> gw1.
    lab.stop(2);
    lab.wait_moved(101, 1, "SIGTERM of gw2");
    lab.wait_moved(100, 1, "SIGTERM of gw2, untouched");
    lab.start(2);
    lab.wait_moved(101, 2, "gw2 rejoined");

    // Crash of gw1: its vrrp4-100 stays active; gw2 takes 100 after the dead interval, and the
    // restarted gw1 (protodown on everything first) takes it back after its hold-down.
    lab.crash(1);
    lab.wait_moved(100, 2, "kill -9 of gw1");
    lab.start(1);
    lab.wait_moved(100, 1, "gw1 restarted");

    // gw1 cut off from the underlay: it releases everything, gw2 takes over; when the link
    // returns, gw1 waits its uplink hold-down (BGP back first) and takes 100 back.
    lab.link(1, false);
    lab.wait("gw1 to release vni 100 (link cut)", || {
        lab.owner(100) == Some(2)
    });
    lab.wait_moved(100, 2, "gw1's link cut");
    lab.link(1, true);
    lab.wait_moved(100, 1, "gw1's link back");
    lab.wait_moved(101, 2, "gw1's link back, untouched");
}

#[test]
fn evpn_moves_the_shared_gateway_mac_with_the_owner() {
    let Some(mut lab) = Evpn::up("evpn shared MAC", "shared") else {
        return;
    };
    handovers(&mut lab);
}

#[test]
fn evpn_and_garp_move_a_distinct_gateway_mac_with_the_owner() {
    let Some(mut lab) = Evpn::up("evpn distinct MAC", "distinct") else {
        return;
    };
    handovers(&mut lab);
}
