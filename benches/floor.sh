#!/usr/bin/env bash
# Bare Pingora against nginx proxy_pass, deterministically (issue 17 item 4): per request,
# callgrind instructions (user space, every thread of the proxy) and system calls (strace -c -f,
# by name), for nginx `proxy_pass` (worker_processes 1, master_process off, upstream keepalive
# 64, as in benches/load.sh) and examples/bare_proxy.rs (one worker thread). The origin is an
# nginx `return 200` with the load bench's chat.completion (not measured); the client is one
# keep-alive connection sending the load bench's ~1 KB chat request: WARMUP requests, then N
# measured. Unlike req/s on a shared 2-core machine, these figures repeat run to run.
#
# Knobs: WARMUP=300 N=2000 TARGETS="nginx bare" (also: bare-nobuf, no L4 read buffer on the
#   listener; bare-nosteal, Pingora's no-steal runtime; bare-both, both; pass, the gateway's
#   passthrough) CALLGRIND=1 STRACE=1
#   BARE_BIN=target/release/examples/bare_proxy SWITCHYARD_BIN=target/release/switchyard
#   KEEP_DUMPS=<dir> (keep the callgrind dumps, for callgrind_annotate)
#   OUT=target/bench/floor.md
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WARMUP="${WARMUP:-300}"
N="${N:-2000}"
TARGETS="${TARGETS:-nginx bare}"
CALLGRIND="${CALLGRIND:-1}"
STRACE="${STRACE:-1}"
BARE_BIN="${BARE_BIN:-$ROOT/target/release/examples/bare_proxy}"
SWITCHYARD_BIN="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"
OUT="${OUT:-$ROOT/target/bench/floor.md}"
log() { printf '[floor.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
NGINX="$(command -v nginx || true)"
[ -n "$NGINX" ] || die "nginx is not installed (apt-get install nginx-light)"
[ "$CALLGRIND" != 1 ] || command -v valgrind >/dev/null || die "valgrind is not installed"
[ "$STRACE" != 1 ] || command -v strace >/dev/null || die "strace is not installed"
mkdir -p "$ROOT/target/bench"
TMP="$(mktemp -d "$ROOT/target/bench/floor.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RESP='{"id":"chatcmpl-9QbEnchSwitchyard0000000001","object":"chat.completion","created":1716000000,"model":"gpt-4-0125-preview","choices":[{"index":0,"message":{"role":"assistant","content":"Make the dump wait for the lock rather than moving the schedule: pass a lock wait timeout to the backup (for example 10 minutes) so it queues behind the rollup instead of failing immediately. Moving the backup only hides the overlap until the next schedule change. Also alert when the dump takes longer than usual, so a stuck lock is noticed the same night.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":212,"completion_tokens":71,"total_tokens":283,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_5b26d85e12"}'
ORIGIN_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
mkdir -p "$TMP/nginx/tmp"
nginx_conf() { # name body
  cat <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $TMP/nginx/$1.pid;
lock_file $TMP/nginx/$1.lock;
error_log $TMP/nginx/$1.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/tmp/$1-body;
  proxy_temp_path $TMP/nginx/tmp/$1-proxy;
  fastcgi_temp_path $TMP/nginx/tmp/$1-fastcgi;
  uwsgi_temp_path $TMP/nginx/tmp/$1-uwsgi;
  scgi_temp_path $TMP/nginx/tmp/$1-scgi;
  default_type application/json;
  keepalive_requests 1000000;
$2
}
EOF
}
nginx_conf origin "  server { listen 127.0.0.1:$ORIGIN_PORT; location / { return 200 '$RESP'; } }" >"$TMP/nginx/origin.conf"
nginx_conf proxy "  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }" >"$TMP/nginx/proxy.conf"
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/origin.log" -c "$TMP/nginx/origin.conf" </dev/null >/dev/null 2>&1 &
PIDS+=("$!")

GW_YAML="$TMP/gw.yaml"
cat >"$GW_YAML" <<EOF
server: {listen: "127.0.0.1:$PROXY_PORT", threads: 1, access_log: false, grace_period_seconds: 0}
auth:
  keys:
    - {user: bench, key: "sk-switchyard-bench"}
providers:
  openai:
    endpoint: "http://127.0.0.1:$ORIGIN_PORT"
    auth: {method: api_key, config: {api_key: "sk-origin"}}
EOF

# client.py PORT PATH WARMUP N HOOK_ON HOOK_OFF: keep-alive requests; HOOK_ON / HOOK_OFF are
# shell commands run around the N measured requests.
cat >"$TMP/client.py" <<'PY'
import http.client, json, subprocess, sys
port, path, warmup, n, on, off = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
msgs = [{"role": "system", "content": "You are a concise assistant for an internal engineering help desk. Answer in plain English, cite the relevant runbook section when you know it, and never invent command-line flags."},
        {"role": "user", "content": "Our nightly backup job on the reporting database started failing last Tuesday with 'could not obtain lock on relation'. Nothing changed in the job itself."},
        {"role": "assistant", "content": "A lock error usually means another session holds a conflicting lock when the dump starts. Did a schema migration get scheduled around the same time?"},
        {"role": "user", "content": "Yes, the analytics team moved their weekly rollup to 01:30, which overlaps the backup window. What is the least disruptive fix?"}]
body = json.dumps({"model": "gpt-4", "messages": msgs, "temperature": 0.2, "max_tokens": 256, "user": "bench-user-0042"}).encode()
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
hdr = {"content-type": "application/json", "authorization": "Bearer sk-switchyard-bench"}
def run(k):
    for _ in range(k):
        c.request("POST", path, body, hdr)
        r = c.getresponse(); data = r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}: {data[:300]!r}")
run(warmup)
subprocess.run(on, shell=True, check=True)
run(n)
subprocess.run(off, shell=True, check=True)
PY

wait_up() { for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
# start TARGET [WRAPPER...]: the proxy under test on PROXY_PORT; sets PID and URL_PATH.
start() {
  local t="$1"; shift
  URL_PATH=/v1/chat/completions
  case "$t" in
    nginx) "$@" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/proxy.log" -c "$TMP/nginx/proxy.conf" </dev/null >"$TMP/$t.out" 2>&1 & ;;
    bare) "$@" "$BARE_BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$ORIGIN_PORT" 1 >"$TMP/$t.out" 2>&1 & ;;
    bare-nobuf) BARE_L4_READ_BUFFER=0 "$@" "$BARE_BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$ORIGIN_PORT" 1 >"$TMP/$t.out" 2>&1 & ;;
    bare-nosteal) BARE_WORK_STEALING=0 "$@" "$BARE_BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$ORIGIN_PORT" 1 >"$TMP/$t.out" 2>&1 & ;;
    bare-both) BARE_L4_READ_BUFFER=0 BARE_WORK_STEALING=0 "$@" "$BARE_BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$ORIGIN_PORT" 1 >"$TMP/$t.out" 2>&1 & ;;
    pass) URL_PATH=/providers/openai/v1/chat/completions
      "$@" "$SWITCHYARD_BIN" serve -c "$GW_YAML" >"$TMP/$t.out" 2>&1 & ;;
    *) die "unknown target $t" ;;
  esac
  PID=$!
  PIDS+=("$PID")
  wait_up "$PROXY_PORT" || die "$t did not start: $(tail -5 "$TMP/$t.out")"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

declare -A IR SYS
for t in $TARGETS; do
  if [ "$CALLGRIND" = 1 ]; then
    rm -f "$TMP"/cg.out.*
    start "$t" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out.%p"
    python3 "$TMP/client.py" "$PROXY_PORT" "$URL_PATH" "$WARMUP" "$N" \
      "callgrind_control -i on $PID >/dev/null" "callgrind_control -d $PID >/dev/null; callgrind_control -i off $PID >/dev/null" \
      || die "$t: client failed"
    stop "$PID"
    dump="$(ls "$TMP"/cg.out.*.1 2>/dev/null | head -1)"
    [ -n "$dump" ] || die "$t: no callgrind dump"
    total="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
    if [ -n "${KEEP_DUMPS:-}" ]; then mkdir -p "$KEEP_DUMPS" && cp "$dump" "$KEEP_DUMPS/callgrind.$t"; fi
    IR[$t]=$(( total / N ))
    log "$t: ${IR[$t]} instructions per request"
  fi
  if [ "$STRACE" = 1 ]; then
    start "$t"
    python3 "$TMP/client.py" "$PROXY_PORT" "$URL_PATH" "$WARMUP" "$N" \
      "strace -c -f -q -o $TMP/strace.$t -p $PID & echo \$! >$TMP/strace.pid; sleep 1" \
      "sleep 0.2; kill -INT \$(cat $TMP/strace.pid); sleep 0.5" || die "$t: client failed"
    stop "$PID"
    # Per request: the total, and by name the calls made at least once per 10 requests.
    SYS[$t]="$(awk -v n="$N" '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ && $NF != "total" {
        t += $4; if ($4 / n >= 0.1) s = s sprintf("%s %.2f, ", $NF, $4 / n) }
      END { printf "%.2f (%s)", t / n, substr(s, 1, length(s) - 2) }' "$TMP/strace.$t")"
    [ -z "${SHOW_STRACE:-}" ] || cat "$TMP/strace.$t" >&2
    log "$t: syscalls per request ${SYS[$t]}"
  fi
done

{
  echo "## Bare Pingora against nginx (floor.sh) — $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "$N requests after $WARMUP warm-up, one keep-alive connection, one worker."
  echo
  echo "| target | instructions / request | vs nginx | system calls / request |"
  echo "|---|--:|--:|---|"
  for t in $TARGETS; do
    ratio="$( [ -n "${IR[nginx]:-}" ] && [ -n "${IR[$t]:-}" ] && awk -v a="${IR[$t]}" -v b="${IR[nginx]}" 'BEGIN{printf "%.2f×", a/b}' || echo n/a)"
    echo "| $t | ${IR[$t]:-} | $ratio | ${SYS[$t]:-} |"
  done
} | tee "$OUT"
