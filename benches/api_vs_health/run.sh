#!/usr/bin/env bash
# The API's heaviest common read against its lightest, on the same release server and database:
# `GET /api/sessions?limit=100` (authenticated, over 1,000,000 sessions: page query + capped
# count) vs `GET /api/health` (database round trip + cached broker probe), with wrk, same
# threads, connections and duration. Prints req/s and latency of both and their ratio.
# Usage: benches/api_vs_health/run.sh [DURATION_SECS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-15}
CONNECTIONS=${2:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export PATH="$HOME/.cargo/bin:$PATH"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v tansu >/dev/null || { echo "tansu is missing: ./dev test installs it" >&2; exit 1; }
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)

cargo build --release -q -p api --bin api
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DB="api_bench_$$"
API_PORT=$(free_port)
BROKER_PORT=$(free_port)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

tansu broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)
"${PSQL[@]}" -c "CREATE DATABASE $DB"

PASSWORD="bench-password-$$"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" PORT=$API_PORT HOST=127.0.0.1 \
  KAFKA_BROKERS="127.0.0.1:$BROKER_PORT" JWT_SECRET="bench-secret-bench-secret-bench-secret" \
  API_RATE_LIMIT=off AUTH_RATE_LIMIT=off VNCGUARD_ADMIN_USER=bench VNCGUARD_ADMIN_PASSWORD="$PASSWORD" \
  RUST_LOG=warn "$CARGO_TARGET_DIR/release/api" >"$WORK/api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$API_PORT/api/docs/openapi.json" && break; sleep 0.2; done

echo "filling 1,000,000 sessions..."
start=$(date +%s)
"${PSQL[@]}" -d "$DB" <<'SQL'
INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time, end_time, status,
                          risk_score, anomaly_score, data_transferred, auth_method, auth_result, agent_id, client_country)
SELECT 's-' || g, ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet,
       '192.0.2.1', 40000 + g % 20000, 5900, now() - g * interval '1 second', now() - g * interval '1 second' + interval '5 minutes',
       (ARRAY['active', 'terminated', 'terminated', 'terminated', 'blocked'])[1 + g % 5],
       (g % 10000) / 100.0, (g % 777) / 10.0, (g % 5000) / 10.0, 'VNC Authentication',
       (ARRAY['ok', 'failed'])[1 + g % 2], 'agent-' || g % 7, 'NL'
FROM generate_series(1, 1000000) g;
ANALYZE vnc_sessions;
SQL
echo "filled in $(( $(date +%s) - start )) s"

TOKEN=$(curl -s "http://127.0.0.1:$API_PORT/api/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
health_code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/api/health")
sessions_code=$(curl -s -o "$WORK/page.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/api/sessions?limit=100")
python3 - "$WORK/page.json" <<'PY'
import json, sys
page = json.load(open(sys.argv[1]))
print(f"/api/sessions?limit=100 answers {len(page['sessions'])} sessions, total {page['total']} (capped: {page['total_capped']})")
PY
[ "$health_code" = 200 ] && [ "$sessions_code" = 200 ] || { echo "health $health_code, sessions $sessions_code" >&2; cat "$WORK/api.log" >&2; exit 1; }

run_wrk() { # name url [header]
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency ${3:+-H "$3"} "$2" >"$WORK/$1.txt"
  python3 - "$WORK/$1.txt" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(label):
    m = re.search(label + r"\s+([\d.]+)(us|ms|s)\b", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{sys.argv[2]:>10}: {rps:10.1f} req/s   latency avg {ms('Latency'):7.2f} ms   p50 {ms('50%'):7.2f} ms   p99 {ms('99%'):7.2f} ms   non-2xx {errors.group(1) if errors else 0}")
open(sys.argv[1] + ".rps", "w").write(str(rps))
open(sys.argv[1] + ".summary", "w").write(f"{rps:,.0f} req/s, p50 {ms('50%'):.2f} ms, p99 {ms('99%'):.2f} ms")
PY
}
echo "wrk: 2 threads, $CONNECTIONS connections, ${DURATION} s each, same server"
run_wrk health "http://127.0.0.1:$API_PORT/api/health"
run_wrk sessions "http://127.0.0.1:$API_PORT/api/sessions?limit=100" "Authorization: Bearer $TOKEN"
python3 -c "
h = float(open('$WORK/health.txt.rps').read()); s = float(open('$WORK/sessions.txt.rps').read())
print(f'ratio sessions/health: {s / h:.3f} (health is {h / s:.1f}x the sessions rate)')"
python3 - "$WORK" "$DURATION" "$CONNECTIONS" <<'PY'
import sys
work, duration, connections = sys.argv[1:]
rps = {name: float(open(f"{work}/{name}.txt.rps").read()) for name in ("sessions", "health")}
summary = {name: open(f"{work}/{name}.txt.summary").read() for name in ("sessions", "health")}
print(f"REPORT|api_vs_health|GET /api/sessions?limit=100 over 1,000,000 sessions, wrk {connections} connections {duration} s"
      f"|{summary['sessions']}|GET /api/health {summary['health']}|{rps['sessions'] / rps['health']:.3f}x")
PY
