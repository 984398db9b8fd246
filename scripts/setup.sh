#!/usr/bin/env bash
# Installs what genre-bot needs on a fresh Debian machine: system packages (ffmpeg, plus the
# test-only tools given as arguments), then the .venv with the project and its Python packages.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: cannot install ${need[*]}: no apt-get here. Install them with your package manager." >&2
        exit 1
    fi
    if ! { $sudo apt-get update -qq && $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
        echo "setup: apt-get could not install ${need[*]}. Install them by hand (Debian: apt-get install ${need[*]})." >&2
        exit 1
    fi
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "setup: Python 3.11 or newer is needed (found $("$python" --version 2>&1))." >&2; exit 1; }
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
