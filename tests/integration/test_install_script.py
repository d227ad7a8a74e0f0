"""install-worker.sh as a volunteer runs it: from the wheel beside it into a fresh virtualenv,
and, when there is nothing to install from, a one-line refusal before anything is made."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.fakes.token_check import token_check_server
from tests.integration.support import ROOT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "install-worker.sh"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# Nothing listens there: a release URL that cannot be reached.
CLOSED_PORT = _closed_port()
# pip builds nothing from a wheel but fetches every dependency: minutes on a slow index.
INSTALL_TIMEOUT = 900


def run_script(
    script: Path, home: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``sh SCRIPT ARGS`` for a volunteer whose HOME is ``home``; no service manager called."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XWCH_", "VIRTUAL_ENV", "XDG_"))
    }
    env.update(
        HOME=str(home),
        XWCH_NO_SYSTEMCTL="1",
        PYTHON=shutil.which("python3") or sys.executable,
    )
    return subprocess.run(
        ["sh", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--coordinator", "http://c:8750", "--token", "t"],
            "install-worker.sh: nothing to install from: XWCH is on no package index; run this "
            "script from a clone of XWCH or beside an xwch wheel (make dist), or give --from "
            "CLONE|WHEEL|URL",
        ),
        (
            ["--from", "nowhere.whl", "--coordinator", "http://c:8750", "--token", "t"],
            "install-worker.sh: --from nowhere.whl: no such file or folder",
        ),
        (
            [
                "--from",
                f"http://127.0.0.1:{CLOSED_PORT}/xwch.whl",
                "--coordinator",
                "c",
                "--token",
                "t",
            ],
            f"install-worker.sh: cannot reach http://127.0.0.1:{CLOSED_PORT}/xwch.whl: ",
        ),
        (
            ["--from", str(ROOT), "--token", "t"],
            "install-worker.sh: no coordinator: give --coordinator URL (or set XWCH_COORDINATOR)",
        ),
    ],
)
def test_nothing_to_install_from_is_one_line_and_exit_2_before_anything_is_made(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """The script alone (no clone, no wheel beside it), a --from that does not exist, a URL
    nothing answers at, or a missing coordinator: one line saying what to do, exit 2, no
    virtualenv made."""
    alone = tmp_path / "download"
    alone.mkdir()
    script = Path(shutil.copy(SCRIPT, alone))
    home = tmp_path / "home"
    home.mkdir()
    done = run_script(script, home, *args)
    assert done.returncode == 2
    # The line as given (of an unreachable URL, its start: the system words the reason).
    assert done.stderr.startswith(said) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""
    assert list(home.iterdir()) == []


def test_installs_the_wheel_beside_it_into_its_own_virtualenv(tmp_path: Path) -> None:
    """From `make dist`'s layout (the script beside XWCH's wheel), the script says what it
    installs from, makes ~/.xwch/venv with a working xwch-worker, writes worker.toml with the
    flags given; --uninstall removes it all."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=INSTALL_TIMEOUT,
    )
    [wheel] = dist.glob("xwch-*.whl")
    script = Path(shutil.copy(SCRIPT, dist))
    home = tmp_path / "home"
    home.mkdir()
    # install checks the coordinator and the token before writing anything.
    with token_check_server({"w-token": "worker"}) as coordinator:
        done = run_script(
            script,
            home,
            "--coordinator",
            coordinator,
            "--token",
            "w-token",
            "--idle-minutes",
            "5",
            timeout=INSTALL_TIMEOUT,
        )
    assert done.returncode == 0, done.stderr
    venv = home / ".xwch" / "venv"
    assert f"install-worker.sh: installing XWCH from {wheel} into {venv}" in done.stderr
    config = tomllib.loads((home / ".xwch" / "worker.toml").read_text())
    assert config == {
        "coordinator": coordinator,
        "token": "w-token",
        "idle_minutes": 5,
    }
    version = subprocess.run(
        [str(venv / "bin" / "xwch-worker"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.stdout.startswith("xwch-worker (XWCH) "), version.stderr
    gone = run_script(script, home, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not venv.exists()
    assert not (home / ".xwch" / "worker.toml").exists()
