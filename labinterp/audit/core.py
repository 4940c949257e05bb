"""The audit driver: read in batches, bucket by patient, process buckets, assemble outputs.

Memory stays bounded on the default engine: the input is read in batches and each batch
is split by a stable hash of the patient id into on-disk bucket files (Arrow IPC); each bucket then
holds every row of its patients and is processed on its own. Nothing is written to the
output folder until every input has been read and interpreted, and each output replaces
its target atomically, so a bad input leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labinterp import memory, schema, staging
from labinterp.atomic import NO_SPACE, write_failed
from labinterp.audit.collapse import (
    SCRATCH_OPTIONS,
    SCRATCH_SUFFIX,
    BucketStats,
    arrow_to_results,
    bucket_of,
    process_bucket,
    read_scratch,
)
from labinterp.audit.progress import Progress
from labinterp.errors import (
    ColumnDetectionError,
    DamagedFileError,
    InputFileError,
    InputNotFoundError,
    LabinterpError,
    OutputError,
)
from labinterp.readers.sniff import display_names, expand_paths

if TYPE_CHECKING:  # the output step loads when it is reached
    from labinterp.audit.outputs import Completion

log = logging.getLogger("labinterp")

ENGINES = ("local", "dask")

# Target size of one bucket, in input bytes; a bucket is read whole into memory. Each
# bucket pays the engine's fixed cost per call (~50 ms), so fewer, larger buckets are
# cheaper: 1M rows (88 MB) in 6 buckets instead of 12, interpret stage 2.27-2.51 ->
# 2.06-2.33 s (8 runs each, alternated), ~130 MB more per worker.
_BUCKET_BYTES = 16 * 1024 * 1024
# Inputs above this many bytes are interpreted by worker processes (in at least one
# bucket per worker); smaller ones in this process.
_WORKERS_ABOVE = 8 * 1024 * 1024
_BATCH_ROWS = 100_000
_PLAIN_BUCKETS_UP_TO = 256 * 1024 * 1024
_COMPRESSED = {".gz", ".bz2", ".xz", ".zip", ".parquet", ".xpt"}


@dataclass
class Ingest:
    """What the reading pass learned (no identifiers)."""

    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    rows_in: int = 0
    rejected: int = 0
    n_buckets: int = 1
    # the source_file label of each part of an input (a workbook's sheets are
    # "book.xlsx[Sheet]") -> the input's position in `files`
    file_of_label: dict[str, int] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _estimate_rows(files: Sequence[Path]) -> int | None:
    """Rough row count for the ETA: total bytes / bytes per line of the first file's head."""
    total = 0
    for f in files:
        size = f.stat().st_size
        if f.suffix.lower() in _COMPRESSED:
            return None
        with f.open("rb") as fh:
            head = fh.read(1 << 20)
        lines = head.count(b"\n")
        if not lines:
            return None
        total += int(size / (len(head) / lines))
    return total


def _stages() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The reader and pattern engine entry points (imported late: they are separate modules)."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import deduplicate, iter_batches

    return iter_batches, deduplicate, interpret_results


class _BucketWriters:
    """Append-only files, one per bucket (Arrow IPC), or one Parquet file per batch for
    Dask (its input partitions)."""

    def __init__(self, folder: Path, n: int, options: pa.ipc.IpcWriteOptions) -> None:
        self.folder = folder
        self.n = n  # 0: a new file per batch (Dask reads them as its input partitions)
        self.options = options
        self.parts = 0
        self.writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self.arrow_schema: pa.Schema | None = None
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None

    def write_soon(self, results: pd.DataFrame) -> None:
        """`write` on a thread of its own, so the next batch is read meanwhile (Arrow's
        take and LZ4 run without the GIL). The previous write is waited for first: one
        batch in flight keeps memory bounded."""
        self._wait()
        self._pending = self._thread.submit(self.write, results)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # a failed write raises here

    def write(self, results: pd.DataFrame) -> None:
        if results.empty:
            return
        table = pa.Table.from_pandas(results, preserve_index=False)
        if self.arrow_schema is None:
            self.arrow_schema = table.schema
        table = table.cast(self.arrow_schema)
        if self.n == 0:
            pq.write_table(table, self.folder / f"part-{self.parts:05d}.parquet")
            self.parts += 1
            return
        if self.n == 1:
            self._writer(0).write_table(table)
            return
        b = bucket_of(results["patient_id"], self.n)
        order = b.argsort(kind="stable")
        sorted_b = b[order]
        table = table.take(pa.array(order))
        starts = sorted_b.searchsorted(range(self.n + 1))
        for i in range(self.n):
            lo, hi = int(starts[i]), int(starts[i + 1])
            if hi > lo:
                self._writer(i).write_table(table.slice(lo, hi - lo))

    def _writer(self, i: int) -> pa.ipc.RecordBatchFileWriter:
        w = self.writers.get(i)
        if w is None:
            assert self.arrow_schema is not None
            w = pa.ipc.new_file(self._path(i), self.arrow_schema, options=self.options)
            self.writers[i] = w
        return w

    def close(self) -> list[Path]:
        try:
            self._wait()
        finally:
            self._thread.shutdown()
            for w in self.writers.values():
                w.close()
        return [self._path(i) for i in sorted(self.writers)]

    def _path(self, i: int) -> Path:
        return self.folder / f"bucket-{i:04d}{SCRATCH_SUFFIX}"


def _ingest(
    files: list[tuple[Path, bool]],
    work: Path,
    n_buckets: int,
    *,
    mapping: str | os.PathLike[str] | None,
    date_format: str | None,
    progress: Progress,
    pool: ProcessPoolExecutor | None = None,
) -> tuple[Ingest, list[Path]]:
    iter_batches, _, _ = _stages()
    from labinterp.reading import times_in_utc

    ingest = Ingest(n_buckets=n_buckets)
    buckets_dir = work / "buckets"
    buckets_dir.mkdir()
    # The bucket files hold every result row (~3x the input as Arrow, ~0.85x with LZ4).
    # Inputs up to _PLAIN_BUCKETS_UP_TO bytes get them uncompressed: LZ4 costs ~5% of a
    # small audit (1M rows, 88 MB: 5.10-5.25 -> 4.74-4.94 s without it, for 267 MB of
    # scratch instead of 75 MB); above that, their size matters more than the time.
    compress = _input_bytes([f for f, _ in files]) > _PLAIN_BUCKETS_UP_TO
    writers = _BucketWriters(
        buckets_dir, n_buckets, SCRATCH_OPTIONS if compress else pa.ipc.IpcWriteOptions()
    )
    rejected_writer: pq.ParquetWriter | None = None
    rejected_schema = pa.Schema.from_pandas(schema.empty(schema.REJECTED), preserve_index=False)
    hashing = ThreadPoolExecutor(max_workers=1)  # each file's digest, made while it is read
    labels = display_names([f for f, _ in files])
    from labinterp.reading import BulkExport

    bulk = BulkExport.of([f for f, _ in files])  # FHIR files: their medication records
    try:
        for (f, from_folder), label in zip(files, labels, strict=True):
            digest = hashing.submit(sha256_of, f)
            info: dict[str, Any] = {"file": label, "bytes": f.stat().st_size}
            rows_before = ingest.rows_in
            batches = iter_batches(
                f,
                mapping=mapping,
                date_format=date_format,
                batch_rows=_BATCH_ROWS,
                label=label,
                executor=pool,  # idle until the buckets are ready: it validates FHIR meanwhile
                bulk=bulk,
            )
            try:
                first = next(batches, None)
            except (ColumnDetectionError, InputFileError) as exc:
                if not from_folder or isinstance(exc, DamagedFileError):
                    raise  # as `read` does: a damaged export is not skipped
                ingest.skipped.append(bulk.skipped(f, label, exc))
                continue
            medication_records = 0
            utc = False  # this input printed times with an offset: they are held in UTC
            warnings: dict[str, None] = {}  # in the order found, each once
            for batch in itertools.chain([] if first is None else [first], batches):
                ingest.file_of_label[batch.files[0].name] = len(ingest.files)
                ingest.rows_in += int(batch.rows_in)
                results = schema.conform(batch.results, schema.RESULTS)
                utc = utc or times_in_utc(results)
                writers.write_soon(results)
                rej = schema.conform(batch.rejected, schema.REJECTED)
                if len(rej):
                    if rejected_writer is None:
                        rejected_writer = pq.ParquetWriter(
                            work / "rejected.parquet", rejected_schema
                        )
                    rejected_writer.write_table(
                        pa.Table.from_pandas(rej, preserve_index=False).cast(rejected_schema)
                    )
                    ingest.rejected += len(rej)
                progress.rows_read(int(batch.rows_in))
                medication_records = max(medication_records, batch.files[0].medication_records)
                warnings.update(dict.fromkeys(batch.files[0].warnings))
            info["sha256"] = digest.result()
            info["rows_in"] = ingest.rows_in - rows_before
            # records of their own naming a medicine the patterns read (FHIR resources, a
            # companion list): every batch counts the file's, or its companion's, whole
            info["medication_records"] = medication_records
            info["warnings"] = list(warnings)
            info["collection_times"] = "utc" if utc else "as_printed"
            ingest.files.append(info)
        _warn_mixed_times(ingest.files)
        if not ingest.files:
            raise InputFileError(
                "none of the files found could be read as a lab export "
                f"({'; '.join(s['file'] + ': ' + s['reason'] for s in ingest.skipped)})",
                fix="name the export files directly, or pass --mapping for their columns.",
            )
    finally:
        hashing.shutdown(cancel_futures=True)
        bucket_files = writers.close()
        if rejected_writer is not None:
            rejected_writer.close()
    return ingest, bucket_files


def _without_outputs(
    files: list[tuple[Path, bool]], out: Path, named: Sequence[str | os.PathLike[str]]
) -> list[tuple[Path, bool]]:
    """The inputs, less the files found in a named folder that lie in the output folder:
    an output folder inside an input folder holds this audit's previous outputs (and its
    scratch data), which are not exports. A file there named directly is read."""
    out = out.resolve()
    asked = {Path(p).resolve() for p in named if Path(p).is_file()}
    kept = [
        (f, in_folder)
        for f, in_folder in files
        if not (in_folder and _inside(f, out) and f.resolve() not in asked)
    ]
    if not kept:
        raise InputNotFoundError(
            "no export files were found in the paths given, once the output folder (-o) "
            "inside them is left out.",
            fix="name the export files, or a folder that contains them.",
        )
    return kept


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def _warn_mixed_times(files: list[dict[str, Any]]) -> None:
    """Say once when some inputs' times are in UTC and others' as printed: the engine pairs
    and orders them as one clock, which they may not be (counts only: no names or values)."""
    utc = sum(f["collection_times"] == "utc" for f in files)
    if 0 < utc < len(files):
        log.warning(
            "the collection times of %d of the %d inputs are in UTC (they were printed with "
            "an offset from UTC), those of the others as printed, without one: results from "
            "the two are paired and ordered as if on one clock, which they may not be. "
            "summary.json says which is which (inputs[].collection_times); export every "
            "file with offsets, or none, to compare them safely.",
            utc,
            len(files),
        )


def _bucket_job(
    path: Path, parts: Path, tag: str, guideline: str, threads: int | None = None
) -> BucketStats:
    """Process one on-disk bucket (runs in a worker process when there are several;
    `guideline` and `threads` are passed on to interpret_results)."""
    _, deduplicate, interpret_results = _stages()
    results = arrow_to_results(read_scratch(path))
    return process_bucket(
        results,
        parts,
        tag,
        deduplicate=deduplicate,
        # the audit's outputs keep the readable evidence only (see collapse.AUDIT_FINDINGS)
        interpret_results=functools.partial(
            interpret_results,
            threads=threads,
            evidence_json=False,
            vitamin_d_guideline=guideline,
        ),
    )


def _warm_up() -> None:
    """Import what a bucket job needs and build the unit registry (grading reads units)."""
    _stages()
    from labinterp import units

    units.aliases()


def _worker_start(parent: int, scratch: str | None) -> None:
    """Worker set-up: Arrow computes on this process's thread only, and the worker exits
    when the audit that started it is gone.

    Each worker interprets one bucket on one core (the engine's own partitions are told
    threads=1), so Arrow's pool of a thread per core would only make the workers contend
    (1M audit: interpret stage ~0.1 s shorter, 25 MB less per worker).
    """
    pa.set_cpu_count(1)
    _watch_parent(parent, scratch)


def _watch_parent(parent: int, scratch: str | None) -> None:
    """Exit this worker once `parent` has died, removing the scratch folder first (see
    staging.watch_parent): an audit killed outright (SIGKILL, the OOM killer) cannot stop
    its workers, and the scratch folder holds patient data no running process owns."""
    staging.watch_parent(parent, scratch)


def _start_method() -> str:
    """How to start the workers: 'fork' when no other Python thread runs, else 'spawn'.

    A forked worker starts with everything this process has loaded, where a spawned one
    spends ~0.8 s of CPU importing pandas, pyarrow and the engine and building the unit
    registry again, on the cores the read needs. A fork is unsafe while another Python
    thread may hold a lock the child would inherit locked (a caller's threads, or ours
    once the read has started), so then workers are spawned. The native threads pyarrow
    starts on import (its jemalloc's and its own) are reset in the child by their libraries'
    fork handlers, as for the handout batch's fork server. Python 3.12 and later cannot
    see those handlers and warn against any fork of a process with native threads, so
    there workers are spawned too, as they are outside Linux (macOS system libraries are
    not safe to use after a fork; Windows has none).
    """
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux"):
        return "spawn"
    return "fork" if threading.active_count() == 1 else "spawn"


@contextlib.contextmanager
def _worker_pool(workers: int, scratch: Path | None = None) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for the buckets (None: work in this process).

    They are started before the input is read, so that a spawned worker's start-up (a
    fresh interpreter importing pandas, pyarrow and the engine) overlaps the reading
    instead of following it; forked workers are warmed up here first and inherit it.
    Should this process die without stopping them, they exit and remove `scratch`.
    """
    if workers <= 1:
        yield None
        return
    method = _start_method()
    if method == "fork":
        _warm_up()
        memory.release_retained()  # else the parent copies each kept page it writes to
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_worker_start,
        initargs=(os.getpid(), None if scratch is None else str(scratch)),
    ) as pool:
        for _ in range(workers):  # each submission starts one more worker
            pool.submit(_warm_up)
        yield pool


def _run_local(
    bucket_files: list[Path],
    parts: Path,
    progress: Progress,
    pool: ProcessPoolExecutor | None,
    guideline: str,
) -> BucketStats:
    total = BucketStats()
    progress.start_stage("interpret", len(bucket_files))
    jobs = [(path, parts, f"{i:04d}", guideline) for i, path in enumerate(bucket_files)]
    if pool is None or len(jobs) <= 1:
        for job in jobs:
            stats = _bucket_job(*job)
            total.add(stats)
            progress.bucket_done(stats.patients)
        return total
    # Buckets are independent; a few worker processes use the machine's cores. Each holds
    # one bucket at a time, so memory is bounded by workers x bucket size.
    # The workers use the cores already: one thread each.
    futures = [pool.submit(_bucket_job, *job, threads=1) for job in jobs]
    try:
        for fut in as_completed(futures):
            stats = fut.result()
            total.add(stats)
            progress.bucket_done(stats.patients)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return total


def _input_bytes(files: Sequence[Path]) -> int:
    """About how many bytes of text the inputs hold (compressed files count five times)."""
    return sum(f.stat().st_size * (5 if f.suffix.lower() in _COMPRESSED else 1) for f in files)


def _n_buckets(files: Sequence[Path]) -> int:
    return max(1, math.ceil(_input_bytes(files) / _BUCKET_BYTES))


_SCRATCH = ".labinterp-audit-"


def _remove_stale_scratch(output_dir: Path) -> None:
    """Remove the scratch folders an audit killed outright (SIGKILL, a crash of the
    machine) left in the output folder: they hold patient data. One whose process still
    runs is another audit's, and stays."""
    staging.remove_stale(output_dir, _SCRATCH)


@contextlib.contextmanager
def _output_folder(output_dir: Path, completion: Completion) -> Iterator[Path]:
    """Create the output folder if needed (removed again if the audit fails before its
    outputs are in place) and a scratch folder inside it, always removed."""
    created = not output_dir.exists()
    if not created and not output_dir.is_dir():
        raise OutputError(f"'{output_dir}' is not a folder.", fix="choose a folder for -o.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder '{output_dir}' ({exc.strerror}).",
            fix="choose a folder you can write to.",
        ) from exc
    if not output_dir.is_dir():
        raise OutputError(f"'{output_dir}' is not a folder.", fix="choose a folder for -o.")
    _remove_stale_scratch(output_dir)
    try:  # the pid in the name tells a later audit whether this one is still running
        # absolute: its paths go to worker processes, and a Dask worker runs in a folder
        # of its own (not resolved: a link in the path the workers mount stays a link)
        work = staging.make(output_dir, _SCRATCH)
    except OSError as exc:
        raise OutputError(
            f"cannot write in the output folder '{output_dir}' ({exc.strerror}).",
            fix="choose a folder you can write to.",
        ) from exc
    ok = False
    try:
        yield work
        ok = True
    except OSError as exc:
        if isinstance(exc, LabinterpError) or exc.errno not in NO_SPACE:
            raise
        # the scratch data or an output filled the disk: the user's to fix, not a bug
        raise write_failed(exc, output_dir) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not ok and created and not completion.outputs_in_place:
            shutil.rmtree(output_dir, ignore_errors=True)


def audit(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    engine: str = "local",
    scheduler: Any = None,
    mapping: str | os.PathLike[str] | None = None,
    date_format: str | None = None,
    vitamin_d_guideline: str = "iom2011",
    progress: bool = False,
    n_buckets: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Audit lab exports and write the audit folder; return the summary (as in summary.json).

    `paths` are files or folders. `engine="local"` works in bounded memory on one machine;
    `engine="dask"` runs the per-patient work on a Dask distributed cluster (`scheduler` is
    its address, or a `distributed.Client`; none starts a local cluster). With Dask, the
    output folder must be on a file system the workers can reach at the same path.
    `workers` is the number of processes the local engine interprets buckets with (default:
    one per core, at most 2; small inputs use one bucket and no extra process).
    `vitamin_d_guideline` is the 25-OH vitamin D cut-off, as for `interpret`.
    """
    if engine not in ENGINES:
        raise LabinterpError(
            f"unknown engine '{engine}'.", fix=f"use one of: {', '.join(ENGINES)}."
        )
    from labinterp.rules.vitamin_d_resistance import GUIDELINES

    if vitamin_d_guideline not in GUIDELINES:  # before any input is read
        raise LabinterpError(
            f"unknown vitamin D guideline '{vitamin_d_guideline}'.",
            fix=f"use one of: {', '.join(sorted(GUIDELINES))}.",
        )
    if engine == "dask" and isinstance(scheduler, str):
        from labinterp.audit.dask_engine import check_address

        check_address(scheduler)  # before any input is read
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = Path(output_dir)
    files = _without_outputs(expand_paths(paths), out, paths)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plain = [f for f, _ in files]
    prog = Progress(enabled=progress, total_rows=_estimate_rows(plain))
    buckets = n_buckets or _n_buckets(plain)
    # a small input needs no extra process; otherwise one per core, at most 2
    parallel = buckets > 1 if n_buckets else _input_bytes(plain) > _WORKERS_ABOVE
    n_workers = (workers or min(os.cpu_count() or 1, 2)) if parallel else 1
    if not n_buckets:
        # as many buckets for every worker: none idles while another does a last one
        # (1M rows: 12 buckets instead of 11, interpret stage 3.24-3.45 -> 3.08-3.16 s)
        buckets = -(-buckets // n_workers) * n_workers
    from labinterp.audit.outputs import Completion, OutputsWritten

    completion = Completion()
    try:
        summary = _run(
            files,
            out,
            completion,
            engine=engine,
            scheduler=scheduler,
            mapping=mapping,
            date_format=date_format,
            vitamin_d_guideline=vitamin_d_guideline,
            prog=prog,
            buckets=buckets,
            n_workers=n_workers,
            timings=timings,
            t0=t0,
        )
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM while the pool stops or the scratch is removed: the run is
        # complete, and a caller (the CLI) can tell it from one stopped part-way
        if completion.outputs_in_place and not isinstance(exc, OutputsWritten):
            raise OutputsWritten(out) from exc
        raise
    return summary


def _run(
    files: list[tuple[Path, bool]],
    out: Path,
    completion: Completion,
    *,
    engine: str,
    scheduler: Any,
    mapping: str | os.PathLike[str] | None,
    date_format: str | None,
    vitamin_d_guideline: str,
    prog: Progress,
    buckets: int,
    n_workers: int,
    timings: dict[str, float],
    t0: float,
) -> dict[str, Any]:
    with (
        _output_folder(out, completion) as work,
        _worker_pool(n_workers if engine == "local" else 1, work) as pool,
    ):
        parts = work / "parts"
        parts.mkdir()
        ingest, bucket_files = _ingest(
            files,
            work,
            buckets if engine == "local" else 0,
            mapping=mapping,
            date_format=date_format,
            progress=prog,
            pool=pool,
        )
        timings["read_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if engine == "local":
            stats = _run_local(bucket_files, parts, prog, pool, vitamin_d_guideline)
        else:
            from labinterp.audit.dask_engine import run_dask

            stats = run_dask(
                work / "buckets", parts, scheduler, prog, ingest.rows_in, vitamin_d_guideline
            )
        timings["interpret_s"] = time.perf_counter() - t1
        from labinterp.audit.outputs import write_outputs

        summary = write_outputs(
            out,
            work,
            parts,
            ingest=ingest,
            stats=stats,
            engine=engine,
            vitamin_d_guideline=vitamin_d_guideline,
            timings=timings,
            started=t0,
            mapping=mapping,
            date_format=date_format,
            completion=completion,
        )
    prog.finish()
    return summary
