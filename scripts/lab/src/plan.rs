//! The address plan and the lab's shape, in one place (pure).
//!
//! - switch `NAME-sw`: bridge br0 (mtu 1600), ports p1..pG and pcl
//! - gateway g, namespace `NAME-gw<g>`: eth0 `10.0.1.g/24` (underlay and heartbeat segment,
//!   broadcast 10.0.1.255); per VNI v a `vxlan<v>` and on it the macvlan `vrrp4-<v>` holding the
//!   gateway IP `10.(100+v/256).(v%256).1/24` (or with [`GatewayIp::Vrrp`] its own `...(128+g)`)
//! - client, namespace `NAME-cl`: eth0 `10.0.1.250/24`, per VNI `vxlan<v>` with `...100/24`
//! - UIDs: gateway g runs with `--uid 0x1000+g`
//! - with [`Spec::ipv6`]: per VNI also the macvlan `vrrp6-<v>` on `vxlan<v>` holding
//!   `2001:db8:0:<v hex>::1/64` and `fe80::1/64` (the gateway's global and link-local router
//!   addresses, the same on every gateway), the client `...::100/64` on its `vxlan<v>`
//!
//! With [`Underlay::Routed`] (issue 11) the switch namespace is a router instead: gateway g's
//! eth0 is `10.2.g.2/24` behind the router's `p<g>` `10.2.g.1/24` (a subnet per gateway), the
//! client's `10.2.250.2/24`; every host routes through the router; the daemons get `--peer`
//! with the other gateways' addresses instead of `--broadcast`, and nftables in every gateway
//! drops broadcast and multicast heartbeats.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use crate::{LabError, Result};

pub const CLIENT_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 250);
pub const BROADCAST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 255);
pub const MAX_GATEWAYS: usize = 200;
/// 10.(100 + v/256) must stay <= 10.255.
pub const MAX_VNI: u32 = 155 * 256 + 255;

/// The MAC of the `vrrp4-<v>` macvlans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacMode {
    /// The kernel's random MAC, one per gateway.
    Distinct,
    /// Every gateway's `vrrp4-<v>` has [`shared_mac`]`(v)`.
    Shared,
}

/// What `vrrp4-<v>` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayIp {
    /// The gateway IP, the same on every gateway (wmgwd2).
    Shared,
    /// The gateway's own address [`own_ip`]; a VRRP daemon adds the gateway IP.
    Vrrp,
}

impl std::str::FromStr for MacMode {
    type Err = LabError;
    fn from_str(s: &str) -> Result<MacMode> {
        match s {
            "distinct" => Ok(MacMode::Distinct),
            "shared" => Ok(MacMode::Shared),
            _ => Err(LabError::Spec(format!(
                "MAC mode must be distinct or shared, got '{s}'"
            ))),
        }
    }
}

impl std::fmt::Display for MacMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MacMode::Distinct => "distinct",
            MacMode::Shared => "shared",
        })
    }
}

/// How the gateways (and the client) reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// One L2 segment (a bridge), broadcast heartbeats.
    Segment,
    /// A subnet per host behind a router namespace, unicast heartbeats (`--peer`).
    Routed,
    /// The segment, heartbeats over IPv6 (`--ipv6`: the link-local multicast group on eth0,
    /// IPv6 enabled on eth0 alone), IPv4 heartbeats dropped by nftables. VXLAN stays IPv4.
    Ipv6,
}

/// The lab's shape: G gateways, VNIs `vni_base..vni_base+vnis-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub gateways: usize,
    pub vni_base: u32,
    pub vnis: u32,
    pub mac: MacMode,
    pub gateway_ip: GatewayIp,
    /// IPv6 gateways too: a `vrrp6-<v>` per VNI (see the module's address plan).
    pub ipv6: bool,
    pub underlay: Underlay,
}

impl Spec {
    /// G gateways, VNIs 1..=V, distinct MACs, the shared gateway IP.
    pub fn new(gateways: usize, vnis: u32) -> Spec {
        Spec {
            gateways,
            vni_base: 1,
            vnis,
            mac: MacMode::Distinct,
            gateway_ip: GatewayIp::Shared,
            ipv6: false,
            underlay: Underlay::Segment,
        }
    }

    /// The same lab, heartbeats over IPv6.
    pub fn ipv6(mut self) -> Spec {
        self.underlay = Underlay::Ipv6;
        self
    }

    /// The same lab, routed.
    pub fn routed(mut self) -> Spec {
        self.underlay = Underlay::Routed;
        self
    }

    /// The underlay address of gateway `Some(g)` or of the client (`None`).
    pub fn underlay_of(&self, g: Option<usize>) -> Ipv4Addr {
        match (self.underlay, g) {
            (Underlay::Segment | Underlay::Ipv6, Some(g)) => underlay_ip(g),
            (Underlay::Segment | Underlay::Ipv6, None) => CLIENT_UNDERLAY,
            (Underlay::Routed, g) => routed_ip(g.unwrap_or(ROUTED_CLIENT), 2),
        }
    }

    /// The router's address in the subnet of gateway `Some(g)` or of the client.
    pub fn router_of(&self, g: Option<usize>) -> Ipv4Addr {
        routed_ip(g.unwrap_or(ROUTED_CLIENT), 1)
    }

    pub fn first(&self) -> u32 {
        self.vni_base
    }

    pub fn last(&self) -> u32 {
        self.vni_base + self.vnis - 1
    }

    pub fn vni_range(&self) -> RangeInclusive<u32> {
        self.first()..=self.last()
    }

    pub fn all_gateways(&self) -> Vec<usize> {
        (1..=self.gateways).collect()
    }

    pub fn check(&self) -> Result<()> {
        if self.gateways < 1 || self.gateways > MAX_GATEWAYS {
            return Err(LabError::Spec(format!(
                "gateways must be 1-{MAX_GATEWAYS}, got {}",
                self.gateways
            )));
        }
        if self.vnis < 1
            || self.vni_base < 1
            || self.vni_base as u64 + self.vnis as u64 - 1 > MAX_VNI as u64
        {
            return Err(LabError::Spec(format!(
                "need V >= 1, B >= 1 and B+V-1 <= {MAX_VNI}, got V={} B={}",
                self.vnis, self.vni_base
            )));
        }
        if self.gateway_ip == GatewayIp::Vrrp && self.gateways > 126 {
            return Err(LabError::Spec(
                "--gateway-ip vrrp allows at most 126 gateways".into(),
            ));
        }
        Ok(())
    }
}

/// Gateway g's UID (`--uid`).
pub fn uid(g: usize) -> u64 {
    0x1000 + g as u64
}

/// The gateway number of a UID from [`uid`].
pub fn gateway_of_uid(uid: u64) -> usize {
    (uid - 0x1000) as usize
}

/// Gateway g's IPv6 address on eth0 in an [`Underlay::Ipv6`] lab: `2001:db8:1::g`.
pub fn underlay_ip6(g: usize) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, g as u16)
}

/// The client's subnet number in a routed lab (10.2.250.0/24).
pub const ROUTED_CLIENT: usize = 250;

/// Host `host` of subnet `10.2.n.0/24` (routed lab: n is a gateway's number or
/// [`ROUTED_CLIENT`]; the router is host 1).
pub fn routed_ip(n: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, n as u8, host)
}

pub fn underlay_ip(g: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, g as u8)
}

fn vni_net(v: u32, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, (100 + v / 256) as u8, (v % 256) as u8, host)
}

/// The gateway IP of VNI v: 10.(100+v/256).(v%256).1.
pub fn gateway_ip(v: u32) -> Ipv4Addr {
    vni_net(v, 1)
}

/// The client's address in VNI v (...100).
pub fn client_ip(v: u32) -> Ipv4Addr {
    vni_net(v, 100)
}

/// Gateway g's own address in VNI v (...128+g), with [`GatewayIp::Vrrp`].
pub fn own_ip(v: u32, g: usize) -> Ipv4Addr {
    vni_net(v, 128 + g as u8)
}

/// The VNI whose gateway IP this is.
pub fn vni_of_gateway_ip(ip: Ipv4Addr) -> Option<u32> {
    let o = ip.octets();
    (o[0] == 10 && o[1] >= 100 && o[3] == 1).then(|| u32::from(o[1] - 100) * 256 + u32::from(o[2]))
}

/// The shared MAC of VNI v: 02:00:5e:HH:MM:LL.
pub fn shared_mac(v: u32) -> String {
    format!(
        "02:00:5e:{:02x}:{:02x}:{:02x}",
        (v >> 16) & 255,
        (v >> 8) & 255,
        v & 255
    )
}

/// The managed interface of VNI v.
pub fn ifname(v: u32) -> String {
    format!("vrrp4-{v}")
}

/// The IPv6 gateway interface of VNI v.
pub fn ifname6(v: u32) -> String {
    format!("vrrp6-{v}")
}

/// The IPv6 gateway address of VNI v: 2001:db8:0:<v>::1 (v < 65536, see [`MAX_VNI`]).
pub fn gateway6_ip(v: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, v as u16, 0, 0, 0, 1)
}

/// The link-local router address every gateway's `vrrp6-<v>` holds.
pub const GATEWAY6_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The client's IPv6 address in VNI v (...::100).
pub fn client6_ip(v: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, v as u16, 0, 0, 0, 0x100)
}

/// The shared MAC of VNI v's IPv6 interface: 02:00:5f:HH:MM:LL (a macvlan's MAC must differ from
/// its siblings' on the same lower device, so not the IPv4 one).
pub fn shared6_mac(v: u32) -> String {
    format!(
        "02:00:5f:{:02x}:{:02x}:{:02x}",
        (v >> 16) & 255,
        (v >> 8) & 255,
        v & 255
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(gateway_ip(1), Ipv4Addr::new(10, 100, 1, 1));
        assert_eq!(gateway_ip(300), Ipv4Addr::new(10, 101, 44, 1));
        assert_eq!(client_ip(7), Ipv4Addr::new(10, 100, 7, 100));
        assert_eq!(own_ip(7, 2), Ipv4Addr::new(10, 100, 7, 130));
        assert_eq!(shared_mac(0x01_02_03), "02:00:5e:01:02:03");
        for v in [1, 255, 256, 300, MAX_VNI] {
            assert_eq!(vni_of_gateway_ip(gateway_ip(v)), Some(v));
        }
        assert_eq!(vni_of_gateway_ip(client_ip(3)), None);
        assert_eq!(gateway_of_uid(uid(7)), 7);
        assert_eq!(gateway6_ip(300).to_string(), "2001:db8:0:12c::1");
        assert_eq!(client6_ip(1).to_string(), "2001:db8:0:1::100");
        assert_eq!(shared6_mac(0x01_02_03), "02:00:5f:01:02:03");
        assert_eq!(gateway6_ip(MAX_VNI).segments()[3] as u32, MAX_VNI);
        let routed = Spec::new(3, 1).routed();
        assert_eq!(routed.underlay_of(Some(3)), Ipv4Addr::new(10, 2, 3, 2));
        assert_eq!(routed.router_of(Some(3)), Ipv4Addr::new(10, 2, 3, 1));
        assert_eq!(routed.underlay_of(None), Ipv4Addr::new(10, 2, 250, 2));
        assert_eq!(Spec::new(3, 1).underlay_of(Some(3)), underlay_ip(3));
    }

    #[test]
    fn spec_bounds() {
        assert!(Spec::new(3, 16).check().is_ok());
        assert!(Spec::new(0, 16).check().is_err());
        assert!(Spec::new(3, 0).check().is_err());
        assert!(Spec::new(3, MAX_VNI + 1).check().is_err());
        let mut s = Spec::new(127, 1);
        s.gateway_ip = GatewayIp::Vrrp;
        assert!(s.check().is_err());
    }
}
