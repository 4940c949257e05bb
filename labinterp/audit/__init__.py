"""Batch audit of whole record sets: tables, summary and an HTML report in one folder.

`audit(paths, output_dir)` is the public entry point; the default engine works in bounded
memory on one machine, `engine="dask"` runs the same per-patient code on a Dask cluster.
"""

from __future__ import annotations

from labinterp.audit.core import audit

__all__ = ["audit"]
