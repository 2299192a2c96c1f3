#!/usr/bin/env bash
# Switchyard soak bench (issue 8): loopback only, bounded (DURATION + about a minute).
#
# 1. Builds the release binary (NO_BUILD=1 skips), starts a fault-injecting OpenAI-dialect
#    mock (benches/soak_tool.py mock) and the gateway (release, access log on) pointing at it.
# 2. Drives DURATION seconds (default 600) of mixed traffic from CONC keep-alive connections:
#    ~47 % chat non-stream, ~38 % chat stream via the mock upstream, ~10 % the built-in mock
#    provider, ~5 % upstream faults (reset before headers, reset mid-stream, truncated body,
#    invalid JSON, silent stream, slow trickle). Samples the gateway's RSS (VmRSS) and open fds
#    every 2 s. Prints req/s, p50/p99, RSS and fds start/peak/end, and sent / answered
#    (complete answer or clean error) / accounted (ai_proxy_requests_total difference) /
#    logged (access log lines): all four must be equal, or the script fails.
# 3. Memory (issue 17): each phase on a freshly started gateway (one warm-up request first), so
#    memory the allocator kept from an earlier phase does not hide the next one's: the RSS of
#    the idle process after start, per idle keep-alive connection (IDLE_N=2000 connections, one
#    request each, held) and per open stream (STREAMS_N=500 concurrent streams held open ~20 s by
#    the slow mock). BARE=1 measures the bare Pingora proxy (examples/bare_proxy.rs) the same
#    way, for what is framework and what is ours.
#
# Knobs: DURATION=600 (0: memory phases only) CONC=16 IDLE_N=2000 STREAMS_N=500 NO_BUILD=0
#        NICE_CLIENT=5 BARE=0 SWITCHYARD_BIN=$CARGO_TARGET_DIR/release/switchyard (or
#        target/release/switchyard) BARE_BIN=.../release/examples/bare_proxy
#        OUT=target/bench/soak-results.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-600}"
CONC="${CONC:-16}"
IDLE_N="${IDLE_N:-2000}"
STREAMS_N="${STREAMS_N:-500}"
NO_BUILD="${NO_BUILD:-0}"
NICE_CLIENT="${NICE_CLIENT:-5}"
BARE="${BARE:-0}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SWITCHYARD_BIN="${SWITCHYARD_BIN:-$TARGET/release/switchyard}"
BARE_BIN="${BARE_BIN:-$TARGET/release/examples/bare_proxy}"
OUT="${OUT:-$ROOT/target/bench/soak-results.json}"
PY="${PYTHON:-python3}"
TOOL="$ROOT/benches/soak_tool.py"

log() { printf '[soak.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Enough descriptors for IDLE_N client + server sockets and STREAMS_N x 3 (client, gateway
# down- and upstream, mock).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_N * 2 + 200)) ] || die "ulimit -n $(ulimit -n) is too low for IDLE_N=$IDLE_N"

if [ "$NO_BUILD" != 1 ]; then
  log "building the release binary"
  cargo build --release --bin switchyard >&2
  [ "$BARE" != 1 ] || cargo build --release --example bare_proxy >&2
fi
[ -x "$SWITCHYARD_BIN" ] || die "no binary at $SWITCHYARD_BIN"
[ "$BARE" != 1 ] || [ -x "$BARE_BIN" ] || die "no binary at $BARE_BIN"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP="$(mktemp -d /tmp/switchyard-soak.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

MOCK_PORT="$(free_port)"; GW_PORT="$(free_port)"; M_PORT="$(free_port)"
"$PY" "$TOOL" mock "$MOCK_PORT" 2>"$TMP/mock.err" &
PIDS+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$MOCK_PORT") 2>/dev/null && break
  sleep 0.1
done
cat >"$TMP/soak.yaml" <<EOF
server:
  listen: "127.0.0.1:$GW_PORT"
  metrics_listen: "127.0.0.1:$M_PORT"
  threads: 2
  access_log: true
  upstream_read_timeout_seconds: 2
  upstream_connect_timeout_seconds: 2
auth:
  keys:
    - {user: soak, key: "sk-soak-gateway-key-0001"}
providers:
  mock: {}
  openai:
    endpoint: "http://127.0.0.1:$MOCK_PORT"
    auth: {method: api_key, config: {api_key: "sk-soak-upstream-key"}}
routing:
  timeout_seconds: 5
  patterns:
    - {pattern: "^gpt-", default_provider: openai}
    - {pattern: "^mock-", default_provider: mock}
EOF
BASE="http://127.0.0.1:$GW_PORT"
METRICS="http://127.0.0.1:$M_PORT/metrics"
start_gateway() {
  "$SWITCHYARD_BIN" serve -c "$TMP/soak.yaml" >"$TMP/access.log" 2>"$TMP/gateway.err" &
  GW_PID=$!
  PIDS+=($GW_PID)
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$METRICS" 2>/dev/null && break
    sleep 0.1
  done
  kill -0 "$GW_PID" 2>/dev/null || { cat "$TMP/gateway.err" >&2; die "the gateway did not start"; }
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
# One request (warm-up, and proof the setup works), not counted below.
warm_up() {
  curl -fsS -o /dev/null -H "authorization: Bearer sk-soak-gateway-key-0001" -H 'content-type: application/json' \
    -d '{"model":"gpt-json","messages":[{"role":"user","content":"hi"}]}' "$1/v1/chat/completions" \
    || die "warm-up request failed"
  sleep 0.5
}
start_gateway
log "gateway pid $GW_PID on $BASE, mock on $MOCK_PORT; $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
warm_up "$BASE"
LOGGED_BEFORE="$(grep -c '"request_id"' "$TMP/access.log" || true)"

LOAD='{}'
LOGGED=0
if [ "$DURATION" != 0 ]; then
  log "mixed traffic: ${DURATION}s from $CONC connections (client at nice $NICE_CLIENT)"
  LOAD="$(timeout $((DURATION + 120)) nice -n "$NICE_CLIENT" "$PY" "$TOOL" load "$BASE" "$DURATION" "$CONC" "$GW_PID" "$METRICS")"
  sleep 0.5
  LOGGED=$(( $(grep -c '"request_id"' "$TMP/access.log" || true) - LOGGED_BEFORE ))
  kill -0 "$GW_PID" 2>/dev/null || die "the gateway died during the soak"
fi

# memory_phases NAME PID-STARTER: the idle-after-start RSS, then idle connections and open
# streams, each on a fresh process. Sets RESULT to one JSON object (no subshell: the processes
# it starts must stay known to the cleanup).
memory_phases() {
  local start="$1" idle streams rss0
  stop "$GW_PID"; "$start"
  sleep 2
  rss0="$(rss_kb "$GW_PID")"
  warm_up "$BASE"
  log "$start: memory per idle keep-alive connection (N=$IDLE_N)"
  idle="$(timeout 300 nice -n "$NICE_CLIENT" "$PY" "$TOOL" idle "$BASE" "$IDLE_N" "$GW_PID")"
  stop "$GW_PID"; "$start"; warm_up "$BASE"
  log "$start: memory per open stream (N=$STREAMS_N)"
  streams="$(timeout 300 nice -n "$NICE_CLIENT" "$PY" "$TOOL" streams "$BASE" "$STREAMS_N" "$GW_PID")"
  kill -0 "$GW_PID" 2>/dev/null || die "$start died during the memory measurements"
  RESULT="{\"rss_kb_after_start\": $rss0, \"idle\": $idle, \"streams\": $streams}"
}
start_bare() {
  "$BARE_BIN" "127.0.0.1:$GW_PORT" "127.0.0.1:$MOCK_PORT" 2 2>"$TMP/bare.err" &
  GW_PID=$!
  PIDS+=($GW_PID)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null && break
    sleep 0.1
  done
  kill -0 "$GW_PID" 2>/dev/null || { cat "$TMP/bare.err" >&2; die "the bare proxy did not start"; }
}
memory_phases start_gateway
MEM="$RESULT"
BARE_MEM='null'
if [ "$BARE" = 1 ]; then
  stop "$GW_PID"
  # The bare proxy has no built-in mock provider: its idle requests go to the mock upstream.
  IDLE_MODEL=gpt-json memory_phases start_bare
  BARE_MEM="$RESULT"
fi

mkdir -p "$(dirname "$OUT")"
"$PY" - "$LOAD" "$MEM" "$BARE_MEM" "$LOGGED" "$OUT" <<'EOF'
import json, sys
load, mem, bare = (json.loads(a) for a in sys.argv[1:4])
logged, out = int(sys.argv[4]), sys.argv[5]
load["logged"] = logged
json.dump({"soak": load, "memory": mem, "bare_memory": bare}, open(out, "w"), indent=1)

def memory_rows(name, m):
    idle, streams = m["idle"], m["streams"]
    return f"""| {name}: RSS after start, no traffic | **{m['rss_kb_after_start']/1024:.1f} MiB** |
| {name}: idle keep-alive connections | {idle['n']} open: RSS {idle['rss_kb_before']/1024:.1f} -> {idle['rss_kb_open']/1024:.1f} MiB, **{idle['bytes_per_conn']/1024:.1f} KiB per connection**; fds {idle['fds_before']} -> {idle['fds_open']} -> {idle['fds_after_close']} after closing |
| {name}: open streams | {streams['n']} concurrent ({streams['completed']} completed): RSS {streams['rss_kb_before']/1024:.1f} -> {streams['rss_kb_open']/1024:.1f} MiB, **{streams['bytes_per_stream']/1024:.1f} KiB per stream** (down- and upstream connection included); fds {streams['fds_before']} -> {streams['fds_open']} -> {streams['fds_after']} |
"""

print("\n| figure | value |\n|---|---|")
print(memory_rows("gateway", mem) + (memory_rows("bare Pingora", bare) if bare else ""), end="")
if "rss_kb" not in load:  # DURATION=0: memory phases only
    sys.exit(0)
r, f = load["rss_kb"], load["fds"]
print(f"""| duration, connections | {load['seconds']} s, {load['concurrency']} keep-alive |
| requests sent / answered / accounted (metrics) / logged (access log) | {load['sent']} / {load['answered']} / {load['accounted']} / {logged} |
| of which upstream faults | {load['faults']} |
| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(load['by_status'].items()))} |
| throughput | {load['req_per_s']} req/s |
| latency p50 / p99 / p99.9 of non-fault requests | {load['p50_ms']} / {load['p99_ms']} / {load['p999_ms']} ms (slowest fault: {load['fault_max_ms']} ms) |
| RSS start / peak / end | {r['start']/1024:.1f} / {r['peak']/1024:.1f} / {r['end']/1024:.1f} MiB |
| open fds start / peak / end | {f['start']} / {f['peak']} / {f['end']} |
""")
ok = load["sent"] == load["answered"] == load["accounted"] == logged
if not ok:
    print(f"FAIL: sent {load['sent']}, answered {load['answered']}, accounted {load['accounted']}, logged {logged} differ")
    sys.exit(1)
print("sent = answered = accounted = logged: OK")
EOF
