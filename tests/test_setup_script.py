"""scripts/setup.sh, as a new user's machine runs it: ffmpeg and the test tools missing from PATH.

The real script runs in a scratch copy of the project whose .venv is already stamped, so only the
system-package step is exercised. PATH holds nothing but stand-ins: ``apt-get`` and ``sudo`` log
each call (with DEBIAN_FRONTEND) and ``apt-get install`` "installs" a tool by putting a stub of
that name on PATH; ``id`` answers the uid the test chooses. Nothing touches the network or the
real system.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "setup.sh"
BASH = shutil.which("bash") or "/bin/bash"
TOOLS = ["ffmpeg", "espeak-ng", "sox", "redis-server"]  # `make test` asks for these (+ postgresql)

APT_GET = """#!{bash}
echo "apt-get $* [DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}]" >> "$SETUP_LOG"
[ -z "${{APT_FAILS:-}}" ] || exit 100
if [ "$1" = install ]; then
    for arg in "$@"; do
        case "$arg" in -*|install) ;;
            postgresql) {mkdir} -p "$POSTGRESQL_LIB/15/bin"  # Debian's place, off PATH
                        printf '#!{bash}\\n' > "$POSTGRESQL_LIB/15/bin/initdb" ;;
            *) printf '#!{bash}\\n' > "$FAKE_BIN/$arg"
               {chmod} +x "$FAKE_BIN/$arg" ;; esac
    done
fi
"""
SUDO = """#!{bash}
echo "sudo $*" >> "$SETUP_LOG"
exec "$@"
"""
ID = """#!{bash}
echo "$FAKE_UID"
"""


def stand_in(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(body.format(bash=BASH, chmod=shutil.which("chmod") or "/bin/chmod",
                                mkdir=shutil.which("mkdir") or "/bin/mkdir"))
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path):
    """A scratch project with the real setup.sh and a bare PATH; returns run(uid, ...)."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, project / "scripts" / "setup.sh")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    stand_in(venv_bin, "python", "#!{bash}\n")
    (project / ".venv" / ".installed").touch()
    os.utime(project / "pyproject.toml", (0, 0))  # older than the stamp: no pip run
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("dirname", "env"):  # what the script needs besides bash builtins
        (fake_bin / tool).symlink_to(shutil.which(tool))
    stand_in(fake_bin, "id", ID)
    log = tmp_path / "calls.log"

    def run(uid: int, *, apt: bool = True, sudo: bool = True, apt_fails: bool = False,
            tools: tuple[str, ...] = tuple(TOOLS[1:])):
        if apt:
            stand_in(fake_bin, "apt-get", APT_GET)
        if sudo:
            stand_in(fake_bin, "sudo", SUDO)
        env = {"PATH": str(fake_bin), "FAKE_BIN": str(fake_bin), "FAKE_UID": str(uid),
               "SETUP_LOG": str(log), "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "POSTGRESQL_LIB": str(tmp_path / "usr-lib-postgresql")}
        if apt_fails:
            env["APT_FAILS"] = "1"
        done = subprocess.run(
            [BASH, str(project / "scripts" / "setup.sh"), *tools],
            env=env, capture_output=True, text=True, timeout=60,
        )
        calls = log.read_text().splitlines() if log.exists() else []
        return done, calls

    run.fake_bin = fake_bin
    run.postgresql_lib = tmp_path / "usr-lib-postgresql"
    return run


def test_as_root_installs_the_missing_tools_with_apt_get(machine) -> None:
    done, calls = machine(0)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "apt-get update -qq [DEBIAN_FRONTEND=]",
        "apt-get install -y -qq ffmpeg espeak-ng sox redis-server [DEBIAN_FRONTEND=noninteractive]",
    ]
    assert "installing system packages: ffmpeg espeak-ng sox redis-server" in done.stdout
    assert all((machine.fake_bin / tool).is_file() for tool in TOOLS)


def test_as_a_user_goes_through_sudo(machine) -> None:
    done, calls = machine(1000)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "sudo apt-get update -qq",
        "apt-get update -qq [DEBIAN_FRONTEND=]",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng sox "
        "redis-server",
        "apt-get install -y -qq ffmpeg espeak-ng sox redis-server [DEBIAN_FRONTEND=noninteractive]",
    ]


def test_a_second_run_installs_nothing(machine) -> None:
    machine(0)
    done, calls = machine(0)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2  # only the first run's two calls
    assert "installing" not in done.stdout


def test_without_apt_get_it_says_what_to_install(machine) -> None:
    done, calls = machine(0, apt=False)
    assert done.returncode == 1
    assert calls == []
    assert done.stderr.strip() == (
        "setup: cannot install ffmpeg espeak-ng sox redis-server: there is no apt-get here. "
        "Install them with your system's package manager, then run this again."
    )


def test_a_user_without_sudo_is_told_to_install_as_root(machine) -> None:
    done, calls = machine(1000, sudo=False)
    assert done.returncode == 1
    assert calls == []
    assert "needs root, and there is no sudo here" in done.stderr
    assert "apt-get install ffmpeg espeak-ng sox redis-server" in done.stderr


def test_a_failing_apt_get_is_reported(machine) -> None:
    done, calls = machine(0, apt_fails=True)
    assert done.returncode == 1
    assert calls == ["apt-get update -qq [DEBIAN_FRONTEND=]"]
    assert "apt-get could not install ffmpeg espeak-ng sox redis-server" in done.stderr


def test_postgresql_is_installed_once_and_found_off_path(machine) -> None:
    # `make test` asks for postgresql too: Debian puts its programs in a versioned folder that
    # is not on PATH, so a second run must find them there and install nothing.
    done, calls = machine(0, tools=("postgresql",))
    assert done.returncode == 0, done.stderr
    assert calls[-1] == "apt-get install -y -qq ffmpeg postgresql [DEBIAN_FRONTEND=noninteractive]"
    assert (machine.postgresql_lib / "15" / "bin" / "initdb").is_file()
    again, calls_again = machine(0, tools=("postgresql",))
    assert again.returncode == 0, again.stderr
    assert calls_again == calls and "installing" not in again.stdout
