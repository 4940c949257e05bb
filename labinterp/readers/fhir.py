"""FHIR R4/R5 Observations (Bundle, single resource or NDJSON) into the RAW table.

Each Observation is validated with the `fhir.resources` models (R5 first, then R4B) so a
damaged resource is rejected with the validator's reason instead of being half-read.
Kept: valueQuantity (value as its exact decimal text, unit, comparator), valueString,
referenceRange, interpretation, notes and the specimen reference.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from labinterp.schema import RAW, conform

LOINC_SYSTEM = "http://loinc.org"


def _observation_model() -> tuple[Any, Any]:
    from fhir.resources.observation import Observation as ObservationR5
    from fhir.resources.R4B.observation import Observation as ObservationR4B

    return ObservationR5, ObservationR4B


def _validate(resource: dict[str, Any]) -> str | None:
    """None if the Observation validates as R5 or R4B, else the first validation error."""
    r5, r4b = _observation_model()
    errors = []
    for model in (r5, r4b):
        try:
            model.model_validate(resource)
            return None
        except Exception as exc:  # pydantic.ValidationError and friends
            errors.append(str(exc).splitlines()[0])
    return errors[-1] if errors else "invalid"


def _ref_id(ref: Any) -> str:
    text = ref.get("reference", "") if isinstance(ref, dict) else ""
    for prefix in ("urn:uuid:", "urn:oid:"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text.rsplit("/", 1)[-1] if "/" in text else text


_INHERITED = ("subject", "effectiveDateTime", "effectivePeriod", "effectiveInstant", "specimen")


def _inherit(observations: list[dict[str, Any]], reports: list[dict[str, Any]]) -> None:
    """Fill subject, time and specimen that a result leaves to its report or panel.

    Lab reports often state the patient and collection time once on the DiagnosticReport
    (or on a panel Observation) and list member results by reference.
    """
    context: dict[str, dict[str, Any]] = {}

    def give(parent: dict[str, Any], refs: list[Any]) -> None:
        shared = {k: parent[k] for k in _INHERITED if k in parent}
        if isinstance(shared.get("specimen"), list):
            specimens = shared["specimen"]
            shared["specimen"] = specimens[0] if len(specimens) == 1 else None
        for ref in refs or []:
            target = _ref_id(ref)
            if target:
                merged = {**shared, **{k: v for k, v in context.get(target, {}).items() if v}}
                context[target] = merged

    for report in reports:
        give(report, report.get("result") or [])
    by_id = {str(o.get("id", "")): o for o in observations}
    for _ in range(3):  # panels of panels are at most a few levels deep
        for obs in observations:
            oid = str(obs.get("id", ""))
            parent = {**context.get(oid, {}), **{k: obs[k] for k in _INHERITED if k in obs}}
            give(parent, obs.get("hasMember") or [])
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


def _walk(doc: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """All Observation resources in document order, and Patient resources by id."""
    observations: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    patients: dict[str, dict[str, Any]] = {}

    def visit(res: Any) -> None:
        if not isinstance(res, dict):
            return
        kind = res.get("resourceType")
        if kind == "Observation":
            observations.append(res)
        elif kind == "DiagnosticReport":
            reports.append(res)
        elif kind == "Patient":
            patients[str(res.get("id", ""))] = res
        for entry in res.get("entry", []) or []:
            if isinstance(entry, dict):
                visit(entry.get("resource"))
                full = entry.get("fullUrl", "")
                r = entry.get("resource") or {}
                if r.get("resourceType") == "Patient" and full:
                    patients[_ref_id({"reference": full})] = r
        for contained in res.get("contained", []) or []:
            visit(contained)

    visit(doc)
    _inherit(observations, reports)
    return observations, patients


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _row(obs: dict[str, Any], number: int, patients: dict[str, dict[str, Any]]) -> dict[str, str]:
    codings = (obs.get("code") or {}).get("coding") or []
    loinc = next((c.get("code", "") for c in codings if c.get("system") == LOINC_SYSTEM), "")
    local = next((c.get("code", "") for c in codings if c.get("system") != LOINC_SYSTEM), "")
    name = (obs.get("code") or {}).get("text") or next(
        (c.get("display", "") for c in codings if c.get("display")), ""
    )
    patient = _ref_id(obs.get("subject"))
    demo = patients.get(patient, {})
    row = {
        "source_row": number,
        "patient_id": patient,
        "collected_at": obs.get("effectiveDateTime")
        or (obs.get("effectivePeriod") or {}).get("start")
        or obs.get("effectiveInstant")
        or "",
        "specimen_id": _ref_id(obs.get("specimen")),
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
            (c.get("display", "") for c in cc.get("coding", []) if c.get("display")), ""
        )
    elif isinstance(obs.get("dataAbsentReason"), dict):
        dar = obs["dataAbsentReason"]
        row["value_raw"] = dar.get("text") or next(
            (f"data absent: {c.get('code', '')}" for c in dar.get("coding", [])), "data absent"
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


def fhir_raw(doc: Any, source_file: str) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """RAW rows for every Observation, plus (record number, reason) for invalid ones.

    `doc` is a parsed JSON document, or a list of (line number, resource) for NDJSON.
    """
    if isinstance(doc, list) and doc and isinstance(doc[0], tuple):
        numbered: list[tuple[int, dict[str, Any]]] = []
        patients: dict[str, dict[str, Any]] = {}
        for line, res in doc:
            found, pats = _walk(res)
            patients.update(pats)
            numbered.extend((line, o) for o in found)
    else:
        obs_list, patients = _walk(
            doc if not isinstance(doc, list) else {"entry": [{"resource": r} for r in doc]}
        )
        numbered = list(enumerate(obs_list, start=1))
    rows = []
    invalid = []
    for number, obs in numbered:
        problem = _validate(obs)
        if problem:
            invalid.append((number, problem))
            continue
        rows.append(_row(obs, number, patients))
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["source_row"])
    frame["source_file"] = source_file
    for col in frame.columns:
        if col != "source_row":
            frame[col] = frame[col].fillna("")
    return conform(frame, RAW), invalid
