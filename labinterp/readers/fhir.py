"""FHIR R4/R5 Observations (Bundle, single resource or NDJSON) into the RAW table.

Each Observation is validated with the `fhir.resources` models (R5 first, then R4B) so a
damaged resource is rejected with the validator's reason instead of being half-read.
Kept: valueQuantity (value as its exact decimal text, unit, comparator), valueInteger,
valueString, the referenceRange that applies to the patient, interpretation, notes and the
specimen. References name contained resources ("#id", within their container only) or the
file's resources by id or fullUrl. Observations whose status says they hold no result
(cancelled, entered-in-error, registered) are rejected too.

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

from labinterp import units
from labinterp.readers.formats import number_text
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
    "cancelled": "the test was cancelled, so there is no result to interpret; nothing to fix",
    "entered-in-error": (
        "the result was withdrawn as entered in error and must not be used; nothing to fix"
    ),
    "registered": "the test is ordered but has no result yet; read it again once it has one",
}
# The rest of FHIR R4/R5's ObservationStatus codes (a required binding, which the model
# classes do not check): results that may be interpreted, each with the word
# reference_ranges/result_statuses.toml reads it by. "unknown" says the sender does not
# know which status applies, as an export that prints no status: the result is kept, its
# status not given.
RESULT_STATUSES = {
    "preliminary": "preliminary",
    "final": "final",
    "amended": "amended",
    "corrected": "corrected",
    "unknown": "",
}


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
        return (
            "status is not a FHIR Observation status, so whether the result stands is"
            " unknown; correct the status at the source (final, amended, corrected, ...)"
        )
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


Index = dict[str, dict[str, Any]]  # resources by id


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


def _local_name(ref: Any) -> str:
    """The id a reference to a contained resource ("#sp1") names, else ""."""
    text = _as_dict(ref).get("reference")
    return text[1:] if isinstance(text, str) and text.startswith("#") else ""


def _contained(res: dict[str, Any]) -> Index:
    """The resources contained in `res`, by id (what its "#id" references name)."""
    return {
        c["id"]: c
        for c in _as_list(res.get("contained"))
        if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]
    }


_INHERITED = ("subject", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "specimen")


def _inherit(
    observations: list[tuple[dict[str, Any], Index]],
    reports: list[tuple[dict[str, Any], Index]],
    by_ref: Index,
) -> None:
    """Fill subject, time and specimen that a result leaves to its report or panel.

    Lab reports often state the patient and collection time once on the DiagnosticReport
    (or on a panel Observation) and list member results by reference: "#c1" for one
    contained in the report (its own, even if another report contains a "#c1" too), else
    an Observation of the file by id or by its entry's fullUrl (`by_ref`; a transaction
    names its new resources only by "urn:uuid:" fullUrls).
    """
    local_of = {id(obs): local for obs, local in observations}
    context: dict[int, dict[str, Any]] = {}  # by id() of the member Observation

    def member(ref: Any, local: Index) -> dict[str, Any] | None:
        name = _local_name(ref)
        target = local.get(name) if name else by_ref.get(_ref_id(ref))
        return target if _as_dict(target).get("resourceType") == "Observation" else None

    def give(parent: dict[str, Any], local: Index, refs: list[Any]) -> None:
        # what is given is not checked here: the member's own validation rejects it
        shared = {k: parent[k] for k in _INHERITED if k in parent}
        if isinstance(shared.get("specimen"), list):
            specimens = shared["specimen"]
            shared["specimen"] = specimens[0] if len(specimens) == 1 else None
        for ref in refs:
            target = member(ref, local)
            if target is None:
                continue
            earlier = {k: v for k, v in context.get(id(target), {}).items() if v}
            context[id(target)] = {**shared, **earlier}
            # a "#id" subject or specimen given names a resource contained in the parent
            for key in ("subject", "specimen"):
                name = _local_name(shared.get(key))
                if name in local and id(target) in local_of:
                    local_of[id(target)].setdefault(name, local[name])

    for report, local in reports:
        give(report, local, _as_list(report.get("result")))
    for _ in range(3):  # panels of panels are at most a few levels deep
        for obs, local in observations:
            parent = {**context.get(id(obs), {}), **{k: obs[k] for k in _INHERITED if k in obs}}
            give(parent, local, _as_list(obs.get("hasMember")))
    for obs, _ in observations:
        has_time = any(k in obs for k in _INHERITED[1:4])
        for key, value in context.get(id(obs), {}).items():
            if value is None or key in obs:
                continue
            if key.startswith("effective") and has_time:
                continue
            obs[key] = value


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
    # the patients by identifier, (system, value) -> (id, Patient): made when first asked
    _by_identifier: dict[tuple[str, str], tuple[str, dict[str, Any]]] | None = None

    def patient_with_identifier(self, identifier: Any) -> tuple[str, dict[str, Any]] | None:
        """The id and resource of the file's Patient a subject given only by an
        identifier names: the one with that identifier (its system too, where both say
        one), as a reference to it would have found it; None if no Patient has it."""
        if self._by_identifier is None:
            self._by_identifier = {}
            # a Patient is indexed by its id and by its entry's fullUrl: its id first
            for key, res in sorted(self.patients.items(), key=lambda kv: kv[0] != kv[1].get("id")):
                for ident in _as_list(res.get("identifier")):
                    value = _text_at(ident, "value")
                    if value:
                        for system in {_text_at(ident, "system"), ""}:
                            self._by_identifier.setdefault((system, value), (key, res))
        value = _text_at(identifier, "value")
        return self._by_identifier.get((_text_at(identifier, "system"), value)) if value else None

    def update(self, other: Referenced) -> None:
        """Add what `other` (one more line of an NDJSON file) found, making records of its
        medication resources at once and letting them go (a bulk export may list millions,
        few of which name a medicine the patterns read); one that names its medicine only
        by a Medication resource not seen yet waits for the end of the file."""
        self.patients.update(other.patients)
        self._by_identifier = None  # made again, with the new patients, when next asked
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
        record = _medication_record(res, name, self)
        if record is not None:
            self.records.append(record)

    def medication_records(self) -> list[MedicationRecord]:
        """The medication records of the file that name a medicine the patterns read."""
        waiting, self.medicines = self.medicines, []
        for res in waiting:
            self._take(res, final=True)
        return self.records


def _walk(doc: Any) -> tuple[list[tuple[dict[str, Any], Index]], Referenced]:
    """All Observation resources in document order, each with the resources its "#id"
    references may name (contained in it or, when it is contained itself, beside it in
    its container), and the resources of the file they may refer to. A contained
    resource's id means something only within its container, so it is not indexed."""
    observations: list[tuple[dict[str, Any], Index]] = []
    reports: list[tuple[dict[str, Any], Index]] = []
    by_ref: Index = {}  # Observations that are not contained, by id and by fullUrl
    found = Referenced()
    by_type = {"Patient": found.patients, "Specimen": found.specimens, "Medication": found.products}

    def visit(res: Any, container: Index | None) -> None:
        if not isinstance(res, dict):
            return
        kind = res.get("resourceType")
        local = _contained(res) if container is None else container
        res_id = res.get("id") if isinstance(res.get("id"), str) else ""
        if kind == "Observation":
            observations.append((res, local))
            if res_id and container is None:
                by_ref[res_id] = res
        elif kind == "DiagnosticReport":
            reports.append((res, local))
        elif kind in _MEDICINE_TYPES:
            found.medicines.append(res)
        elif isinstance(kind, str) and kind in by_type and res_id and container is None:
            by_type[kind][res_id] = res
        for entry in _as_list(res.get("entry")):
            resource = _as_dict(entry).get("resource")
            visit(resource, None)
            # a Patient without a usable id or fullUrl is nobody's: an Observation without
            # a subject must not borrow its sex and age
            full_id = _ref_id({"reference": _as_dict(entry).get("fullUrl")})
            kind_of_entry = _as_dict(resource).get("resourceType")
            if isinstance(kind_of_entry, str) and kind_of_entry in by_type and full_id:
                by_type[kind_of_entry][full_id] = _as_dict(resource)
            elif kind_of_entry == "Observation" and full_id:
                by_ref[full_id] = _as_dict(resource)
        # a medication record's contained Medication is its own; contained resources
        # contain no others
        if kind not in _MEDICINE_TYPES and container is None:
            for contained in _as_list(res.get("contained")):
                visit(contained, local)

    visit(doc, None)
    _inherit(observations, reports, by_ref)
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


def _medication_record(
    res: dict[str, Any], name: str, found: Referenced
) -> MedicationRecord | None:
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
        patient_id=_patient(res.get("subject"), _contained(res), found)[0],
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


def _specimen(obs: dict[str, Any], local: Index, specimens: Index) -> tuple[str, str]:
    """(specimen id, what the specimen is: "Urine specimen") of an Observation: the type of
    the Specimen resource it refers to (contained in it, or of the file), else the
    reference's display text; "" where the file does not say. A contained Specimen's
    "#id" means nothing outside its container, so it is identified by its accession
    number, if any."""
    ref = _as_dict(obs.get("specimen"))
    name = _local_name(ref)
    if name:
        specimen = _as_dict(local.get(name))
        specimen_id = _text_at(specimen, "accessionIdentifier", "value")
    else:
        specimen_id = _ref_id(ref)
        specimen = _as_dict(specimens.get(specimen_id))
    kind = _as_dict(specimen.get("type"))
    codings = [_as_dict(c) for c in _as_list(kind.get("coding"))]
    for text in (
        kind.get("text"),
        *(c.get("display") for c in codings),
        *(c.get("code") for c in codings),
        ref.get("display"),
    ):
        if isinstance(text, str) and text.strip():
            return specimen_id, text.strip()
    return specimen_id, ""


def _patient(subject: Any, local: Index, found: Referenced | None) -> tuple[str, dict[str, Any]]:
    """(patient id, Patient resource or {}) of a subject: a Patient of the file by its id
    or fullUrl; a contained one ("#p1", meaningful only within its container) by its
    identifier; a subject given only by an identifier: the file's Patient with that
    identifier (its id, sex and birth date, as a reference would give them), else the
    identifier's value."""
    ref = _as_dict(subject)
    name = _local_name(ref)
    if name:
        patient = _as_dict(local.get(name))
        return _identifier_value(patient.get("identifier")), patient
    patient_id = _ref_id(ref)
    if patient_id:
        return patient_id, _as_dict(found.patients.get(patient_id)) if found else {}
    identifier = ref.get("identifier")
    match = found.patient_with_identifier(identifier) if found else None
    return match if match else (_identifier_value([identifier]), {})


def _identifier_value(identifiers: Any) -> str:
    """The medical record number (type MR) of a list of FHIR Identifiers, else the first
    that is not a social security number, else the first: as the HL7 v2 reader reads
    PID-3, so that a patient has the same id in both. Its system is left out for the
    same reason (PID-3 is read without its assigning authority)."""
    first = other = ""
    for identifier in _as_list(identifiers):
        value = _text_at(identifier, "value")
        if not value:
            continue
        kind = _as_dict(_as_dict(identifier).get("type"))
        codes = {_text_at(c, "code").upper() for c in _as_list(kind.get("coding"))}
        if "MR" in codes:
            return value
        other = other or (value if "SS" not in codes else "")
        first = first or value
    return other or first


UCUM_SYSTEM = "http://unitsofmeasure.org"


def _unit(quantity: dict[str, Any]) -> str:
    """A Quantity's unit: its UCUM code when it has one labinterp knows (the `unit` is
    display text, "milligram per deciliter"), else whichever of unit and code labinterp
    knows, else the unit text as printed (the normalizer says why it is not read)."""
    unit, code = _text_at(quantity, "unit"), _text_at(quantity, "code")
    ucum = quantity.get("system") == UCUM_SYSTEM
    for text in (code, unit) if ucum else (unit, code):
        if text and units.lookup(text) is not None:
            return text
    return unit or code


# appliesTo codes naming a sex: FHIR administrative-gender, HL7 v2 and SNOMED CT
_SEX_CODES = {
    "male": "male",
    "female": "female",
    "m": "male",
    "f": "female",
    "248153007": "male",
    "248152002": "female",
}


def _applicable_range(
    ranges: list[Any], sex: str, birth_date: str, collected_at: str
) -> dict[str, Any] | None:
    """The referenceRange that applies to the patient: of those whose appliesTo and age
    fit the patient's sex and age at collection, and that are normal ranges, one without
    such restrictions, else one typed "normal"; None when no range fits, or several
    different ones do (a wrong range is worse than the bundled one the normalizer uses
    for a row without a range)."""
    fits = [r for r in map(_as_dict, ranges) if r and _fits(r, sex, birth_date, collected_at)]
    unrestricted = [r for r in fits if not r.get("appliesTo") and not r.get("age")]
    fits = unrestricted or fits
    fits = [r for r in fits if "normal" in _meanings(r)] or fits
    limits = {repr((r.get("low"), r.get("high"), r.get("text"))) for r in fits}
    return fits[0] if len(limits) == 1 else None


def _meanings(rr: dict[str, Any]) -> set[str]:
    """A range's type codes (or text), lower case: "normal", "treatment", ..."""
    kind = _as_dict(rr.get("type"))
    codes = {_text_at(c, "code").lower() for c in _as_list(kind.get("coding"))} - {""}
    return codes or ({_text_at(kind, "text").lower()} - {""})


def _fits(rr: dict[str, Any], sex: str, birth_date: str, collected_at: str) -> bool:
    """Whether a range is a normal range for the patient: not another type (treatment,
    therapeutic), no appliesTo other than the patient's sex, an age band the patient's
    age is known to be in. What this cannot check (an appliesTo for pregnancy, an age in
    an unknown unit, a patient of unknown sex or age) does not fit."""
    meanings = _meanings(rr)
    if meanings and not any("normal" in m or "reference" in m for m in meanings):
        return False
    for concept in _as_list(rr.get("appliesTo")):
        codes = [_text_at(c, "code").lower() for c in _as_list(_as_dict(concept).get("coding"))]
        named = {_SEX_CODES.get(c) for c in codes or [_text_at(concept, "text").lower()]}
        if named != {sex}:
            return False
    band = _as_dict(rr.get("age"))
    for end, sign in (("low", 1), ("high", -1)):
        limit = _as_dict(band.get(end))
        if limit.get("value") is None:
            continue
        age = _age(birth_date, collected_at, _text_at(limit, "code") or _text_at(limit, "unit"))
        if age is None or not isinstance(limit["value"], (int, float)):
            return False
        if sign * (age - limit["value"]) < 0:  # below the low limit, or above the high
            return False
    return True


def _age(birth_date: str, collected_at: str, unit: str) -> int | None:
    """The patient's age at collection in whole `unit`s (UCUM a, mo, wk, d), or None when
    a date is not a full one or the unit is none of those."""
    try:
        born = dt.date.fromisoformat(birth_date)
        on = dt.date.fromisoformat(collected_at[:10])
    except ValueError:
        return None
    before_birthday = (on.month, on.day) < (born.month, born.day)
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    days = (on - born).days
    ages = {"a": on.year - born.year - before_birthday, "mo": months, "wk": days // 7, "d": days}
    ages.update(year=ages["a"], years=ages["a"], yr=ages["a"], month=months, months=months)
    return ages.get(unit.strip().lower())


def _range_columns(rr: dict[str, Any] | None, unit: str) -> dict[str, str]:
    """The RAW range columns of a referenceRange for a value in `unit`. Limits in another
    unit are given as text with their unit ("2.12-2.62 mmol/L"), as a CSV prints them, so
    the normalizer converts them to the value's unit."""
    if rr is None:
        return {}
    low, high = _as_dict(rr.get("low")), _as_dict(rr.get("high"))
    low_text, high_text = _number_text(low.get("value")), _number_text(high.get("value"))
    if not low_text and not high_text:
        return {"range_raw": _text_at(rr, "text")}
    stated = {_unit(q) for q in (low, high) if q.get("value") is not None} - {""}
    if not stated or stated == {unit}:
        return {"range_low_raw": low_text, "range_high_raw": high_text}
    if len(stated) > 1:
        return {}  # each limit in its own unit: not seen in practice, not guessed at
    (in_unit,) = stated
    if low_text and high_text:
        return {"range_raw": f"{low_text} to {high_text} {in_unit}"}
    return {"range_raw": f">= {low_text} {in_unit}" if low_text else f"<= {high_text} {in_unit}"}


def _number_text(value: Any) -> str:
    return "" if value is None else number_text(value)


def _row(obs: dict[str, Any], local: Index, number: int, found: Referenced) -> dict[str, Any]:
    codings = (obs.get("code") or {}).get("coding") or []
    loinc = next((c.get("code", "") for c in codings if c.get("system") == LOINC_SYSTEM), "")
    local_code = next((c.get("code", "") for c in codings if c.get("system") != LOINC_SYSTEM), "")
    name = (obs.get("code") or {}).get("text") or next(
        (c.get("display", "") for c in codings if c.get("display")), ""
    )
    patient, resource = _patient(obs.get("subject"), local, found)
    # Patient resources are not validated: only text is taken from them
    demo = {k: v for k, v in resource.items() if isinstance(v, str)}
    specimen_id, specimen_type = _specimen(obs, local, found.specimens)
    collected_at = (
        obs.get("effectiveDateTime")
        or (obs.get("effectivePeriod") or {}).get("start")
        or obs.get("effectiveInstant")
        or ""
    )
    row = {
        "source_row": number,
        "patient_id": patient,
        "collected_at": collected_at,
        "specimen_id": specimen_id,
        "specimen_type": specimen_type,
        "test_code": local_code,
        "test_name": name,
        "loinc": loinc,
        "sex": demo.get("gender", ""),
        "birth_date": demo.get("birthDate", ""),
    }
    quantity = obs.get("valueQuantity")
    if isinstance(quantity, dict):
        row["value_raw"] = _number_text(quantity.get("value"))
        row["comparator_raw"] = quantity.get("comparator", "")
        row["unit_raw"] = _unit(quantity)
    elif isinstance(obs.get("valueInteger"), int) and not isinstance(obs["valueInteger"], bool):
        row["value_raw"] = str(obs["valueInteger"])  # a count or score: no unit in FHIR
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
    ranges = _as_list(obs.get("referenceRange"))
    sex, born = demo.get("gender", ""), demo.get("birthDate", "")
    chosen = _applicable_range(ranges, sex, born, collected_at)
    row.update(_range_columns(chosen, _unit(quantity) if isinstance(quantity, dict) else ""))
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
) -> tuple[pd.DataFrame, list[tuple[Any, ...]], int]:
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
    numbered = [(number, obs, local) for number, (obs, local) in enumerate(obs_list, start=1)]
    raw, invalid = _rows(numbered, found, source_file, [])
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


# An Observation with its record or line number and the resources its "#id" references name
Numbered = tuple[int, dict[str, Any], Index]


def iter_ndjson_rows(
    lines: Iterable[tuple[int, Any]],
    found: Referenced,
    source_file: str,
    batch_rows: int | None = 100_000,
    executor: Executor | None = None,
    other_medicines: list[MedicationRecord] | None = None,
) -> Iterator[tuple[pd.DataFrame, list[tuple[Any, ...]]]]:
    """`fhir_raw` of NDJSON lines in batches of about `batch_rows` lines (None: one batch),
    with the resources of the file from `ndjson_index`; each Observation is numbered by its
    line. With an `executor` (the audit's worker processes), the Observations are validated
    there, VALIDATE_CHUNK at a time, while this process reads on. The results are covered
    by the file's medication records and `other_medicines` (other files').
    """
    coverage = Coverage([*found.medication_records(), *(other_medicines or [])])
    rows: list[dict[str, Any]] = []
    invalid: list[tuple[Any, ...]] = []
    pending: list[Numbered] = []  # read, not yet validated
    checks: deque[tuple[list[Numbered], Future[list[str | None]]]] = deque()

    def settle(wait_for_all: bool) -> None:
        """Turn validated Observations into rows, in reading order."""
        while checks and (wait_for_all or checks[0][1].done() or len(checks) > _IN_FLIGHT):
            chunk, problems = checks.popleft()
            for (number, obs, local), problem in zip(chunk, problems.result(), strict=True):
                _add_row(number, obs, local, found, rows, invalid, problem)

    def validate_pending() -> None:
        nonlocal pending
        if executor is None:
            for number, obs, local in pending:
                _add_row(number, obs, local, found, rows, invalid, _validate(obs))
        elif pending:
            checks.append((pending, executor.submit(validate_many, [o for _, o, _ in pending])))
            settle(wait_for_all=False)
        pending = []

    def batch() -> pd.DataFrame:
        raw = raw_from_records(rows, source_file)
        coverage.mark(raw)
        return raw

    for line, res in lines:
        if not isinstance(res, dict):  # a line is one resource: this one is counted too
            invalid.append(
                (
                    line,
                    "malformed_row",
                    "the line is not a FHIR resource; correct the export (one JSON resource"
                    " per line)",
                )
            )
        else:
            for obs, local in _walk(res)[0]:
                status = _status_problem(obs)
                if status:
                    invalid.append(_unused(line, "fhir_status", status, obs, local, found))
                else:
                    pending.append((line, obs, local))
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
    numbered: list[Numbered],
    found: Referenced,
    source_file: str,
    invalid: list[tuple[Any, ...]],
) -> tuple[pd.DataFrame, list[tuple[Any, ...]]]:
    """RAW rows of numbered Observations, and the rejected ones added to `invalid`."""
    rows: list[dict[str, Any]] = []
    for number, obs, local in numbered:
        status = _status_problem(obs)
        if status:
            invalid.append(_unused(number, "fhir_status", status, obs, local, found))
        else:
            _add_row(number, obs, local, found, rows, invalid, _validate(obs))
    return raw_from_records(rows, source_file), invalid


def _unused(
    number: int, reason: str, detail: str, obs: dict[str, Any], local: Index, found: Referenced
) -> tuple[Any, ...]:
    """An Observation that cannot be used, as `invalid` lists it: (record number, reason,
    detail, {"patient_id": its subject's id}). The subject is read as for a used one (an
    invalid resource's subject is still a JSON value), so a patient's rejected rows carry
    the id its results do."""
    return (number, reason, detail, {"patient_id": _patient(obs.get("subject"), local, found)[0]})


def _add_row(
    number: int,
    obs: dict[str, Any],
    local: Index,
    found: Referenced,
    rows: list[dict[str, Any]],
    invalid: list[tuple[Any, ...]],
    problem: str | None,
) -> None:
    """The Observation's RAW row added to `rows`, or, when validation found a `problem`,
    why it cannot be used to `invalid`. `local`: the resources its "#id" references name."""
    if problem:
        detail = f"not a valid FHIR Observation: {problem}; correct it at the source"
        invalid.append(_unused(number, "malformed_row", detail, obs, local, found))
        return
    row = _row(obs, local, number, found)
    # the reader keeps the latest version of a result the lab replaced (the status is a
    # code of RESULT_STATUSES, or missing: _status_problem rejected the rest)
    row["result_status"] = RESULT_STATUSES.get(str(obs.get("status") or "").strip().lower(), "")
    rows.append(row)
