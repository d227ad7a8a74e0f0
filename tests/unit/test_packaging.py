"""pyproject.toml's package list: a wheel built from it holds every package of the tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_tree_goes_into_the_wheel() -> None:
    """Each folder with an __init__.py under the four installed roots is a listed package: a
    package left out installs from a clone in editable mode, and is missing from the wheel
    (install-worker.sh installs the wheel)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder: package for package, folder in setup["package-dir"].items()}
    found = set()
    for folder, package in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setup["packages"])
