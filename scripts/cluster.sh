#!/usr/bin/env bash
# Sets up what is missing, builds Tugboat and starts a single-node cluster
# on the embedded store. Extra arguments go to `tug server`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p tug
exec ./target/release/tug server "$@"
