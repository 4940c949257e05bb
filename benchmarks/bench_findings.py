"""Findings speed: one million result rows from read to findings table.

    python benchmarks/bench_findings.py [--rows 1000000] [--keep FILE]

Generates an export with benchmarks/make_export.py, then times, in the same run, a bare
`pyarrow.csv.read_csv` of the file and `labinterp.read` + `interpret_results` on it, and
prints the ratio (target <= 8). The read and the engine are also shown separately, and
the engine on one thread (its partitions of patients run one after the other, as in the
audit's worker processes). It also checks the planted patterns against the generator's
manifest and prints any difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.csv as pacsv  # noqa: E402

from benchmarks.make_export import generate  # noqa: E402
from labinterp.interpret import interpret_results  # noqa: E402
from labinterp.reading import read  # noqa: E402


def best_of(n: int, fn):  # type: ignore[no-untyped-def]
    best, value = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the generated export here and keep it")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "export.csv"
        manifest = generate(path, args.rows, seed=0)
        bare, _ = best_of(args.repeat, lambda: pacsv.read_csv(path))
        t_read, result = best_of(args.repeat, lambda: read([path]))
        t_engine, findings = best_of(args.repeat, lambda: interpret_results(result.results))
        t_one, _ = best_of(args.repeat, lambda: interpret_results(result.results, threads=1))
        total = t_read + t_engine
        print(f"rows: {args.rows:,}  results: {len(result.results):,}  findings: {len(findings):,}")
        print(f"pyarrow.csv.read_csv: {bare:.2f} s")
        print(f"labinterp.read:       {t_read:.2f} s  ({t_read / bare:.1f} x)")
        print(f"interpret_results:    {t_engine:.2f} s  ({t_engine / bare:.1f} x)")
        print(f"  on one thread:      {t_one:.2f} s  ({t_one / bare:.1f} x)")
        print(f"read -> findings:     {total:.2f} s  ratio {total / bare:.1f} (target <= 8)")
        fired = findings[findings["status"] == "fired"]
        for rule, tiers in manifest.fired.items():
            for tier, expected in tiers.items():
                got = fired[(fired["rule_id"] == rule) & (fired["tier"] == tier)]
                n = got["patient_id"].nunique()
                mark = "" if n == expected else "   <- differs"
                print(f"planted {rule}/{tier}: expected {expected} patients, got {n}{mark}")
        for guard, expected in manifest.guards.items():
            n = fired.loc[fired["rule_id"] == guard, "patient_id"].nunique()
            mark = "" if n == expected else "   <- differs"
            print(f"planted {guard}: expected {expected} patients, got {n}{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
