#!/usr/bin/env bash
# Sets up what is missing and runs every test: unit tests, the store
# conformance suite on SQLite and a real etcd, and the end-to-end suite that
# drives the real `tug server` with the real kubectl on both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets --no-fail-fast "$@"
