#!/usr/bin/env bash
# Runs one sale end to end against the built-in sandbox backend (no real
# backend needed): create, submit, status, PDF/XML, a token refresh, then
# the service itself: POS exports from the inbox and a sale posted to the
# local API through the outbox, with provisional receipts.
# Extra arguments go to `pos-connector demo` (e.g. --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --workspace
exec target/debug/pos-connector demo "$@"
