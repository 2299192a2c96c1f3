# Sourced by tests/run.sh: PostgreSQL and Redis on loopback for the governance store and
# shared rate-limit tests. Installs the Debian packages when missing (apt_install from
# run.sh), starts throw-away instances in temporary directories on free ports, exports
#   SWITCHYARD_TEST_POSTGRES=postgres://switchyard@127.0.0.1:PORT/switchyard_test
#   SWITCHYARD_TEST_REDIS=redis://127.0.0.1:PORT/
# and stops them when the script exits. When either cannot be had it says so loudly and the
# tests that need it skip (with their own loud message).

SERVICES_DIRS=()
SERVICES_STOP=()

services_cleanup() {
    local cmd
    for cmd in "${SERVICES_STOP[@]}"; do eval "$cmd" >/dev/null 2>&1 || true; done
    local d
    for d in "${SERVICES_DIRS[@]}"; do rm -rf "$d"; done
}

free_tcp_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

loud_skip() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! SKIPPING %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}

start_postgres() {
    if [ -n "${SWITCHYARD_TEST_POSTGRES:-}" ]; then return 0; fi
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    if [ -z "$bin" ]; then
        apt_install postgresql || true
        bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    fi
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        loud_skip "PostgreSQL store tests: no PostgreSQL server could be installed"
        return 0
    fi
    # PostgreSQL refuses to run as root: use the package's `postgres` user then.
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            loud_skip "PostgreSQL store tests: running as root and there is no postgres user"
            return 0
        fi
        as=(runuser -u postgres --)
    fi
    local dir port
    dir="$(mktemp -d)"
    SERVICES_DIRS+=("$dir")
    [ "${#as[@]}" -gt 0 ] && chown postgres "$dir"
    port="$(free_tcp_port)"
    if ! "${as[@]}" "$bin/initdb" -D "$dir/data" -U switchyard --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        loud_skip "PostgreSQL store tests: initdb failed"
        return 0
    fi
    if ! "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null; then
        cat "$dir/server.log" >&2
        loud_skip "PostgreSQL store tests: the server did not start"
        return 0
    fi
    SERVICES_STOP+=("${as[*]} $bin/pg_ctl -D $dir/data -m immediate stop")
    "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U switchyard switchyard_test
    export SWITCHYARD_TEST_POSTGRES="postgres://switchyard@127.0.0.1:$port/switchyard_test"
    log "PostgreSQL on 127.0.0.1:$port (data in $dir)"
}

start_redis() {
    if [ -n "${SWITCHYARD_TEST_REDIS:-}" ]; then return 0; fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server || true
    if ! command -v redis-server >/dev/null 2>&1; then
        loud_skip "Redis rate-limit tests: redis-server could not be installed"
        return 0
    fi
    local dir port
    dir="$(mktemp -d)"
    SERVICES_DIRS+=("$dir")
    port="$(free_tcp_port)"
    if ! redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"; then
        loud_skip "Redis rate-limit tests: redis-server did not start"
        return 0
    fi
    for _ in $(seq 50); do
        [ -s "$dir/redis.pid" ] && break
        sleep 0.1
    done
    SERVICES_STOP+=("kill \$(cat $dir/redis.pid)")
    export SWITCHYARD_TEST_REDIS="redis://127.0.0.1:$port/"
    log "Redis on 127.0.0.1:$port"
}
