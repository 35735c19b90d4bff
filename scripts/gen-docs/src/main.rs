//! `wmgwd2-gen-docs OUT_DIR DATE`: writes OUT_DIR/man/*.8 and OUT_DIR/completions/{wmgwd2, _wmgwd2,
//! wmgwd2.fish} (bash, zsh, fish), generated from wmgwd2's clap definition. scripts/deb.sh runs it
//! with target/assets, where the Debian package's assets (Cargo.toml) are taken from, and the
//! date of the commit it packs (YYYY-MM-DD), so that the same commit gives the same pages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn write_all(dir: &Path, files: &[wmgwd2_gen_docs::File]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in files {
        std::fs::write(dir.join(&f.name), &f.bytes)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), Some(date), None) = (
        args.next().map(PathBuf::from),
        args.next().and_then(|d| d.into_string().ok()),
        args.next(),
    ) else {
        eprintln!("usage: wmgwd2-gen-docs OUT_DIR YYYY-MM-DD");
        return ExitCode::from(2);
    };
    let written = wmgwd2_gen_docs::man_pages(&date)
        .and_then(|pages| write_all(&out.join("man"), &pages))
        .and_then(|()| write_all(&out.join("completions"), &wmgwd2_gen_docs::completions()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wmgwd2-gen-docs: writing {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}
