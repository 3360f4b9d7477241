#!/usr/bin/env bash
# Writes the man pages and the shell completions of both binaries, generated from
# the same clap definitions as --help (never written by hand), into
# target/assets/ (what the Debian package installs):
#   man/ncu-send.1 man/ncu-recv.1
#   completions/{ncu-send,ncu-recv}.bash, _ncu-send, _ncu-recv (zsh), *.fish
# Usage: scripts/gen-assets.sh [PROFILE]   (default: release; builds it first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile="${1:-release}"
if [ "$profile" = release ]; then
    cargo build --release --quiet -p ncu-sender -p ncu-receiver
else
    cargo build --profile "$profile" --quiet -p ncu-sender -p ncu-receiver
fi
dir="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
out=target/assets
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
for bin in ncu-send ncu-recv; do
    "$dir/$bin" --generate man >"$out/man/$bin.1"
    "$dir/$bin" --generate complete-bash >"$out/completions/$bin.bash"
    "$dir/$bin" --generate complete-zsh >"$out/completions/_$bin"
    "$dir/$bin" --generate complete-fish >"$out/completions/$bin.fish"
done
echo "$out: $(find "$out" -type f | wc -l) files" >&2
