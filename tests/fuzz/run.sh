#!/usr/bin/env bash
# Builds and runs every fuzz target of Switchyard, one at a time, nice'd, for a bounded time
# or number of runs each, and prints a table (target, executions, exec/s, crashes, corpus).
# Not part of CI: run it by hand (see docs/RELIABILITY.md).
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET | --runs N] [TARGET...]   (default: 60 s, all)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and only the stable toolchain:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. Targets are built without a sanitizer
# (`-s none`; switchyard-filters has no `unsafe`) and with debug assertions (`-a`), so integer
# overflows panic. Seeds: tests/fuzz/seeds.py, plus every stream the filters' unit tests
# translate. Corpora grow in tests/fuzz/corpus/<target>/ (kept between runs, not committed);
# crash inputs land in tests/fuzz/artifacts/<target>/; the table in tests/fuzz/results/.
# The `config` target builds the whole gateway with coverage instrumentation (slow, once).
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZ=tests/fuzz
ALL=(sse_decoder eventstream_decoder stream_openai stream_anthropic stream_bedrock_converse
  stream_bedrock_anthropic stream_vertex_gemini stream_vertex_anthropic stream_watsonx
  stream_oci_generic stream_oci_cohere stream_openai_chat messages_stream_anthropic
  messages_stream_bedrock messages_stream_vertex messages answers request responses cache_key usage config)

limit=(-max_total_time=60)
case "${1:-}" in
  --runs) limit=(-runs="$2"); shift 2 ;;
  ''|-*) ;;
  *) limit=(-max_total_time="$1"); shift ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

export RUSTC_BOOTSTRAP=1
build=(nice -n 19 cargo fuzz build --fuzz-dir "$FUZZ" -s none -a)
for t in "${targets[@]}"; do
  if [ "$t" = config ]; then "${build[@]}" --features config config; else "${build[@]}" "$t"; fi
done
bin_dir="${CARGO_TARGET_DIR:-$FUZZ/target}/$(rustc -vV | sed -n 's/^host: //p')/release"

# Seeds (only added: a corpus already grown is kept).
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
python3 "$FUZZ/seeds.py" "$seeds" .
mkdir -p "$seeds/streams"
SWITCHYARD_FUZZ_SEEDS="$seeds/streams" nice -n 19 cargo test -q -p switchyard-filters --lib >/dev/null

mkdir -p "$FUZZ/results"
table="$FUZZ/results/$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "| target | executions | exec/s | crashes | corpus |"
  echo "|---|---:|---:|---:|---:|"
} | tee "$table"
failed=0
for t in "${targets[@]}"; do
  corpus="$FUZZ/corpus/$t" artifacts="$FUZZ/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -n "$seeds/$t"/* "$corpus/" 2>/dev/null || true
  case "$t" in
    stream_*|sse_decoder|eventstream_decoder) cp -n "$seeds/streams"/* "$corpus/" ;;
  esac
  log="$FUZZ/results/$t.log"
  rc=0
  nice -n 19 "$bin_dir/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  [ "$rc" = 0 ] || failed=1
  echo "| $t | ${execs:-?} | ${rate:-?} | $crashes | $(find "$corpus" -type f | wc -l) |" | tee -a "$table"
done
echo "table: $table; logs: $FUZZ/results/<target>.log"
exit $failed
