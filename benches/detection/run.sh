#!/usr/bin/env bash
# Detection quality: the labelled recordings of benches/detection/recordings (real attack
# tools, normal use, insider anomalies; recorded by record.sh, committed) through the embedded
# pipeline into a throwaway Postgres database, then vncguard's forest beside scikit-learn's on
# the authenticated sessions. `--record` records the set again first (root, a few minutes; it
# installs the Debian attack tools and VNC servers it needs) into a cache folder and uses that.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/bench-venv"
recordings=benches/detection/recordings
if [ "${1:-}" = --record ]; then
    recordings="$target_dir/detection-recordings"
    rm -rf "$recordings"
    benches/detection/record.sh bench "$recordings"
fi

if ! "$venv/bin/python" -c 'import numpy, sklearn' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet scikit-learn numpy
fi

# The dev profile: this bench measures what is detected, not how fast, and the test build of the
# workspace already holds every dependency compiled that way.
cargo build --quiet -p detection-bench
work_dir="$target_dir/detection-bench"
RUST_LOG="${RUST_LOG:-warn}" "$target_dir/debug/detection-bench" --recordings "$recordings" --work-dir "$work_dir"
OMP_NUM_THREADS=1 "$venv/bin/python" benches/detection/compare.py --work-dir "$work_dir"
