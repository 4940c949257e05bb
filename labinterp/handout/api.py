"""Public entry points: one handout (`render_handout`) or every patient (`render_batch`)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import multiprocessing
import os
import re
import shutil
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from labinterp import atomic, schema, staging
from labinterp.errors import LabinterpError, OutputError
from labinterp.grading import ctcae_grade
from labinterp.handout import fonts
from labinterp.handout.context import (
    Grader,
    Row,
    build_context,
    context_from_rows,
    light_evidence,
    rows_by_patient,
)
from labinterp.handout.render import LANGS, PAPERS, shared_renderer

log = logging.getLogger("labinterp.handout")

PathLike = str | os.PathLike[str]
# a table, or the path of an export (or a list of paths) to read and interpret
Frame = pd.DataFrame | PathLike | Sequence[PathLike]

# Workers are replaced after this many handouts so a long batch cannot grow without bound.
MAX_TASKS_PER_CHILD = 64
# Handouts per task sent to a worker (smaller when a pool has few handouts per worker).
CHUNK = 4


@cache
def _grader() -> Grader:
    """The CTCAE grader, remembering its answers: one grading call costs ~0.8 ms (it is
    vectorized, and a single value pays for the pandas set-up), and an export repeats the
    same value, unit and range many times."""
    return lru_cache(maxsize=4096)(ctcae_grade)


def _check_options(lang: str, paper: str) -> None:
    if lang not in LANGS:
        raise LabinterpError(f"unknown handout language '{lang}'.", fix="use 'en' or 'es'.")
    if paper.lower() not in PAPERS:
        raise LabinterpError(f"unknown paper size '{paper}'.", fix="use 'a4' or 'letter'.")


def load_inputs(
    results: Frame,
    findings: Frame | None,
    *,
    mapping: PathLike | None = None,
    date_format: str | None = None,
    vitamin_d_guideline: str = "iom2011",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accept RESULTS/FINDINGS frames, or exports (a path or a list of paths) that are read
    (with `mapping` and `date_format`, as for `labinterp.read`) and interpreted (with
    `vitamin_d_guideline`, as for `labinterp.interpret`). A `labinterp.read` result
    counts as its RESULTS table, as `labinterp.interpret` takes it."""
    from labinterp.interpret import interpret_results
    from labinterp.reading import ReadResult, read

    rejected: pd.DataFrame | None = None  # known only where the rows are read here
    given: Any = results
    if not isinstance(given, (ReadResult, pd.DataFrame)):
        given = read(given, mapping=mapping, date_format=date_format)
        findings = None
    if isinstance(given, ReadResult):
        rejected = given.rejected
        given = given.results
    if findings is None:
        findings = interpret_results(given, vitamin_d_guideline=vitamin_d_guideline)
    if not isinstance(findings, pd.DataFrame):
        raise LabinterpError("findings must be a FINDINGS table when results is a table.")
    # Handouts word the findings from their other columns and from what the evidence
    # records hold (which tests were low, high, not reported), cut down to a few fields
    # (`evidence_brief`): rows are lighter to hand to the workers, and findings read back
    # from a CSV (the records as JSON text) are taken as they are.
    brief = None
    if "evidence_json" in findings.columns:
        brief = [light_evidence(v) for v in findings["evidence_json"].tolist()]
    findings = findings.drop(columns=["evidence_json"], errors="ignore")
    findings = schema.conform(findings, schema.FINDINGS)
    if brief is not None:
        findings = findings.assign(evidence_brief=pd.Series(brief, dtype=object))
    results = schema.conform(given, schema.RESULTS)
    if rejected is not None:
        # the rows the reader could not use, counted by reason per patient: what a sheet
        # says of a patient's results it cannot show, and why a patient has no sheet
        results = results.copy(deep=False)
        results.attrs["rejected_reasons"] = rejected_reasons(rejected)
        results.attrs["rejected_by_patient"] = rejected_by_patient(rejected)
    return results, findings


def rejected_by_patient(rejected: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per patient id, how many of its rows were rejected for each reason, most first
    (rows without an id are in no patient's count)."""
    named = rejected[rejected["patient_id"].notna().to_numpy()]
    reasons = named["reason"].astype("string").fillna("unknown")
    counts = Counter(zip(named["patient_id"].tolist(), reasons.tolist(), strict=True))
    out: dict[str, dict[str, int]] = {}
    for (pid, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        out.setdefault(str(pid), {})[str(reason)] = n
    return out


# Plain words for the reasons a row is rejected (schema.REJECT_REASONS); any other reason
# is named by its code.
REASON_WORDS = {
    "implausible_value": "with a value implausible for its unit (suspected unit error)",
    "out_of_scope": "of a test labinterp does not interpret",
    "unknown_unit": "in a unit labinterp does not know",
    "unit_not_valid_for_analyte": "in a unit that does not fit the test",
    "unit_conflict": "with two different units",
    "missing_value": "without a value",
    "unparseable_value": "with a value that is not one number",
    "missing_date": "without a date",
    "unparseable_date": "with a date that could not be read",
    "missing_patient_id": "without a patient id",
    "non_blood_specimen": "not of blood",
    "superseded": "replaced by a later result",
    "duplicate": "repeating another row",
}


def rejected_reasons(rejected: pd.DataFrame) -> dict[str, int]:
    """How many rejected rows there are of each reason, most first."""
    if "reason" not in rejected.columns or not len(rejected):
        return {}
    counts = rejected["reason"].astype("string").fillna("unknown").value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def describe_rejected(reasons: dict[str, int]) -> str:
    """ "2 with a value implausible for its unit (...), 1 of a test labinterp does not
    interpret": counts by reason, no value, no patient id."""
    return ", ".join(f"{n} {REASON_WORDS.get(r, r.replace('_', ' '))}" for r, n in reasons.items())


def render_handout(
    results: Frame,
    findings: Frame | None,
    patient_id: str,
    *,
    lang: str = "en",
    large_print: bool = False,
    paper: str = "A4",
    output: PathLike | None = None,
    mapping: PathLike | None = None,
    date_format: str | None = None,
    vitamin_d_guideline: str = "iom2011",
) -> bytes:
    """Render one patient's handout as a tagged PDF (PDF/UA-1) and return its bytes.

    `results` and `findings` are RESULTS and FINDINGS tables; `results` may instead be the
    path of an export (or a list of them), which is then read and interpreted (pass
    `findings=None`) with `mapping`, `date_format` and `vitamin_d_guideline` (see
    `load_inputs`). With `output`, the PDF is also written there atomically (a failed
    render leaves no file).
    """
    _check_options(lang, paper)
    res, fnd = load_inputs(
        results,
        findings,
        mapping=mapping,
        date_format=date_format,
        vitamin_d_guideline=vitamin_d_guideline,
    )
    by_patient = res.attrs.get("rejected_by_patient")
    mine_rejected = None if by_patient is None else by_patient.get(patient_id, {})
    if not (res["patient_id"] == patient_id).any():
        raise _no_results(patient_id, mine_rejected, res.attrs.get("rejected_reasons") or {})
    ctx = build_context(
        res,
        fnd,
        patient_id,
        lang=lang,
        large_print=large_print,
        paper=paper,
        grader=_grader(),
        rejected=mine_rejected,
    )
    pdf = shared_renderer().render(_id_checked(ctx, patient_id))
    if output is not None:
        atomic.write_bytes(output, pdf)
    mine = res[res["patient_id"] == patient_id]
    rows = [{str(k): v for k, v in r.items()} for r in mine.to_dict("records")]
    if _undrawable(patient_id, rows):
        _warn_undrawable([str(output) if output is not None else "the handout returned"])
    return pdf


def _no_results(
    patient_id: str, mine: dict[str, int] | None, every: dict[str, int]
) -> LabinterpError:
    """Why `patient_id` gets no handout: every row of the patient rejected (counted by
    reason), or no row of that id at all. Counts only: no id, no value."""
    lead = (
        "the files read hold no result of a test labinterp covers (magnesium, calcium, "
        "potassium, vitamin D, PTH and their context tests) that could be used for the "
        "requested patient id"
    )
    fix = (
        "see each rejected row and its reason with 'labinterp check FILE --rejected', or use --all."
    )
    if mine:
        rows = sum(mine.values())
        return LabinterpError(
            f"{lead}: every row of this patient was rejected ({rows} "
            f"{'row' if rows == 1 else 'rows'}: {describe_rejected(mine)}).",
            fix=fix,
        )
    if mine is not None:  # the rejected rows are known, and none is this patient's
        return LabinterpError(
            f"{lead}: no row of the files read has this patient id.",
            fix="check the id (the ids read are in the patient_id column of 'labinterp check"
            " FILE --format csv'), or use --all.",
        )
    # tables given without their rejected rows: either may be the case
    rows = sum(every.values())
    why = (
        f" The files read had {rows} rejected {'row' if rows == 1 else 'rows'}, by reason:"
        f" {describe_rejected(every)}."
        if rows
        else ""
    )
    return LabinterpError(
        f"{lead}: the id may be wrong, or every row of this patient was rejected.{why}", fix=fix
    )


def _id_checked(ctx: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """`ctx` with `id_unprintable` set when the patient id holds a character no installed
    font can draw: the sheet then says its id cannot be read as printed, since the id is
    what tells whose sheet it is when it is handed over."""
    return {**ctx, "id_unprintable": fonts.undrawable(patient_id)}


# The texts of a patient's rows a handout prints as the export holds them.
_PRINTED_AS_IS = ("comment", "value_raw", "text_result", "unit_raw")


def _undrawable(patient_id: str, rows: list[Row]) -> bool:
    """Whether the handout of `patient_id` prints a character no installed font can draw
    (in the id or a lab's own text)."""
    texts = [
        patient_id,
        *(str(r[k]) for r in rows for k in _PRINTED_AS_IS if isinstance(r.get(k), str)),
    ]
    return any(fonts.undrawable(t) for t in texts)


def _warn_undrawable(files: Sequence[str]) -> None:
    """Say which handout files print empty boxes for missing glyphs, by file name (a batch's
    names carry nothing identifying), never by patient id."""
    if files:
        noun = "handout holds" if len(files) == 1 else "handouts hold"
        log.warning(
            "%d %s characters (in a patient id or a lab's text) that no installed font can"
            " draw: they print as empty boxes (%s). Install a font for that script (Debian:"
            " fonts-noto-cjk for Chinese, Japanese and Korean; fonts-noto-color-emoji)"
            " and render again.",
            len(files),
            noun,
            ", ".join(files),
        )


def handout_name(index: int) -> str:
    """Non-identifying file name for the index-th patient (1-based)."""
    return f"handout-{index:04d}.pdf"


# The names `handout_name` gives (five digits and more past 9999 patients).
HANDOUT_NAME = re.compile(r"handout-[0-9]{4,}\.pdf")


def remove_stale_handouts(out_dir: PathLike, written: Sequence[str]) -> int:
    """Remove the handouts an earlier batch left in `out_dir`: files named as
    `handout_name` names them that this batch did not write. Return how many.

    The names say nothing about the patient, so someone printing "every PDF in the folder"
    would hand patients other people's results; index.csv lists this batch only. Any other
    file (another name, a folder, a link) is left alone.
    """
    keep = set(written)
    removed = 0
    for entry in Path(out_dir).iterdir():
        if entry.name in keep or not HANDOUT_NAME.fullmatch(entry.name):
            continue
        if entry.is_symlink() or not entry.is_file():
            continue
        entry.unlink()
        removed += 1
    return removed


# -- batch ---------------------------------------------------------------------------------


def _worker_init(
    no_hb_subset: bool = False, parent: int | None = None, stage: str | None = None
) -> None:
    """Set up a batch worker; with `parent`, it exits (removing `stage`, the batch's
    staging folder, which holds patient data) once the process that started the batch has
    died (see staging.watch_parent)."""
    if parent is not None:
        staging.watch_parent(parent, stage)
    if no_hb_subset:  # benchmark switch: behave as if libharfbuzz-subset0 were absent
        import weasyprint.pdf.fonts as wfonts

        wfonts.harfbuzz_subset = None
        logging.getLogger("weasyprint").setLevel(logging.ERROR)
    shared_renderer()


# One task: (patient id, target file, that patient's RESULTS rows, its FINDINGS rows, its
# rejected rows counted by reason, or None when they are not known).
Task = tuple[str, str, list[Row], list[Row], dict[str, int] | None]


def _render_tasks(tasks: Sequence[Task], lang: str, large_print: bool, paper: str) -> int:
    """Build each patient's context here (in the worker) and write its PDF; return the count."""
    grader = _grader()
    renderer = shared_renderer()
    for pid, target, res_rows, fnd_rows, rejected in tasks:
        ctx = context_from_rows(
            res_rows,
            fnd_rows,
            pid,
            lang=lang,
            large_print=large_print,
            paper=paper,
            grader=grader,
            rejected=rejected,
        )
        atomic.write_bytes(target, renderer.render(_id_checked(ctx, pid)))
    return len(tasks)


def iter_contexts(
    res: pd.DataFrame,
    fnd: pd.DataFrame,
    patient_ids: Sequence[str],
    *,
    lang: str,
    large_print: bool,
    paper: str,
) -> Iterator[dict[str, Any]]:
    grader = _grader()
    res_rows, fnd_rows = rows_by_patient(res), rows_by_patient(fnd)
    by_patient = res.attrs.get("rejected_by_patient")
    for pid in patient_ids:
        yield context_from_rows(
            res_rows[pid],
            fnd_rows.get(pid, []),
            pid,
            lang=lang,
            large_print=large_print,
            paper=paper,
            grader=grader,
            rejected=None if by_patient is None else by_patient.get(pid, {}),
        )


def _worker_server() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context of the batch workers: forks of a server that preloads
    what a handout needs (labinterp.handout.preload)."""
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["pandas", "labinterp.handout.api", "labinterp.handout.preload"])
    return mp


def _start_worker_server() -> None:
    """Start the workers' server now: it warms up (~1.5 s of imports, fonts, templates and a
    first handout, on one core) while this process reads and interprets the export."""
    from multiprocessing import forkserver

    _worker_server()
    forkserver.ensure_running()


def _render_parallel(
    chunks: Sequence[list[Task]],
    options: tuple[str, bool, str],
    n_workers: int,
    limit: int,
    no_hb_subset: bool,
    finished: Callable[[int], None],
    stage: Path | None = None,
) -> None:
    """Render `chunks` on `n_workers` processes, each replaced after `limit` handouts.

    Every worker is a one-process executor of its own. When a worker has been given its
    `limit`, it is told to exit after what it holds and a fresh one takes its place at
    once, so the other workers never wait for it (one pool for all would have to drain
    before it could be replaced). ProcessPoolExecutor's own max_tasks_per_child is not
    used: it can hang on Python 3.11 once every worker has retired with tasks still
    queued (CPython gh-115634). forkserver: a new worker is a fork of a server that has
    already imported WeasyPrint and pandas, made the fonts, compiled the templates and
    rendered a handout (labinterp.handout.preload), so replacing one is cheap.
    Should this process die without stopping them, they exit and remove `stage`.
    """
    mp = _worker_server()
    init = (no_hb_subset, os.getpid(), None if stage is None else str(stage))
    queue = deque(chunks)
    executors: list[ProcessPoolExecutor] = []  # every one made, to shut all down at the end
    slots: list[tuple[ProcessPoolExecutor, int]] = []  # per worker: executor, handouts given
    running: dict[Future[int], int] = {}  # future -> worker slot

    def new_worker() -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            max_workers=1, mp_context=mp, initializer=_worker_init, initargs=init
        )
        executors.append(executor)
        return executor

    def feed(slot: int) -> None:
        executor, given = slots[slot]
        work = queue.popleft()
        if given and given + len(work) > limit:
            executor.shutdown(wait=False)  # it still finishes the chunk it holds
            executor, given = new_worker(), 0
        running[executor.submit(_render_tasks, work, *options)] = slot
        slots[slot] = (executor, given + len(work))

    try:
        slots.extend((new_worker(), 0) for _ in range(n_workers))
        for _ in range(2):  # one chunk working and one waiting: a worker never idles
            for slot in range(n_workers):
                if queue:
                    feed(slot)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                slot = running.pop(fut)
                finished(fut.result())
                if queue:
                    feed(slot)
    except BaseException:
        queue.clear()
        for fut in running:
            fut.cancel()
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
        raise
    for executor in executors:
        executor.shutdown(wait=True)


def render_batch(
    results: Frame,
    findings: Frame | None,
    out_dir: PathLike,
    *,
    lang: str = "en",
    large_print: bool = False,
    paper: str = "A4",
    workers: int | None = None,
    max_tasks_per_child: int = MAX_TASKS_PER_CHILD,
    progress: Callable[[int, int], None] | None = None,
    mapping: PathLike | None = None,
    date_format: str | None = None,
    vitamin_d_guideline: str = "iom2011",
    _no_hb_subset: bool = False,
) -> pd.DataFrame:
    """Render one handout per patient into `out_dir`; return the index (file, patient_id).

    Files are named `handout-0001.pdf`, ... in patient-id order, so names carry nothing
    identifying; `index.csv` in the same folder maps them back. Every handout and the
    index are made in a staging folder inside `out_dir` and put in place together once
    all are made: a batch that fails or is stopped part-way leaves the previous handouts
    and their index as they were. After a successful run, handouts an earlier run left in
    the folder (files named as ours, not written now) are removed, so the folder holds
    this run's handouts only; how many is logged (a warning) and kept in
    `index.attrs["removed"]`. `workers` defaults to all cores; `workers=1` renders in this
    process. `progress(done, total)` is called after each handout. `results` may be
    exports to read, as for `render_handout`.
    """
    _check_options(lang, paper)
    out = Path(out_dir)
    if not out.is_dir():
        raise OutputError(
            f"the output folder '{out}' does not exist.", fix="create it first or pass another -o."
        )
    workers = workers or os.cpu_count() or 1
    if workers > 1 and not isinstance(results, pd.DataFrame):
        _start_worker_server()  # an export still to read: let the workers warm up meanwhile
    res, fnd = load_inputs(
        results,
        findings,
        mapping=mapping,
        date_format=date_format,
        vitamin_d_guideline=vitamin_d_guideline,
    )
    patient_ids = sorted({str(p) for p in res["patient_id"].dropna()})
    names = {pid: handout_name(i) for i, pid in enumerate(patient_ids, start=1)}
    total = len(patient_ids)
    # Rows become plain dicts once, grouped by patient; workers build the contexts.
    res_rows, fnd_rows = rows_by_patient(res), rows_by_patient(fnd)
    index = pd.DataFrame(
        {"file": [names[p] for p in patient_ids], "patient_id": patient_ids}, dtype="string"
    )
    by_patient = res.attrs.get("rejected_by_patient")
    with _staging_folder(out) as stage:
        tasks: list[Task] = [
            (
                pid,
                str(stage / names[pid]),
                res_rows[pid],
                fnd_rows.get(pid, []),
                None if by_patient is None else by_patient.get(pid, {}),
            )
            for pid in patient_ids
        ]
        options = (lang, large_print, paper)
        done = 0

        def finished(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress(done, total)

        if workers <= 1 or total <= 1:
            _worker_init(_no_hb_subset)
            for task in tasks:
                finished(_render_tasks([task], *options))
        else:
            n_workers = min(workers, total)
            limit = max(1, max_tasks_per_child)
            # Small chunks: fewer round trips than one handout per task. The last few
            # handouts go one per task: every worker holds a chunk and a waiting one, so a
            # chunk there would leave the other workers idle at the end while one finishes
            # two chunks.
            chunk = max(1, min(CHUNK, limit, total // (n_workers * 4)))
            head = total - min(total, n_workers * 4) if chunk > 1 else total
            chunks = [tasks[i : min(i + chunk, head)] for i in range(0, head, chunk)]
            chunks += [[task] for task in tasks[head:]]
            _render_parallel(chunks, options, n_workers, limit, _no_hb_subset, finished, stage)
        from labinterp.output import neutralize_formulas

        buf = io.StringIO()
        neutralize_formulas(index).to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
        atomic.write_text(stage / INDEX, buf.getvalue())
        removed = _put_in_place(stage, out, list(index["file"]))
    _warn_undrawable([names[pid] for pid in patient_ids if _undrawable(pid, res_rows[pid])])
    reasons = res.attrs.get("rejected_reasons") or {}
    unsheeted, unsheeted_by_reason = _without_handout(by_patient or {}, set(patient_ids))
    _say_without_handout(unsheeted, unsheeted_by_reason, reasons)
    index.attrs["rejected_reasons"] = reasons
    # patients of the files read with no handout, and per reason those with rows of it
    index.attrs["patients_without_handout"] = unsheeted
    index.attrs["patients_without_handout_by_reason"] = unsheeted_by_reason
    if removed:
        noun = "handout" if removed == 1 else "handouts"
        log.warning(
            "removed %d %s an earlier run left in the output folder (not in the new index.csv)",
            removed,
            noun,
        )
    index.attrs["removed"] = removed
    return index


def _without_handout(
    by_patient: dict[str, dict[str, int]], with_handout: set[str]
) -> tuple[int, dict[str, int]]:
    """How many patients of the rejected rows got no handout (none of their rows could be
    used), and per reason how many of them have rows rejected for it (a patient with rows
    of two reasons counts under both, most patients first). A damaged id ("1.23457E+11")
    may be several patients: not counted."""
    patients = 0
    by_reason: dict[str, int] = {}
    for pid, reasons in by_patient.items():
        if pid in with_handout or "damaged_patient_id" in reasons:
            continue
        patients += 1
        for reason in reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    return patients, dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))


def _say_without_handout(patients: int, by_reason: dict[str, int], rows: dict[str, int]) -> None:
    """Log how many patients got no handout and why, and how many rows reach no patient
    (no id, or one a spreadsheet damaged): counts only, never an id. Patients with rows of
    other tests only (sodium, glucose) are in most exports: alone, said without a warning."""
    if patients:
        level = logging.INFO if set(by_reason) == {"out_of_scope"} else logging.WARNING
        log.log(
            level,
            "%d %s of the files read %s no handout: none of their rows could be used."
            " Patients by the reasons of their rows (one counts under each): %s. 'labinterp"
            " check FILE --rejected' lists each row with its reason.",
            patients,
            "patient" if patients == 1 else "patients",
            "has" if patients == 1 else "have",
            "; ".join(
                f"rows {REASON_WORDS.get(r, r.replace('_', ' '))}: {n}"
                for r, n in by_reason.items()
            ),
        )
    no_id = rows.get("missing_patient_id", 0) + rows.get("damaged_patient_id", 0)
    if no_id:
        log.warning(
            "%d %s of the files read %s no patient id, or one a spreadsheet damaged (such as"
            " 1.23457E+11): on no handout.",
            no_id,
            "row" if no_id == 1 else "rows",
            "has" if no_id == 1 else "have",
        )


INDEX = "index.csv"
# The batch's staging folder inside the output folder: the process id tells a later batch
# whether the one that made it still runs (see staging.remove_stale).
STAGING = ".labinterp-handouts-"


@contextlib.contextmanager
def _staging_folder(out: Path) -> Iterator[Path]:
    """A staging folder in `out` for this batch (after removing those batches killed
    outright left there: they hold patient data), removed when the block ends, however
    it ends."""
    staging.remove_stale(out, STAGING)
    try:
        stage = staging.make(out, STAGING)
    except OSError as exc:
        raise atomic.write_failed(exc, out) from exc
    try:
        yield stage
    except OSError as exc:
        if isinstance(exc, OutputError) or exc.errno not in atomic.NO_SPACE:
            raise
        raise atomic.write_failed(exc, out) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _put_in_place(stage: Path, out: Path, files: Sequence[str]) -> int:
    """Move the handouts and index.csv made in `stage` into `out`, then remove the
    handouts an earlier run left there (`remove_stale_handouts`; how many is returned),
    with Ctrl-C and SIGTERM held until all is done. A file keeps the permissions of the
    one it replaces. The previous index.csv goes first: should the process be killed
    outright part-way, no index names a patient for a file another patient's handout has
    replaced (the folder then has no index.csv, and the next run puts everything right)."""
    with staging.interrupts_deferred():
        atomic.take_mode(stage / INDEX, out / INDEX)
        with contextlib.suppress(FileNotFoundError):
            (out / INDEX).unlink()
        for name in files:
            atomic.replace_keeping_mode(stage / name, out / name)
        os.replace(stage / INDEX, out / INDEX)
        return remove_stale_handouts(out, files)
