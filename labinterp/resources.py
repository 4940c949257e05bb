"""Locate the bundled data folders (`reference_ranges/`, `templates/`).

In an installed wheel they sit inside the package (hatch force-include); in a source
checkout they sit at the project root beside the package. Both are found the same way.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from labinterp.errors import ConfigError


@cache
def data_dir(name: str) -> Path:
    """Path of the bundled folder `name` ("reference_ranges" or "templates")."""
    packaged = Path(str(resources.files("labinterp"))) / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"the bundled folder '{name}' is missing from this installation.",
        fix="reinstall labinterp (pip install --force-reinstall labinterp).",
    )


def reference_file(name: str) -> Path:
    return data_dir("reference_ranges") / name


def template_dir() -> Path:
    return data_dir("templates")
