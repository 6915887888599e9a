#!/usr/bin/env bash
# Enriched events/s on one core against decode + re-encode of the same events; prints a table.
# Usage: benches/enricher/run.sh [EVENTS]   (default 200000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
scripts/install-geo-data.sh >/dev/null
cargo build --release -q -p enricher-bench
taskset -c 0 "$target_dir/release/enricher-bench" "${1:-200000}" .data/geo
