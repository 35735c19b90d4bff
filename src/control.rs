//! The control socket: a Unix stream socket (`--control-socket`, mode 0600: root and the
//! service's user only) on which `wmgwd2 status` asks the running daemon for its state. One
//! request line per connection (`status`), one JSON document back, then the connection closes.
//!
//! A task of its own accepts connections and reads requests, so that a slow or stuck client never
//! holds the event loop; the loop answers each request from the core, through a channel.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::types::Uid;

/// Where the daemon listens unless told otherwise (systemd's `RuntimeDirectory=wmgwd2`).
pub const DEFAULT_SOCKET: &str = "/run/wmgwd2/control.sock";
/// How long a client may take to send its request, and the daemon to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line read.
const MAX_REQUEST: u64 = 1024;

/// A request the event loop answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    /// What would move if these members left and those joined.
    Plan {
        without: Vec<Uid>,
        with: Vec<Uid>,
    },
    /// Hand every VNI over and stay a member; and back.
    Drain,
    Undrain,
}

/// A request and where its answer goes.
pub type Pending = (Request, oneshot::Sender<String>);

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {path}: another daemon is listening there")]
    InUse { path: PathBuf },
    #[error("control socket {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
}

/// Binds the control socket at `path` (mode 0600) and starts accepting; requests arrive on the
/// returned channel. A socket file left by a dead daemon is replaced; one a live daemon answers
/// on is not.
pub async fn listen(path: &Path) -> Result<mpsc::Receiver<Pending>, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if UnixStream::connect(path).await.is_ok() {
        return Err(ControlError::InUse {
            path: path.to_owned(),
        });
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    let listener = std::sync::Arc::new(listener);
    let (tx, rx) = mpsc::channel(16);
    serve_each(
        move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        },
        tx,
        serve,
    );
    Ok(rx)
}

/// Accepts connections from `accept` for ever (pausing 100 ms after a failed accept) and serves
/// each in a task of its own, given at most [`TIMEOUT`]: a slow or stuck client holds nothing
/// but its own task. Shared by the control socket and the metrics responder.
pub(crate) fn serve_each<S, T, A, AF, F, SF>(mut accept: A, tx: mpsc::Sender<T>, serve: F)
where
    S: Send + 'static,
    T: Send + 'static,
    A: FnMut() -> AF + Send + 'static,
    AF: std::future::Future<Output = io::Result<S>> + Send,
    F: Fn(S, mpsc::Sender<T>) -> SF + Send + Copy + 'static,
    SF: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok(stream) = accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT, serve(stream, tx)).await;
            });
        }
    });
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Pending>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let request = match parse_request(line.trim()) {
        Some(r) => r,
        None => {
            let other = line.trim();
            let msg = serde_json::json!({ "error": format!("unknown request {other:?}") });
            return write.write_all(format!("{msg}\n").as_bytes()).await;
        }
    };
    let (reply, answer) = oneshot::channel();
    if tx.send((request, reply)).await.is_err() {
        return Ok(());
    }
    if let Ok(text) = answer.await {
        write.write_all(text.as_bytes()).await?;
    }
    write.shutdown().await
}

/// `status`, `drain`, `undrain`, or `plan [without=UID]… [with=UID]…`.
fn parse_request(line: &str) -> Option<Request> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "status" => words.next().is_none().then_some(Request::Status),
        "drain" => words.next().is_none().then_some(Request::Drain),
        "undrain" => words.next().is_none().then_some(Request::Undrain),
        "plan" => {
            let (mut without, mut with) = (vec![], vec![]);
            for w in words {
                let (k, v) = w.split_once('=')?;
                let uid = Uid(crate::cli::parse_uid(v).ok()?);
                match k {
                    "without" => without.push(uid),
                    "with" => with.push(uid),
                    _ => return None,
                }
            }
            Some(Request::Plan { without, with })
        }
        _ => None,
    }
}

/// The client side: sends `request` to the daemon at `path` and returns its answer.
pub async fn ask(path: &Path, request: &str) -> Result<String, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut s = UnixStream::connect(path).await.map_err(io_err)?;
        s.write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(io_err)?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(io_err)?;
        Ok(out)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ControlError::Protocol {
            path: path.to_owned(),
            detail: "the daemon did not answer in time".into(),
        })?
}
