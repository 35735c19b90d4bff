//! Commands and namespaces: running `ip`, entering a namespace on a thread, deleting one.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};

use crate::{io_err, LabError, Result};

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("{cmd:?}")))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS ARGS...`
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// `TOOL -n NS -batch -` with `script` on stdin (TOOL: ip or bridge); one process per namespace.
pub fn batch(tool: &str, ns: &str, script: &str) -> Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(tool)
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("{tool} -n {ns} -batch")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let wrote = stdin.write_all(script.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("{tool} -n {ns} -batch")))?;
    if !out.status.success() || wrote.is_err() {
        return Err(LabError::Command {
            cmd: format!("{tool} -n {ns} -batch"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The existing network namespaces, by name.
pub fn list() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    // "name (id: N)": the first word.
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

pub fn add(ns: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", ns])).map(drop)
}

/// Deletes a namespace; says on stderr when it could not.
pub fn delete(ns: &str) {
    if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
        if std::path::Path::new(&format!("/run/netns/{ns}")).exists() {
            eprintln!("lab: could not delete namespace {ns}: {e}");
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let path = format!("/run/netns/{ns}");
    let nsf = File::open(&path).map_err(io_err(format!("open {path}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let r = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        let entered = if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        let ok = entered.is_ok();
        let _ = tx.send(entered);
        assert!(ok, "setns {path}");
        f()
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(LabError::Io {
            what: format!("setns into {ns}"),
            source: e,
        }),
        Err(_) => Err(LabError::Parse {
            what: format!("thread in {ns}"),
            detail: "died before entering the namespace".into(),
        }),
    }
}
