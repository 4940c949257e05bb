"""Printable patient handouts: HTML from jinja2 templates, tagged PDF from WeasyPrint.

`render_handout` renders one patient; `render_batch` renders every patient of a file into a
folder using all cores. Wording lives in templates/handout/<lang>/ so clinicians can edit it.
"""

from __future__ import annotations

import logging

# WeasyPrint logs the URLs it could not load and other document details; those can hold
# text from the export (patient data), so none of it may reach the application's log. Set
# before WeasyPrint is first imported: it parses its own stylesheets (and logs) on import.
for _name in ("weasyprint", "weasyprint.progress"):
    logging.getLogger(_name).propagate = False

from labinterp.handout.api import handout_name, render_batch, render_handout  # noqa: E402

__all__ = ["handout_name", "render_batch", "render_handout"]
