#!/usr/bin/env bash
# Builds the Debian package target/debian/ncu_<version>_<arch>.deb: both binaries
# (release build), their man pages and completions (scripts/gen-assets.sh), the
# systemd units, the logrotate snippet and the EnvironmentFiles (packaging/).
# Needs cargo-deb (packaging/setup.sh installs it). Install: dpkg -i target/debian/ncu_*.deb
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/gen-assets.sh release
rm -f target/debian/ncu_*.deb
cargo deb --no-build --quiet -p ncu-receiver
ls target/debian/ncu_*.deb
