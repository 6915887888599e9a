#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (FUZZ_SECONDS, default 60) under
# an RSS limit (FUZZ_RSS_MB, default 2048), seeded with the small shared captures. Installs
# cargo-fuzz when missing; uses a nightly toolchain when one is installed, else the stable one
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Zsanitizer). Exits non-zero on the first crash,
# leak, timeout or out-of-memory, with the reproducer under fuzz/artifacts/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
RSS_MB=${FUZZ_RSS_MB:-2048}
PCAPS=${VNCGUARD_PCAPS:-$ROOT/../shared/pcaps}
CORPUS=$ROOT/target/fuzz-corpus

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

# Seeds: each shared capture under 200 KB with mode byte 0 (a capture file), and its first
# payload bytes as an RFB stream.
mkdir -p "$CORPUS/capture_reassembly" "$CORPUS/rfb_stream"
if [ -d "$PCAPS" ]; then
  find "$PCAPS" -name '*.pcap*' -size -200k | while read -r f; do
    name=$(basename "$f")
    { printf '\000'; cat "$f"; } >"$CORPUS/capture_reassembly/$name"
  done
fi
printf '\000\213RFB 003.008\n\013RFB 003.008\n\201\001\002' >"$CORPUS/rfb_stream/handshake-3.8"

cd "$ROOT/fuzz"
for target in rfb_stream capture_reassembly; do
  echo "== fuzzing $target for ${SECONDS_PER_TARGET}s (rss limit ${RSS_MB} MB)"
  cargo "${toolchain[@]}" fuzz run "$target" "$CORPUS/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_MB" -max_len=262144 \
    -timeout=10 -print_final_stats=1 2>&1 | tail -n 25
  echo "== $target: no crash in ${SECONDS_PER_TARGET}s"
done
