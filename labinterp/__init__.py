"""labinterp: read lab exports, flag Mg-linked patterns, write handouts and audits.

The public API is small and stable; heavy modules (WeasyPrint, Dask) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "audit": "labinterp.audit",
    "ctcae_grade": "labinterp.grading",
    "interpret": "labinterp.interpret",
    "read": "labinterp.reading",
    "render_handout": "labinterp.handout",
}

__all__ = sorted(_API)

# glibc malloc and Arrow's pool keep freed memory for the next arrays instead of faulting in
# fresh pages (see labinterp.memory; LABINTERP_MALLOC=default turns both off)
from labinterp.memory import tune_allocator as _tune_allocator  # noqa: E402
from labinterp.memory import use_retaining_arrow_pool as _use_retaining_arrow_pool  # noqa: E402

_tune_allocator()
_use_retaining_arrow_pool()

# `interpret` and `audit` share their names with the modules that define them. Importing
# a submodule binds the module over the package attribute, so these two are bound eagerly
# (after their modules load) and stay functions. Neither loads WeasyPrint.
from labinterp.audit import audit as audit  # noqa: E402
from labinterp.interpret import interpret as interpret  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labinterp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
