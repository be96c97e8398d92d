"""Paired comparison of two evaluations: intervals that cover the mean as often as they claim, pairing by case,
strict JSON's nulls left out, and `scarenhance compare` on evaluation files."""
import json
import math

import numpy as np
import pytest

from ScarEnhanceLib.cli import main
from ScarEnhanceLib.compare import compare_evaluations, comparison_table, mean_interval, record_differences
from ScarEnhanceLib.io import strict_json


def test_the_interval_covers_the_true_mean_95_times_in_100_on_seven_cases():
    rng = np.random.default_rng(0)
    hits = [low <= 0.5 <= high for low, high in (mean_interval(rng.normal(0.5, 0.1, 7)) for _ in range(4000))]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.012)


def test_the_interval_needs_two_values_and_leaves_nan_out():
    assert all(math.isnan(b) for b in mean_interval([0.4, float("nan")]))
    assert mean_interval([0.3, 0.3, float("nan")]) == (0.3, 0.3)
    low, high = mean_interval([1.0, 2.0, 3.0])  # mean 2, SD 1, t(0.975, 2) = 4.303
    assert low == pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-3) and high == pytest.approx(4 - low)


def _evaluation(scar: dict, wall: dict) -> dict:
    rows = [{"case": case, "scar": scar[case], "wall": wall[case]} for case in scar]
    return {"emidec": {"rows": rows, "summary": {}}}


def test_cases_are_paired_by_name_and_unavailable_numbers_are_left_out():
    base = _evaluation({"a": 0.5, "b": 0.6, "c": None, "d": 0.2}, {"a": 0.8, "b": 0.8, "c": 0.9, "d": 0.7})
    # listed in another order, one case the base lacks, and a null where the base has a number
    candidate = _evaluation({"e": 0.9, "b": 0.7, "a": 0.6, "c": 0.4, "d": None},
                            {"e": 0.1, "b": 0.8, "a": 0.8, "c": 0.9, "d": 0.7})
    scar, wall = compare_evaluations(base, json.loads(strict_json(candidate)))["emidec"]
    assert scar["metric"] == "scar" and scar["cases"] == 2 and scar["difference"] == pytest.approx(0.1)
    assert (scar["difference_low"], scar["difference_high"]) == pytest.approx((0.1, 0.1))
    assert (scar["higher"], scar["lower"]) == (2, 0) and scar["base"] == pytest.approx(0.55)
    assert wall["cases"] == 4 and wall["difference"] == 0.0 and (wall["higher"], wall["lower"]) == (0, 0)
    table = comparison_table({"emidec": [scar]})
    assert "| emidec | scar | 2 | 0.550 | 0.650 | +0.100 [0.100, 0.100] | 2 / 0 |" in table


def test_a_difference_within_the_cases_spread_gets_an_interval_that_holds_zero():
    base = _evaluation({c: 0.5 for c in "abcdefg"}, {c: 0.8 for c in "abcdefg"})
    candidate = _evaluation(dict(zip("abcdefg", (0.55, 0.45, 0.6, 0.48, 0.52, 0.5, 0.53))),
                            {c: 0.8 for c in "abcdefg"})
    scar = compare_evaluations(base, candidate, ["scar"])["emidec"][0]
    assert scar["difference_low"] < 0 < scar["difference_high"] and (scar["higher"], scar["lower"]) == (4, 2)


def test_evaluations_of_other_data_or_metrics_are_refused():
    base = _evaluation({"a": 0.5}, {"a": 0.8})
    with pytest.raises(ValueError, match="share no data set"):
        compare_evaluations(base, {"myops": base["emidec"]})
    with pytest.raises(ValueError, match="share no case"):
        compare_evaluations(base, _evaluation({"z": 0.5}, {"z": 0.8}))
    with pytest.raises(ValueError, match="no metric"):
        compare_evaluations(base, base, ["dice"])
    with pytest.raises(ValueError, match="per-case rows"):
        compare_evaluations({"emidec": {"summary": {}}}, base)
    with pytest.raises(ValueError, match="listed twice"):
        compare_evaluations({"emidec": {"rows": base["emidec"]["rows"] * 2}}, base)
    with pytest.raises(ValueError, match="the candidate is not an evaluation"):
        compare_evaluations(base, [base])


def test_compare_command_writes_the_table_and_explains_a_missing_file(tmp_path, capsys):
    base, candidate = tmp_path / "base.json", tmp_path / "candidate.json"
    base.write_text(strict_json(_evaluation({"a": 0.5, "b": 0.6}, {"a": 0.8, "b": 0.8})), encoding="utf-8")
    candidate.write_text(strict_json(_evaluation({"a": 0.7, "b": 0.6}, {"a": 0.8, "b": 0.9})), encoding="utf-8")
    out = tmp_path / "new folder" / "comparison.md"
    assert main(["compare", str(base), str(candidate), "--metric", "scar", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| emidec | scar | 2 | 0.550 | 0.650 | +0.100 [" in text and "wall" not in text and "left out" not in text
    assert text in capsys.readouterr().out
    candidate.write_text(strict_json(_evaluation({"a": 0.7, "c": 0.6}, {"a": 0.8, "c": 0.9})), encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 0
    assert "emidec: left out, as only one evaluation has them: base b; candidate c" in capsys.readouterr().out
    assert main(["compare", str(base), str(tmp_path / "missing.json")]) == 2
    assert "no evaluation file" in capsys.readouterr().err
    kept = base.read_bytes()
    assert main(["compare", str(base), str(candidate), "-o", str(base)]) == 2  # the table would replace an input
    assert "refusing to overwrite an input" in capsys.readouterr().err and base.read_bytes() == kept


def test_compare_says_what_the_records_beside_the_files_say_differs(tmp_path, capsys):
    evaluation = strict_json(_evaluation({"a": 0.5, "b": 0.6}, {"a": 0.8, "b": 0.8}))
    base, candidate = tmp_path / "base.json", tmp_path / "candidate.json"
    for path in (base, candidate):
        path.write_text(evaluation, encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 0
    assert "made with" not in capsys.readouterr().out  # no records: nothing to say
    record = {"task": "enhancement", "datasets": ["../shared/data/emidec"], "split": "val",
              "splits": "Resources/splits.json", "sha256": {"enhancement": ["aa"]}, "models": "Resources/models",
              "compare_models": {}, "parameters": {"k": 5, "seed": 0, "batch_size": 0}}
    (tmp_path / "base_made_with.json").write_text(json.dumps(record), encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 0
    assert "no candidate_made_with.json beside the candidate: whether both" in capsys.readouterr().out
    # other models, the same data elsewhere, a batch size that changes nothing: the same
    same = {**record, "sha256": {"enhancement": ["bb"]}, "models": "runs/models", "compare_models": {"x": ["cc"]},
            "datasets": ["/elsewhere/emidec"], "parameters": {"k": 5, "seed": 0, "batch_size": 8}}
    (tmp_path / "candidate_made_with.json").write_text(json.dumps(same), encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 0
    assert "both made with the same data, split and settings" in capsys.readouterr().out
    other = {**same, "split": "test", "datasets": ["../shared/data/myops"], "parameters": {"k": 5, "seed": 1},
             "splits_sha256": "2e"}  # a record made since the splits file's checksum is recorded
    (tmp_path / "candidate_made_with.json").write_text(json.dumps(other), encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 0
    out = capsys.readouterr().out
    assert ('- datasets: ["emidec"] / ["myops"]\n- split: "val" / "test"\n- parameters.seed: 0 / 1\n' in out
            and 'recorded by one evaluation only (not checked):\n- splits_sha256: candidate ("2e")\n' in out)
    assert "sha256:" not in out.replace("splits_sha256:", "") and "models" not in out and "batch_size" not in out
    assert main(["compare", str(base), str(base)]) == 0  # one file, two of its groups: one record
    assert "made with" not in capsys.readouterr().out
    record_before = (tmp_path / "candidate_made_with.json").read_bytes()
    assert main(["compare", str(base), str(candidate), "-o", str(tmp_path / "candidate_made_with.json")]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert (tmp_path / "candidate_made_with.json").read_bytes() == record_before
    (tmp_path / "candidate_made_with.json").write_text("[]", encoding="utf-8")
    assert main(["compare", str(base), str(candidate)]) == 2
    assert "is no record of what an evaluation was made with" in capsys.readouterr().err


def test_records_whose_splits_files_have_one_checksum_agree_wherever_the_file_lies():
    base = {"split": "val", "splits": "Resources/splits.json", "splits_sha256": "1f"}
    assert record_differences(base, {**base, "splits": "/tmp/copy/splits.json"}) == ([], [])
    assert record_differences(base, {**base, "splits_sha256": "2e"}) == (['splits_sha256: "1f" / "2e"'], [])
    assert record_differences({"splits": "a.json"}, {"splits": "b.json"}) == (['splits: "a.json" / "b.json"'], [])


def test_two_groups_of_one_file_compare_a_model_with_its_baseline_and_keep_normal_cases_apart():
    def rows(cnr, brightened_normal):
        return [{"case": "p1", "has_scar": True, "slices": 8, "cnr_scar_myo_enhanced": cnr,
                 "brightened_outside_scar_percent": 40.0},
                {"case": "p2", "has_scar": True, "slices": 9, "cnr_scar_myo_enhanced": cnr + 1,
                 "brightened_outside_scar_percent": 20.0},
                {"case": "n1", "has_scar": False, "slices": 8, "cnr_scar_myo_enhanced": None,
                 "brightened_outside_scar_percent": 100.0, "brightened_pixels_percent": brightened_normal}]
    evaluation = {"emidec: model": {"rows": rows(2.5, 0.0)}, "emidec: baseline": {"rows": rows(2.0, 3.0)}}
    comparison = compare_evaluations(evaluation, evaluation, groups=("emidec: baseline", "emidec: model"))
    scar_cases = {r["metric"]: r for r in comparison["emidec: model against emidec: baseline"]}
    normal = {r["metric"]: r for r in comparison["emidec: model against emidec: baseline, normal cases"]}
    assert scar_cases["cnr_scar_myo_enhanced"]["difference"] == pytest.approx(0.5)
    assert scar_cases["brightened_outside_scar_percent"]["cases"] == 2  # the normal case's 100 % is not mixed in
    assert "slices" not in scar_cases and set(normal) == {"brightened_pixels_percent"}
    assert normal["brightened_pixels_percent"]["difference"] == -3.0
    with pytest.raises(ValueError, match="no group 'emidec: other'"):
        compare_evaluations(evaluation, evaluation, groups=("emidec: other", "emidec: model"))
