#!/usr/bin/env bash
# The operator's token lifecycle check against the configured backend.
# Usage: scripts/test_token_refresh.sh [--config PATH] [--setup-password] [--create-invoice]
# --setup-password (and any other option) is passed through to
# `pos-connector test-token-refresh`: it asks for the password first,
# verifies and stores it, then runs the checks. Exit 0 only if all pass.
# POS_CONNECTOR_BIN picks the binary (default: the release build, else
# built with cargo).
set -euo pipefail
bin="${POS_CONNECTOR_BIN:-}"
if [ -z "$bin" ]; then
    root="$(cd "$(dirname "$0")/.." && pwd)"
    if command -v pos-connector >/dev/null 2>&1; then
        bin="$(command -v pos-connector)"
    else
        (cd "$root" && cargo build --quiet --release --locked)
        bin="$root/target/release/pos-connector"
    fi
fi
exec "$bin" test-token-refresh "$@"
