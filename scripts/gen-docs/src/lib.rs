//! wmgwd2's man pages and shell completions, generated from its clap definition
//! ([`wmgwd2::cli::command`]), so that they say what `wmgwd2 --help` says and cannot drift from
//! it. scripts/deb.sh runs the binary (`wmgwd2-gen-docs OUT_DIR`) and packs what it writes.
//!
//! The pages are in section 8 (a daemon in /usr/sbin): `wmgwd2.8`, with FILES, EXIT STATUS and
//! SEE ALSO added to what clap_mangen renders, and one page per subcommand (`wmgwd2-status.8`,
//! …), which the main page's SUBCOMMANDS section names.

use std::io;

use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// The manual section of every page.
pub const SECTION: &str = "8";

/// The shells completions are written for, with their file names in the Debian package.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "wmgwd2"),
    (Shell::Zsh, "_wmgwd2"),
    (Shell::Fish, "wmgwd2.fish"),
];

/// One generated file: its name and contents.
#[derive(Debug)]
pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A page of ours: section 8, the same footer on every page (clap_mangen would put a
/// subcommand's own name and no version there), and a date (clap_mangen leaves an empty one out
/// of `.TH` instead of quoting it, which shifts the footer's fields).
fn man(cmd: clap::Command, date: &str) -> Man {
    let version = wmgwd2::cli::command()
        .get_version()
        .unwrap_or_default()
        .to_owned();
    Man::new(cmd)
        .section(SECTION)
        .date(date)
        .source(format!("wmgwd2 {version}"))
        .manual("System Administration")
}

/// `wmgwd2.8`, then one page per subcommand; `date` (YYYY-MM-DD) is the pages' date.
pub fn man_pages(date: &str) -> io::Result<Vec<File>> {
    let mut cmd = wmgwd2::cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![File {
        name: format!("wmgwd2.{SECTION}"),
        bytes: main_page(&cmd, date)?,
    }];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = man(sub.clone(), date);
        let mut bytes = Vec::new();
        page.render(&mut bytes)?;
        pages.push(File {
            name: page.get_filename(),
            bytes,
        });
    }
    Ok(pages)
}

/// clap_mangen's page, with FILES, EXIT STATUS and SEE ALSO before VERSION.
fn main_page(cmd: &clap::Command, date: &str) -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    man(cmd.clone(), date).render(&mut page)?;
    let page = String::from_utf8(page).map_err(io::Error::other)?;

    let mut roff = Roff::default();
    let entries = |roff: &mut Roff, heading: &str, items: &[(&str, &str)]| {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", [])
                .text([bold(*term)])
                .text([roman(*text)]);
        }
    };
    entries(
        &mut roff,
        "FILES",
        &[
            (
                "/etc/default/wmgwd2",
                "The unit's arguments: WMGWD2_ARGS, or WMGWD2_* variables, one per flag.",
            ),
            (
                "/run/wmgwd2/control.sock",
                "The control socket the subcommands ask (--control-socket).",
            ),
            (
                "/etc/machine-id",
                "Without --uid, this gateway's UID is derived from it.",
            ),
            (
                "/usr/share/doc/wmgwd2/",
                "operations.md (host setup, start and stop order, status, metrics, tuning), \
                 protocol.md, security.md (keys), evpn.md; examples/ (FRR configuration, \
                 Prometheus alert rules, Grafana dashboard).",
            ),
        ],
    );
    entries(
        &mut roff,
        "EXIT STATUS",
        &[
            (
                "0",
                "Stopped on SIGTERM or SIGINT after handing over; a subcommand or check succeeded.",
            ),
            (
                "1",
                "Start-up failed, a stop left managed interfaces up, the daemon refused or \
                 could not be reached, or check found an error.",
            ),
            ("2", "A bad command line or environment value."),
        ],
    );
    roff.control("SH", ["SEE ALSO"]).text([roman(
        "systemctl(1), journalctl(1), ip-link(8), bridge(8), \
         /usr/share/doc/wmgwd2/operations.md",
    )]);
    // Both renderings open with the same preamble (roff's apostrophe string); keep one.
    let preamble = Roff::default().render();
    let extra = roff.render();
    let extra = extra.strip_prefix(&preamble).unwrap_or(&extra);
    let at = page.find("\n.SH VERSION\n").map_or(page.len(), |i| i + 1);
    Ok(format!("{}{extra}{}", &page[..at], &page[at..]).into_bytes())
}

/// The completion script of each of [`SHELLS`].
pub fn completions() -> Vec<File> {
    SHELLS
        .iter()
        .map(|(shell, name)| {
            let mut bytes = Vec::new();
            clap_complete::generate(*shell, &mut wmgwd2::cli::command(), "wmgwd2", &mut bytes);
            File {
                name: (*name).to_owned(),
                bytes,
            }
        })
        .collect()
}
