#!/usr/bin/env bash
# Builds the release binary and the files a package ships beside it:
# man pages, shell completions, and the systemd user unit for /usr/lib.
# Then `cargo deb --no-build` (cargo install cargo-deb) makes the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
# -p: the features `cargo install --path .` resolves (the test-support
# crate's would change reqwest's and rebuild everything for the install step).
cargo build --release --locked -p autorender-sync
BIN=target/release/autorender-sync
OUT=target/assets
rm -rf "$OUT"; mkdir -p "$OUT/completions" "$OUT/man"
# One page per command (autorender-sync.1, autorender-sync-run.1, …).
"$BIN" man --out-dir "$OUT/man" >/dev/null
gzip -9n "$OUT"/man/*.1
"$BIN" completions bash > "$OUT/completions/autorender-sync.bash"
"$BIN" completions zsh > "$OUT/completions/_autorender-sync"
"$BIN" completions fish > "$OUT/completions/autorender-sync.fish"
"$BIN" completions powershell > "$OUT/completions/_autorender-sync.ps1"
# The packaged unit runs the packaged binary with the default config path.
# It is not one `autostart` wrote, so the "Written by … autostart" marker goes.
sed -e 's|{{EXEC_START}}|/usr/bin/autorender-sync run|' \
    -e '/Written by autorender-sync autostart/d' \
    packaging/autorender-sync.service > "$OUT/autorender-sync.service"
echo "assets in $OUT; now: cargo deb --no-build"
