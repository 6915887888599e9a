#!/usr/bin/env bash
# The sink's write path against `psql \copy` of the same rows into an identical table (same
# columns, defaults and indexes), on the same server. Prints rows/s of each and the ratio.
# Usage: run.sh [ROWS] [BATCH_SIZE]; PG_URL names the server (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail

rows="${1:-200000}"
batch="${2:-500}"
server="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
database="vncguard_bench_sink_$$"
csv="$(mktemp --suffix=.csv)"
cleanup() {
    rm -f "$csv"
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
}
trap cleanup EXIT

cargo build --release --quiet -p sink-bench
psql -q "$server/postgres" -c "CREATE DATABASE $database"

sink_rate="$("$target_dir/release/sink-bench" --database-url "$server/$database" --rows "$rows" --batch-size "$batch")"

# The CSV holds exactly the rows the sink wrote, generated once, outside the timing.
psql -q "$server/$database" -c "\copy (SELECT * FROM vnc_sessions) TO '$csv' CSV"
psql -q "$server/$database" -c "CREATE TABLE copy_target (LIKE vnc_sessions INCLUDING ALL)"
start="$(date +%s.%N)"
psql -q "$server/$database" -c "\copy copy_target FROM '$csv' CSV"
end="$(date +%s.%N)"
copied="$(psql -qtA "$server/$database" -c "SELECT count(*) FROM copy_target")"
[ "$copied" = "$rows" ] || { echo "copy loaded $copied rows, expected $rows" >&2; exit 1; }

copy_rate="$(echo "$rows / ($end - $start)" | bc -l)"
printf 'rows:             %d (batch size %d)\n' "$rows" "$batch"
printf 'sink upserts:     %.0f rows/s\n' "$sink_rate"
printf 'psql \\copy:       %.0f rows/s\n' "$copy_rate"
printf 'sink / copy:      %.1f%%\n' "$(echo "100 * $sink_rate / $copy_rate" | bc -l)"
printf 'REPORT|sink_vs_copy|session rows/s into Postgres, %d rows, batches of %d (idempotent upserts)|%.0f rows/s|psql \\copy %.0f rows/s|%.2fx\n' \
    "$rows" "$batch" "$sink_rate" "$copy_rate" "$(echo "$sink_rate / $copy_rate" | bc -l)"
