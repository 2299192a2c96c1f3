#!/usr/bin/env bash
# Installs Switchyard as a systemd service (run as root from a checkout, after
# `cargo build --release`). Safe to run again: it replaces the binary, the unit and the docs,
# and never overwrites an existing /etc/switchyard/gateway.yaml or switchyard.env.
#
#   systemd/install.sh              install or update
#   systemd/install.sh --uninstall  stop and disable the service, remove the binary, the unit and
#                                   the docs; keep /etc/switchyard, /var/lib/switchyard and the user
#   systemd/install.sh --purge      --uninstall, and also remove /etc/switchyard,
#                                   /var/lib/switchyard and the switchyard user
#
# Environment: SWITCHYARD_BIN=path   the binary to install (default target/release/switchyard)
#
# What it installs:
#   /usr/local/bin/switchyard                      root:root 0755
#   /etc/systemd/system/switchyard.service         root:root 0644
#   /etc/switchyard/                               root:switchyard 0750
#   /etc/switchyard/gateway.yaml                   root:switchyard 0640  (from conf/gateway.yaml, if absent)
#   /etc/switchyard/switchyard.env                 root:root 0600        (from the template, if absent)
#   /var/lib/switchyard/                           switchyard:switchyard 0750
#   /usr/local/share/doc/switchyard/               README.md, OPERATIONS.md
# and the system user and group `switchyard` (no login shell, home /var/lib/switchyard).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

USER_NAME=switchyard
BIN_DST=/usr/local/bin/switchyard
UNIT_DST=/etc/systemd/system/switchyard.service
CONF_DIR=/etc/switchyard
STATE_DIR=/var/lib/switchyard
DOC_DIR=/usr/local/share/doc/switchyard

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mode=install
case "${1:-}" in
    "") ;;
    --uninstall) mode=uninstall ;;
    --purge) mode=purge ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac
[ "$#" -le 1 ] || die "one argument at most (try --help)"
[ "$(id -u)" -eq 0 ] || die "run as root (e.g. sudo $0${*:+ $*})"

# systemctl only works when systemd is the running init.
if [ -d /run/systemd/system ]; then HAVE_SYSTEMD=1; else HAVE_SYSTEMD=0; fi

if [ "$mode" != install ]; then
    if [ "$HAVE_SYSTEMD" = 1 ] && [ -e "$UNIT_DST" ]; then
        say "systemctl disable --now switchyard"
        systemctl disable --now switchyard.service || true
    fi
    rm -f "$UNIT_DST" "$BIN_DST"
    rm -rf "$DOC_DIR"
    if [ "$HAVE_SYSTEMD" = 1 ]; then systemctl daemon-reload; fi
    say "removed $BIN_DST, $UNIT_DST, $DOC_DIR"
    if [ "$mode" = purge ]; then
        rm -rf "$CONF_DIR" "$STATE_DIR"
        if getent passwd "$USER_NAME" >/dev/null; then userdel "$USER_NAME"; fi
        if getent group "$USER_NAME" >/dev/null; then groupdel "$USER_NAME"; fi
        say "purged $CONF_DIR, $STATE_DIR and the $USER_NAME user"
    else
        say "kept $CONF_DIR, $STATE_DIR and the $USER_NAME user (--purge removes them)"
    fi
    exit 0
fi

BIN="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"
[ -x "$BIN" ] || die "$BIN not found: build it first with 'cargo build --release' (or set SWITCHYARD_BIN)"
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run on this machine"

# The user and group.
if ! getent group "$USER_NAME" >/dev/null; then
    say "creating group $USER_NAME"
    groupadd --system "$USER_NAME"
fi
if ! getent passwd "$USER_NAME" >/dev/null; then
    say "creating user $USER_NAME"
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$nologin" --comment "Switchyard AI gateway" "$USER_NAME"
fi

# The binary: copied next to the target, then renamed over it, so a running gateway keeps its
# old (unlinked) file and a crash mid-copy never leaves half a binary.
say "installing $BIN_DST ($("$BIN" --version))"
install -d -m 0755 "$(dirname "$BIN_DST")"
install -m 0755 -o root -g root "$BIN" "$BIN_DST.new"
mv -f "$BIN_DST.new" "$BIN_DST"

say "installing $UNIT_DST"
install -m 0644 -o root -g root "$ROOT/systemd/switchyard.service" "$UNIT_DST"

install -d -m 0750 -o root -g "$USER_NAME" "$CONF_DIR"
if [ -e "$CONF_DIR/gateway.yaml" ]; then
    say "keeping existing $CONF_DIR/gateway.yaml"
else
    say "installing $CONF_DIR/gateway.yaml (from conf/gateway.yaml: edit it)"
    install -m 0640 -o root -g "$USER_NAME" "$ROOT/conf/gateway.yaml" "$CONF_DIR/gateway.yaml"
fi
if [ -e "$CONF_DIR/switchyard.env" ]; then
    say "keeping existing $CONF_DIR/switchyard.env (ensuring root:root 0600)"
    chown root:root "$CONF_DIR/switchyard.env"
    chmod 0600 "$CONF_DIR/switchyard.env"
else
    say "installing $CONF_DIR/switchyard.env (root:root 0600: put the secrets there)"
    install -m 0600 -o root -g root "$ROOT/systemd/switchyard.env.example" "$CONF_DIR/switchyard.env"
fi

install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"

install -d -m 0755 "$DOC_DIR"
for doc in README.md docs/OPERATIONS.md; do
    if [ -f "$ROOT/$doc" ]; then install -m 0644 "$ROOT/$doc" "$DOC_DIR/"; fi
done

if [ "$HAVE_SYSTEMD" = 1 ]; then
    say "systemctl daemon-reload"
    systemctl daemon-reload
    if systemctl is-active --quiet switchyard.service; then
        say "switchyard is running the previous binary: 'systemctl restart switchyard' to switch"
    fi
else
    say "systemd is not the running init here: skipped daemon-reload"
fi

cat <<EOF

Installed. Next:
  1. put the secrets in $CONF_DIR/switchyard.env and adjust $CONF_DIR/gateway.yaml
  2. start:   systemctl enable --now switchyard
             (a bad configuration fails ExecStartPre: systemctl status shows why)
  3. watch:   systemctl status switchyard; journalctl -u switchyard -f
EOF
