#!/usr/bin/env bash
# The one test command: builds the gateway, runs the Rust tests, then drives the built binary
# with the official openai Python SDK (tests/sdk). Run from anywhere: `tests/run.sh`.
# Extra arguments are passed to pytest (e.g. `tests/run.sh -k passthrough -x`).
#
# Works on a fresh Debian machine with the Rust toolchain: installs what is missing
# (a C compiler, python3, python3-venv) with apt-get, only when the command is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

log() { printf '\n==> %s\n' "$*" >&2; }

APT_UPDATED=0
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
            echo "error: need to install $* but not root and no sudo" >&2; exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: need to install $* but apt-get is not available" >&2; exit 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# ---------------------------------------------------------------- prerequisites
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "error: cargo not found (install the Rust toolchain with rustup)" >&2
        exit 1
    fi
fi
command -v cc >/dev/null 2>&1 || apt_install build-essential
# cmake: libz-ng-sys (flate2's zlib-ng backend, under pingora and reqwest) builds its C code with it.
command -v cmake >/dev/null 2>&1 || apt_install cmake
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
# openssl: test certificates for the boto3 bearer (HTTPS-only) tests.
command -v openssl >/dev/null 2>&1 || apt_install openssl
# promtool (Debian's prometheus package) checks and unit-tests the alert rules; systemd-analyze
# checks the unit file. Both are optional: the tests say loudly when they skip.
command -v promtool >/dev/null 2>&1 || apt_install prometheus || echo "warning: promtool unavailable; alert rules get the parser check only" >&2
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd || echo "warning: systemd-analyze unavailable" >&2

# PostgreSQL and Redis on loopback for the governance store / shared rate-limit tests
# (tests/governance.rs); skipped loudly when they cannot be had.
# shellcheck source=tests/services.sh
source "$ROOT/tests/services.sh"
trap services_cleanup EXIT
start_postgres
start_redis

# ---------------------------------------------------------------- Rust
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
log "cargo build --workspace --bins"
cargo build --workspace --bins

log "cargo test --workspace"
cargo test --workspace

if command -v systemd-analyze >/dev/null 2>&1; then
    log "systemd/verify.sh (systemd-analyze verify + security)"
    bash systemd/verify.sh
fi

BIN="$ROOT/target/debug/switchyard"
if [ ! -x "$BIN" ]; then
    echo "error: $BIN was not built" >&2
    exit 1
fi

# ---------------------------------------------------------------- Python SDK tests
VENV="$ROOT/target/sdk-venv"
REQ="$ROOT/tests/sdk/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want_stamp="$( (sha256sum "$REQ"; python3 --version 2>&1) | sha256sum | cut -d' ' -f1)"

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "venv $VENV is broken: recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want_stamp" ]; then
    log "pip install -r tests/sdk/requirements.txt"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQ" </dev/null
    echo "$want_stamp" > "$STAMP"
fi

log "pytest tests/sdk (SWITCHYARD_BIN=target/debug/switchyard)"
export SWITCHYARD_BIN="$BIN"
export PYTHONDONTWRITEBYTECODE=1
# pytest exits non-zero on failures and with 5 when it collected no test: both fail this script.
"$VENV/bin/python" -m pytest "$ROOT/tests/sdk" -p no:cacheprovider -ra "$@"
