#!/usr/bin/env bash
# What CI runs (.ci/run calls this): formatting, lints, then every test.
# Needs a Rust toolchain with rustfmt and clippy (cargo fetches the pinned
# dependencies from Cargo.lock) and, for the browser test, Debian's chromium
# and chromedriver, and for the receipts' reference images poppler's pdftoppm,
# which it installs with apt-get when they are missing.
# cargo-deny checks the dependencies (installed from crates.io when missing).
# Then the packages: scripts/package.sh builds them (the .deb, the Windows
# exe and its unit tests, the MSI; release, each target once; it installs
# cargo-deb, mingw-w64, the rustup target and wixl when missing); as root,
# scripts/check-deb.sh installs the .deb, checks it, removes it; and
# scripts/check-windows.sh runs the Windows build under Wine (installing
# wine64 when missing). Each stage prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 2
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

# The status page's browser test needs Debian's Chromium and ChromeDriver;
# CI must not skip it, so they are installed here when missing.
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    echo "== installing chromium and chromium-driver (for tests/status_page_browser.rs)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null &&
        $sudo apt-get install -y -q chromium chromium-driver >/dev/null
    }
fi
export POS_CONNECTOR_REQUIRE_BROWSER=1

# The receipts' reference-image test rasterises PDFs with poppler's pdftoppm;
# CI must not skip it either.
if ! [ -x /usr/bin/pdftoppm ]; then
    echo "== installing poppler-utils (for tests/it/receipt_images.rs)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q poppler-utils >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null &&
        $sudo apt-get install -y -q poppler-utils >/dev/null
    }
fi
export POS_CONNECTOR_REQUIRE_PDFTOPPM=1

# The dependencies' licenses, sources and bans (deny.toml). Advisories need
# the RustSec database, fetched from GitHub, which this machine cannot reach:
# they are checked elsewhere (README, "Checks on the dependencies").
# Prebuilt cargo-deny downloads are not reachable either: built from
# crates.io, once per machine.
if ! cargo deny --version >/dev/null 2>&1; then
    echo "== installing cargo-deny (cargo install --locked)"
    cargo install cargo-deny --locked
fi
echo "== cargo deny check bans licenses sources"
cargo deny --locked check bans licenses sources

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace --all-targets

stage() { # name, command...: runs it and prints its wall time
    local name=$1 start=$SECONDS; shift
    "$@"
    echo "== $name took $((SECONDS - start)) s"
}
echo "== cargo fmt, clippy and tests took $SECONDS s"
stage "packages" bash scripts/package.sh
if [ "$(id -u)" = 0 ]; then
    echo "== .deb install check"
    stage ".deb install check" bash scripts/check-deb.sh
else
    echo "== .deb install check skipped: needs root (CI runs as root)"
fi
stage "Windows checks under Wine" bash scripts/check-windows.sh
echo "== all of CI took $SECONDS s"
