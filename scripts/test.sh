#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run runs it too):
# formatting, lints, then every test of the workspace, including the end-to-end tests
# with real ncu-send and ncu-recv processes on loopback and the qemu crash lab.
# The crash lab needs `bash lab/setup.sh` once (root: installs qemu and downloads a
# kernel package); without it those tests fail loudly, they never skip silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The end-to-end tests run the binaries from this target directory.
cargo build --workspace --bins --quiet
# The Debian package the package test installs (release build, man pages,
# completions; needs cargo-deb: packaging/setup.sh). Built before the tests, so that
# its compile does not load the machine while timing-sensitive tests run.
bash scripts/package.sh
cargo test --workspace
