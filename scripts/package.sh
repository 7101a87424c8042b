#!/usr/bin/env bash
# Builds the till packages and prints their sizes:
#   target/debian/pos-connector_<version>-1_amd64.deb   (cargo-deb)
# Each target is built once, in release. Installs what it needs when
# missing (cargo-deb; Debian's dpkg-dev for dpkg-shlibdeps).
# Usage: scripts/package.sh [deb]...   (default: everything)
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
if [ ${#targets[@]} -eq 0 ]; then targets=(deb); fi

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

for t in "${targets[@]}"; do
    case "$t" in
        deb) build_deb ;;
        *) echo "usage: scripts/package.sh [deb]..." >&2; exit 2 ;;
    esac
done

echo "== sizes"
size target/release/pos-connector
[ -f target/debian/latest ] && size "$(cat target/debian/latest)"
