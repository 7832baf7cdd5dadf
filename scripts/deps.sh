#!/usr/bin/env bash
# Ensure the system packages Ferrobank's local stack and build need.
#
#   scripts/deps.sh [PKG...]
#
# Default set: redis-server pgbouncer libclang-dev pkg-config (Debian package names).
# Quiet and fast (one dpkg-query) when everything is present. Missing packages are
# installed with apt-get (as root, or through `sudo -n`); otherwise it prints what to
# install and exits 1. Packages installed here that ship a daemon (redis-server,
# pgbouncer) get their distro service stopped and disabled: the stack runs its own
# instances on its own ports.
#
# Exit codes: 0 all present (or installed), 1 something is missing and could not be
# installed, 2 usage error.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_PREFIX=deps
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

DEFAULT_PKGS=(redis-server pgbouncer libclang-dev pkg-config)

# Packages that are also satisfied by a command on PATH (e.g. a source build).
pkg_command() {
    case $1 in
        redis-server) echo redis-server ;;
        redis-tools) echo redis-cli ;;
        pgbouncer) echo pgbouncer ;;
        pkg-config) echo pkg-config ;;
        shellcheck) echo shellcheck ;;
        postgresql-client* | postgresql-15) echo psql ;;
        *) echo "" ;;
    esac
}

# Packages that ship a daemon our stack replaces with its own instance.
pkg_service() {
    case $1 in
        redis-server) echo redis-server ;;
        pgbouncer) echo pgbouncer ;;
        *) echo "" ;;
    esac
}

for a in "$@"; do
    case $a in
        -h | --help)
            awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}" >&2
            exit 0
            ;;
        -*) usage_error "unknown option $a" ;;
    esac
done

pkgs=("$@")
((${#pkgs[@]})) || pkgs=("${DEFAULT_PKGS[@]}")

# ---------------------------------------------------------------------------
# Which are missing?
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    declare -A installed=()
    while read -r name status; do
        [[ $status == installed ]] && installed[$name]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${pkgs[@]}" 2>/dev/null || true)
    for p in "${pkgs[@]}"; do
        [[ -n ${installed[$p]:-} ]] && continue
        c=$(pkg_command "$p")
        [[ -n $c ]] && command -v "$c" >/dev/null 2>&1 && continue
        missing+=("$p")
    done
else
    # Not Debian: we can only check the commands we know about.
    unknown=()
    for p in "${pkgs[@]}"; do
        c=$(pkg_command "$p")
        if [[ -n $c ]]; then
            command -v "$c" >/dev/null 2>&1 || missing+=("$p")
        elif [[ $p == libclang-dev ]]; then
            if ! { ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; } &&
                ! compgen -G '/usr/lib*/libclang*.so*' >/dev/null &&
                ! compgen -G '/usr/lib*/llvm*/lib/libclang*.so*' >/dev/null; then
                missing+=("$p")
            fi
        else
            unknown+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        log "not a Debian/apt system; missing (Debian package names): ${missing[*]}"
        log "install the equivalents with your package manager (redis-server: Redis >= 6; libclang-dev: libclang + clang headers, needed by the pg_query crate), then re-run"
        exit 1
    fi
    ((${#unknown[@]})) && warn "not a Debian/apt system; cannot check: ${unknown[*]}"
    exit 0
fi

((${#missing[@]})) || exit 0

# ---------------------------------------------------------------------------
# Install.
if ! command -v apt-get >/dev/null 2>&1; then
    die "missing packages: ${missing[*]} (dpkg present but no apt-get; install them by hand)"
fi

SUDO=()
if ! is_root; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "missing packages: ${missing[*]}"
        log "install them with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        exit 1
    fi
fi

# Which of the missing ones ship a service we want kept off? Remember whether each
# service existed before so we only touch services this run brought in.
declare -A svc_was_present=()
for p in "${missing[@]}"; do
    s=$(pkg_service "$p")
    [[ -n $s ]] || continue
    if [[ -e /etc/init.d/$s || -e /lib/systemd/system/$s.service ]]; then
        svc_was_present[$s]=1
    else
        svc_was_present[$s]=0
    fi
done

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

log "installing: ${missing[*]}"
start=$(now)
aptlog=$(mktemp "${TMPDIR:-/tmp}/ferrobank-deps.XXXXXX")
trap 'rm -f "$aptlog"' EXIT
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >"$aptlog" 2>&1; then
    warn "apt-get update failed; trying the install with the current package lists"
    tail -n 10 "$aptlog" | sed 's/^/deps: | /' >&2
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" >"$aptlog" 2>&1; then
    die "apt-get install ${missing[*]} failed" "$aptlog"
fi
log "installed ${missing[*]} in $(elapsed "$start") s"

# ---------------------------------------------------------------------------
# Keep the distro's own instances out of the way (Debian auto-starts redis-server on
# 6379 and pgbouncer on 6432 under systemd). Harmless without systemd.
stop_distro_service() {
    local s=$1
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        "${SUDO[@]}" systemctl disable --now "$s" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$s ]]; then
        if "${SUDO[@]}" /etc/init.d/"$s" status >/dev/null 2>&1; then
            "${SUDO[@]}" /etc/init.d/"$s" stop >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            "${SUDO[@]}" update-rc.d "$s" disable >/dev/null 2>&1 || true
        fi
    fi
    # Belt and braces: a pid file the package's own instance left behind.
    local pidfile
    for pidfile in "/run/$s/$s.pid" "/run/${s%-server}/$s.pid" "/var/run/postgresql/$s.pid"; do
        if [[ -r $pidfile ]]; then
            local pid
            pid=$(cat "$pidfile" 2>/dev/null || true)
            if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                "${SUDO[@]}" kill "$pid" 2>/dev/null || true
            fi
        fi
    done
}

for s in "${!svc_was_present[@]}"; do
    if [[ ${svc_was_present[$s]} == 0 ]]; then
        stop_distro_service "$s"
        log "distro service $s stopped and disabled (the stack runs its own instance)"
    fi
done
exit 0
