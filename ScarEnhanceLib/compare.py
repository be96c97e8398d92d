"""How sure a difference between two evaluations is: a per-case paired comparison with 95 % intervals.

Held-out splits are small (EMIDEC validation has 7 cases with scar), so a mean Dice or CNR moves by a few
hundredths with the cases alone. The Student-t interval over cases is given for a mean, and for the mean
per-case difference between two models evaluated on the same cases: an interval that holds 0 says the cases
cannot tell the models apart. (A bootstrap interval would be narrower than it should be on so few cases.)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_interval(values) -> tuple[float, float]:
    """95 % Student-t interval of the mean of ``values`` over cases (NaNs left out); NaN with fewer than 2."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + LEVEL / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def _number(value) -> Optional[float]:
    """A finite number from an evaluation row (strict JSON writes null where one is not available), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


NOT_AN_EVALUATION = "compare takes the JSON that `scarenhance evaluate` writes (evaluation_<task>.json)"


def _rows_by_case(group: dict, name: str) -> dict[str, dict]:
    rows = group.get("rows") if isinstance(group, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and "case" in row for row in rows):
        raise ValueError(f"{name}: no per-case rows; {NOT_AN_EVALUATION}")
    by_case = {row["case"]: row for row in rows}
    if len(by_case) < len(rows):
        raise ValueError(f"{name}: a case is listed twice; {NOT_AN_EVALUATION}")
    return by_case


def compare_metric(base_rows: dict, candidate_rows: dict, key: str) -> Optional[dict]:
    """Paired readout of one metric over the cases both evaluations have it for; None where no case has it."""
    pairs = [(_number(base_rows[c].get(key)), _number(candidate_rows[c].get(key)))
             for c in base_rows if c in candidate_rows]
    pairs = np.array([p for p in pairs if None not in p], dtype=float).reshape(-1, 2)
    if not len(pairs):
        return None
    difference = pairs[:, 1] - pairs[:, 0]
    low, high = mean_interval(difference)
    return {"metric": key, "cases": int(len(pairs)), "base": float(pairs[:, 0].mean()),
            "candidate": float(pairs[:, 1].mean()), "difference": float(difference.mean()),
            "difference_low": low, "difference_high": high,
            "higher": int((difference > 0).sum()), "lower": int((difference < 0).sum())}


# what a row records that is no readout to compare: names, and the counts behind the pooled share
BOOKKEEPING = ("case", "slices", "has_scar", "brightened_pixels", "brightened_outside_scar_pixels")


def _parts(label: str, rows: dict[str, dict]) -> dict[str, tuple[dict, Optional[tuple]]]:
    """An enhancement evaluation's cases with scar and its normal cases apart, as ``evaluate`` summarises them
    (normal cases only on what must not happen there); other evaluations whole. label -> (rows, metrics or all)."""
    if not any("has_scar" in row for row in rows.values()):
        return {label: (rows, None)}
    from .evaluate import NORMAL_METRICS
    normal = {case: row for case, row in rows.items() if row.get("has_scar") is False}
    parts = {label: ({case: row for case, row in rows.items() if case not in normal}, None)}
    if normal:
        parts[f"{label}, normal cases"] = (normal, NORMAL_METRICS)
    return parts


def _group_pairs(base: dict, candidate: dict, groups: Optional[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """label -> (base group, candidate group): the groups of the same name, or the two ``groups`` given."""
    for role, evaluation in (("base", base), ("candidate", candidate)):
        if not isinstance(evaluation, dict):
            raise ValueError(f"the {role} is not an evaluation: {NOT_AN_EVALUATION}")
    if groups is not None:
        for role, name, evaluation in zip(("base", "candidate"), groups, (base, candidate)):
            if name not in evaluation:
                raise ValueError(f"no group {name!r} in the {role} evaluation (it has {sorted(evaluation)})")
        return {f"{groups[1]} against {groups[0]}": tuple(groups)}
    pairs = {name: (name, name) for name in base if name in candidate}
    if not pairs:
        raise ValueError(f"the two evaluations share no data set or variant (base: {sorted(base)}; "
                         f"candidate: {sorted(candidate)})")
    return pairs


def unpaired_cases(base: dict, candidate: dict,
                   groups: Optional[tuple[str, str]] = None) -> dict[str, tuple[list[str], list[str]]]:
    """label -> (cases only the base has, cases only the candidate has), where either has some: they are left out
    of the comparison, which a reader should know (other splits, or --max-cases)."""
    unpaired = {}
    for label, (base_name, candidate_name) in _group_pairs(base, candidate, groups).items():
        base_cases = set(_rows_by_case(base[base_name], base_name))
        candidate_cases = set(_rows_by_case(candidate[candidate_name], candidate_name))
        if base_cases != candidate_cases:
            unpaired[label] = (sorted(base_cases - candidate_cases), sorted(candidate_cases - base_cases))
    return unpaired


def compare_evaluations(base: dict, candidate: dict, metrics: Optional[list[str]] = None,
                        groups: Optional[tuple[str, str]] = None) -> dict[str, list[dict]]:
    """Per group (data set, or data set and variant) both evaluations hold, or only the base's ``groups[0]``
    against the candidate's ``groups[1]`` (a model against a baseline of the same file): the paired readout of
    each numeric metric of the rows (or only ``metrics``), in the order the base rows give them."""
    pairs = _group_pairs(base, candidate, groups)
    comparison, seen = {}, set()
    for label, (base_name, candidate_name) in pairs.items():
        base_rows = _rows_by_case(base[base_name], base_name)
        candidate_rows = _rows_by_case(candidate[candidate_name], candidate_name)
        if not set(base_rows) & set(candidate_rows):
            raise ValueError(f"{label}: the two evaluations share no case")
        for part, (rows, allowed) in _parts(label, base_rows).items():
            keys = [k for k in dict.fromkeys(k for row in rows.values() for k in row)
                    if k not in BOOKKEEPING and (allowed is None or k in allowed)]
            seen.update(keys)
            readouts = [compare_metric(rows, candidate_rows, key) for key in keys if not metrics or key in metrics]
            if readouts:
                comparison[part] = [r for r in readouts if r is not None]
    missing = [m for m in metrics or () if m not in seen]
    if missing:
        raise ValueError(f"no metric {missing} in the evaluations' rows (they have {sorted(seen)})")
    return comparison


# what two evaluations being compared are meant to differ in (the models: their folders and checksums), and
# settings that leave the result as it is (the same seed on the same device gives the same result whatever the batch)
NOT_COMPARED = ("models", "sha256", "compare_models", "parameters.batch_size", "parameters.compile_network")


def _flattened(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _comparable(record: dict) -> dict:
    """A record's entries that should agree, data sets by name (the rows are keyed by it, wherever the folder
    lies)."""
    flat = {key: value for key, value in _flattened(record).items()
            if not any(key == entry or key.startswith(f"{entry}.") for entry in NOT_COMPARED)}
    if isinstance(flat.get("datasets"), list):
        flat["datasets"] = [Path(str(folder)).name for folder in flat["datasets"]]
    return flat


def record_differences(base: dict, candidate: dict) -> tuple[list[str], list[str]]:
    """What two evaluations' records of what they were made with (the ``evaluation_<task>_made_with.json`` that
    ``evaluate`` writes) disagree on, the models left out: 'entry: base / candidate' where both record the entry,
    'entry: base (value)' or 'entry: candidate (value)' where only one does (a record made before the entry was)."""
    base_flat, candidate_flat = _comparable(base), _comparable(candidate)
    if base_flat.get("splits_sha256") and candidate_flat.get("splits_sha256"):  # the same splits may lie elsewhere
        base_flat.pop("splits", None)
        candidate_flat.pop("splits", None)
    differ, one_sided = [], []
    for key in dict.fromkeys([*base_flat, *candidate_flat]):
        if key in base_flat and key in candidate_flat:
            if base_flat[key] != candidate_flat[key]:
                differ.append(f"{key}: {json.dumps(base_flat[key])} / {json.dumps(candidate_flat[key])}")
        else:
            role, flat = ("base", base_flat) if key in base_flat else ("candidate", candidate_flat)
            one_sided.append(f"{key}: {role} ({json.dumps(flat[key])})")
    return differ, one_sided


def comparison_table(comparison: dict[str, list[dict]]) -> str:
    lines = [f"| data | metric | cases | base | candidate | difference [{LEVEL:.0%} CI] | cases higher / lower |",
             "|---|---|---|---|---|---|---|"]

    def fmt(value: float) -> str:
        return f"{value:.3f}" if math.isfinite(value) else "n/a"

    for name, readouts in comparison.items():
        for r in readouts:
            interval = f"[{fmt(r['difference_low'])}, {fmt(r['difference_high'])}]"
            lines.append(f"| {name} | {r['metric']} | {r['cases']} | {fmt(r['base'])} | {fmt(r['candidate'])} | "
                         f"{r['difference']:+.3f} {interval} | {r['higher']} / {r['lower']} |")
    return "\n".join(lines) + "\n"
