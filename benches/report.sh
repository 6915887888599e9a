#!/usr/bin/env bash
# Runs the benches and gathers their figures into one report: benches/REPORT.md, and the same
# table between the bench-report markers of the README, so that every figure the README shows
# comes from a run recorded here.
#
# Usage: benches/report.sh [BENCH...]      (default: every bench, in the order below)
#
# Each bench's run.sh prints its own details and ends with summary lines
# `REPORT|bench|what|vncguard|peer|ratio` (ratio = vncguard over peer). Its whole output is kept in
# benches/results/BENCH.txt; the report is made from every results file present, so running one
# bench again replaces its rows only. Run it on a quiet machine: the peers share the cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vncguard/target}"
export PATH="$HOME/.cargo/bin:$PATH"

all=(capture_vs_peers bus_vs_kcat sink_vs_copy forest_vs_sklearn enricher api_vs_health end_to_end detection)
if [ $# -gt 0 ]; then selected=("$@"); else selected=("${all[@]}"); fi
mkdir -p benches/results

for bench in "${selected[@]}"; do
    script="benches/$bench/run.sh"
    [ -x "$script" ] || { echo "no bench named $bench (expected $script)" >&2; exit 2; }
    printf '\033[1m==> %s\033[0m\n' "$bench" >&2
    partial="benches/results/$bench.txt.partial"
    {
        cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
        echo "# $bench, run $(date -u +%Y-%m-%dT%H:%MZ) at commit $(git rev-parse --short HEAD) on ${cpu:-an unknown CPU}"
        "$script"
    } 2>&1 | tee "$partial"
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ] || ! grep -q '^REPORT|' "$partial"; then
        echo "$bench failed (exit $status) or printed no REPORT line; its output is in $partial" >&2
        exit 1
    fi
    mv "$partial" "benches/results/$bench.txt"
done

python3 - "${all[@]}" <<'PY'
import os, platform, re, sys

benches = sys.argv[1:]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
rows, runs, cpus = [], [], {}
for bench in benches:
    path = f"benches/results/{bench}.txt"
    if not os.path.exists(path):
        continue
    lines = open(path).read().splitlines()
    runs.append(f"- `{bench}`: {lines[0].lstrip('# ').split(', ', 1)[1]} ([output](results/{bench}.txt))")
    # Each run's header names its CPU: a bench re-run on another machine of the same kind may
    # have another CPU, and its figures are that CPU's.
    run_cpu = lines[0].split(" on ", 1)[1] if " on " in lines[0] else "?"
    cpus.setdefault(run_cpu, []).append(bench)
    for line in lines:
        if line.startswith("REPORT|"):
            fields = line.split("|")[1:]
            if len(fields) != 5:
                sys.exit(f"{path}: a REPORT line needs 5 fields: {line}")
            rows.append("| " + " | ".join(f.replace("|", "\\|") for f in fields) + " |")

table = "\n".join([
    f"Machine: {os.cpu_count()} cores, {memory_gib} GiB, Linux {platform.release()}; CPU: "
    + ("; ".join(f"{name} ({', '.join(names)})" for name, names in cpus.items()) if len(cpus) > 1
       else next(iter(cpus), cpu)) + ".",
    "Ratio is vncguard over its peer (higher is better for rates).",
    "",
    "| bench | what | vncguard | peer | ratio |",
    "|---|---|---|---|---|",
    *rows,
])
with open("benches/REPORT.md", "w") as report:
    report.write("# Bench report\n\nMade by `benches/report.sh` from the outputs in `benches/results/`; "
                 "do not edit by hand.\n\n" + table + "\n\nRuns:\n" + "\n".join(runs) + "\n")

readme = open("README.md").read()
begin, end = "<!-- bench-report:begin -->", "<!-- bench-report:end -->"
if begin not in readme or end not in readme:
    sys.exit("README.md lacks the bench-report markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
print(f"benches/REPORT.md and README.md: {len(rows)} rows from {len(runs)} benches")
PY
