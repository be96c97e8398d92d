"""Segmentation readouts as the field reports them: Dice over the cases that have the class, false-positive
scar on normal cases, scar burden agreement (made-up label maps with known answers)."""
import json
import math

import numpy as np

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.datasets import Case
from ScarEnhanceLib.evaluate import scar_percent, segmentation_row, segmentation_table, summarise_segmentation
from ScarEnhanceLib.io import strict_json


def _heart(scar_columns: int = 0) -> np.ndarray:
    labels = np.zeros((1, 20, 20), np.uint8)
    labels[0, 2:18, 2:18] = L.MYOCARDIUM  # 256 pixels of wall
    labels[0, 6:14, 6:14] = L.BLOOD_POOL  # 64 of them blood: 192 of myocardium
    labels[0, 2:4, 2:2 + scar_columns] = L.SCAR
    return labels


def _case(labels: np.ndarray, name: str = "c") -> Case:
    return Case(name, np.zeros(labels.shape, np.float32), labels, (2.0, 2.0), 5.0)


def test_scar_percent_of_the_myocardium():
    assert scar_percent(_heart(scar_columns=12)) == 100 * 24 / 192
    assert scar_percent(_heart()) == 0.0 and math.isnan(scar_percent(np.zeros((1, 4, 4), np.uint8)))


def test_a_normal_case_counts_no_scar_dice_and_reports_false_positive_scar_volume():
    predicted = _heart(scar_columns=3)  # 6 pixels of 2 x 2 x 5 mm = 0.12 mL
    row = segmentation_row(_case(_heart()), predicted, merge_scar=False)
    assert math.isnan(row["scar"]) and row["false_positive_scar_ml"] == 6 * 20 / 1000
    assert row["scar_burden_reference"] == 0.0 and row["scar_burden_predicted"] == 100 * 6 / 192


def test_summary_averages_dice_over_cases_with_scar_and_gives_bland_altman():
    rows = [segmentation_row(_case(_heart(12)), _heart(12), False),  # perfect: burden 12.5 vs 12.5
            segmentation_row(_case(_heart(8)), _heart(4), False),  # scar Dice 2*8/(16+8); burden 4.17 vs 8.33
            segmentation_row(_case(_heart()), _heart(), False)]  # normal case, nothing predicted
    summary = summarise_segmentation(rows)
    assert summary["scar_cases"] == 2 and math.isclose(summary["scar"], (1 + 16 / 24) / 2)
    assert summary["false_positive_scar_ml"] == 0.0 and summary["false_positive_scar_ml_cases"] == 1
    differences = np.array([0.0, 100 * (8 - 16) / 192, 0.0])
    assert math.isclose(summary["scar_burden_mad"], np.abs(differences).mean())
    assert math.isclose(summary["scar_burden_bias"], differences.mean())
    assert math.isclose(summary["scar_burden_loa"], 1.96 * differences.std(ddof=1))
    on_scar = differences[:2]  # the normal heart, at 0 reference burden, is left out
    assert math.isclose(summary["scar_burden_mad_scar_cases"], np.abs(on_scar).mean())
    assert math.isclose(summary["scar_burden_bias_scar_cases"], on_scar.mean())
    assert math.isclose(summary["scar_burden_loa_scar_cases"], 1.96 * on_scar.std(ddof=1))
    low, high = summary["scar_ci95"]  # Student-t over 2 cases: mean +- 12.71 * SD / sqrt(2)
    assert math.isclose(high - summary["scar"], 12.706 * np.std([1, 16 / 24], ddof=1) / math.sqrt(2), rel_tol=1e-3)
    assert math.isclose(low + high, 2 * summary["scar"])
    assert all(math.isnan(b) for b in summary["false_positive_scar_ml_ci95"])
    table = segmentation_table({"made-up": {"summary": summary}})
    assert "| made-up | 3 |" in table and f"{(1 + 16 / 24) / 2:.3f} [{low:.3f}, {high:.3f}] (2)" in table
    assert "0.00 (1)" in table
    assert table.rstrip().endswith(f"| {np.abs(on_scar).mean():.1f}, {on_scar.mean():.1f} "
                                   f"[±{1.96 * on_scar.std(ddof=1):.1f}] |")
    assert summary["wall"] == 1.0 and "| 1.000 / " in table and "wall / healthy" in table


def test_data_without_scar_labels_merge_scar_and_report_no_burden():
    row = segmentation_row(_case(_heart()), _heart(scar_columns=4), merge_scar=True)
    assert row["myocardium"] == 1.0 and "scar" not in row and "scar_burden_predicted" not in row


def test_strict_json_writes_null_for_unavailable_numbers():
    text = strict_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2}})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"d": 2}} and "NaN" not in text
