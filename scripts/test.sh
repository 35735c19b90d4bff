#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test.
# Pure tests run anywhere; the lab tests (tests/lab.rs) need root and build their own network
# namespaces, and say clearly that they were skipped when run without root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v bridge >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --quiet --bins
cargo test --quiet --all-targets
