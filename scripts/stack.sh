#!/usr/bin/env bash
# Ferrobank local stack: Postgres primary + streaming replica + Redis, all on 127.0.0.1.
#
#   scripts/stack.sh start DIR [--base-port N] [--fast]
#   scripts/stack.sh stop DIR
#   scripts/stack.sh destroy DIR
#   scripts/stack.sh status DIR
#   scripts/stack.sh stop-replica DIR
#   scripts/stack.sh start-replica DIR
#   scripts/stack.sh psql DIR [DB] [PSQL-ARGS...]
#
# Ports: primary N (default 54320), replica N+1, Redis N+2, N+3 reserved for PgBouncer.
# --fast (throwaway test stacks): fsync, synchronous_commit and full_page_writes off,
# WAL writer every 10 ms.
# The base port and --fast are fixed when DIR is first created (kept in DIR/stack.conf).
# As root, Postgres runs as the OS user `postgres` if it exists, else `ferrobank-pg`
# (created on demand); FERROBANK_PG_OS_USER overrides that when DIR is created.
# `start` is idempotent: it reuses whatever already runs in DIR and starts the rest.
# After `start`, `source DIR/env` exports the connection URLs (see write_env below).
#
# Layout of DIR:
#   stack.conf            base port, fast mode, OS user that runs Postgres
#   env                   sourceable exports (mode 600)
#   secrets/              generated passwords + the replicator's pgpass (mode 700/600)
#   run/                  unix sockets of both clusters
#   pg-primary/ pg-replica/           data directories
#   pg-primary.log pg-replica.log     server logs
#   redis/                redis.conf, pid, log
#
# Messages go to stderr prefixed "stack:"; `status` prints its table on stdout.
# Exit codes: 0 ok; 1 failure (with the tail of the relevant log); 2 usage error;
# 3 `status` found a component down.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_PREFIX=stack
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

DEFAULT_BASE_PORT=54320
SERVICES=(identity ledger payments)
REPLICA_APP_NAME=ferrobank_replica
REPLICA_SLOT=ferrobank_replica

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}" >&2
}

# ---------------------------------------------------------------------------
# Postgres binaries.
find_pg_bindir() {
    local d=""
    if [[ -n ${PG_BINDIR:-} && -x ${PG_BINDIR}/initdb ]]; then
        echo "$PG_BINDIR"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
    fi
    if [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]]; then
        echo "$d"
        return
    fi
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    local v
    for v in $(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n -r); do
        if [[ -x /usr/lib/postgresql/$v/bin/initdb ]]; then
            echo "/usr/lib/postgresql/$v/bin"
            return
        fi
    done
    die "PostgreSQL server binaries not found (no pg_config, no /usr/lib/postgresql/*/bin/initdb); install postgresql-15"
}

# ---------------------------------------------------------------------------
# Arguments and stack configuration.
CMD=${1:-}
[[ -n $CMD ]] || {
    usage
    exit 2
}
shift
case $CMD in
    -h | --help | help)
        usage
        exit 0
        ;;
esac
[[ $# -ge 1 ]] || usage_error "$CMD needs the stack directory: scripts/stack.sh $CMD DIR"
DIR_ARG=$1
shift
[[ -n $DIR_ARG ]] || usage_error "empty stack directory"

OPT_BASE_PORT=""
OPT_FAST=0
PSQL_ARGS=()
if [[ $CMD == psql ]]; then
    PSQL_ARGS=("$@")
else
    while (($#)); do
        case $1 in
            --base-port)
                [[ $# -ge 2 ]] || usage_error "--base-port needs a value"
                OPT_BASE_PORT=$2
                shift 2
                ;;
            --base-port=*)
                OPT_BASE_PORT=${1#*=}
                shift
                ;;
            --fast)
                OPT_FAST=1
                shift
                ;;
            *) usage_error "unknown argument '$1' for $CMD" ;;
        esac
    done
    if [[ -n $OPT_BASE_PORT ]]; then
        if ! [[ $OPT_BASE_PORT =~ ^[0-9]+$ ]] || ((OPT_BASE_PORT < 1024 || OPT_BASE_PORT > 65532)); then
            usage_error "--base-port must be a number in 1024..65532, got '$OPT_BASE_PORT'"
        fi
    fi
    if [[ $CMD != start && ( -n $OPT_BASE_PORT || $OPT_FAST == 1 ) ]]; then
        usage_error "--base-port/--fast only apply to start"
    fi
fi

case $CMD in
    start | stop | destroy | status | stop-replica | start-replica | psql) ;;
    *) usage_error "unknown subcommand '$CMD' (start|stop|destroy|status|stop-replica|start-replica|psql)" ;;
esac

# Absolute path without requiring DIR to exist.
abspath() {
    local p=$1
    [[ $p == /* ]] || p="$PWD/$p"
    # Normalise ./ and trailing slashes (no symlink resolution needed).
    p=$(printf '%s\n' "$p" | sed -e 's#/\./#/#g' -e 's#/\.$##' -e 's#//*#/#g' -e 's#\(.\)/$#\1#')
    echo "$p"
}
DIR=$(abspath "$DIR_ARG")
[[ $DIR != / ]] || usage_error "refusing to use / as the stack directory"

STACK_CONF=$DIR/stack.conf
SECRETS=$DIR/secrets
RUN=$DIR/run
PRIMARY_DATA=$DIR/pg-primary
REPLICA_DATA=$DIR/pg-replica
PRIMARY_LOG=$DIR/pg-primary.log
REPLICA_LOG=$DIR/pg-replica.log
REDIS_DIR=$DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
PASSWORDS=$SECRETS/passwords
PGPASS_REPL=$SECRETS/replicator.pgpass
ENV_FILE=$DIR/env

BASE_PORT=""
FAST=0
PG_OS_USER=""

load_stack_conf() {
    [[ -r $STACK_CONF ]] || return 1
    local k v
    while IFS='=' read -r k v; do
        case $k in
            BASE_PORT) BASE_PORT=$v ;;
            FAST) FAST=$v ;;
            PG_OS_USER) PG_OS_USER=$v ;;
        esac
    done <"$STACK_CONF"
    [[ $BASE_PORT =~ ^[0-9]+$ ]] || die "$STACK_CONF has no valid BASE_PORT"
    set_ports
}

set_ports() {
    PRIMARY_PORT=$BASE_PORT
    REPLICA_PORT=$((BASE_PORT + 1))
    REDIS_PORT=$((BASE_PORT + 2))
    PGBOUNCER_PORT=$((BASE_PORT + 3))
}

# ---------------------------------------------------------------------------
# Running things as the Postgres OS user (Postgres refuses to run as root).
choose_pg_os_user() {
    if ! is_root; then
        id -un
        return
    fi
    local want=${FERROBANK_PG_OS_USER:-}
    if [[ -z $want ]]; then
        if id postgres >/dev/null 2>&1; then
            echo postgres
            return
        fi
        want=ferrobank-pg
    fi
    if ! id "$want" >/dev/null 2>&1; then
        [[ $want == ferrobank-pg ]] || die "FERROBANK_PG_OS_USER=$want: no such user"
        log "creating system user ferrobank-pg to run Postgres"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin ferrobank-pg >&2 ||
            die "useradd ferrobank-pg failed"
    fi
    [[ $want != root ]] || die "Postgres cannot run as root; FERROBANK_PG_OS_USER must name another user"
    echo "$want"
}

# as_pg CMD...: run CMD as the Postgres OS user, from DIR, with a harmless HOME.
as_pg() {
    if is_root && [[ $PG_OS_USER != root ]]; then
        (cd "$DIR" && HOME=$DIR runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

# chown_pg PATH...: hand PATHs to the Postgres OS user (no-op when not root).
chown_pg() {
    if is_root; then
        chown "$PG_OS_USER:" "$@"
    fi
}

# The Postgres user must be able to reach DIR: add o+x to any parent that blocks it.
ensure_traversable() {
    is_root || return 0
    if runuser -u "$PG_OS_USER" -- test -x "$DIR" 2>/dev/null; then
        return 0
    fi
    local fixed=()
    # Walk from / down so each test sees its parents already fixed.
    local parts rest=${DIR#/} cur=""
    IFS=/ read -r -a parts <<<"$rest"
    for part in "${parts[@]}"; do
        cur="$cur/$part"
        if ! runuser -u "$PG_OS_USER" -- test -x "$cur" 2>/dev/null; then
            chmod o+x "$cur"
            fixed+=("$cur")
        fi
    done
    log "gave others search (o+x) permission on ${fixed[*]} so $PG_OS_USER can reach $DIR"
    runuser -u "$PG_OS_USER" -- test -x "$DIR" || die "$PG_OS_USER still cannot reach $DIR"
}

# ---------------------------------------------------------------------------
# Secrets.
gen_password() {
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex 16
    else
        od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
    fi
}

declare -A PW=()
PW_CHANGED=0
load_or_create_passwords() {
    local roles=(ferrobank_admin replicator "${SERVICES[@]}")
    local k v changed=0
    if [[ -r $PASSWORDS ]]; then
        while IFS='=' read -r k v; do
            [[ -n $k ]] && PW[$k]=$v
        done <"$PASSWORDS"
    fi
    for k in "${roles[@]}"; do
        if [[ -z ${PW[$k]:-} ]]; then
            PW[$k]=$(gen_password)
            changed=1
        fi
    done
    if ((changed)); then
        local tmp
        tmp=$(umask 077 && mktemp "$SECRETS/.passwords.XXXXXX")
        for k in "${roles[@]}"; do
            printf '%s=%s\n' "$k" "${PW[$k]}"
        done >"$tmp"
        chmod 600 "$tmp"
        mv -f "$tmp" "$PASSWORDS"
        PW_CHANGED=1
    fi
    # The replicator's pgpass, read by pg_basebackup and the replica's walreceiver.
    local want="127.0.0.1:$PRIMARY_PORT:*:replicator:${PW[replicator]}"
    if [[ ! -r $PGPASS_REPL ]] || [[ $(cat "$PGPASS_REPL") != "$want" ]]; then
        (umask 077 && printf '%s\n' "$want" >"$PGPASS_REPL")
        chmod 600 "$PGPASS_REPL"
        chown_pg "$PGPASS_REPL"
    fi
}

# ---------------------------------------------------------------------------
# Postgres helpers.
sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# psql_sock PORT DB [psql args...]: superuser psql over the unix socket, quiet, strict.
psql_sock() {
    local port=$1 db=$2
    shift 2
    PGAPPNAME=ferrobank-stack "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$port" -U postgres -d "$db" "$@"
}

postmaster_pid() { # DATADIR: the pid recorded in postmaster.pid, if any
    local pid
    [[ -f $1/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

pg_running() { # DATADIR
    local pid
    pid=$(postmaster_pid "$1") || return 1
    # A killed postmaster that init has not reaped yet is a zombie: not running.
    pid_gone "$pid" && return 1
    as_pg "$PG_BINDIR/pg_ctl" status -D "$1" >/dev/null 2>&1
}

# A postmaster killed with SIGKILL stays a zombie until init reaps it, and its lock
# files then look live to the next postmaster. Wait for the reaping (normally instant).
wait_for_dead_postmaster() { # DATADIR NAME
    local pid
    pid=$(postmaster_pid "$1") || return 0
    [[ -e /proc/$pid ]] || return 0
    pid_gone "$pid" || return 0
    log "waiting for the previous $2 postmaster (pid $pid, killed) to be reaped"
    poll_until 60 bash -c "[[ ! -e /proc/$pid ]]" ||
        die "pid $pid of the previous $2 postmaster is still a zombie; cannot start $2"
}

pg_ready() { # PORT
    "$PG_BINDIR/pg_isready" -q -h "$RUN" -p "$1" -U postgres -d postgres
}

pg_start() { # DATADIR LOG NAME PORT
    local data=$1 logf=$2 name=$3 port=$4
    if port_in_use "$port"; then
        die "port $port (for $name) is already in use by another process; pick another --base-port or stop it"
    fi
    [[ -e $logf ]] || { touch "$logf" && chmod 640 "$logf" && chown_pg "$logf"; }
    wait_for_dead_postmaster "$data" "$name"
    if ! as_pg "$PG_BINDIR/pg_ctl" start -w -t 120 -D "$data" -l "$logf" -s >/dev/null 2>&1 9>&-; then
        die "$name did not start" "$logf"
    fi
}

pg_stop() { # DATADIR NAME
    local data=$1 name=$2
    if pg_running "$data"; then
        as_pg "$PG_BINDIR/pg_ctl" stop -w -t 120 -m fast -D "$data" -s >/dev/null 2>&1 ||
            die "could not stop $name ($data)"
        log "$name stopped"
    fi
}

# Settings shared by primary and replica (the replica gets a copy via pg_basebackup).
write_common_conf() { # DATADIR
    local f=$1/ferrobank.conf
    {
        echo "# Written by scripts/stack.sh; regenerated on every start."
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = $(sql_quote "$RUN")"
        echo "unix_socket_permissions = 0700"
        echo "max_connections = 200"
        echo "shared_buffers = 256MB"
        echo "work_mem = 16MB"
        echo "maintenance_work_mem = 128MB"
        echo "effective_cache_size = 4GB"
        echo "shared_preload_libraries = 'pg_stat_statements,auto_explain'"
        echo "pg_stat_statements.track = all"
        echo "auto_explain.log_min_duration = '500ms'"
        echo "auto_explain.log_analyze = on"
        echo "auto_explain.log_format = json"
        echo "wal_level = replica"
        echo "max_wal_senders = 10"
        echo "max_replication_slots = 10"
        echo "hot_standby = on"
        echo "hot_standby_feedback = on"
        echo "wal_receiver_status_interval = 1s"
        echo "wal_retrieve_retry_interval = 1s"
        echo "logging_collector = off"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        echo "log_min_messages = warning"
        echo "log_lock_waits = on"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
        if [[ $FAST == 1 ]]; then
            echo "# --fast: throwaway stack, crash safety off"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            # With commits not flushed, WAL reaches the replica when the WAL writer
            # flushes it: every 10 ms, not the default 200 ms, so read-your-writes
            # tests see the replica catch up promptly.
            echo "wal_writer_delay = 10ms"
        fi
    } >"$f.tmp"
    mv -f "$f.tmp" "$f"
    chmod 600 "$f"
    chown_pg "$f"
}

write_node_conf() { # DATADIR PORT
    local f=$1/ferrobank-node.conf
    printf '# Written by scripts/stack.sh: per-node settings.\nport = %s\n' "$2" >"$f"
    chmod 600 "$f"
    chown_pg "$f"
}

write_hba() { # DATADIR
    cat >"$1/pg_hba.conf" <<'EOF'
# Written by scripts/stack.sh.
# TYPE  DATABASE     USER        ADDRESS        METHOD
local   all          all                        trust
local   replication  all                        trust
host    replication  replicator  127.0.0.1/32   scram-sha-256
host    all          all         127.0.0.1/32   scram-sha-256
EOF
    chmod 600 "$1/pg_hba.conf"
    chown_pg "$1/pg_hba.conf"
}

init_primary() {
    log "initdb primary in $PRIMARY_DATA"
    mkdir -p "$PRIMARY_DATA"
    chmod 700 "$PRIMARY_DATA"
    chown_pg "$PRIMARY_DATA"
    local initlog=$DIR/initdb.log
    : >"$initlog"
    chown_pg "$initlog"
    local locale=C.UTF-8
    if ! locale -a 2>/dev/null | grep -qix 'c\.utf-\{0,1\}8'; then
        locale=C
    fi
    local nosync=()
    [[ $FAST == 1 ]] && nosync=(--no-sync)
    if ! as_pg "$PG_BINDIR/initdb" -D "$PRIMARY_DATA" -U postgres -E UTF8 --locale="$locale" \
        --auth-local=trust --auth-host=scram-sha-256 "${nosync[@]}" >"$initlog" 2>&1; then
        die "initdb failed" "$initlog"
    fi
    rm -f "$initlog"
    echo "include 'ferrobank.conf'" >>"$PRIMARY_DATA/postgresql.conf"
    echo "include 'ferrobank-node.conf'" >>"$PRIMARY_DATA/postgresql.conf"
    write_hba "$PRIMARY_DATA"
}

# Roles, databases, extensions. Idempotent; passwords come in on stdin, never argv,
# and pg_stat_statements is told not to record these utility statements.
bootstrap_primary() {
    local s sql
    sql=$(
        echo "SET pg_stat_statements.track_utility = off;"
        echo "SET log_statement = 'none';"
        printf '\\set pw_admin %s\n' "$(sql_quote "${PW[ferrobank_admin]}")"
        printf '\\set pw_repl %s\n' "$(sql_quote "${PW[replicator]}")"
        echo "SELECT 'CREATE ROLE ferrobank_admin' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ferrobank_admin') \\gexec"
        echo "ALTER ROLE ferrobank_admin WITH SUPERUSER CREATEDB CREATEROLE LOGIN PASSWORD :'pw_admin';"
        echo "SELECT 'CREATE ROLE replicator' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'replicator') \\gexec"
        echo "ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw_repl';"
        for s in "${SERVICES[@]}"; do
            printf '\\set pw %s\n' "$(sql_quote "${PW[$s]}")"
            echo "SELECT 'CREATE ROLE $s' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$s') \\gexec"
            echo "ALTER ROLE $s WITH LOGIN NOSUPERUSER PASSWORD :'pw';"
            echo "SELECT 'CREATE DATABASE $s OWNER $s' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$s') \\gexec"
        done
        echo "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
        for s in "${SERVICES[@]}"; do
            echo "\\c $s"
            echo "SET pg_stat_statements.track_utility = off;"
            echo "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"
        done
    )
    if ! psql_sock "$PRIMARY_PORT" postgres -f - <<<"$sql" >"$DIR/bootstrap.log" 2>&1; then
        die "bootstrapping roles and databases failed" "$DIR/bootstrap.log" "$PRIMARY_LOG"
    fi
    rm -f "$DIR/bootstrap.log"
    touch "$PRIMARY_DATA/.ferrobank-bootstrapped"
    chown_pg "$PRIMARY_DATA/.ferrobank-bootstrapped"
}

ensure_primary() {
    local fresh=0
    if [[ ! -f $PRIMARY_DATA/PG_VERSION ]]; then
        if [[ -d $PRIMARY_DATA ]] && [[ -n $(ls -A "$PRIMARY_DATA" 2>/dev/null) ]]; then
            die "$PRIMARY_DATA exists but is not a Postgres data directory; remove it (scripts/stack.sh destroy $DIR_ARG)"
        fi
        init_primary
        fresh=1
    fi
    if pg_running "$PRIMARY_DATA"; then
        log "primary already running on 127.0.0.1:$PRIMARY_PORT"
    else
        write_common_conf "$PRIMARY_DATA"
        write_node_conf "$PRIMARY_DATA" "$PRIMARY_PORT"
        pg_start "$PRIMARY_DATA" "$PRIMARY_LOG" primary "$PRIMARY_PORT"
        log "primary up on 127.0.0.1:$PRIMARY_PORT"
    fi
    poll_until 30 pg_ready "$PRIMARY_PORT" || die "primary does not accept connections" "$PRIMARY_LOG"
    # Also re-run when passwords were (re)generated, e.g. secrets/ was deleted.
    if ((fresh || PW_CHANGED)) || [[ ! -f $PRIMARY_DATA/.ferrobank-bootstrapped ]]; then
        bootstrap_primary
        log "roles ferrobank_admin, replicator, ${SERVICES[*]} and their databases ready"
    fi
}

replica_streaming() {
    [[ $(psql_sock "$PRIMARY_PORT" postgres -At -c \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$REPLICA_APP_NAME' AND state = 'streaming'" 2>/dev/null) == 1 ]]
}

replica_in_recovery() {
    [[ $(psql_sock "$REPLICA_PORT" postgres -At -c "SELECT pg_is_in_recovery()" 2>/dev/null) == t ]]
}

create_replica() {
    log "pg_basebackup replica into $REPLICA_DATA"
    local tmp=$DIR/pg-replica.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    chown_pg "$tmp"
    # A slot left by an earlier, failed attempt would make -C fail.
    psql_sock "$PRIMARY_PORT" postgres -At -c \
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$REPLICA_SLOT' AND NOT active" \
        >/dev/null 2>&1 || true
    local nosync=()
    [[ $FAST == 1 ]] && nosync=(--no-sync)
    local bblog=$DIR/pg-basebackup.log
    : >"$bblog"
    chown_pg "$bblog"
    if ! as_pg env PGPASSFILE="$PGPASS_REPL" "$PG_BINDIR/pg_basebackup" \
        -d "host=127.0.0.1 port=$PRIMARY_PORT user=replicator application_name=$REPLICA_APP_NAME passfile=$PGPASS_REPL" \
        -D "$tmp" -R -X stream -C -S "$REPLICA_SLOT" -c fast -w "${nosync[@]}" >"$bblog" 2>&1; then
        rm -rf "$tmp"
        # A full disk leaves even the log empty; say how much room there was.
        die "pg_basebackup failed ($(df -Ph "$DIR" | awk 'NR == 2 { print $4 " free on " $6 }'))" \
            "$bblog" "$PRIMARY_LOG"
    fi
    rm -f "$bblog"
    # pg_basebackup -R copies the password it found into primary_conninfo; the passfile
    # it also records is enough, so keep the password out of the data directory.
    sed -i -E "s/ password='?[^' ]*'?//" "$tmp/postgresql.auto.conf"
    rm -f "$tmp/.ferrobank-bootstrapped"
    mv "$tmp" "$REPLICA_DATA"
}

ensure_replica() {
    if [[ ! -f $REPLICA_DATA/PG_VERSION ]]; then
        if [[ -d $REPLICA_DATA ]] && [[ -n $(ls -A "$REPLICA_DATA" 2>/dev/null) ]]; then
            die "$REPLICA_DATA exists but is not a Postgres data directory; remove it"
        fi
        rmdir "$REPLICA_DATA" 2>/dev/null || true
        create_replica
    fi
    if pg_running "$REPLICA_DATA"; then
        log "replica already running on 127.0.0.1:$REPLICA_PORT"
    else
        write_common_conf "$REPLICA_DATA"
        write_node_conf "$REPLICA_DATA" "$REPLICA_PORT"
        pg_start "$REPLICA_DATA" "$REPLICA_LOG" replica "$REPLICA_PORT"
        log "replica up on 127.0.0.1:$REPLICA_PORT"
    fi
    poll_until 30 pg_ready "$REPLICA_PORT" || die "replica does not accept connections" "$REPLICA_LOG"
    replica_in_recovery || die "replica on port $REPLICA_PORT is not in recovery (not a standby?)" "$REPLICA_LOG"
    poll_until 60 replica_streaming ||
        die "replica is up but not streaming from the primary" "$REPLICA_LOG" "$PRIMARY_LOG"
    # ... and has replayed everything the primary had written when we got here, so a
    # caller can rely on the replica being current right after start/start-replica.
    local lsn
    lsn=$(psql_sock "$PRIMARY_PORT" postgres -At -c "SELECT pg_current_wal_lsn()") ||
        die "cannot read the primary's WAL position" "$PRIMARY_LOG"
    poll_until 60 replica_caught_up "$lsn" ||
        die "replica did not catch up with the primary (LSN $lsn)" "$REPLICA_LOG"
}

replica_caught_up() { # LSN
    [[ $(psql_sock "$REPLICA_PORT" postgres -At -c \
        "SELECT pg_last_wal_replay_lsn() >= '$1'::pg_lsn" 2>/dev/null) == t ]]
}

# ---------------------------------------------------------------------------
# Redis.
redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_pid() {
    local pid
    [[ -r $REDIS_PID ]] || return 1
    pid=$(cat "$REDIS_PID" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Make sure the pid is still a redis-server (pid reuse after a reboot).
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] || return 1
    echo "$pid"
}

# pid_gone PID: the process has exited (a zombie not yet reaped by init counts as gone).
pid_gone() {
    local state
    state=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    state=${state##*) }
    state=${state%% *}
    [[ -z $state || $state == Z || $state == X ]]
}

redis_ping() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

redis_running() { redis_pid >/dev/null && redis_ping; }

redis_quote() { # a redis.conf string
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

ensure_redis() {
    if redis_running; then
        log "redis already running on 127.0.0.1:$REDIS_PORT"
        return
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (scripts/deps.sh redis-server)"
    mkdir -p "$REDIS_DIR"
    chmod 700 "$REDIS_DIR"
    cat >"$REDIS_CONF" <<EOF
# Written by scripts/stack.sh.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $(redis_quote "$REDIS_PID")
logfile $(redis_quote "$REDIS_LOG")
dir $(redis_quote "$REDIS_DIR")
save ""
appendonly no
databases 16
EOF
    chmod 600 "$REDIS_CONF"
    if port_in_use "$REDIS_PORT"; then
        die "port $REDIS_PORT (for redis) is already in use by another process"
    fi
    rm -f "$REDIS_PID"
    if ! redis-server "$REDIS_CONF" >>"$REDIS_LOG" 2>&1 9>&-; then
        die "redis-server did not start" "$REDIS_LOG"
    fi
    poll_until 20 redis_ping || die "redis does not answer PING on port $REDIS_PORT" "$REDIS_LOG"
    log "redis up on 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
    local pid
    pid=$(redis_pid) || pid=""
    if [[ -z $pid ]] && ! { [[ -n ${REDIS_PORT:-} ]] && redis_ping && [[ -f $REDIS_PID ]]; }; then
        return 0
    fi
    if [[ -n ${REDIS_PORT:-} ]]; then
        redis_cli shutdown nosave >/dev/null 2>&1 || true
    fi
    if [[ -n $pid ]]; then
        if ! poll_until 10 pid_gone "$pid"; then
            kill "$pid" 2>/dev/null || true
            poll_until 10 pid_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$REDIS_PID"
    log "redis stopped"
}

# ---------------------------------------------------------------------------
# DIR/env.
write_env() {
    local h=127.0.0.1 tmp
    tmp=$(umask 077 && mktemp "$DIR/.env.XXXXXX")
    {
        echo "# Ferrobank local stack ($DIR). Generated by scripts/stack.sh; source it."
        echo "export FERROBANK_STACK_DIR=$(printf '%q' "$DIR")"
        echo "export PG_PRIMARY_PORT=$PRIMARY_PORT"
        echo "export PG_REPLICA_PORT=$REPLICA_PORT"
        echo "export PG_SOCKET_DIR=$(printf '%q' "$RUN")"
        echo "export REDIS_PORT=$REDIS_PORT"
        echo "export PGBOUNCER_PORT=$PGBOUNCER_PORT"
        echo "export REDIS_URL=redis://$h:$REDIS_PORT/"
        echo "export DATABASE_URL_ADMIN=postgres://ferrobank_admin:${PW[ferrobank_admin]}@$h:$PRIMARY_PORT/postgres"
        echo "export DATABASE_URL_ADMIN_REPLICA=postgres://ferrobank_admin:${PW[ferrobank_admin]}@$h:$REPLICA_PORT/postgres"
        echo "export DATABASE_URL=postgres://ferrobank_admin:${PW[ferrobank_admin]}@$h:$PRIMARY_PORT/postgres"
        local s up url
        for s in "${SERVICES[@]}"; do
            up=${s^^}
            url=postgres://$s:${PW[$s]}@$h:$PRIMARY_PORT/$s
            echo "export ${up}_DATABASE_URL=$url"
            echo "export ${up}_DATABASE_URL_DIRECT=$url"
        done
        url=postgres://ledger:${PW[ledger]}@$h:$REPLICA_PORT/ledger
        echo "export LEDGER_REPORTING_DATABASE_URL=$url"
        echo "export LEDGER_REPORTING_DATABASE_URL_DIRECT=$url"
    } >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------
# Subcommands.
lock_dir() {
    exec 9>"$DIR/.lock"
    if ! flock -w 300 9; then
        die "another scripts/stack.sh is holding $DIR/.lock"
    fi
}

cmd_start() {
    local t0
    t0=$(now)
    "$SCRIPT_DIR/deps.sh" redis-server
    PG_BINDIR=$(find_pg_bindir)

    if (((${#DIR} + 24) > 107)); then
        die "stack directory path too long for a unix socket path ($DIR); use a shorter one"
    fi
    mkdir -p "$DIR"
    lock_dir
    if load_stack_conf; then
        if [[ -n $OPT_BASE_PORT && $OPT_BASE_PORT != "$BASE_PORT" ]]; then
            die "$DIR was created with --base-port $BASE_PORT; destroy it to change ports"
        fi
        if [[ $OPT_FAST != "$FAST" && $OPT_FAST == 1 ]]; then
            warn "$DIR was created without --fast; keeping its settings"
        fi
        [[ -n $PG_OS_USER ]] || PG_OS_USER=$(choose_pg_os_user)
    else
        BASE_PORT=${OPT_BASE_PORT:-$DEFAULT_BASE_PORT}
        FAST=$OPT_FAST
        PG_OS_USER=$(choose_pg_os_user)
        set_ports
        printf 'BASE_PORT=%s\nFAST=%s\nPG_OS_USER=%s\n' "$BASE_PORT" "$FAST" "$PG_OS_USER" >"$STACK_CONF"
    fi
    if is_root && ! id "$PG_OS_USER" >/dev/null 2>&1; then
        die "OS user $PG_OS_USER (from $STACK_CONF) does not exist"
    fi

    preflight_ports
    ensure_traversable
    mkdir -p "$SECRETS" "$RUN"
    chmod 700 "$SECRETS"
    chmod 755 "$RUN"
    chown_pg "$SECRETS" "$RUN"
    load_or_create_passwords

    ensure_primary
    ensure_replica
    ensure_redis
    write_env
    log "stack ready in $(elapsed "$t0") s: primary :$PRIMARY_PORT, replica :$REPLICA_PORT, redis :$REDIS_PORT; source $ENV_FILE"
}

# Fail before touching anything if a port we are about to use is taken by a stranger.
preflight_ports() {
    local busy=()
    if ! pg_running "$PRIMARY_DATA" && port_in_use "$PRIMARY_PORT"; then busy+=("$PRIMARY_PORT (primary)"); fi
    if ! pg_running "$REPLICA_DATA" && port_in_use "$REPLICA_PORT"; then busy+=("$REPLICA_PORT (replica)"); fi
    if ! redis_running && port_in_use "$REDIS_PORT"; then busy+=("$REDIS_PORT (redis)"); fi
    if ((${#busy[@]})); then
        die "port(s) already in use by another process: ${busy[*]}; pick another --base-port (ports N..N+3 are used) or stop what holds them"
    fi
}

# For commands on an existing stack: read stack.conf or bail out quietly.
need_stack() {
    if ! load_stack_conf; then
        return 1
    fi
    PG_BINDIR=$(find_pg_bindir)
    [[ -n $PG_OS_USER ]] || PG_OS_USER=$(choose_pg_os_user)
    return 0
}

cmd_stop() {
    if [[ ! -d $DIR ]]; then
        log "$DIR does not exist; nothing to stop"
        return 0
    fi
    if ! need_stack; then
        log "$DIR holds no stack (no stack.conf); nothing to stop"
        return 0
    fi
    stop_redis
    pg_stop "$REPLICA_DATA" replica
    pg_stop "$PRIMARY_DATA" primary
}

cmd_destroy() {
    if [[ ! -e $DIR ]]; then
        log "$DIR does not exist"
        return 0
    fi
    if [[ ! -f $STACK_CONF ]] && [[ -n $(ls -A "$DIR" 2>/dev/null) ]]; then
        die "$DIR is not empty and has no stack.conf; refusing to delete it"
    fi
    cmd_stop
    rm -rf "$DIR"
    log "destroyed $DIR"
}

cmd_status() {
    if [[ ! -d $DIR ]] || ! need_stack; then
        printf '%-8s %-5s %s\n' primary down "(no stack in $DIR)" replica down "" redis down ""
        return 3
    fi
    local down=0 extra
    if pg_running "$PRIMARY_DATA" && pg_ready "$PRIMARY_PORT"; then
        printf '%-8s %-5s 127.0.0.1:%s\n' primary up "$PRIMARY_PORT"
    else
        printf '%-8s %-5s 127.0.0.1:%s\n' primary down "$PRIMARY_PORT"
        down=1
    fi
    if pg_running "$REPLICA_DATA" && pg_ready "$REPLICA_PORT"; then
        extra=""
        if replica_in_recovery; then extra+=" in-recovery"; else extra+=" NOT-in-recovery"; fi
        if replica_streaming; then extra+=" streaming"; else extra+=" not-streaming"; fi
        printf '%-8s %-5s 127.0.0.1:%s%s\n' replica up "$REPLICA_PORT" "$extra"
    else
        printf '%-8s %-5s 127.0.0.1:%s\n' replica down "$REPLICA_PORT"
        down=1
    fi
    if redis_running; then
        printf '%-8s %-5s 127.0.0.1:%s\n' redis up "$REDIS_PORT"
    else
        printf '%-8s %-5s 127.0.0.1:%s\n' redis down "$REDIS_PORT"
        down=1
    fi
    ((down == 0)) || return 3
}

cmd_stop_replica() {
    need_stack || die "$DIR holds no stack (no stack.conf)"
    if pg_running "$REPLICA_DATA"; then
        pg_stop "$REPLICA_DATA" replica
    else
        log "replica already stopped"
    fi
}

cmd_start_replica() {
    need_stack || die "$DIR holds no stack (no stack.conf); run: scripts/stack.sh start $DIR_ARG"
    lock_dir
    pg_running "$PRIMARY_DATA" || die "primary is not running; run: scripts/stack.sh start $DIR_ARG"
    load_or_create_passwords
    ensure_replica
    log "replica streaming on 127.0.0.1:$REPLICA_PORT"
}

cmd_psql() {
    need_stack || die "$DIR holds no stack (no stack.conf); run: scripts/stack.sh start $DIR_ARG"
    local db=postgres
    if ((${#PSQL_ARGS[@]})) && [[ ${PSQL_ARGS[0]} != -* ]]; then
        db=${PSQL_ARGS[0]}
        PSQL_ARGS=("${PSQL_ARGS[@]:1}")
    fi
    exec "$PG_BINDIR/psql" -h "$RUN" -p "$PRIMARY_PORT" -U ferrobank_admin -d "$db" "${PSQL_ARGS[@]}"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    stop-replica) cmd_stop_replica ;;
    start-replica) cmd_start_replica ;;
    psql) cmd_psql ;;
esac
