#!/usr/bin/env bash
# Checks systemd/switchyard.service with systemd's own tools:
#   1. `systemd-analyze verify`: the unit must load with no error and no warning at all
#      (unknown keys are only warnings for systemd, so any output fails this check);
#   2. `systemd-analyze security --offline=yes`: the overall exposure score must be at most
#      MAX_EXPOSURE (default 2.0; systemd calls <= 2.9 "OK", lower is better).
# Neither needs systemd running as PID 1. `verify` insists that ExecStart's binary exists, so
# the unit is checked from a temporary copy whose /usr/local/bin/switchyard points at the
# built binary ($SWITCHYARD_BIN, else target/release/switchyard, else target/debug/switchyard).
#
# Usage: systemd/verify.sh            (installs systemd via apt-get when systemd-analyze is
#                                      missing and this runs as root)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
UNIT="${UNIT:-systemd/switchyard.service}"
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> systemd-analyze missing: apt-get install systemd" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd </dev/null
    else
        echo "error: systemd-analyze not found (install the systemd package)" >&2
        exit 1
    fi
fi

BIN="${SWITCHYARD_BIN:-}"
if [ -z "$BIN" ]; then
    for b in target/release/switchyard target/debug/switchyard; do
        if [ -x "$b" ]; then BIN="$PWD/$b"; break; fi
    done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "error: no switchyard binary: build one first (cargo build --release) or set SWITCHYARD_BIN" >&2
    exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# Same file name, so systemd sees the same unit name.
sed "s#/usr/local/bin/switchyard#${BIN}#g" "$UNIT" >"$TMP/switchyard.service"

passed=0
failed=0

echo "==> systemd-analyze verify $UNIT"
if out="$(systemd-analyze verify "$TMP/switchyard.service" 2>&1)" && [ -z "$out" ]; then
    echo "ok: no errors, no warnings"
    passed=$((passed + 1))
else
    echo "FAILED:"
    printf '%s\n' "${out//$TMP\//systemd/}"
    failed=$((failed + 1))
fi

echo "==> systemd-analyze security --offline=yes $UNIT (max exposure $MAX_EXPOSURE)"
# --threshold is on systemd's internal 0..100 scale (10 x the printed score).
threshold="$(awk -v m="$MAX_EXPOSURE" 'BEGIN { printf "%d", m * 10 + 0.5 }')"
set +e
out="$(systemd-analyze security --offline=yes --threshold="$threshold" --no-pager \
    "$TMP/switchyard.service" 2>&1)"
rc=$?
set -e
# Print what still counts against the score (the ✗ lines) and the total.
printf '%s\n' "$out" | grep -E '^✗|Overall exposure' || true
if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q 'Overall exposure level'; then
    echo "ok: exposure within $MAX_EXPOSURE"
    passed=$((passed + 1))
else
    echo "FAILED (exit $rc):"
    printf '%s\n' "$out" | tail -5
    failed=$((failed + 1))
fi

echo "systemd/verify.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
