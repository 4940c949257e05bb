"""The Dask engine: the same per-patient code as the local engine, on a distributed cluster.

Parquet in (the normalized batches written by the reading pass), shuffle by patient id so
each partition holds every row of its patients, then `process_bucket` on each partition
(deduplicate, interpret_results, collapse), Parquet out. Workers read and write the scratch
folder inside the output folder, so on a multi-machine cluster it must be on a shared file
system mounted at the same path everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labinterp.audit.collapse import BucketStats, arrow_to_results, process_bucket
from labinterp.audit.progress import Progress
from labinterp.errors import LabinterpError

# Rows per shuffled partition: each is processed in one worker's memory.
_ROWS_PER_PARTITION = 250_000


def _process_partition(df: Any, parts: str, tag: str, guideline: str) -> BucketStats:
    import pyarrow as pa

    from labinterp.interpret import interpret_results
    from labinterp.reading import deduplicate

    results = arrow_to_results(pa.Table.from_pandas(df, preserve_index=False))
    return process_bucket(
        results,
        Path(parts),
        tag,
        deduplicate=deduplicate,
        # the audit's outputs keep the readable evidence only (see collapse.AUDIT_FINDINGS)
        interpret_results=functools.partial(
            interpret_results, evidence_json=False, vitamin_d_guideline=guideline
        ),
    )


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LabinterpError(
            "the Dask engine needs the 'dask' extra.",
            fix="pip install 'labinterp[dask]', or use --engine local.",
        ) from exc
    return distributed


_ADDRESS_FIX = (
    "give the scheduler's address with its port, e.g. tcp://host:8786 (what "
    "`dask scheduler` prints as 'Scheduler at')."
)


def _bad_address(address: str, exc: Exception) -> LabinterpError:
    return LabinterpError(f"'{address}' is not a Dask scheduler address ({exc}).", fix=_ADDRESS_FIX)


def check_address(address: str) -> None:
    """Raise a usage error for a scheduler address Dask cannot parse ("bogus", a missing
    port, an unknown scheme), before the audit reads anything."""
    _distributed()
    from distributed.comm.addressing import get_address_host_port

    try:
        get_address_host_port(address)
    except ValueError as exc:
        raise _bad_address(address, exc) from exc
    except NotImplementedError:  # a transport without host and port (inproc://): Dask's call
        pass


@contextlib.contextmanager
def _client(scheduler: Any) -> Iterator[Any]:
    distributed = _distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # an existing Client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except ValueError as exc:  # an address Dask cannot parse
            raise _bad_address(scheduler, exc) from exc
        except OSError as exc:
            raise LabinterpError(
                f"cannot reach the Dask scheduler at '{scheduler}'.",
                fix="check the address (tcp://host:8786) and that the scheduler is running.",
            ) from exc
        with client:
            yield client
        return
    # Dask's own notes (a shuffle starting and ending) are WARNINGs: they would print on
    # stderr past -q and between the progress lines; errors still show
    with (
        LocalCluster(processes=True, dashboard_address=":0", silence_logs=logging.ERROR) as cluster,
        Client(cluster) as c,
    ):
        yield c


def run_dask(
    inputs: Path, parts: Path, scheduler: Any, progress: Progress, rows_in: int, guideline: str
) -> BucketStats:
    import dask
    import dask.dataframe as dd

    total = BucketStats()
    files = sorted(inputs.glob("part-*.parquet"))
    if not files:
        progress.start_stage("interpret", 0)
        return total
    npart = max(1, -(-rows_in // _ROWS_PER_PARTITION))
    with _client(scheduler) as client:
        ddf = dd.read_parquet([str(f) for f in files])
        ddf = ddf.shuffle("patient_id", npartitions=npart)
        tasks = [
            dask.delayed(_process_partition)(part, str(parts), f"{i:05d}", guideline)
            for i, part in enumerate(ddf.to_delayed())
        ]
        progress.start_stage("interpret", len(tasks))
        futures = client.compute(tasks)
        from distributed import as_completed

        for fut in as_completed(futures):
            stats = fut.result()
            total.add(stats)
            progress.bucket_done(stats.patients)
    return total
