#!/usr/bin/env bash
# Runs one sale end to end against the built-in sandbox backend (no real
# backend needed): create, submit, status, PDF/XML, and a token refresh.
# Extra arguments go to `pos-connector demo` (e.g. --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
exec target/debug/pos-connector demo "$@"
