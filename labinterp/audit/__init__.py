"""Batch audit of whole record sets: tables, summary and an HTML report in one folder.

`audit(paths, output_dir)` is the public entry point; the default engine works in bounded
memory on one machine, `engine="dask"` runs the same per-patient code on a Dask cluster.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from labinterp.audit.core import audit

__all__ = ["audit"]


class _CallableModule(types.ModuleType):
    """Importing this package makes Python bind `labinterp.audit` to the package itself,
    hiding the lazily exported function of the same name; calling the package calls it."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
