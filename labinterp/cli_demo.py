"""`labinterp demo`: placeholder until the reader lands."""

from __future__ import annotations

import argparse

from labinterp.errors import LabinterpError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="(not available yet)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LabinterpError("'labinterp demo' is not available in this build yet.")
