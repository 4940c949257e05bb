"""Printable patient handouts: HTML from jinja2 templates, tagged PDF from WeasyPrint.

`render_handout` renders one patient; `render_batch` renders every patient of a file into a
folder using all cores. Wording lives in templates/handout/<lang>/ so clinicians can edit it.
"""

from __future__ import annotations

from labinterp.handout.api import handout_name, render_batch, render_handout

__all__ = ["handout_name", "render_batch", "render_handout"]
