# shellcheck shell=bash
# Installs what building Switchyard needs besides the Rust toolchain, only when missing, with
# apt-get (Debian/Ubuntu). Sourced by conf/demo.sh (the quick start) and tests/run.sh.
#
#   need_build_tools   a C compiler (ring, SQLite, mimalloc, zstd) and cmake: pingora-core
#                      builds flate2 with zlib-ng, whose libz-ng-sys compiles zlib-ng with cmake
#                      unconditionally (its build script has no cmake-free path).
#   need_cargo         cargo on PATH (rustup's ~/.cargo/bin is added when only that is missing)
#   apt_install PKG..  apt-get install (update first, once), through `sudo -n` when not root
#
# Uses only bash builtins besides apt-get/sudo, so it also runs with a minimal PATH.

APT_UPDATED=${APT_UPDATED:-0}

prereq_log() { printf '\n==> %s\n' "$*" >&2; }

apt_install() {
    local sudo=()
    if [ "${EUID:-0}" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
            # A person at a terminal may type a password; CI (no terminal) must not wait for one.
            [ -t 0 ] && sudo=(sudo)
        else
            echo "error: need to install $* but not root and no sudo: install them and retry" >&2
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: need to install $* but apt-get is not available: install them with your system's package manager and retry" >&2
        exit 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        prereq_log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    prereq_log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null
}

need_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
        return 0
    fi
    echo "error: cargo not found: install the Rust toolchain (https://rustup.rs) and retry" >&2
    exit 1
}

need_build_tools() {
    local missing=()
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    hash -r
    local tool
    for tool in cc cmake; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: $tool is still missing after installing ${missing[*]}" >&2
            exit 1
        fi
    done
}
