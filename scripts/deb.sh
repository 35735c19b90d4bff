#!/usr/bin/env bash
# Builds the Debian package target/debian/wmgwd2_<version>-1_<arch>.deb and prints its path.
# What goes in it and where is [package.metadata.deb] in Cargo.toml; docs/operations.md,
# "Installing from the Debian package", says how to install and configure it.
#
# Steps: the release binary; the man pages and shell completions, generated from the clap
# definition by scripts/gen-docs, and a one-entry Debian changelog, into target/assets; then
# `cargo deb --no-build`. Installs cargo-deb from crates.io (pinned) when it is missing. Needs no
# root. Every date in the package is the packed commit's, so one commit gives the same package.
set -euo pipefail
cd "$(dirname "$0")/.."

# 3.8.0: rust-version 1.85, like this crate.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)

cargo build --quiet --release --bin wmgwd2

rm -rf target/assets
cargo run --quiet -p wmgwd2-gen-docs -- target/assets "$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)"

# Debian policy wants a changelog in every package; this one is not from the Debian archive, so
# its one entry names the commit it was built from.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
cat >target/assets/changelog <<EOF
wmgwd2 ($version-1) unstable; urgency=medium

  * Built by scripts/deb.sh from commit $commit; changes: the git history.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

cargo deb --no-build --quiet
