"""``xwch-worker install`` and ``uninstall``: the worker set up to start with the volunteer's session.

``install`` writes ``$XWCH_HOME/worker.toml`` (the coordinator, the token, the preferences;
readable by its owner only) and, for the current user:

- on Linux, a systemd user unit ``~/.config/systemd/user/xwch-worker.service``, then enables and
  starts it with ``systemctl --user``;
- on macOS, a launchd agent ``~/Library/LaunchAgents/ch.xwch.worker.plist``, then loads it;
- elsewhere, nothing more, and says how to start the worker by hand.

The service manager is not called when ``XWCH_NO_SYSTEMCTL=1`` (the tests), when ``systemctl``
is missing or when there is no user bus to reach (a container, a bare ssh session): the
volunteer is told the command to run instead. ``uninstall`` stops the service and removes the
unit, the configuration and the worker's data.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xwch.config import read_toml, write_toml

from .files import remove_tree

UNIT_NAME = "xwch-worker.service"
LAUNCHD_LABEL = "ch.xwch.worker"
CONFIG_NAME = "worker.toml"
NO_SERVICE_MANAGER = "XWCH_NO_SYSTEMCTL"

# Runs a command, returns its exit status.
Runner = Callable[[Sequence[str]], int]


def run_command(command: Sequence[str]) -> int:
    try:
        return subprocess.run(list(command), check=False).returncode
    except OSError:
        return 127


@dataclass(frozen=True)
class Setup:
    """Where and for whom the worker is installed."""

    home: Path  # the user's home folder
    xwch_home: Path
    platform: str  # sys.platform
    python: str  # the interpreter the service runs
    environ: Mapping[str, str]

    @classmethod
    def current(cls, xwch_home: Path) -> Setup:
        return cls(Path.home(), xwch_home, sys.platform, sys.executable, os.environ)

    @property
    def config(self) -> Path:
        return self.xwch_home / CONFIG_NAME

    @property
    def unit_path(self) -> Path:
        config_home = self.environ.get("XDG_CONFIG_HOME") or str(self.home / ".config")
        return Path(config_home) / "systemd" / "user" / UNIT_NAME

    @property
    def plist_path(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"

    @property
    def log_path(self) -> Path:
        return self.xwch_home / "logs" / "worker.log"

    def command(self) -> list[str]:
        """What the service runs: every setting comes from worker.toml."""
        return [self.python, "-m", "xwch.worker", "run"]

    def service_manager_usable(self, which: Callable[[str], str | None] = shutil.which) -> bool:
        if self.environ.get(NO_SERVICE_MANAGER) == "1":
            return False
        if self.platform == "darwin":
            return which("launchctl") is not None
        if which("systemctl") is None:
            return False
        runtime = self.environ.get("XDG_RUNTIME_DIR")
        bus = self.environ.get("DBUS_SESSION_BUS_ADDRESS")
        return bool(bus) or (runtime is not None and Path(runtime, "bus").exists())


def systemd_unit(setup: Setup) -> str:
    command = " ".join(_systemd_quote(arg) for arg in setup.command())
    home = _systemd_quote(f"XWCH_HOME={setup.xwch_home}")
    return f"""[Unit]
Description=XWCH volunteer worker

[Service]
Type=simple
Environment={home}
ExecStart={command}
Restart=on-failure
RestartSec=30
# 2: a broken worker.toml, 3: the coordinator refused the token; restarting will not mend them.
RestartPreventExitStatus=2 3
# The worker takes what the machine does not use.
Nice=19
IOSchedulingClass=idle
# SIGTERM to the worker alone: it gives its attempts back, then the rest is killed.
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""


def launchd_plist(setup: Setup) -> bytes:
    return plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": setup.command(),
            "EnvironmentVariables": {"XWCH_HOME": str(setup.xwch_home)},
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ProcessType": "Background",
            "LowPriorityIO": True,
            "Nice": 19,
            "StandardOutPath": str(setup.log_path),
            "StandardErrorPath": str(setup.log_path),
        }
    )


def _systemd_quote(arg: str) -> str:
    if arg and not any(c in arg for c in " \t\"\\'$%;"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


def install(setup: Setup, values: Mapping[str, object], run: Runner = run_command) -> list[str]:
    """Write the configuration and the service; the lines to tell the volunteer."""
    config = {**read_toml(setup.config), **values}
    write_toml(setup.config, config)
    said = [f"wrote {setup.config}"]
    if setup.platform.startswith("linux"):
        said += _install_systemd(setup, run)
    elif setup.platform == "darwin":
        said += _install_launchd(setup, run)
    else:
        said.append(
            f"no service manager support on {setup.platform}: start the worker with "
            f"`{' '.join(setup.command())}` (with XWCH_HOME={setup.xwch_home}), for instance "
            "from your session's start-up programs"
        )
    return said


def _install_systemd(setup: Setup, run: Runner) -> list[str]:
    setup.unit_path.parent.mkdir(parents=True, exist_ok=True)
    setup.unit_path.write_text(systemd_unit(setup))
    said = [f"wrote {setup.unit_path}"]
    commands = [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT_NAME],
    ]
    said += _run_or_tell(setup, run, commands, "to start it now and with each session")
    said.append(
        "to keep it running while you are logged out too: "
        f"loginctl enable-linger {setup.environ.get('USER') or '$USER'}"
    )
    return said


def _install_launchd(setup: Setup, run: Runner) -> list[str]:
    setup.plist_path.parent.mkdir(parents=True, exist_ok=True)
    setup.log_path.parent.mkdir(parents=True, exist_ok=True)
    setup.plist_path.write_bytes(launchd_plist(setup))
    said = [f"wrote {setup.plist_path}"]
    commands = [["launchctl", "load", "-w", str(setup.plist_path)]]
    return said + _run_or_tell(setup, run, commands, "to start it now and with each session")


def _run_or_tell(
    setup: Setup, run: Runner, commands: Sequence[Sequence[str]], purpose: str
) -> list[str]:
    shown = " && ".join(" ".join(c) for c in commands)
    if not setup.service_manager_usable():
        return [f"{purpose}, run: {shown}"]
    for command in commands:
        if run(command) != 0:
            return [f"`{' '.join(command)}` failed; {purpose}, run: {shown}"]
    return ["the worker is running, and will start with each session"]


def uninstall(setup: Setup, run: Runner = run_command) -> list[str]:
    """Stop the service and remove the unit, the configuration and the worker's data."""
    said: list[str] = []
    usable = setup.service_manager_usable()
    if setup.unit_path.exists():
        if usable:
            run(["systemctl", "--user", "disable", "--now", UNIT_NAME])
        setup.unit_path.unlink()
        said.append(f"removed {setup.unit_path}")
        if usable:
            run(["systemctl", "--user", "daemon-reload"])
        else:
            said.append(f"if the worker still runs, stop it: systemctl --user stop {UNIT_NAME}")
    if setup.plist_path.exists():
        if usable:
            run(["launchctl", "unload", "-w", str(setup.plist_path)])
        setup.plist_path.unlink()
        said.append(f"removed {setup.plist_path}")
    data = read_toml(setup.config).get("data")
    folders = [Path(data) if isinstance(data, str) else setup.xwch_home / "worker"]
    for folder in folders:
        if folder.exists():
            remove_tree(folder)
            said.append(f"removed {folder}")
    for path in (setup.config, setup.log_path):
        if path.exists():
            path.unlink()
            said.append(f"removed {path}")
    for folder in (setup.log_path.parent, setup.xwch_home):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (the client's configuration, say), or absent
    if not said:
        said.append("nothing to remove: the worker is not installed here")
    return said
