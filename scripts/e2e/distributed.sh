#!/usr/bin/env bash
# Builds every binary, then runs the distributed end-to-end test (vncguard/tests/distributed_e2e.rs):
# each stage its own process on tansu and Postgres, two capture agents in network namespaces.
# Needs root, Xvnc and vncpasswd (tigervnc-standalone-server, tigervnc-tools), vncdo ($VNCDO) and
# nft for enforcement; `./dev test` installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VNCDO="${VNCDO:-$HOME/.cache/vncguard/venv/bin/vncdo}"
cargo build --workspace --bins
exec cargo test -p vncguard --test distributed_e2e -- --nocapture "$@"
