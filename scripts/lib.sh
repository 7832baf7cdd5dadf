# shellcheck shell=bash
# Shared helpers for scripts/stack.sh and scripts/deps.sh. Source it; don't run it.
#
# Every message goes to stderr with a "<prog>:" prefix (LOG_PREFIX, default "stack").

: "${LOG_PREFIX:=stack}"

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }

warn() { printf '%s: warning: %s\n' "$LOG_PREFIX" "$*" >&2; }

# die MESSAGE [LOGFILE...]: print the message, the tail of each readable log file, exit 1.
die() {
    local msg=$1
    shift
    printf '%s: error: %s\n' "$LOG_PREFIX" "$msg" >&2
    local f
    for f in "$@"; do
        if [[ -r $f && -s $f ]]; then
            printf '%s: ---- last lines of %s ----\n' "$LOG_PREFIX" "$f" >&2
            tail -n 20 "$f" | sed "s/^/$LOG_PREFIX: | /" >&2
        fi
    done
    exit 1
}

usage_error() {
    printf '%s: usage error: %s\n' "$LOG_PREFIX" "$*" >&2
    exit 2
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Seconds since the epoch with fractions (for timing messages).
now() { date +%s.%N; }

# elapsed START: seconds since START, one decimal.
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# poll_until TIMEOUT_SECONDS CMD...: run CMD every 0.1 s until it succeeds; false on timeout.
poll_until() {
    local timeout=$1
    shift
    local deadline
    deadline=$(($(date +%s) + timeout))
    while :; do
        if "$@"; then
            return 0
        fi
        if (($(date +%s) >= deadline)); then
            return 1
        fi
        sleep 0.1
    done
}
