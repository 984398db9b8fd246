#!/usr/bin/env bash
# Installs what genre-bot needs on a fresh Debian machine: system packages (ffmpeg, plus the
# test-only tools given as arguments: `make test` asks for espeak-ng, sox and redis-server), then
# the .venv with the project and its Python packages.
# Idempotent: each step is skipped when already done. Works as root (a bare container) and as a
# user with sudo. tests/test_setup_script.py runs it against a stand-in apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

tools=(ffmpeg "$@")
# Debian's postgresql (the label store's tests) keeps its programs off PATH, in
# /usr/lib/postgresql/<version>/bin: it is there when an initdb is (tests/fleet_servers.py looks
# in the same places).
postgresql_lib=${POSTGRESQL_LIB:-/usr/lib/postgresql}
have() {
    case "$1" in
        postgresql) command -v initdb >/dev/null 2>&1 ||
                    compgen -G "$postgresql_lib/*/bin/initdb" >/dev/null ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
need=()
for tool in "${tools[@]}"; do
    have "$tool" || need+=("$tool")
done
# Debian's own python3 leaves venv's pip bootstrap out; python3-venv brings it.
if [ ! -x .venv/bin/python ] && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${need[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: cannot install ${need[*]}: there is no apt-get here." \
             "Install them with your system's package manager, then run this again." >&2
        exit 1
    fi
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup: installing ${need[*]} needs root, and there is no sudo here." \
                 "Run 'apt-get install ${need[*]}' as root, then run this again." >&2
            exit 1
        fi
        as_root=(sudo)
    fi
    # `env` carries the variable through sudo, and works the same without it.
    if ! { "${as_root[@]}" apt-get update -qq &&
           "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
               apt-get install -y -qq "${need[@]}" >/dev/null; }; then
        echo "setup: apt-get could not install ${need[*]}." \
             "Install them by hand (Debian: apt-get install ${need[*]}), then run this again." >&2
        exit 1
    fi
    for tool in "${tools[@]}"; do
        have "$tool" || {
            echo "setup: '$tool' is still not on PATH after apt-get install." >&2; exit 1; }
    done
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "setup: Python 3.11 or newer is needed (found $("$python" --version 2>&1))." >&2; exit 1; }
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
