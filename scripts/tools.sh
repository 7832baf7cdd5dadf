#!/usr/bin/env bash
# Ensures the dev tools that come from package registries and prints where they are.
#
# Usage:
#   scripts/tools.sh buf           installs buf (PyPI `buf-bin`) and prints the buf binary's path
#   scripts/tools.sh python-grpc   installs grpcio + grpcio-tools + reflection + health checking
#                                  and prints the path of the venv's python
#
# Everything lives in one venv at "$REPO/.tools/venv" (git-ignored). The first run
# creates it (installing python3-venv from Debian when we are root and it is missing);
# later runs only check a stamp and the tool itself, print the path, and say nothing else.
# Only the path goes to stdout, so callers can write `$(scripts/tools.sh buf) lint`.
#
# Versions are pinned so lint results do not change under us; override with
# FERROBANK_BUF_VERSION / FERROBANK_GRPC_VERSION.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"
VENV="$TOOLS/venv"

BUF_VERSION="${FERROBANK_BUF_VERSION:-1.75.0}"
GRPC_VERSION="${FERROBANK_GRPC_VERSION:-1.85.1}"

die() {
    echo "tools.sh: $*" >&2
    exit 1
}

# Prints the command's output to stderr only if it fails, so a normal run stays quiet.
quietly() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# Installs Debian's python3 + venv + pip, only where that is possible without asking.
install_python_from_debian() {
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "python3 with the venv module is required; install it (Debian: apt-get install -y python3 python3-venv python3-pip) and run again"
    fi
    echo "tools.sh: installing python3, python3-venv and python3-pip from Debian" >&2
    quietly env DEBIAN_FRONTEND=noninteractive apt-get update \
        || die "apt-get update failed"
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip \
        || die "apt-get install python3 python3-venv python3-pip failed"
}

# Succeeds when this interpreter can create a venv with pip in it.
python_can_venv() {
    "$1" -c 'import venv, ensurepip' >/dev/null 2>&1
}

# Finds a python3 that can make a venv: PATH's first, then Debian's.
find_python() {
    local candidate
    for candidate in "$(command -v python3 || true)" /usr/bin/python3; do
        if [[ -n "$candidate" && -x "$candidate" ]] && python_can_venv "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Creates the venv unless a working one is already there.
ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        return 0
    fi
    local python
    if ! python="$(find_python)"; then
        install_python_from_debian
        python="$(find_python)" || die "python3 still cannot create a venv after installing python3-venv"
    fi
    # A venv whose interpreter went away (e.g. a removed pyenv version) is rebuilt whole.
    rm -rf "$VENV"
    mkdir -p "$TOOLS"
    quietly "$python" -m venv "$VENV" || die "could not create a venv at $VENV with $python"
}

# Installs the pip requirements unless the stamp says exactly these are installed and
# the check function still passes. Usage: ensure_packages NAME CHECK_FN REQUIREMENT...
ensure_packages() {
    local name="$1" check="$2"
    shift 2
    local stamp="$VENV/.ferrobank-$name" want="$*"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$check" >/dev/null 2>&1; then
        return 0
    fi
    echo "tools.sh: installing $want into $VENV" >&2
    quietly "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
        || die "pip install $want failed"
    "$check" >/dev/null 2>&1 || die "$name was installed but does not work ($check failed)"
    printf '%s' "$want" >"$stamp"
}

check_buf() {
    "$VENV/bin/buf" --version
}

check_python_grpc() {
    "$VENV/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_reflection.v1alpha.reflection, grpc_health.v1.health'
}

# Prints the header comment above as help.
usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    local tool="${1:-}"
    case "$tool" in
        buf | python-grpc) ;;
        -h | --help | help)
            usage
            return 0
            ;;
        *)
            usage >&2
            die "unknown tool '${tool}'; expected one of: buf, python-grpc"
            ;;
    esac

    mkdir -p "$TOOLS"
    # Parallel callers (make -j) must not build the same venv at once.
    exec 9>"$TOOLS/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock 9
    fi

    ensure_venv
    case "$tool" in
        buf)
            ensure_packages buf check_buf "buf-bin==$BUF_VERSION"
            echo "$VENV/bin/buf"
            ;;
        python-grpc)
            ensure_packages python-grpc check_python_grpc \
                "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" \
                "grpcio-reflection==$GRPC_VERSION" "grpcio-health-checking==$GRPC_VERSION"
            echo "$VENV/bin/python"
            ;;
    esac
}

main "$@"
