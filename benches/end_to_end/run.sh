#!/usr/bin/env bash
# End to end on the in-process bus and on Kafka (tansu, each stage its own process): sessions/s
# from packets handed to the capture agent until every session is an ended, scored row in
# Postgres, and brute force to WebSocket alert latency (p50, p99, max). Prints REPORT lines.
# Usage: benches/end_to_end/run.sh [bench flags, see --help]
#   VNCGUARD_PCAPS (default ../shared/pcaps), E2E_TRIALS (200), E2E_SECONDS (12), E2E_COPIES.
# Needs Postgres on 127.0.0.1:5432 and tansu in ~/.cargo/bin (both set up by ./dev test).
# On tansu the alert latency is mostly the broker's fetch wait (see src/pipelines.rs);
# KAFKA_FETCH_WAIT_MAX_MS=100 shows the pipeline with a shorter one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vncguard/target}"
scripts/install-geo-data.sh >/dev/null
# The bench spawns the stage binaries from its own target directory.
cargo build --release -q -p end-to-end-bench -p sink -p enricher -p scorer -p api
RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/release/end-to-end-bench" "$@"
