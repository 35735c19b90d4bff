//! Prometheus metrics: `--metrics-listen ADDR:PORT` serves `GET /metrics` in the text exposition
//! format (`prometheus-client` encodes it), from a minimal HTTP responder on tokio. Each scrape
//! asks the event loop for a fresh [`Report`] (as the control socket does) and renders it, so
//! the values are the loop's own at that moment.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::Report;

/// Facts about the shell that the core does not keep, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShellFacts {
    /// How late the last heartbeat went out against its slot on the grid.
    pub heartbeat_lag: Duration,
    /// How long the last protodown request took the kernel.
    pub last_reconcile: Duration,
    /// Seconds since the epoch of the last full re-read of the kernel (0: none yet).
    pub last_resync_unix: f64,
}

/// A scrape waiting for its answer.
pub type Scrape = oneshot::Sender<String>;

type Labels = Vec<(String, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn gauge_f(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The text exposition of `report` and `facts`.
pub fn render(report: &Report, facts: &ShellFacts) -> String {
    let mut r = Registry::with_prefix("wmgwd2");
    let g = &report.gateway;
    let members: Family<Labels, Gauge> = Family::default();
    for state in ["starting", "ready", "left"] {
        let n = report.members.iter().filter(|m| m.state == state).count();
        members
            .get_or_create(&vec![("state".into(), state.into())])
            .set(n as i64);
    }
    r.register("members", "Other gateways heard, by state", members);
    gauge(
        &mut r,
        "vnis_managed",
        "Managed VNIs with an interface",
        g.managed as i64,
    );
    gauge(
        &mut r,
        "vnis_owned",
        "VNIs this gateway owns",
        g.owned as i64,
    );
    gauge(
        &mut r,
        "vnis_active",
        "Owned VNIs whose interface carries traffic",
        g.active as i64,
    );
    gauge(
        &mut r,
        "vnis_blocked",
        "Owned VNIs held down by another program's reason bit",
        g.blocked as i64,
    );
    gauge(
        &mut r,
        "vnis_missing",
        "Managed VNIs without an interface",
        g.missing as i64,
    );
    gauge(
        &mut r,
        "ready",
        "1 when this gateway is a candidate owner",
        i64::from(g.state == "ready"),
    );
    let c = &report.counters;
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    let changes: Family<Labels, Counter> = Family::default();
    for (k, v) in c
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ownership_changes.")?, v)))
    {
        changes
            .get_or_create(&vec![("reason".into(), k.into())])
            .inc_by(*v);
    }
    r.register(
        "ownership_changes",
        "Changes of what this gateway owns, by reason",
        changes,
    );
    counter(
        &mut r,
        "frames_received",
        "Datagrams received on the heartbeat socket",
        get("frames_received"),
    );
    let dropped: Family<Labels, Counter> = Family::default();
    for prefix in ["frames_malformed.", "frames_rejected.", "frames_refused."] {
        for (k, v) in c
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v)))
        {
            dropped
                .get_or_create(&vec![("reason".into(), k.into())])
                .inc_by(*v);
        }
    }
    dropped
        .get_or_create(&vec![("reason".into(), "stale".into())])
        .inc_by(get("frames_stale"));
    r.register(
        "frames_dropped",
        "Datagrams that did not count, by reason",
        dropped,
    );
    counter(
        &mut r,
        "socket_drops",
        "Datagrams the kernel dropped on the heartbeat socket",
        get("socket_drops"),
    );
    counter(
        &mut r,
        "heartbeats_sent",
        "Heartbeats sent",
        get("heartbeats_sent"),
    );
    counter(
        &mut r,
        "heartbeat_send_errors",
        "Heartbeats that could not be sent",
        get("send_errors"),
    );
    counter(
        &mut r,
        "garps_sent",
        "Gratuitous ARPs sent",
        get("garps_sent"),
    );
    counter(
        &mut r,
        "kernel_errors",
        "Kernel requests that failed (protodown, flushes, GARP sends)",
        get("actions_failed") + get("garp_errors"),
    );
    counter(
        &mut r,
        "resyncs",
        "Full re-reads of the kernel's links",
        get("resyncs"),
    );
    counter(
        &mut r,
        "uid_conflicts",
        "Heartbeats of another gateway that uses this gateway's UID",
        get("uid_conflicts"),
    );
    counter(
        &mut r,
        "leaves_refuted",
        "LEAVINGs of a peer refuted by its later heartbeats (forged or replayed)",
        get("leaves_refuted"),
    );
    let one_way: Family<Labels, Counter> = Family::default();
    for (dir, key) in [("in", "one_way_in"), ("out", "one_way_out")] {
        one_way
            .get_or_create(&vec![("direction".into(), dir.into())])
            .inc_by(get(key));
    }
    r.register(
        "one_way_loss",
        "One-way loss seen: a peer heard only through others (in), a peer that hears us only through others or not at all (out)",
        one_way,
    );
    counter(
        &mut r,
        "split_views",
        "Peers whose candidate set differed from ours for several intervals",
        get("split_views"),
    );
    gauge_f(
        &mut r,
        "hold_seconds",
        "The hold time our heartbeats ask for (raised under measured loss)",
        report.gateway.hold_ms as f64 / 1000.0,
    );
    counter(
        &mut r,
        "local_stalls",
        "Stalls of this gateway longer than its hold time",
        get("local_stalls"),
    );
    counter(
        &mut r,
        "late_wakes",
        "Deadlines acted on a hold time or more late (this process or host was held up; members got a hold time more)",
        get("late_wakes"),
    );
    gauge_f(
        &mut r,
        "heartbeat_send_lag_seconds",
        "How late the last heartbeat went out against its slot",
        facts.heartbeat_lag.as_secs_f64(),
    );
    gauge_f(
        &mut r,
        "reconcile_duration_seconds",
        "How long the last protodown request took the kernel",
        facts.last_reconcile.as_secs_f64(),
    );
    gauge_f(
        &mut r,
        "last_resync_timestamp_seconds",
        "When the kernel's links were last read in full (Unix time)",
        facts.last_resync_unix,
    );
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        return String::new();
    }
    out
}

/// Listens on `addr`; every `GET /metrics` becomes a [`Scrape`] on the returned channel. Also
/// returns the address bound (port 0 picks one).
pub async fn listen(addr: SocketAddr) -> io::Result<(mpsc::Receiver<Scrape>, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let listener = std::sync::Arc::new(listener);
    let (tx, rx) = mpsc::channel(8);
    crate::control::serve_each(
        move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        },
        tx,
        serve,
    );
    Ok((rx, bound))
}

async fn serve(mut stream: TcpStream, tx: mpsc::Sender<Scrape>) -> io::Result<()> {
    // The request line and headers, at most 8 KiB; the body (there is none) is not read.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let first = line.lines().next().unwrap_or("");
    let mut words = first.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body, ctype) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let (reply, answer) = oneshot::channel();
            if tx.send(reply).await.is_err() {
                return Ok(());
            }
            let body = answer.await.unwrap_or_default();
            (
                "200 OK",
                body,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            (
                "404 Not Found",
                "only /metrics here\n".to_owned(),
                "text/plain",
            )
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
