"""`labinterp audit`: placeholder until its issue lands (reports itself as unavailable)."""

from __future__ import annotations

import argparse

from labinterp.errors import LabinterpError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="(not available yet)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LabinterpError("'labinterp audit' is not available in this build yet.")
