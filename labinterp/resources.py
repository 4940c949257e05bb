"""Locate the bundled data folders (`reference_ranges/`, `templates/`).

In an installed wheel they sit inside the package (hatch force-include); in a source
checkout they sit at the project root beside the package. Both are found the same way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from labinterp.errors import ConfigError

_T = TypeVar("_T")


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


def read_reference_toml(name: str, build: Callable[[dict[str, Any]], _T]) -> _T:
    """`build` applied to the TOML file `name` of reference_ranges/; a ConfigError naming
    the file when it cannot be read or lacks what `build` looks for."""
    path = reference_file(name)
    try:
        with path.open("rb") as fh:
            return build(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path.name}: {exc}") from exc
