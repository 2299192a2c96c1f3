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

# apt_install, need_cargo, need_build_tools (shared with the quick start, conf/demo.sh).
# shellcheck source=conf/prereqs.sh
source "$ROOT/conf/prereqs.sh"

# ---------------------------------------------------------------- prerequisites
need_cargo
need_build_tools  # a C compiler and cmake (libz-ng-sys, under pingora, builds zlib-ng with it)
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

# ---------------------------------------------------------------- SDK tests
# make_venv DIR REQUIREMENTS [PIP OPTIONS]: a venv with exactly these pins, reinstalled when
# the file (or python3) changes.
make_venv() {
    local venv="$1" req="$2"
    shift 2
    local stamp="$venv/.requirements.sha256"
    local want
    want="$( (sha256sum "$req"; python3 --version 2>&1) | sha256sum | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "venv $venv is broken: recreating"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "creating venv $venv"
        if ! python3 -m venv "$venv"; then
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "pip install -r ${req#"$ROOT"/}"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q "$@" -r "$req" </dev/null
        echo "$want" > "$stamp"
    fi
}

VENV="$ROOT/target/sdk-venv"
make_venv "$VENV" "$ROOT/tests/sdk/requirements.txt"
# LangChain, LlamaIndex, litellm, instructor, the Agents SDK: their own venv (they resolve to
# openai 2.x; see tests/sdk/clients/conftest.py).
CLIENTS_VENV="$ROOT/target/sdk-clients-venv"
make_venv "$CLIENTS_VENV" "$ROOT/tests/sdk/clients/requirements.txt" --only-binary=:all:

# The Node openai package (tests/sdk/test_node_openai.py), exactly as package-lock.json pins it.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
NODE_DIR="$ROOT/target/sdk-node"
if ! cmp -s "$ROOT/tests/sdk/node/package-lock.json" "$NODE_DIR/package-lock.json" || [ ! -d "$NODE_DIR/node_modules/openai" ]; then
    log "npm ci (tests/sdk/node) into target/sdk-node"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    cp "$ROOT/tests/sdk/node/package.json" "$ROOT/tests/sdk/node/package-lock.json" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts </dev/null)
fi
export SWITCHYARD_NODE_MODULES="$NODE_DIR/node_modules"

export SWITCHYARD_BIN="$BIN"
export PYTHONDONTWRITEBYTECODE=1
log "pytest tests/sdk (SWITCHYARD_BIN=target/debug/switchyard)"
# pytest exits non-zero on failures and with 5 when it collected no test: both fail this script.
"$VENV/bin/python" -m pytest "$ROOT/tests/sdk" -p no:cacheprovider -ra "$@"

log "pytest tests/sdk/clients (LangChain, LlamaIndex, litellm, instructor, Agents SDK)"
rc=0
"$CLIENTS_VENV/bin/python" -m pytest "$ROOT/tests/sdk/clients" -p no:cacheprovider -ra "$@" || rc=$?
# With a selection (`tests/run.sh -k passthrough`) this directory may have nothing to run.
if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 5 ] && [ "$#" -gt 0 ]; }; then
    exit "$rc"
fi
