//! The generated man pages and completions cover the command line the daemon really parses
//! (`wmgwd2::cli::Args`, not the documented `command()` they are made from): every daemon flag,
//! its environment variable, every subcommand and its flags, and `check`. Pure.

use clap::CommandFactory;
use wmgwd2::cli::Args;
use wmgwd2_gen_docs::{completions, man_pages, File};

fn text(f: &File) -> String {
    String::from_utf8(f.bytes.clone()).expect("utf-8")
}

fn page(pages: &[File], name: &str) -> String {
    let p = pages.iter().find(|p| p.name == name);
    text(p.unwrap_or_else(|| panic!("no page {name}")))
}

/// roff escapes every `-` of a flag.
fn roff_flag(long: &str) -> String {
    format!("\\-\\-{}", long.replace('-', "\\-"))
}

/// The subcommands the binary answers: clap's, and `check`, which `main` handles itself.
fn subcommands() -> Vec<String> {
    let mut names: Vec<String> = Args::command()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names.push("check".to_owned());
    names
}

fn assert_flags(page: &str, name: &str, cmd: &clap::Command) {
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(page.contains(&roff_flag(long)), "{name} lacks --{long}");
        }
        if let Some(short) = arg.get_short() {
            assert!(
                page.contains(&format!("\\-{short}")),
                "{name} lacks -{short}"
            );
        }
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(page.contains(&*env), "{name} lacks {env}");
        }
    }
}

#[test]
fn the_main_page_has_every_daemon_flag_and_every_subcommand() {
    let pages = man_pages("2026-01-02").expect("render");
    let main = page(&pages, "wmgwd2.8");
    let args = Args::command();
    let version = args.get_version().expect("a version");
    let title = format!(".TH wmgwd2 8 2026-01-02 \"wmgwd2 {version}\" \"System Administration\"");
    assert!(main.contains(&title), "not {title}: {}", &main[..120]);
    assert!(args.get_arguments().count() > 20);
    assert_flags(&main, "wmgwd2.8", &args);
    for sub in subcommands() {
        assert!(
            main.contains(&format!("wmgwd2\\-{sub}(8)")),
            "wmgwd2.8 does not name wmgwd2-{sub}(8)"
        );
    }
    for section in ["FILES", "EXIT STATUS", "SEE ALSO", "VERSION"] {
        assert!(
            main.contains(&format!(".SH \"{section}\""))
                || main.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
}

#[test]
fn every_subcommand_has_a_page_with_its_flags() {
    let pages = man_pages("2026-01-02").expect("render");
    let args = Args::command();
    for sub in args.get_subcommands() {
        let name = format!("wmgwd2-{}.8", sub.get_name());
        assert_flags(&page(&pages, &name), &name, sub);
    }
    // `check` takes the daemon's flags.
    assert_flags(&page(&pages, "wmgwd2-check.8"), "wmgwd2-check.8", &args);
    let mut names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<String> = subcommands()
        .iter()
        .map(|s| format!("wmgwd2-{s}.8"))
        .collect();
    want.push("wmgwd2.8".to_owned());
    want.sort_unstable();
    assert_eq!(names, want, "one page per subcommand, no help page");
}

#[test]
fn every_completion_knows_every_subcommand_and_flag() {
    let scripts = completions();
    let names: Vec<&str> = scripts.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["wmgwd2", "_wmgwd2", "wmgwd2.fish"]);
    let flags: Vec<String> = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    for script in &scripts {
        let t = text(script);
        for sub in subcommands() {
            assert!(t.contains(&sub), "{}: no {sub}", script.name);
        }
        for long in &flags {
            let fish = format!("-l {long}");
            assert!(
                t.contains(&format!("--{long}")) || t.contains(&fish),
                "{}: no --{long}",
                script.name
            );
        }
    }
}
