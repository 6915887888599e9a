#!/usr/bin/env bash
# Compares vncguard's Isolation Forest with scikit-learn's: AUC on the same data sets and
# scoring speed on one core, on scikit-learn's bundled data sets and the session features of
# the shared captures ($VNCGUARD_PCAPS, default ../shared/pcaps; labelled as session-features documents). Extra
# arguments go to compare.py (--seeds N, --timing-rows N).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="$target_dir/bench-venv"

if ! "$venv/bin/python" -c 'import numpy, sklearn' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet scikit-learn numpy
fi

cargo build --release --quiet -p forest-bench
mkdir -p "$target_dir/forest-bench"
sessions_csv="$target_dir/forest-bench/vnc_sessions.labelled.csv"
"$target_dir/release/session-features" --captures "${VNCGUARD_PCAPS:-$root/../shared/pcaps}" --output "$sessions_csv"

# One thread for every library that might start more, and one core for the whole comparison.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
pin=()
if command -v taskset >/dev/null; then
    pin=(taskset --cpu-list 0)
fi
"${pin[@]}" "$venv/bin/python" benches/forest_vs_sklearn/compare.py \
    --bench-binary "$target_dir/release/forest-bench" \
    --work-dir "$target_dir/forest-bench" \
    --sessions-csv "$sessions_csv" \
    "$@"
