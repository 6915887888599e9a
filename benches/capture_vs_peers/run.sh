#!/usr/bin/env bash
# Throughput of the capture agent against Suricata and tshark on the same large capture, in the
# same run: best wall time of BENCH_RUNS (3), packets/s and Gbit/s (frame bytes), and each peer's time over the
# agent's. The capture is the lab recordings (../shared/pcaps/lab) merged in time order and
# replayed BENCH_COPIES times one after another (editcap time shifts, mergecap append), cached
# under target/bench-data/. Peers run single-threaded on their default configuration:
#   capture-agent --pcap FILE --sink stdout >/dev/null      (release build)
#   suricata --runmode single -r FILE -k none               (RFB parser on, default suricata.yaml)
#   tshark -r FILE -q -z conv,tcp                           (TCP conversations)
# Needs suricata (Debian bookworm-backports) and tshark/mergecap/editcap/capinfos
# (tshark, wireshark-common); installs them when missing and apt is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
pcaps="${VNCGUARD_PCAPS:-$root/../shared/pcaps}"
copies="${BENCH_COPIES:-140}"
runs="${BENCH_RUNS:-3}"
data="$target_dir/bench-data"
big="$data/lab_x${copies}.pcap"
work="$data/run"

install_peers() {
    command -v apt-get >/dev/null || return 0
    local missing=()
    command -v tshark >/dev/null || missing+=(tshark)
    command -v mergecap >/dev/null || missing+=(wireshark-common)
    if ((${#missing[@]})); then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    if ! command -v suricata >/dev/null; then
        if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
            echo 'deb http://deb.debian.org/debian bookworm-backports main' \
                >/etc/apt/sources.list.d/bookworm-backports.list
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports suricata
    fi
}

build_capture() {
    [ -s "$big" ] && return 0
    mkdir -p "$data"
    local tmp="$data/tmp" one span i
    rm -rf "$tmp" && mkdir -p "$tmp"
    one="$tmp/one.pcap"
    mergecap -F pcap -w "$one" "$pcaps"/lab/*.pcap
    # Each copy starts 10 s after the previous one ends, so connections never overlap in time.
    span=$(capinfos -u -M "$one" | awk '/Capture duration/ {print int($3) + 10}')
    local parts=()
    for ((i = 0; i < copies; i++)); do
        editcap -F pcap -t $((i * span)) "$one" "$tmp/copy$i.pcap"
        parts+=("$tmp/copy$i.pcap")
    done
    mergecap -F pcap -a -w "$big.partial" "${parts[@]}"
    mv "$big.partial" "$big"
    rm -rf "$tmp"
}

now() { date +%s.%N; }

# measure NAME OUT ERR CMD...: runs CMD BENCH_RUNS times (stdout to OUT, stderr to ERR) and
# appends "NAME best-seconds" to $results
measure() {
    local name=$1 out=$2 err=$3 start end best="" run t
    shift 3
    for ((run = 0; run < runs; run++)); do
        start=$(now)
        "$@" >"$out" 2>"$err" || echo "  $name exited with $? (see $err)"
        end=$(now)
        t=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
        best=$(awk -v t="$t" -v b="$best" 'BEGIN {print (b == "" || t < b) ? t : b}')
    done
    echo "$name $best" | tee -a "$results"
}

install_peers
cargo build --release --quiet -p capture-agent
build_capture

rm -rf "$work" && mkdir -p "$work/suricata" "$work/suricata-startup"
results="$work/results.txt"
: >"$results"
packets=$(capinfos -c -M "$big" | awk '/Number of packets/ {print $4}')
bytes=$(capinfos -d -M "$big" | awk '/Data size/ {print $3}')
echo "capture: $big"
echo "  $packets packets, $bytes frame bytes ($(du -h "$big" | cut -f1) on disk), $copies copies of the lab recordings"

# Warm the page cache so the first tool does not pay for the disk.
cat "$big" >/dev/null

LOG_FORMAT=json measure capture-agent /dev/null "$work/agent.log" \
    "$target_dir/release/capture-agent" --pcap "$big" --sink stdout --agent-id bench
measure suricata "$work/suricata.out" "$work/suricata.err" \
    suricata --runmode single -r "$big" -k none -l "$work/suricata"
measure tshark "$work/tshark.out" "$work/tshark.err" \
    tshark -r "$big" -q -z conv,tcp

# Fixed start-up cost (configuration, rule and dissector loading) on the first 100 packets,
# shown apart from the table.
editcap -F pcap -r "$big" "$work/first100.pcap" 1-100
startup="$work/startup.txt"
for tool in capture-agent suricata tshark; do
    case $tool in
        capture-agent) cmd=("$target_dir/release/capture-agent" --pcap "$work/first100.pcap" --sink stdout) ;;
        suricata) cmd=(suricata --runmode single -r "$work/first100.pcap" -k none -l "$work/suricata-startup") ;;
        tshark) cmd=(tshark -r "$work/first100.pcap" -q -z conv,tcp) ;;
    esac
    results="$startup" measure "$tool" /dev/null /dev/null "${cmd[@]}" >/dev/null
done
echo "  start-up on 100 packets (s): $(tr '\n' ' ' <"$startup")"

sessions=$(grep -o "\"sessions\":[0-9]*" "$work/agent.log" | tail -1 | cut -d: -f2)
rfb_tx=$(( $(grep -c "\"event_type\":\"rfb\"" "$work/suricata/eve.json" 2>/dev/null || true) / runs ))
echo "  capture-agent sessions: ${sessions:-?}; suricata rfb records per run: ${rfb_tx}"
echo
awk -v p="$packets" -v b="$bytes" '
    { name[NR] = $1; t[NR] = $2; if ($1 == "capture-agent") agent = $2 }
    END {
        printf "%-14s %10s %14s %10s %10s\n", "tool", "seconds", "packets/s", "Gbit/s", "vs agent"
        for (i = 1; i <= NR; i++)
            printf "%-14s %10.2f %14.0f %10.3f %9.1fx\n", name[i], t[i], p / t[i], b * 8 / t[i] / 1e9, t[i] / agent
    }' "$results"
awk -v p="$packets" -v mb="$(du -m "$big" | cut -f1)" -v runs="$runs" '
    { name[NR] = $1; t[NR] = $2; if ($1 == "capture-agent") agent = $2 }
    END {
        for (i = 1; i <= NR; i++) if (name[i] != "capture-agent")
            printf "REPORT|capture_vs_peers|packets/s on %d MB of lab VNC sessions, best of %d, one thread|%.0f packets/s|%s %.0f packets/s|%.1fx\n", mb, runs, p / agent, name[i], p / t[i], t[i] / agent
    }' "$results"
