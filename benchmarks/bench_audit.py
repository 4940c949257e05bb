"""Audit speed and memory on a generated export.

    python benchmarks/bench_audit.py [--rows 1000000] [--keep DIR]

Prints the audit's wall time as a ratio to a bare `pyarrow.csv.read_csv` of the same file
in the same run (target <= 8 at one million rows) and the audit's peak RSS, measured in a
child process (target <= 2 GiB at one million rows, <= 4 GiB at ten million).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.make_export import generate  # noqa: E402

_CHILD = """
import json, resource, sys, time
sys.stderr = open(__import__("os").devnull, "w")
import labinterp
t = time.perf_counter()
summary = labinterp.audit(sys.argv[1], sys.argv[2])
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "peak_rss": peak, "rows_in": summary["rows_in"],
                  "patients": summary["patients"], "timings": summary["timings_s"]}))
"""

_READ = """
import sys, time
import pyarrow.csv as pacsv
t = time.perf_counter()
pacsv.read_csv(sys.argv[1])
print(time.perf_counter() - t)
"""


def _run_sampled(code: str, *args: str) -> tuple[str, int]:
    """Run a child; return its last output line and the peak summed RSS of its process tree
    (the audit's worker processes included), sampled every 0.1 s."""
    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"audit failed with exit code {proc.returncode}")
    return out.strip().splitlines()[-1], peak


def _run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the export and audit here and keep them")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        export = base / f"export-{args.rows}.csv"
        t = time.perf_counter()
        generate(export, args.rows, seed=args.seed)
        gen_s = time.perf_counter() - t
        size = export.stat().st_size
        read_s = min(float(_run(_READ, str(export))) for _ in range(2))
        line, tree_peak = _run_sampled(_CHILD, str(export), str(base / "audit"))
        audit = json.loads(line)
        single = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        limit = 2 if args.rows <= 1_000_000 else 4
        # The audit and its worker processes together: the sampled sum, or the largest
        # single process if sampling missed a short peak.
        peak = max(tree_peak, audit["peak_rss"], single)
        ratio = audit["wall_s"] / read_s
        gib = peak / 2**30
        print(f"rows: {args.rows:,} ({size / 2**20:,.0f} MiB, generated in {gen_s:.1f} s)")
        print(f"pyarrow.csv.read_csv: {read_s:.2f} s")
        print(f"audit: {audit['wall_s']:.2f} s  stages: {audit['timings']}")
        print(f"ratio audit / bare read: {ratio:.1f}  (target <= 8 at 1M rows)")
        print(f"peak RSS of the audit (all its processes): {gib:.2f} GiB  (target <= {limit} GiB)")
        print(f"  largest single process: {max(audit['peak_rss'], single) / 2**30:.2f} GiB")
        print(f"patients: {audit['patients']:,}")
        ok = gib <= limit and (args.rows > 1_000_000 or ratio <= 8)
        print("within targets" if ok else "OUTSIDE targets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
