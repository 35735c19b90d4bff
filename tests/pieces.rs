//! The small pure pieces the core is built from, each on its own: the GARP schedule and its
//! pacing, readiness (hold-down and uplink), the action backoff, and the link table. Time is an
//! argument (`t0 + offset`); nothing here reads a clock.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use wmgwd2::garp::{self, Announcement, Policy, Schedule, BATCH, PACE};
use wmgwd2::links::{Change, KernelEvent, LinkState, LinkTable, NamePattern, Snapshot};
use wmgwd2::readiness::{Readiness, Transition};
use wmgwd2::reconcile::{Backoff, Protodown, ACTION_BACKOFF};
use wmgwd2::types::{Family, IfIndex, Slot, Vni, VniRange};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn policy(refresh: Option<Duration>) -> Policy {
    Policy {
        count: 3,
        spacing: ms(200),
        refresh,
    }
}

fn active(vnis: impl IntoIterator<Item = u32>) -> BTreeMap<Slot, IfIndex> {
    vnis.into_iter()
        .map(|v| (Slot::v4(Vni(v)), IfIndex(100 + v)))
        .collect()
}

/// The same addresses for every VNI.
fn take(s: &mut Schedule, now: Instant, addrs: &[IpAddr]) -> Vec<Announcement> {
    s.take_due(now, |_| Some((MAC, addrs)))
}

fn vnis(a: &[Announcement]) -> Vec<u32> {
    a.iter().map(|a| a.slot.vni.0).collect()
}

#[test]
fn garp_burst_then_refresh() {
    let t0 = Instant::now();
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    let mut s = Schedule::new(policy(Some(ms(30_000))));
    s.update(active([1, 2]), t0);
    assert_eq!(s.next_deadline(), Some(t0));
    let a = take(&mut s, t0, &ip);
    assert_eq!(vnis(&a), [1, 2]);
    assert_eq!(a[0].remaining, 3);
    assert_eq!(a[0].ifindex, IfIndex(101));
    assert_eq!(s.next_deadline(), Some(t0 + ms(200)));
    assert!(take(&mut s, t0 + ms(199), &ip).is_empty());
    assert_eq!(take(&mut s, t0 + ms(200), &ip)[0].remaining, 2);
    assert_eq!(take(&mut s, t0 + ms(400), &ip)[0].remaining, 1);
    // The burst is over: the refresh, one at a time.
    assert_eq!(s.next_deadline(), Some(t0 + ms(30_400)));
    let r = take(&mut s, t0 + ms(30_400), &ip);
    assert_eq!((vnis(&r), r[0].remaining), (vec![1, 2], 1));
    assert_eq!(s.next_deadline(), Some(t0 + ms(60_400)));
}

#[test]
fn garp_no_refresh_ends_after_the_burst() {
    let t0 = Instant::now();
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    let mut s = Schedule::new(policy(None));
    s.update(active([1]), t0);
    for i in 0..3 {
        assert_eq!(take(&mut s, t0 + ms(200 * i), &ip).len(), 1);
    }
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn garp_only_newly_active_vnis_start_a_burst() {
    let t0 = Instant::now();
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    let mut s = Schedule::new(policy(None));
    s.update(active([1]), t0);
    take(&mut s, t0, &ip);
    // Still active, plus a new one: only the new one is due now.
    s.update(active([1, 2]), t0 + ms(50));
    assert_eq!(vnis(&take(&mut s, t0 + ms(50), &ip)), [2]);
    // A VNI no longer active is no longer announced.
    s.update(active([2]), t0 + ms(60));
    assert_eq!(vnis(&take(&mut s, t0 + ms(250), &ip)), [2]);
    // Reported inactive (a carrier flap): back, it counts as new again.
    s.inactive(Slot::v4(Vni(2)));
    assert_eq!(s.next_deadline(), None);
    s.update(active([2]), t0 + ms(300));
    assert_eq!(take(&mut s, t0 + ms(300), &ip)[0].remaining, 3);
    // A new ifindex for the same VNI (deleted and re-created): new as well.
    let mut moved = active([2]);
    moved.insert(Slot::v4(Vni(2)), IfIndex(999));
    s.update(moved, t0 + ms(310));
    let a = take(&mut s, t0 + ms(310), &ip);
    assert_eq!((a[0].ifindex, a[0].remaining), (IfIndex(999), 3));
}

#[test]
fn garp_an_added_address_restarts_the_burst_of_an_active_vni_only() {
    let t0 = Instant::now();
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    let mut s = Schedule::new(policy(None));
    s.update(active([1]), t0);
    for i in 0..3 {
        take(&mut s, t0 + ms(200 * i), &ip);
    }
    s.address_added(Slot::v4(Vni(2)), IfIndex(102), t0 + ms(500));
    assert_eq!(s.next_deadline(), None);
    s.address_added(Slot::v4(Vni(1)), IfIndex(999), t0 + ms(500));
    assert_eq!(s.next_deadline(), None);
    s.address_added(Slot::v4(Vni(1)), IfIndex(101), t0 + ms(500));
    assert_eq!(take(&mut s, t0 + ms(500), &ip)[0].remaining, 3);
}

#[test]
fn garp_batches_are_paced() {
    let t0 = Instant::now();
    let two: [IpAddr; 2] = [
        Ipv4Addr::new(10, 0, 0, 1).into(),
        Ipv4Addr::new(10, 0, 0, 2).into(),
    ];
    let mut s = Schedule::new(policy(None));
    s.update(active(1..=300), t0);
    // Two frames per VNI: at most BATCH frames go now, the rest PACE later.
    let first = take(&mut s, t0, &two);
    assert_eq!(first.len(), BATCH / 2);
    assert_eq!(s.next_deadline(), Some(t0 + PACE));
    let mut seen = first.len();
    let mut t = t0;
    while seen < 300 {
        t += PACE;
        let more = take(&mut s, t, &two);
        assert!(!more.is_empty() && more.len() <= BATCH / 2);
        assert!(
            more.iter().all(|a| a.remaining == 3),
            "still the first round"
        );
        seen += more.len();
    }
    assert_eq!(seen, 300);
}

#[test]
fn garp_deferred_announcements_keep_their_place_in_the_burst() {
    let t0 = Instant::now();
    let ip = [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
    let mut s = Schedule::new(policy(None));
    s.update(active([1, 2]), t0);
    let a = take(&mut s, t0, &ip);
    // The socket was full from VNI 2 on.
    s.defer(&a[1..], t0);
    let again = take(&mut s, t0 + PACE, &ip);
    assert_eq!((vnis(&again), again[0].remaining), (vec![2], 3));
    // VNI 1's next one is where it was.
    assert_eq!(vnis(&take(&mut s, t0 + ms(200), &ip)), [1]);
}

#[test]
fn garp_frame_is_an_arp_request_for_the_address_itself() {
    let f = garp::frame(MAC, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(f.len(), garp::FRAME_LEN);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[28..32], &f[38..42]);
}

#[test]
fn readiness_hold_down_then_ready() {
    let t0 = Instant::now();
    let mut r = Readiness::new(ms(300), ms(10_000));
    r.start(t0, true);
    assert!(!r.ready() && r.holding());
    assert_eq!(r.poll(t0 + ms(299)), None);
    assert_eq!(r.poll(t0 + ms(300)), Some(Transition::Ready));
    assert!(r.ready() && !r.holding());
    assert_eq!(r.poll(t0 + ms(400)), None);
}

#[test]
fn readiness_uplink_down_releases_and_up_holds_down_longer() {
    let t0 = Instant::now();
    let mut r = Readiness::new(ms(300), ms(10_000));
    r.start(t0, true);
    r.poll(t0 + ms(300));
    assert_eq!(
        r.uplink(true, t0 + ms(400)),
        None,
        "no change, no transition"
    );
    assert_eq!(r.uplink(false, t0 + ms(500)), Some(Transition::UplinkDown));
    assert!(!r.ready() && !r.holding());
    assert_eq!(
        r.uplink(true, t0 + ms(600)),
        Some(Transition::UplinkUp { hold: ms(10_000) })
    );
    assert_eq!(r.next_deadline(), Some(t0 + ms(10_600)));
    // Down again during the hold-down: the hold-down is off, nothing ends it.
    assert_eq!(r.uplink(false, t0 + ms(700)), Some(Transition::UplinkDown));
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn readiness_uplink_hold_down_is_never_shorter_than_the_hold_down() {
    let t0 = Instant::now();
    let mut r = Readiness::new(ms(300), ms(0));
    r.start(t0, false);
    assert!(!r.holding(), "uplink down at start: no hold-down runs");
    assert_eq!(
        r.uplink(true, t0),
        Some(Transition::UplinkUp { hold: ms(300) })
    );
    r.stop();
    assert!(!r.ready() && !r.holding());
}

fn change(vni: u32, on: bool) -> Protodown {
    Protodown {
        vni: Vni(vni),
        family: Family::V4,
        ifindex: IfIndex(100 + vni),
        on,
    }
}

#[test]
fn backoff_defers_a_vni_acted_on_just_now() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    assert_eq!(b.admit(vec![change(1, true)], t0), vec![change(1, true)]);
    b.acted([Slot::v4(Vni(1))], t0);
    let later = t0 + ACTION_BACKOFF;
    assert!(b.admit(vec![change(1, false)], t0 + ms(10)).is_empty());
    assert_eq!(b.next_deadline(), Some(later));
    // Another VNI is not held back.
    assert_eq!(b.admit(vec![change(2, true)], t0 + ms(10)).len(), 1);
    assert!(!b.due(later - ms(1)));
    assert!(b.due(later));
    assert!(!b.due(later), "due once");
    assert_eq!(b.admit(vec![change(1, false)], later).len(), 1);
    // At a stop nothing is held back.
    b.acted([Slot::v4(Vni(1))], later);
    b.clear();
    assert_eq!(b.admit(vec![change(1, true)], later).len(), 1);
}

#[test]
fn backoff_keeps_the_earliest_retry() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    b.retry(t0 + ms(1000));
    b.retry(t0 + ms(50));
    b.retry(t0 + ms(700));
    assert_eq!(b.next_deadline(), Some(t0 + ms(50)));
}

fn l(ifindex: u32, name: &str) -> LinkState {
    LinkState {
        ifindex: IfIndex(ifindex),
        ifname: name.into(),
        protodown: false,
        reason: 0,
        admin_up: true,
        carrier: true,
        running: true,
        mac: MAC,
        lower: None,
        master: None,
    }
}

fn table(uplink: Option<&str>) -> LinkTable {
    LinkTable::new(
        NamePattern::new("vrrp4-{vni}").unwrap(),
        NamePattern::new("vrrp6-{vni}").unwrap(),
        VniRange::new(1, 10).unwrap(),
        uplink.map(String::from),
    )
}

#[test]
fn link_table_keeps_managed_links_by_vni_through_renames() {
    let mut t = table(None);
    t.load(Snapshot {
        links: vec![
            l(5, "vrrp4-1"),
            l(6, "vrrp4-11"),
            l(7, "tmp2"),
            l(8, "eth0"),
        ],
        addrs: BTreeMap::from([(IfIndex(7), vec![Ipv4Addr::new(10, 0, 2, 1).into()])]),
    });
    let managed: Vec<u32> = t.managed().keys().map(|s| s.vni.0).collect();
    assert_eq!(
        managed,
        [1],
        "vrrp4-11 is outside 1-10, tmp2 does not match"
    );
    // Renamed into the pattern, with the address it had.
    assert_eq!(t.apply(KernelEvent::Link(l(7, "vrrp4-2"))), Change::Nothing);
    assert_eq!(t.get(Slot::v4(Vni(2))).map(|l| l.ifindex), Some(IfIndex(7)));
    assert_eq!(
        t.addrs(IfIndex(7)),
        [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))]
    );
    // Renamed out of it, while up: reported, and put down once if the caller says it served.
    assert_eq!(
        t.apply(KernelEvent::Link(l(7, "old2"))),
        Change::RenamedOut(Slot::v4(Vni(2)), IfIndex(7))
    );
    assert_eq!(t.get(Slot::v4(Vni(2))), None);
    t.orphan(IfIndex(7), Slot::v4(Vni(2)));
    assert_eq!(t.orphans().get(&IfIndex(7)), Some(&Slot::v4(Vni(2))));
    let mut down = l(7, "old2");
    down.protodown = true;
    assert_eq!(t.apply(KernelEvent::Link(down)), Change::Nothing);
    assert!(t.orphans().is_empty(), "put down: no longer an orphan");
    // A second link takes a VNI's name: the newer report wins.
    t.apply(KernelEvent::Link(l(9, "vrrp4-1")));
    assert_eq!(t.get(Slot::v4(Vni(1))).map(|l| l.ifindex), Some(IfIndex(9)));
    t.apply(KernelEvent::LinkGone {
        ifindex: IfIndex(9),
    });
    assert_eq!(t.get(Slot::v4(Vni(1))), None);
}

#[test]
fn link_table_reports_inactive_links_and_new_addresses_of_managed_ones() {
    let mut t = table(None);
    t.load(Snapshot {
        links: vec![l(5, "vrrp4-1"), l(8, "eth0")],
        addrs: BTreeMap::new(),
    });
    let mut down = l(5, "vrrp4-1");
    down.carrier = false;
    assert_eq!(
        t.apply(KernelEvent::Link(down)),
        Change::Inactive(Slot::v4(Vni(1)))
    );
    let mut eth_down = l(8, "eth0");
    eth_down.carrier = false;
    assert_eq!(t.apply(KernelEvent::Link(eth_down)), Change::Nothing);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
    let add = |ifindex, added| KernelEvent::Address {
        ifindex: IfIndex(ifindex),
        addr: ip,
        added,
    };
    assert_eq!(
        t.apply(add(5, true)),
        Change::AddressAdded(Slot::v4(Vni(1)), IfIndex(5))
    );
    assert_eq!(t.apply(add(8, true)), Change::Nothing);
    assert_eq!(t.addrs(IfIndex(5)), [ip]);
    assert_eq!(t.apply(add(5, false)), Change::Nothing);
    assert!(t.addrs(IfIndex(5)).is_empty());
    assert_eq!(t.apply(KernelEvent::Lost), Change::Lost);
}

#[test]
fn link_table_follows_the_uplink_by_name() {
    let mut t = table(Some("eth0"));
    assert!(!t.uplink_up(), "not seen yet: down");
    t.load(Snapshot {
        links: vec![l(8, "eth0")],
        addrs: BTreeMap::new(),
    });
    assert!(t.uplink_up());
    let mut down = l(8, "eth0");
    down.carrier = false;
    t.apply(KernelEvent::Link(down));
    assert!(!t.uplink_up());
    // Deleted and re-created under a new index: found again by name.
    t.apply(KernelEvent::LinkGone {
        ifindex: IfIndex(8),
    });
    assert!(!t.uplink_up());
    t.apply(KernelEvent::Link(l(12, "eth0")));
    assert!(t.uplink_up());
    // Renamed away.
    t.apply(KernelEvent::Link(l(12, "eth9")));
    assert!(!t.uplink_up());
    assert!(table(None).uplink_up(), "no uplink tracked: always up");
}

#[test]
fn the_hold_time_covers_our_own_send_delays_up_to_twice_the_configured_one() {
    use std::time::Duration;
    use wmgwd2::core::lag_multiple;
    let ms = Duration::from_millis;
    // On time, or late by less than the slack of the configured hold: unchanged.
    assert_eq!(lag_multiple(3, ms(10), ms(0)), 3);
    assert_eq!(lag_multiple(3, ms(10), ms(10)), 3);
    // Late by 15 ms at 10 ms: a gap of 25 ms and room for the next frame, 4 intervals.
    assert_eq!(lag_multiple(3, ms(10), ms(15)), 4);
    assert_eq!(lag_multiple(3, ms(10), ms(21)), 6);
    // Never beyond twice the configured hold, whatever the delay.
    assert_eq!(lag_multiple(3, ms(10), ms(40)), 6);
    assert_eq!(lag_multiple(3, ms(10), Duration::from_secs(3600)), 6);
    assert_eq!(lag_multiple(3, Duration::ZERO, ms(1)), 6);
    // At 1 s, scheduling delays of a busy host change nothing.
    assert_eq!(lag_multiple(3, ms(1000), ms(40)), 3);
    let mut prev = 3;
    for l in 0..100 {
        let k = lag_multiple(3, ms(10), ms(l));
        assert!((3..=6).contains(&k) && k >= prev, "monotonic at {l} ms");
        prev = k;
    }
}

#[test]
fn the_hold_time_grows_with_measured_loss_up_to_twice_the_configured_one() {
    use wmgwd2::core::adaptive_multiple;
    assert_eq!(adaptive_multiple(3, 0), 3);
    // Sporadic loss (a frame in 256) leaves it alone; 5 % asks for 5 intervals; 10 % and
    // more for the most, 6.
    assert_eq!(adaptive_multiple(3, 4), 3);
    assert_eq!(adaptive_multiple(3, 50), 5);
    assert_eq!(adaptive_multiple(3, 100), 6);
    assert_eq!(adaptive_multiple(3, 200), 6);
    assert_eq!(adaptive_multiple(3, 1000), 6);
    assert_eq!(adaptive_multiple(5, 200), 9);
    for p in 0..=1000 {
        let k = adaptive_multiple(3, p);
        assert!((3..=6).contains(&k));
        assert!(
            k >= adaptive_multiple(3, p.saturating_sub(1)),
            "monotonic at {p}"
        );
    }
}

/// A VNI's IPv6 interface is managed beside its IPv4 one, under its own slot; a VNI may have
/// either or both; an IPv6 address on a managed IPv6 link is reported as added to that slot.
#[test]
fn link_table_keeps_both_families_of_a_vni() {
    let mut t = table(None);
    t.load(Snapshot {
        links: vec![
            l(5, "vrrp4-1"),
            l(6, "vrrp6-1"),
            l(7, "vrrp6-2"),
            l(8, "vrrp6-11"),
        ],
        addrs: BTreeMap::new(),
    });
    let managed: Vec<Slot> = t.managed().keys().copied().collect();
    assert_eq!(
        managed,
        [Slot::v4(Vni(1)), Slot::v6(Vni(1)), Slot::v6(Vni(2))],
        "vrrp6-11 is outside 1-10"
    );
    assert_eq!(
        t.managed_vnis(),
        2,
        "VNI 1 with both interfaces counts once"
    );
    let of1: Vec<u32> = t.of_vni(Vni(1)).map(|(_, l)| l.ifindex.0).collect();
    assert_eq!(of1, [5, 6]);
    let of2: Vec<Slot> = t.of_vni(Vni(2)).map(|(s, _)| s).collect();
    assert_eq!(of2, [Slot::v6(Vni(2))]);
    assert_eq!(t.of_vni(Vni(3)).count(), 0);
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        t.apply(KernelEvent::Address {
            ifindex: IfIndex(6),
            addr: ip,
            added: true
        }),
        Change::AddressAdded(Slot::v6(Vni(1)), IfIndex(6))
    );
    let mut down = l(6, "vrrp6-1");
    down.carrier = false;
    assert_eq!(
        t.apply(KernelEvent::Link(down)),
        Change::Inactive(Slot::v6(Vni(1)))
    );
    // Renamed from one family's name to the other's: it moves slot.
    t.apply(KernelEvent::Link(l(7, "vrrp4-2")));
    assert_eq!(t.get(Slot::v6(Vni(2))), None);
    assert_eq!(t.get(Slot::v4(Vni(2))).map(|l| l.ifindex), Some(IfIndex(7)));
}

/// An announcement carries the addresses of its slot's family only: the IPv4 interface's
/// gratuitous ARPs never name an IPv6 address (say a link-local the kernel generated), the IPv6
/// interface's advertisements never an IPv4 one. The two interfaces of a VNI burst separately.
#[test]
fn announcements_carry_their_familys_addresses() {
    let t0 = Instant::now();
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let g6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let ll = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    let both = [v4, g6, ll];
    let mut s = Schedule::new(policy(None));
    s.update(
        BTreeMap::from([
            (Slot::v4(Vni(1)), IfIndex(101)),
            (Slot::v6(Vni(1)), IfIndex(201)),
        ]),
        t0,
    );
    let a = take(&mut s, t0, &both);
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].slot, a[0].ips.clone()), (Slot::v4(Vni(1)), vec![v4]));
    assert_eq!(
        (a[1].slot, a[1].ips.clone()),
        (Slot::v6(Vni(1)), vec![g6, ll])
    );
    assert_eq!(a[1].ifindex, IfIndex(201));
    // The IPv6 interface flaps: only it starts a new burst.
    s.inactive(Slot::v6(Vni(1)));
    s.update(
        BTreeMap::from([
            (Slot::v4(Vni(1)), IfIndex(101)),
            (Slot::v6(Vni(1)), IfIndex(201)),
        ]),
        t0 + ms(10),
    );
    let a = take(&mut s, t0 + ms(10), &both);
    assert_eq!(
        a.iter().map(|a| a.slot).collect::<Vec<_>>(),
        [Slot::v6(Vni(1))]
    );
    assert_eq!(a[0].remaining, 3);
}

/// The frame of an announcement follows the address: ARP for IPv4, a neighbour advertisement
/// for IPv6.
#[test]
fn the_announcement_frame_follows_the_family() {
    let f4 = garp::announcement(MAC, Ipv4Addr::new(192, 0, 2, 1).into());
    assert_eq!(f4.as_ref().len(), garp::FRAME_LEN);
    assert_eq!(&f4.as_ref()[12..14], &[0x08, 0x06]);
    let f6 = garp::announcement(MAC, "2001:db8::1".parse().unwrap());
    assert_eq!(f6.as_ref().len(), garp::NA_FRAME_LEN);
    assert_eq!(&f6.as_ref()[12..14], &[0x86, 0xdd]);
    assert_eq!(f6.as_ref()[54], 136, "ICMPv6 neighbour advertisement");
}

/// The backoff is per interface: acting on a VNI's IPv4 interface does not hold back its IPv6
/// one (created a moment later, say).
#[test]
fn backoff_is_per_interface() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    b.acted([Slot::v4(Vni(1))], t0);
    let mut c6 = change(1, true);
    c6.family = Family::V6;
    assert_eq!(b.admit(vec![c6], t0 + ms(10)), vec![c6]);
    assert!(b.admit(vec![change(1, true)], t0 + ms(10)).is_empty());
}
