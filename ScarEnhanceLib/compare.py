"""How sure a difference between two evaluations is: a per-case paired comparison with 95 % intervals.

Held-out splits are small (EMIDEC validation has 7 cases with scar), so a mean Dice or CNR moves by a few
hundredths with the cases alone. The Student-t interval over cases is given for a mean, and for the mean
per-case difference between two models evaluated on the same cases: an interval that holds 0 says the cases
cannot tell the models apart. (A bootstrap interval would be narrower than it should be on so few cases.)
"""
from __future__ import annotations

import math
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


def _rows_by_case(group: dict) -> dict[str, dict]:
    rows = group.get("rows") if isinstance(group, dict) else None
    if not isinstance(rows, list):
        raise ValueError("an evaluation group has no per-case rows: compare takes `scarenhance evaluate`'s JSON")
    return {row["case"]: row for row in rows}


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


def compare_evaluations(base: dict, candidate: dict,
                        metrics: Optional[list[str]] = None) -> dict[str, list[dict]]:
    """Per group (data set, or data set and variant) both evaluations hold: the paired readout of each numeric
    metric of the rows (or only ``metrics``), in the order the base rows give them."""
    groups = [name for name in base if name in candidate]
    if not groups:
        raise ValueError(f"the two evaluations share no data set or variant (base: {sorted(base)}; "
                         f"candidate: {sorted(candidate)})")
    comparison, seen = {}, set()
    for name in groups:
        base_rows, candidate_rows = _rows_by_case(base[name]), _rows_by_case(candidate[name])
        if not set(base_rows) & set(candidate_rows):
            raise ValueError(f"{name}: the two evaluations share no case")
        keys = list(dict.fromkeys(k for row in base_rows.values() for k in row if k != "case"))
        seen.update(keys)
        readouts = [compare_metric(base_rows, candidate_rows, key) for key in keys
                    if not metrics or key in metrics]
        comparison[name] = [r for r in readouts if r is not None]
    missing = [m for m in metrics or () if m not in seen]
    if missing:
        raise ValueError(f"no metric {missing} in the evaluations' rows (they have {sorted(seen)})")
    return comparison


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
