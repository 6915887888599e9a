#!/usr/bin/env bash
# Bus throughput against kcat on the same tansu broker, same payloads, same script:
# produce N records (acks=all, idempotent) and consume them back with a consumer group.
# Usage: benches/bus_vs_kcat/run.sh [N] [PAYLOAD_BYTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200000}
SIZE=${2:-200}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vncguard/target}"
export PATH="$HOME/.cargo/bin:$PATH"
command -v kcat >/dev/null || { echo "kcat is missing: apt-get install kcat" >&2; exit 1; }
command -v tansu >/dev/null || { echo "tansu is missing: ./dev test installs it" >&2; exit 1; }

# Debian's kcat links librdkafka 2.0.2, whose ApiVersion request tansu 0.6 cannot read; kcat runs
# here on the current librdkafka 2.x that the confluent-kafka wheel ships (same ABI, librdkafka.so.1).
LIBRDKAFKA_DIR="$CARGO_TARGET_DIR/bench-tools/librdkafka"
if [ ! -e "$LIBRDKAFKA_DIR/librdkafka.so.1" ]; then
  mkdir -p "$LIBRDKAFKA_DIR"
  wheel_dir=$(mktemp -d)
  pip download -q --no-deps confluent-kafka -d "$wheel_dir"
  python3 - "$wheel_dir" "$LIBRDKAFKA_DIR" <<'PY'
import glob, os, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
for name in wheel.namelist():
    if name.startswith("confluent_kafka.libs/") and not name.endswith("/"):
        target = os.path.join(sys.argv[2], os.path.basename(name))
        open(target, "wb").write(wheel.read(name))
        if "librdkafka" in name:
            os.symlink(os.path.basename(name), os.path.join(sys.argv[2], "librdkafka.so.1"))
PY
  rm -rf "$wheel_dir"
fi
kcat() { LD_LIBRARY_PATH="$LIBRDKAFKA_DIR" command kcat "$@"; }

cargo build --release -q -p bus --bin vncguard-bus
BUS="$CARGO_TARGET_DIR/release/vncguard-bus"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BROKER="127.0.0.1:$PORT"
WORK=$(mktemp -d)
tansu broker --storage-engine memory://tansu/ --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" >"$WORK/tansu.log" 2>&1 &
TANSU=$!
trap 'kill $TANSU 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# The same payloads for both: the record number padded with spaces to SIZE bytes.
python3 - "$N" "$SIZE" >"$WORK/payloads" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
for i in range(n):
    out.write(str(i).ljust(size) + "\n")
PY

now() { date +%s.%N; }
rate() { python3 -c "import sys; n,a,b=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'{n/(b-a):.0f}')" "$@"; }
export KAFKA_BROKERS="$BROKER" RUST_LOG=warn
"$BUS" --kafka-partitions 3 create-topics >/dev/null

best() { python3 -c "import sys; print(max(int(x) for x in sys.argv[1:]))" "$@"; }
# Three interleaved rounds, best of each: the machine is shared, so a single pass measures noise.
kp=(); kc=(); bp=(); bc=()
for round in 1 2 3; do
  # kcat does not create topics; both get the same partition count.
  "$BUS" --kafka-partitions 3 produce --topic "bench.kcat.$round" --count 0 >/dev/null
  "$BUS" --kafka-partitions 3 produce --topic "bench.bus.$round" --count 0 >/dev/null
  t0=$(now); kcat -b "$BROKER" -q -X enable.idempotence=true -X acks=all -P -t "bench.kcat.$round" -l "$WORK/payloads"; t1=$(now)
  kp+=("$(rate "$N" "$t0" "$t1")")
  t0=$(now); got=$(kcat -b "$BROKER" -q -C -t "bench.kcat.$round" -o beginning -e | wc -l); t1=$(now)
  kc+=("$(rate "$got" "$t0" "$t1")")

  t0=$(now); "$BUS" --kafka-partitions 3 produce --topic "bench.bus.$round" --count "$N" --size "$SIZE" >/dev/null; t1=$(now)
  bp+=("$(rate "$N" "$t0" "$t1")")
  t0=$(now); "$BUS" consume --topic "bench.bus.$round" --count "$N" --group "bench.$round" >/dev/null; t1=$(now)
  bc+=("$(rate "$N" "$t0" "$t1")")
done
echo "kcat: $(kcat -V | grep -o 'librdkafka [0-9.]*')" >&2
kcat_produce=$(best "${kp[@]}"); kcat_consume=$(best "${kc[@]}")
bus_produce=$(best "${bp[@]}"); bus_consume=$(best "${bc[@]}")

python3 - "$N" "$SIZE" "$kcat_produce" "$bus_produce" "$kcat_consume" "$bus_consume" "$got" <<'PY'
import sys
n, size, kp, bp, kc, bc, got = sys.argv[1:]
print(f"bus vs kcat on tansu, {n} records of {size} B, best of 3 rounds (kcat consumed {got} in the last)")
print(f"{'path':<10}{'kcat rec/s':>14}{'vncguard rec/s':>16}{'ratio':>8}")
for name, k, b in (("produce", kp, bp), ("consume", kc, bc)):
    print(f"{name:<10}{int(k):>14,}{int(b):>16,}{int(b)/int(k):>8.2f}")
for name, k, b in (("produce", kp, bp), ("consume", kc, bc)):
    print(f"REPORT|bus_vs_kcat|{name}, {int(n):,} records of {size} B on tansu, acks=all, idempotent, best of 3|{int(b):,} rec/s|kcat {int(k):,} rec/s|{int(b)/int(k):.2f}x")
PY
