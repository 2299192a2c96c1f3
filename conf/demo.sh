#!/usr/bin/env bash
# The quick start: serves the demo (conf/demo.yaml) on 127.0.0.1:8080, metrics on :9091.
# Works on a fresh Debian/Ubuntu machine with only the Rust toolchain: first installs what the
# build needs and is missing (a C compiler, cmake) with apt-get, then `cargo run --release`.
# Arguments go to the gateway: `conf/demo.sh serve -c conf/gateway.yaml`, `conf/demo.sh --help`.
# SWITCHYARD_PREREQS_ONLY=1 installs what is missing and stops there.
set -euo pipefail

here=${BASH_SOURCE[0]%/*}
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
cd "$here/.."
# shellcheck source=conf/prereqs.sh
source conf/prereqs.sh

need_cargo
need_build_tools
if [ "${SWITCHYARD_PREREQS_ONLY:-0}" = 1 ]; then
    exit 0
fi
exec cargo run --release -- "$@"
