#!/usr/bin/env bash
# Builds the till packages and prints their sizes:
#   target/debian/pos-connector_<version>-1_amd64.deb      (cargo-deb)
#   target/x86_64-pc-windows-gnu/release/pos-connector.exe  (mingw-w64)
#   target/windows/pos-connector-<version>-x64.msi          (wixl)
# and, for scripts/check-windows.sh, the Windows unit-test executable
# (its path in target/windows/unit-tests). Each target is built once, in
# release (the Windows tests share the exe's release dependencies). Installs
# what it needs when missing: cargo-deb, dpkg-dev; mingw-w64, the rustup
# target; wixl and msitools; musl-tools.
# Usage: scripts/package.sh [deb|windows|msi|musl]...   (default: deb,
# windows and msi; msi builds the Windows exe first). `musl` builds the
# static Linux binary target/x86_64-unknown-linux-musl/release/pos-connector
# for tills on other distributions; it is not in the default set (a third
# cold release build, about 8 minutes on 2 cores) and CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$@" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null
    }
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(deb windows msi); fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
WIN=x86_64-pc-windows-gnu
WIN_EXE=target/$WIN/release/pos-connector.exe

size() { printf '%-60s %8d KiB\n' "$1" "$(( $(stat -c %s "$1") / 1024 ))"; }

build_deb() {
    if ! cargo deb --version >/dev/null 2>&1; then
        echo "== installing cargo-deb"
        cargo install --locked cargo-deb >/dev/null
    fi
    command -v dpkg-shlibdeps >/dev/null 2>&1 || apt_install dpkg-dev
    echo "== release build (x86_64-unknown-linux-gnu)"
    cargo build --locked --release -p pos-connector
    local bin=target/release/pos-connector
    local out=packaging/build
    rm -rf "$out" && mkdir -p "$out"
    # Completions and the man page come from the binary itself.
    "$bin" completions bash >"$out/pos-connector.bash"
    "$bin" completions zsh >"$out/_pos-connector"
    "$bin" completions fish >"$out/pos-connector.fish"
    "$bin" man | gzip -9n >"$out/pos-connector.1.gz"
    # The example config with the package's absolute folders (the unit's
    # StateDirectory and LogsDirectory).
    sed -e 's|"data_dir": "data"|"data_dir": "/var/lib/pos-connector"|' \
        -e 's|"log_dir": "logs"|"log_dir": "/var/log/pos-connector"|' \
        -e 's|"pdf_dir": "data/pdfs"|"pdf_dir": "/var/lib/pos-connector/pdfs"|' \
        -e 's|"invoice_folder": "invoices"|"invoice_folder": "/var/lib/pos-connector/inbox"|' \
        -e 's|"dir": "receipts"|"dir": "/var/lib/pos-connector/receipts"|' \
        config/config.example.json >"$out/config.json"
    if [ "$(grep -c '": "/var/' "$out/config.json")" != 5 ]; then
        echo "error: config/config.example.json changed: its five folders were not all rewritten for the package" >&2
        exit 1
    fi
    echo "== cargo deb"
    cargo deb --no-build -p pos-connector >/dev/null
    DEB=$(ls -t target/debian/pos-connector_*.deb | head -1)
    echo "$DEB" >target/debian/latest
}

build_windows() {
    command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || {
        echo "== installing mingw-w64"
        apt_install gcc-mingw-w64-x86-64-win32
    }
    rustup target list --installed | grep -qx "$WIN" || rustup target add "$WIN"
    echo "== release build ($WIN)"
    cargo build --locked --release --target "$WIN" -p pos-connector
    echo "== Windows unit-test executable (release, for Wine)"
    mkdir -p target/windows
    cargo test --locked --release --target "$WIN" -p pos-connector --lib --no-run \
        --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\.exe\)".*/\1/p' | tail -1 >target/windows/unit-tests
    [ -s target/windows/unit-tests ] || { echo "error: no Windows test executable" >&2; exit 1; }
}

build_msi() {
    [ -f "$WIN_EXE" ] || build_windows
    command -v wixl >/dev/null 2>&1 || { echo "== installing wixl"; apt_install wixl; }
    command -v msibuild >/dev/null 2>&1 || apt_install msitools
    echo "== MSI (wixl)"
    local src=target/windows/msi-src
    rm -rf "$src" && mkdir -p "$src"
    # The release profile strips symbols already; strip again in case a
    # build with another profile (CARGO_PROFILE_RELEASE_STRIP) is packaged.
    x86_64-w64-mingw32-strip -o "$src/pos-connector.exe" "$WIN_EXE"
    cp README.md "$src/README.md"
    # Relative folders in it land beside it: C:\ProgramData\pos-connector\data, logs, ...
    cp config/config.example.json "$src/config.example.json"
    local msi=target/windows/pos-connector-$version-x64.msi
    # wixl takes Source paths relative to the .wxs file's folder.
    wixl -a x64 -D Version="$version" -D SourceDir="$(realpath --relative-to=packaging/windows "$src")" \
        -o "$msi" packaging/windows/pos-connector.wxs
    # wixl ignores NeverOverwrite and Permanent: set them on the config's
    # component (256 64-bit + 16 Permanent + 128 NeverOverwrite); and it
    # schedules a major upgrade's RemoveExistingProducts after
    # InstallFinalize: the old version must go first (after InstallValidate).
    msibuild "$msi" -q "UPDATE \`Component\` SET \`Attributes\` = 400 WHERE \`Component\` = 'Config'"
    msibuild "$msi" -q "UPDATE \`InstallExecuteSequence\` SET \`Sequence\` = 1401 WHERE \`Action\` = 'RemoveExistingProducts'"
    echo "$msi" >target/windows/latest-msi
}

MUSL=x86_64-unknown-linux-musl
build_musl() {
    # ring and the bundled SQLite are the only C; musl-gcc builds both.
    command -v x86_64-linux-musl-gcc >/dev/null 2>&1 || apt_install musl-tools
    rustup target list --installed | grep -qx "$MUSL" || rustup target add "$MUSL"
    echo "== release build ($MUSL, static)"
    cargo build --locked --release --target "$MUSL" -p pos-connector
}

for t in "${targets[@]}"; do
    case "$t" in
        deb) build_deb ;;
        windows) build_windows ;;
        msi) build_msi ;;
        musl) build_musl ;;
        *) echo "usage: scripts/package.sh [deb|windows|msi|musl]..." >&2; exit 2 ;;
    esac
done

echo "== sizes"
for f in target/release/pos-connector "$WIN_EXE" "target/$MUSL/release/pos-connector"; do
    [ -f "$f" ] && size "$f"
done
for f in target/debian/latest target/windows/latest-msi; do
    [ -f "$f" ] && size "$(cat "$f")"
done
true
