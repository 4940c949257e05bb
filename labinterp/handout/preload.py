"""Imported once by the batch's forkserver, so every worker forked from it starts warm.

Workers are recycled (see `MAX_TASKS_PER_CHILD`), so whatever a worker does before its first
handout is paid again and again: the cut-down fonts (~0.35 s of fontTools) and the lazily
imported parts of WeasyPrint are made here, in the server, and inherited by each fork.
Only plain Python objects are made here: no FontConfiguration (its temporary font folder is
removed when an owner exits, which must not happen under a sibling's feet).
"""

from __future__ import annotations

import weasyprint.draw
import weasyprint.layout
import weasyprint.pdf
import weasyprint.svg  # noqa: F401

from labinterp.handout import fonts

for _name in fonts.FILES:
    fonts.font_file(_name)
