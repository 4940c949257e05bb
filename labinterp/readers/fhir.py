"""FHIR R4/R5 Observations (Bundle, single resource or NDJSON) into the RAW table.

Each Observation is validated with the `fhir.resources` models (R5 first, then R4B) so a
damaged resource is rejected with the validator's reason instead of being half-read.
Kept: valueQuantity (value as its exact decimal text, unit, comparator), valueString,
referenceRange, interpretation, notes and the specimen reference. Observations whose status
says they hold no result (cancelled, entered-in-error, registered) are rejected too.

A FHIR file is untrusted input: nothing is assumed about a JSON value's type before the
validator has checked it, so a number where a reference belongs is rejected, not a crash.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labinterp.readers.medications import (
    Coverage,
    MedicationRecord,
    mark_results,
    names_a_medicine_read,
)
from labinterp.schema import raw_from_records

LOINC_SYSTEM = "http://loinc.org"


def _observation_model() -> tuple[Any, Any]:
    from fhir.resources.observation import Observation as ObservationR5
    from fhir.resources.R4B.observation import Observation as ObservationR4B

    return ObservationR5, ObservationR4B


# FHIR R4/R5 ObservationStatus codes for which there is no result to interpret, and why.
# preliminary, final, amended, corrected and unknown results are read as usual.
NO_RESULT_STATUSES = {
    "cancelled": "the test was cancelled, so there is no result to interpret",
    "entered-in-error": "the result was withdrawn as entered in error and must not be used",
    "registered": "the test is ordered but has no result yet",
}
# The rest of FHIR R4/R5's ObservationStatus codes (a required binding, which the model
# classes do not check): results that may be interpreted.
RESULT_STATUSES = {"preliminary", "final", "amended", "corrected", "unknown"}


def _status_problem(resource: dict[str, Any]) -> str | None:
    """Why an Observation's status keeps it from interpretation, or None."""
    status = resource.get("status")
    if not isinstance(status, str):
        return None  # missing is allowed here; a non-text status fails validation
    # codes are lower case in FHIR; an exporter's "Cancelled" is still a cancelled test
    code = status.strip().lower()
    if code in NO_RESULT_STATUSES:
        return f"status is {code}: {NO_RESULT_STATUSES[code]}"
    if code not in RESULT_STATUSES:
        # not knowing what the sender meant, the result is not used
        return "status is not a FHIR Observation status, so whether the result stands is unknown"
    return None


def _validate(resource: dict[str, Any]) -> str | None:
    """None if the Observation validates as R5 or R4B, else the R4B errors in brief."""
    r5, r4b = _observation_model()
    problem = "invalid"
    for model in (r5, r4b):
        try:
            model.model_validate(resource)
            return None
        except Exception as exc:  # pydantic.ValidationError and friends
            problem = _brief_errors(exc)
    return problem


def _brief_errors(exc: Exception, shown: int = 2) -> str:
    """'field: message' for the first `shown` errors of a validation error, on one line.

    pydantic's own text puts the offending input value on every error; a rejected row's
    detail must not carry patient data, so only the field path and message are kept.
    """
    details = getattr(exc, "errors", None)
    if not callable(details):
        return str(exc).splitlines()[0][:150] if str(exc) else type(exc).__name__
    try:
        errors = details()
    except Exception:  # not pydantic's errors(): fall back to the exception's name
        return type(exc).__name__
    parts = []
    for err in errors[:shown]:
        where = _field_path(err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ").rstrip(".")
        if len(message) > 100:
            message = message[:97] + "..."
        parts.append(f"{where}: {message}" if where else message)
    if len(errors) > shown:
        parts.append(f"and {len(errors) - shown} more")
    return "; ".join(parts) if parts else type(exc).__name__


def _field_path(loc: Any) -> str:
    """pydantic's error location as a FHIR path: ("referenceRange", 0, "low") ->
    "referenceRange[0].low"."""
    path = ""
    for part in loc if isinstance(loc, (list, tuple)) else ():
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path[:80]


def _as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    """`value` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def _ref_id(ref: Any) -> str:
    """The id a FHIR Reference points at; "" when there is no usable reference (a
    reference that is not text points at nothing)."""
    text = _as_dict(ref).get("reference")
    if not isinstance(text, str):
        return ""
    for prefix in ("urn:uuid:", "urn:oid:"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    # "Patient/123", "https://server/fhir/Patient/123", "Patient/123/_history/2" -> "123"
    text = text.split("/_history/", 1)[0]
    return text.rsplit("/", 1)[-1] if "/" in text else text


_INHERITED = ("subject", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "specimen")


def _inherit(observations: list[dict[str, Any]], reports: list[dict[str, Any]]) -> None:
    """Fill subject, time and specimen that a result leaves to its report or panel.

    Lab reports often state the patient and collection time once on the DiagnosticReport
    (or on a panel Observation) and list member results by reference.
    """
    context: dict[str, dict[str, Any]] = {}

    def give(parent: dict[str, Any], refs: list[Any]) -> None:
        # what is given is not checked here: the member's own validation rejects it
        shared = {k: parent[k] for k in _INHERITED if k in parent}
        if isinstance(shared.get("specimen"), list):
            specimens = shared["specimen"]
            shared["specimen"] = specimens[0] if len(specimens) == 1 else None
        for ref in refs:
            target = _ref_id(ref)
            if target:
                merged = {**shared, **{k: v for k, v in context.get(target, {}).items() if v}}
                context[target] = merged

    for report in reports:
        give(report, _as_list(report.get("result")))
    by_id = {str(o.get("id", "")): o for o in observations}
    for _ in range(3):  # panels of panels are at most a few levels deep
        for obs in observations:
            oid = str(obs.get("id", ""))
            parent = {**context.get(oid, {}), **{k: obs[k] for k in _INHERITED if k in obs}}
            give(parent, _as_list(obs.get("hasMember")))
    for oid, ctx in context.items():
        member = by_id.get(oid)
        if member is None:
            continue
        has_time = any(k in member for k in _INHERITED[1:4])
        for key, value in ctx.items():
            if value is None or key in member:
                continue
            if key.startswith("effective") and has_time:
                continue
            member[key] = value


Index = dict[str, dict[str, Any]]  # resources of one type by id

# Resources that say a patient was prescribed, listed as taking, or given a medicine
# (readers.medications turns them into the medication text of the results they cover),
# and the Medication resources they may name their medicine by.
_MEDICINE_TYPES = (
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationDispense",
)


@dataclass
class Referenced:
    """What an Observation's row takes from other resources of its file: its patient's
    Patient, its Specimen, and the patient's medication records."""

    patients: Index = field(default_factory=dict)
    specimens: Index = field(default_factory=dict)
    # medication resources not yet made records (see `update`), and the records made
    medicines: list[dict[str, Any]] = field(default_factory=list)
    records: list[MedicationRecord] = field(default_factory=list)
    products: Index = field(default_factory=dict)  # Medication resources by id

    def update(self, other: Referenced) -> None:
        """Add what `other` (one more line of an NDJSON file) found, making records of its
        medication resources at once and letting them go (a bulk export may list millions,
        few of which name a medicine the patterns read); one that names its medicine only
        by a Medication resource not seen yet waits for the end of the file."""
        self.patients.update(other.patients)
        self.specimens.update(other.specimens)
        self.products.update(other.products)
        self.records.extend(other.records)
        for res in other.medicines:
            self._take(res, final=False)

    def _take(self, res: dict[str, Any], final: bool) -> None:
        if not _taken(res):
            return
        name = _medicine_name(res, self.products)
        if not name and not final and _names_a_product(res):
            self.medicines.append(res)
            return
        record = _medication_record(res, name)
        if record is not None:
            self.records.append(record)

    def medication_records(self) -> list[MedicationRecord]:
        """The medication records of the file that name a medicine the patterns read."""
        waiting, self.medicines = self.medicines, []
        for res in waiting:
            self._take(res, final=True)
        return self.records


def _walk(doc: Any) -> tuple[list[dict[str, Any]], Referenced]:
    """All Observation resources in document order, and the resources they may refer to."""
    observations: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    found = Referenced()
    by_type = {"Patient": found.patients, "Specimen": found.specimens, "Medication": found.products}

    def visit(res: Any) -> None:
        if not isinstance(res, dict):
            return
        kind = res.get("resourceType")
        if kind == "Observation":
            observations.append(res)
        elif kind == "DiagnosticReport":
            reports.append(res)
        elif kind in _MEDICINE_TYPES:
            found.medicines.append(res)
        elif (
            isinstance(kind, str)
            and kind in by_type
            and isinstance(res.get("id"), str)
            and res["id"]
        ):
            by_type[kind][res["id"]] = res
        for entry in _as_list(res.get("entry")):
            resource = _as_dict(entry).get("resource")
            visit(resource)
            # a Patient without a usable id or fullUrl is nobody's: an Observation without
            # a subject must not borrow its sex and age
            full_id = _ref_id({"reference": _as_dict(entry).get("fullUrl")})
            kind_of_entry = _as_dict(resource).get("resourceType")
            if isinstance(kind_of_entry, str) and kind_of_entry in by_type and full_id:
                by_type[kind_of_entry][full_id] = _as_dict(resource)
        if kind not in _MEDICINE_TYPES:  # a medication record's contained Medication is its own
            for contained in _as_list(res.get("contained")):
                visit(contained)

    visit(doc)
    _inherit(observations, reports)
    return observations, found


def _names_a_product(res: dict[str, Any]) -> bool:
    """Whether a medication resource refers to a Medication resource for its medicine."""
    r5 = _as_dict(res.get("medication"))
    return bool(_ref_id(res.get("medicationReference") or r5.get("reference")))


def _concept_text(concept: Any) -> str:
    """A CodeableConcept's text, else its codings' display texts."""
    cc = _as_dict(concept)
    if isinstance(cc.get("text"), str) and cc["text"].strip():
        return cc["text"].strip()
    shown = [_as_dict(c).get("display") for c in _as_list(cc.get("coding"))]
    return "; ".join(d.strip() for d in shown if isinstance(d, str) and d.strip())


def _medicine_name(res: dict[str, Any], products: Index) -> str:
    """The medicine a medication record names: its code (R4 medicationCodeableConcept, R5
    medication.concept), else the Medication resource it refers to (contained in it, or
    elsewhere in the file), else the reference's display text."""
    r5 = _as_dict(res.get("medication"))
    concept = res.get("medicationCodeableConcept") or r5.get("concept")
    ref = _as_dict(res.get("medicationReference") or r5.get("reference"))
    target = _ref_id(ref)
    contained = {
        _text_at(c, "id"): _as_dict(c)
        for c in _as_list(res.get("contained"))
        if _as_dict(c).get("resourceType") == "Medication"
    }
    product = contained.get(target.removeprefix("#")) or _as_dict(products.get(target))
    for text in (_concept_text(concept), _concept_text(product.get("code")), ref.get("display")):
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


# Statuses under which a record says the medicine was taken (FHIR R4 and R5 value sets):
# not a draft, a proposal, a cancelled or not-given one, or an entry in error.
_TAKEN = {
    "MedicationRequest": {"active", "completed", "stopped"},
    "MedicationStatement": {"active", "completed", "stopped", "recorded"},
    "MedicationAdministration": {"in-progress", "completed"},
    "MedicationDispense": {"completed"},
}
# MedicationRequest intents that suggest or plan a medicine rather than order it
_NOT_ORDERED = {"proposal", "plan", "option"}


def _text_at(value: Any, *keys: str) -> str:
    """The text at value[keys[0]][keys[1]]..., "" when any step is missing or not text."""
    for key in keys:
        value = _as_dict(value).get(key)
    return value.strip() if isinstance(value, str) else ""


def _not_taking(statement: dict[str, Any]) -> bool:
    """An R5 MedicationStatement "recorded" with an adherence saying the patient is not
    taking the medicine, or has it on hold (R4 says so by its status instead)."""
    adherence = _as_dict(_as_dict(statement.get("adherence")).get("code"))
    codes = [_text_at(c, "code") for c in _as_list(adherence.get("coding"))]
    return any(code.startswith(("not-taking", "on-hold")) for code in codes)


def _taken(res: dict[str, Any]) -> bool:
    """Whether a medication resource says the patient took the medicine: a status of
    _TAKEN, an order rather than a proposal or plan, not `doNotPerform`, and (R5) not a
    statement whose adherence says not taking or on hold."""
    kind = str(res.get("resourceType"))
    status = _text_at(res, "status")  # untrusted: "" unless it is text
    if status not in _TAKEN.get(kind, set()) or res.get("doNotPerform") is True:
        return False
    if kind == "MedicationRequest" and _text_at(res, "intent") in _NOT_ORDERED:
        return False
    return not (kind == "MedicationStatement" and _not_taking(res))


def _medication_record(res: dict[str, Any], name: str) -> MedicationRecord | None:
    """The record a MedicationRequest, MedicationStatement, MedicationAdministration or
    MedicationDispense that says the patient took `name` makes (readers.medications says
    what it covers), or None when the medicine is none the patterns read."""
    if not names_a_medicine_read(name):
        return None
    kind = str(res.get("resourceType"))
    if kind == "MedicationRequest":  # the period the order may be dispensed in, if given
        start = _text_at(res, "dispenseRequest", "validityPeriod", "start")
        start = start or _text_at(res, "authoredOn")
        end = _text_at(res, "dispenseRequest", "validityPeriod", "end")
    elif kind == "MedicationStatement":  # when taken, else the day it was listed
        start = _text_at(res, "effectiveDateTime") or _text_at(res, "effectivePeriod", "start")
        start = start or _text_at(res, "dateAsserted")
        end = _text_at(res, "effectivePeriod", "end")
    elif kind == "MedicationDispense":  # handed over, for the days it was supplied for
        start = _text_at(res, "whenHandedOver") or _text_at(res, "whenPrepared")
        end = _supply_end(start, _as_dict(res.get("daysSupply")))
    else:  # an administration: given then (R5 spells it "occurence")
        start = (
            _text_at(res, "effectiveDateTime")
            or _text_at(res, "effectivePeriod", "start")
            or _text_at(res, "occurenceDateTime")
            or _text_at(res, "occurencePeriod", "start")
        )
        end = _text_at(res, "effectivePeriod", "end") or _text_at(res, "occurencePeriod", "end")
    return MedicationRecord(
        patient_id=_ref_id(res.get("subject")),
        text=name,
        start=start,
        end=end,
        ongoing=_text_at(res, "status") == "active",  # only orders and statements can be
    )


def _supply_end(start: str, days_supply: dict[str, Any]) -> str:
    """The last day a dispense starting on `start` supplies (its daysSupply in days: a
    30-day supply from March 1 lasts to March 30), or "" when it does not say."""
    days = days_supply.get("value")
    unit = days_supply.get("code") or days_supply.get("unit")
    if not isinstance(days, (int, float)) or unit not in ("d", "day", "days") or days < 1:
        return ""
    try:
        first = dt.date.fromisoformat(start[:10])
        return (first + dt.timedelta(days=int(days) - 1)).isoformat()
    except (ValueError, OverflowError):
        return ""


def _specimen_type(obs: dict[str, Any], specimens: Index) -> str:
    """What the Observation's specimen is ("Urine specimen"): the Specimen resource's type,
    else the reference's display text; "" when the file does not say."""
    ref = _as_dict(obs.get("specimen"))
    kind = _as_dict(_as_dict(specimens.get(_ref_id(ref))).get("type"))
    codings = [_as_dict(c) for c in _as_list(kind.get("coding"))]
    for text in (
        kind.get("text"),
        *(c.get("display") for c in codings),
        *(c.get("code") for c in codings),
        ref.get("display"),
    ):
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _row(obs: dict[str, Any], number: int, found: Referenced) -> dict[str, Any]:
    codings = (obs.get("code") or {}).get("coding") or []
    loinc = next((c.get("code", "") for c in codings if c.get("system") == LOINC_SYSTEM), "")
    local = next((c.get("code", "") for c in codings if c.get("system") != LOINC_SYSTEM), "")
    name = (obs.get("code") or {}).get("text") or next(
        (c.get("display", "") for c in codings if c.get("display")), ""
    )
    patient = _ref_id(obs.get("subject"))
    # Patient resources are not validated: only text is taken from them
    demo = {k: v for k, v in found.patients.get(patient, {}).items() if isinstance(v, str)}
    row = {
        "source_row": number,
        "patient_id": patient,
        "collected_at": obs.get("effectiveDateTime")
        or (obs.get("effectivePeriod") or {}).get("start")
        or obs.get("effectiveInstant")
        or "",
        "specimen_id": _ref_id(obs.get("specimen")),
        "specimen_type": _specimen_type(obs, found.specimens),
        "test_code": local,
        "test_name": name,
        "loinc": loinc,
        "sex": demo.get("gender", ""),
        "birth_date": demo.get("birthDate", ""),
    }
    quantity = obs.get("valueQuantity")
    if isinstance(quantity, dict):
        row["value_raw"] = _number_text(quantity.get("value"))
        row["comparator_raw"] = quantity.get("comparator", "")
        row["unit_raw"] = quantity.get("unit") or quantity.get("code") or ""
    elif "valueString" in obs:
        row["value_raw"] = str(obs["valueString"])
    elif isinstance(obs.get("valueCodeableConcept"), dict):
        cc = obs["valueCodeableConcept"]
        row["value_raw"] = cc.get("text") or next(
            (c.get("display", "") for c in cc.get("coding") or [] if c.get("display")), ""
        )
    elif isinstance(obs.get("dataAbsentReason"), dict):
        dar = obs["dataAbsentReason"]
        row["value_raw"] = dar.get("text") or next(
            (f"data absent: {c.get('code', '')}" for c in dar.get("coding") or []), "data absent"
        )
    ranges = obs.get("referenceRange") or []
    if ranges and isinstance(ranges[0], dict):
        rr = ranges[0]
        row["range_low_raw"] = _number_text((rr.get("low") or {}).get("value"))
        row["range_high_raw"] = _number_text((rr.get("high") or {}).get("value"))
        if not row["range_low_raw"] and not row["range_high_raw"]:
            row["range_raw"] = rr.get("text", "")
    flags = []
    for interp in obs.get("interpretation") or []:
        for c in interp.get("coding", []) or []:
            if c.get("code"):
                flags.append(str(c["code"]))
    row["flag"] = ";".join(dict.fromkeys(flags))
    notes = [n.get("text", "") for n in obs.get("note") or [] if isinstance(n, dict)]
    row["comment"] = " ".join(n for n in notes if n)
    return row


def fhir_raw(
    doc: Any, source_file: str, other_medicines: list[MedicationRecord] | None = None
) -> tuple[pd.DataFrame, list[tuple[int, str, str]], int]:
    """RAW rows for every Observation, plus (record number, reason, detail) for those that
    cannot be read (reason "malformed_row") or hold no result to interpret ("fhir_status"),
    and how many medication records of the file name a medicine the patterns read (they,
    and `other_medicines` from other files, are written into the medication text of the
    results they cover).

    `doc` is a parsed JSON document, or a list of (line number, resource) for NDJSON.
    """
    if isinstance(doc, list) and doc and isinstance(doc[0], tuple):
        found = ndjson_index(doc)
        own = len(found.medication_records())
        batches = list(iter_ndjson_rows(doc, found, source_file, None, None, other_medicines))
        raw, invalid = batches[0] if batches else (raw_from_records([], source_file), [])
        return raw, invalid, own
    obs_list, found = _walk(
        doc if not isinstance(doc, list) else {"entry": [{"resource": r} for r in doc]}
    )
    raw, invalid = _rows(list(enumerate(obs_list, start=1)), found, source_file, [])
    records = found.medication_records()
    mark_results(raw, [*records, *(other_medicines or [])])
    return raw, invalid, len(records)


def more_pages(doc: Any) -> bool:
    """Whether `doc` is one page of a FHIR search: a Bundle that links to a next page (a
    server returns results a page at a time; the pages after this one are not in it)."""
    bundle = _as_dict(doc)
    links = _as_list(bundle.get("link"))
    return bundle.get("resourceType") == "Bundle" and any(
        _as_dict(link).get("relation") == "next" for link in links
    )


# An NDJSON line can only hold a resource the index keeps (of its own, or contained) if it
# names the resource type: other lines need no parsing to build the index.
_INDEXED_TYPES = ('"Patient"', '"Specimen"', '"Medication')


def ndjson_wanted_for_index(line: str) -> bool:
    """Whether an NDJSON line may hold a resource `ndjson_index` keeps."""
    return any(kind in line for kind in _INDEXED_TYPES)


def ndjson_index(lines: Iterable[tuple[int, Any]]) -> Referenced:
    """The Patient, Specimen and medication resources of an NDJSON file (an Observation on
    any line may refer to them, or be covered by them)."""
    found = Referenced()
    kept = ("Patient", "Specimen", "Medication", *_MEDICINE_TYPES)
    for _, res in lines:
        # only such a resource, or a resource holding others, can add to the index
        if isinstance(res, dict) and (
            res.get("resourceType") in kept or "contained" in res or "entry" in res
        ):
            found.update(_walk(res)[1])
    return found


def iter_ndjson_rows(
    lines: Iterable[tuple[int, Any]],
    found: Referenced,
    source_file: str,
    batch_rows: int | None = 100_000,
    executor: Executor | None = None,
    other_medicines: list[MedicationRecord] | None = None,
) -> Iterator[tuple[pd.DataFrame, list[tuple[int, str, str]]]]:
    """`fhir_raw` of NDJSON lines in batches of about `batch_rows` lines (None: one batch),
    with the resources of the file from `ndjson_index`; each Observation is numbered by its
    line. With an `executor` (the audit's worker processes), the Observations are validated
    there, VALIDATE_CHUNK at a time, while this process reads on. The results are covered
    by the file's medication records and `other_medicines` (other files').
    """
    coverage = Coverage([*found.medication_records(), *(other_medicines or [])])
    rows: list[dict[str, Any]] = []
    invalid: list[tuple[int, str, str]] = []
    pending: list[tuple[int, dict[str, Any]]] = []  # read, not yet validated
    checks: deque[tuple[list[tuple[int, dict[str, Any]]], Future[list[str | None]]]] = deque()

    def settle(wait_for_all: bool) -> None:
        """Turn validated Observations into rows, in reading order."""
        while checks and (wait_for_all or checks[0][1].done() or len(checks) > _IN_FLIGHT):
            chunk, problems = checks.popleft()
            for (number, obs), problem in zip(chunk, problems.result(), strict=True):
                _add_row(number, obs, found, rows, invalid, problem)

    def validate_pending() -> None:
        nonlocal pending
        if executor is None:
            for number, obs in pending:
                _add_row(number, obs, found, rows, invalid, _validate(obs))
        elif pending:
            checks.append((pending, executor.submit(validate_many, [o for _, o in pending])))
            settle(wait_for_all=False)
        pending = []

    def batch() -> pd.DataFrame:
        raw = raw_from_records(rows, source_file)
        coverage.mark(raw)
        return raw

    for line, res in lines:
        if not isinstance(res, dict):  # a line is one resource: this one is counted too
            invalid.append((line, "malformed_row", "the line is not a FHIR resource"))
        else:
            for obs in _walk(res)[0]:
                status = _status_problem(obs)
                if status:
                    invalid.append((line, "fhir_status", status))
                else:
                    pending.append((line, obs))
        if executor is None or len(pending) >= VALIDATE_CHUNK:
            validate_pending()
        if batch_rows is not None and len(rows) + len(invalid) >= batch_rows:
            yield batch(), invalid
            rows, invalid = [], []
    validate_pending()
    settle(wait_for_all=True)
    if rows or invalid:
        yield batch(), invalid


# Observations per validation task handed to worker processes, and the tasks that may be
# in flight before reading waits for the oldest (bounds the resources held in memory).
VALIDATE_CHUNK = 1_000
_IN_FLIGHT = 8


def validate_many(resources: list[dict[str, Any]]) -> list[str | None]:
    """`_validate` of each resource (a task for a worker process)."""
    return [_validate(r) for r in resources]


def _rows(
    numbered: list[tuple[int, dict[str, Any]]],
    found: Referenced,
    source_file: str,
    invalid: list[tuple[int, str, str]],
) -> tuple[pd.DataFrame, list[tuple[int, str, str]]]:
    """RAW rows of numbered Observations, and the rejected ones added to `invalid`."""
    rows: list[dict[str, Any]] = []
    for number, obs in numbered:
        status = _status_problem(obs)
        if status:
            invalid.append((number, "fhir_status", status))
        else:
            _add_row(number, obs, found, rows, invalid, _validate(obs))
    return raw_from_records(rows, source_file), invalid


def _add_row(
    number: int,
    obs: dict[str, Any],
    found: Referenced,
    rows: list[dict[str, Any]],
    invalid: list[tuple[int, str, str]],
    problem: str | None,
) -> None:
    """The Observation's RAW row added to `rows`, or, when validation found a `problem`,
    why it cannot be used to `invalid`."""
    if problem:
        invalid.append((number, "malformed_row", f"not a valid FHIR Observation: {problem}"))
        return
    row = _row(obs, number, found)
    # preliminary, final, amended, corrected: the reader keeps the latest version of a
    # result the lab replaced (a text, or _status_problem would have rejected it)
    row["result_status"] = str(obs.get("status") or "")
    rows.append(row)
