#!/usr/bin/env bash
# Per-request instruction counts (issue 17): valgrind's callgrind on the release binaries, one
# worker thread, the load bench's ~1 KB chat request over one keep-alive connection: WARMUP
# requests, instrumentation switched on, N requests, counts dumped, divided by N. Every thread
# of the server is counted, the kernel is not. Unlike req/s on a shared 2-core machine, the
# figure repeats to within a fraction of a percent, so small changes show.
#
# Targets: bare (examples/bare_proxy: bare Pingora, the framework's floor), pass (switchyard
# passthrough), v1openai (/v1 chat to an OpenAI-shaped origin), v1anthropic (/v1 chat translated
# to an Anthropic-shaped origin), v1mock (the built-in mock), v1gov (v1mock with a key from a
# SQLite store of GOV_KEYS keys with rate limits: authentication, limits and the usage record
# written by the governance thread, all counted). The origin is a small Python server (not
# measured).
#
# Knobs: WARMUP=300 N=2000 TARGETS="bare pass v1openai v1anthropic v1mock" (v1gov on request)
#   GOV_KEYS=10000
#   SWITCHYARD_BIN=target/release/switchyard BARE_BIN=target/release/examples/bare_proxy
#   NO_BUILD=0 OUT=target/bench/instructions.md KEEP_DUMPS=<dir> (keep each target's callgrind
#   dump there, for callgrind_annotate)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WARMUP="${WARMUP:-300}"
N="${N:-2000}"
TARGETS="${TARGETS:-bare pass v1openai v1anthropic v1mock}"
SWITCHYARD_BIN="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"
BARE_BIN="${BARE_BIN:-$ROOT/target/release/examples/bare_proxy}"
OUT="${OUT:-$ROOT/target/bench/instructions.md}"
log() { printf '[instructions.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release --bin switchyard --example bare_proxy >&2 || die "cargo build --release failed"
fi
mkdir -p "$ROOT/target/bench"
TMP="$(mktemp -d "$ROOT/target/bench/instr.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT="$(free_port)"
# The origin: OpenAI's chat.completion for /v1/chat/completions, Anthropic's message for
# /v1/messages, keep-alive.
cat >"$TMP/origin.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
OPENAI = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1716000000,
    "model": "gpt-4-0125-preview", "choices": [{"index": 0, "message": {"role": "assistant",
    "content": "Make the dump wait for the lock rather than moving the schedule.", "refusal": None},
    "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 212, "completion_tokens": 71, "total_tokens": 283}}).encode()
ANTHROPIC = json.dumps({"id": "msg_bench", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-20250514", "content": [{"type": "text",
    "text": "Make the dump wait for the lock rather than moving the schedule."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 212, "output_tokens": 71}}).encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        if n: self.rfile.read(n)
        body = ANTHROPIC if self.path.endswith("/messages") else OPENAI
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$TMP/origin.py" "$ORIGIN_PORT" &
PIDS+=("$!")

GW_PORT="$(free_port)"
cat >"$TMP/gw.yaml" <<EOF
server: {listen: "127.0.0.1:$GW_PORT", threads: 1, access_log: true, grace_period_seconds: 0}
auth:
  keys:
    - {user: bench, key: "sk-switchyard-bench"}
providers:
  openai:
    endpoint: "http://127.0.0.1:$ORIGIN_PORT"
    auth: {method: api_key, config: {api_key: "sk-origin"}}
  anthropic:
    endpoint: "http://127.0.0.1:$ORIGIN_PORT"
    auth: {method: api_key, config: {api_key: "sk-ant-origin"}}
  mock: {}
model_mappings:
  gpt-4: {default_provider: openai, providers: {openai: {model: gpt-4-0125-preview}}}
  claude-bench: {default_provider: anthropic, providers: {anthropic: {model: claude-sonnet-4-20250514}}}
routing:
  patterns:
    - {pattern: "^mock-", default_provider: mock}
EOF

# v1gov: the same gateway with a store of GOV_KEYS keys (rate limits on each), the bench's key
# one of them (as benches/load.sh row 6).
if [[ " $TARGETS " == *" v1gov "* ]]; then
  GOV_STORE="sqlite:$TMP/governance.db"
  GOV_KEY="$("$SWITCHYARD_BIN" keys create --store "$GOV_STORE" --user bench-gov \
    --rpm 1000000000 --tpm 1000000000000 2>/dev/null)" || die "switchyard keys create failed"
  python3 "$ROOT/benches/gov_keys.py" "$TMP/governance.db" "${GOV_KEYS:-10000}" || die "could not fill the store with keys"
  sed -e "s|^auth:|auth:\n  store: \"$GOV_STORE\"|" "$TMP/gw.yaml" >"$TMP/gw-gov.yaml"
fi

# client.py PORT PATH MODEL WARMUP N PID KEY: keep-alive requests, instrumentation on for the N.
cat >"$TMP/client.py" <<'PY'
import http.client, json, subprocess, sys
port, path, model, warmup, n, pid, key = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
msgs = [{"role": "system", "content": "You are a concise assistant for an internal engineering help desk. Answer in plain English, cite the relevant runbook section when you know it, and never invent command-line flags."},
        {"role": "user", "content": "Our nightly backup job on the reporting database started failing last Tuesday with 'could not obtain lock on relation'. Nothing changed in the job itself."},
        {"role": "assistant", "content": "A lock error usually means another session holds a conflicting lock when the dump starts. Did a schema migration get scheduled around the same time?"},
        {"role": "user", "content": "Yes, the analytics team moved their weekly rollup to 01:30, which overlaps the backup window. What is the least disruptive fix?"}]
body = json.dumps({"model": model, "messages": msgs, "temperature": 0.2, "max_tokens": 256, "user": "bench-user-0042"}).encode()
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
hdr = {"content-type": "application/json", "authorization": "Bearer " + key}
def run(k):
    for _ in range(k):
        c.request("POST", path, body, hdr)
        r = c.getresponse(); data = r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}: {data[:300]!r}")
run(warmup)
subprocess.run(["callgrind_control", "-i", "on", pid], check=True, stdout=subprocess.DEVNULL)
run(n)
subprocess.run(["callgrind_control", "-d", pid], check=True, stdout=subprocess.DEVNULL)
subprocess.run(["callgrind_control", "-i", "off", pid], check=True, stdout=subprocess.DEVNULL)
PY

wait_up() { for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$1/health" && return 0; sleep 0.1; done; return 1; }
declare -A IR COPY
measure() { # target
  local t="$1" port pid path model key=sk-switchyard-bench conf="$TMP/gw.yaml"
  rm -f "$TMP"/cg.out.*
  case "$t" in
    bare)
      port="$(free_port)"
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out.%p" \
        "$BARE_BIN" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" 1 >"$TMP/$t.log" 2>&1 &
      path=/v1/chat/completions model=gpt-4 ;;
    *)
      port="$GW_PORT"
      [ "$t" = v1gov ] && conf="$TMP/gw-gov.yaml" key="$GOV_KEY"
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out.%p" \
        "$SWITCHYARD_BIN" serve -c "$conf" >"$TMP/$t.access.log" 2>"$TMP/$t.log" &
      case "$t" in
        pass) path=/providers/openai/v1/chat/completions model=gpt-4 ;;
        v1openai) path=/v1/chat/completions model=gpt-4 ;;
        v1anthropic) path=/v1/chat/completions model=claude-bench ;;
        v1mock | v1gov) path=/v1/chat/completions model=mock-bench ;;
        *) die "unknown target $t" ;;
      esac ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_up "$port" || die "$t did not start: $(tail -5 "$TMP/$t.log")"
  python3 "$TMP/client.py" "$port" "$path" "$model" "$WARMUP" "$N" "$pid" "$key" || die "$t: client failed"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local dump total
  dump="$(ls "$TMP"/cg.out.*.1 2>/dev/null | head -1)"
  [ -n "$dump" ] || die "$t: no callgrind dump"
  total="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
  if [ -n "${KEEP_DUMPS:-}" ]; then mkdir -p "$KEEP_DUMPS" && cp "$dump" "$KEEP_DUMPS/callgrind.$t"; fi
  IR[$t]=$(( total / N ))
  # glibc's memcpy/memmove copy large blocks with `rep movsb`, which callgrind counts once per
  # byte (a 13,000-byte copy: 12,999 instructions; natively a few hundred cycles). Shown
  # apart, so a big copy does not pass for a big cost.
  copy="$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null \
    | awk '/memmove-vec-unaligned-erms\.S:__(memcpy|memmove)/ {gsub(",", "", $1); s += $1} END {print s + 0}')"
  COPY[$t]=$(( copy / N ))
  log "$t: ${IR[$t]} instructions per request (${COPY[$t]} of them in memcpy/memmove)"
}
for t in $TARGETS; do measure "$t"; done

{
  echo "## Instructions per request (callgrind) — $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD)"
  echo
  echo "$N requests after $WARMUP warm-up, one keep-alive connection, one worker thread, every server thread counted."
  echo
  echo "| target | instructions / request | vs bare Pingora | of them memcpy/memmove | without those | vs bare, without those |"
  echo "|---|--:|--:|--:|--:|--:|"
  for t in $TARGETS; do
    ratio="$( [ -n "${IR[bare]:-}" ] && awk -v a="${IR[$t]}" -v b="${IR[bare]}" 'BEGIN{printf "%.2f×", a/b}' || echo n/a)"
    rest=$(( IR[$t] - COPY[$t] ))
    ratio2="$( [ -n "${IR[bare]:-}" ] && awk -v a="$rest" -v b="$(( IR[bare] - COPY[bare] ))" 'BEGIN{printf "%.2f×", a/b}' || echo n/a)"
    echo "| $t | ${IR[$t]} | $ratio | ${COPY[$t]} | $rest | $ratio2 |"
  done
  echo
  echo "memcpy/memmove: glibc copies large blocks with \`rep movsb\`, counted by callgrind once per byte."
} | tee "$OUT"
