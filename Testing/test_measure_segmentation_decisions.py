"""The decision study (benchmarks/measure_segmentation_decisions.py) averages models' probabilities and moves the
scar threshold before the labels are post-processed."""
import json

import numpy as np
import pytest
import torch

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.datasets import Case
from ScarEnhanceLib.metrics import sd_above_remote
from ScarEnhanceLib.segmentation import SegmentationConfig, SegmentationEnsemble
from ScarEnhanceLib.weights import LoadedModel

from conftest import load_benchmark


def _probabilities(scar: float) -> np.ndarray:
    """One 1x24x24 slice: blood pool in the middle, a wall around it (rows and columns 6-17; each of its six
    sectors holds the remote reference's 10 pixels or more) whose scar probability is ``scar``."""
    probabilities = np.zeros((1, L.NUM_CLASSES, 24, 24), np.float32)
    probabilities[0, L.BACKGROUND] = 1.0
    probabilities[0, :, 6:18, 6:18] = 0.0
    probabilities[0, L.MYOCARDIUM, 6:18, 6:18] = 1.0 - scar
    probabilities[0, L.SCAR, 6:18, 6:18] = scar
    probabilities[0, :, 10:14, 10:14] = 0.0
    probabilities[0, L.BLOOD_POOL, 10:14, 10:14] = 1.0
    return probabilities


def test_scaling_the_scar_probability_moves_the_threshold_and_models_are_averaged():
    script = load_benchmark("measure_segmentation_decisions")
    unsure = _probabilities(0.4)
    assert not (script.labels_from([unsure]) == L.SCAR).any()
    assert (script.labels_from([unsure], scar_scale=2.0) == L.SCAR).sum() == 128  # 12x12 wall minus the 4x4 pool
    averaged = script.labels_from([_probabilities(0.9), _probabilities(0.0)])  # mean 0.45: myocardium
    assert (averaged == L.MYOCARDIUM).sum() == 128 and (averaged == L.BLOOD_POOL).sum() == 16
    rows = script.variants(["a", "b"])
    assert rows["a"] == ([0], 1.0, None) and rows["mean of all"] == ([0, 1], 1.0, None)
    assert rows["a, scar probability x2.0"] == ([0], 2.0, None)
    assert "mean of all" not in script.variants(["a"])
    assert script.variants(["a"], (2.0,))["a, scar only above remote + 2 SD"] == ([0], 1.0, 2.0)


def test_a_scar_floor_keeps_the_scar_brighter_than_the_remote_myocardium_and_calls_the_rest_healthy():
    script = load_benchmark("measure_segmentation_decisions")
    labels = script.labels_from([_probabilities(0.9)])  # one slice: the whole wall called scar
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, labels.shape)  # remote myocardium: mean 100, SD 5
    image[0, 6:10, 6:18] = 130.0  # a bright band of the wall: 6 SD above
    image[0, 14:18, 6:18] = 108.0  # a dim one: under 2 SD above
    z = sd_above_remote(image, labels)
    assert z[0, 6, 6] > 3.0
    floored = script.floored(labels, image, 3.0)
    assert (floored[0, 6:10, 6:18] == L.SCAR).all()  # enhanced: kept
    assert not (floored[0, 14:18, 6:18] == L.SCAR).any() and (floored[0, 14:18, 6:18] == L.MYOCARDIUM).all()
    assert (floored == L.BLOOD_POOL).sum() == (labels == L.BLOOD_POOL).sum()  # other classes untouched
    flat = np.full(labels.shape, 100.0)  # no spread in the remote myocardium: no reference, the scar stays
    assert np.isnan(sd_above_remote(flat, labels)).all()
    assert np.array_equal(script.floored(labels, flat, 1.0), labels)


def test_z_quartiles_are_read_inside_and_outside_the_reference_scar():
    script = load_benchmark("measure_segmentation_decisions")
    probabilities = _probabilities(0.9)  # the whole wall called scar
    labels = script.labels_from([probabilities])
    image = np.random.default_rng(0).normal(100.0, 5.0, labels.shape)
    image[0, 6, 6:18] = 200.0  # the reference scar: the wall's top row, far brighter
    reference = np.where(labels == L.SCAR, L.MYOCARDIUM, labels)
    reference[0, 6, 6:18] = L.SCAR
    case = Case("one", image, reference, (1.0, 1.0))
    line = script.z_quartiles([case], {"one": [probabilities]})
    inside = [float(v) for v in line.split("in reference scar ")[1].split(";")[0].split(" / ")]
    outside = [float(v) for v in line.split("outside it ")[1].split(" / ")]
    z = sd_above_remote(image, labels)
    assert inside == pytest.approx(np.percentile(z[0, 6, 6:18], (25, 50, 75)), abs=0.005)
    assert min(inside) > max(outside)


def test_the_table_names_each_decision():
    script = load_benchmark("measure_segmentation_decisions")
    summary = {"roi": 0.95, "blood_pool": 0.9, "wall": 0.8, "myocardium": 0.75, "scar": 0.5, "scar_cases": 7, "false_positive_scar_ml": 1.0,
               "scar_burden_mad": 4.0, "scar_burden_bias": -2.0}
    table = script.markdown("emidec (val split)", {"a": summary})
    assert "| a | 0.950 | 0.900 | 0.800 | 0.750 | 0.500 (7) | 1.00 | 4.0, -2.0 |" in table
    without_normal_cases = {k: v for k, v in summary.items() if k != "false_positive_scar_ml"}
    table = script.markdown("myops", {"b": without_normal_cases})
    assert "| b | 0.950 | 0.900 | 0.800 | 0.750 | 0.500 (7) | n/a | 4.0, -2.0 |" in table
    merged = {"roi": 0.95, "blood_pool": 0.9, "wall": 0.8, "myocardium": 0.8}  # data without scar labels
    assert "| c | 0.950 | 0.900 | 0.800 | 0.800 | n/a | n/a | n/a |" in script.markdown("mscmrseg", {"c": merged})


def test_a_model_runs_at_other_spacings_and_test_time_augmentations_under_their_own_names():
    script = load_benchmark("measure_segmentation_decisions")
    model = LoadedModel("heart_segmentation", torch.nn.Identity(), SegmentationConfig(spacing_mm=1.5, test_time="flips"),
                        {})
    variants = script.at_settings(model, "bundled", [1.5, 1.25], ["flips"])
    assert list(variants) == ["bundled", "bundled at 1.25 mm"]
    assert variants["bundled"].config.spacing_mm == 1.5 and variants["bundled at 1.25 mm"].config.spacing_mm == 1.25
    assert variants["bundled at 1.25 mm"].network is model.network and model.config.spacing_mm == 1.5
    variants = script.at_settings(model, "bundled", [1.5], ["flips", "dihedral"])
    assert list(variants) == ["bundled", "bundled, dihedral at test time"]
    assert variants["bundled, dihedral at test time"].config.test_time == "dihedral"
    assert model.config.test_time == "flips"


def test_the_script_prints_a_table_per_data_set_with_the_floored_rows_and_the_z_scores(phantom_folder, tiny_models,
                                                                                       capsys):
    script = load_benchmark("measure_segmentation_decisions")
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--split", "all", "--scar-floor-sd", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{phantom_folder.name} (all split):" in printed
    assert f"| {tiny_models}, scar only above remote + 1 SD |" in printed and f"| {tiny_models} |" in printed
    assert "SD above the remote myocardium (quartiles 25/50/75): in reference scar" in printed


def test_the_script_writes_its_tables_and_every_summary_at_full_precision(phantom_folder, tiny_models, tmp_path):
    script = load_benchmark("measure_segmentation_decisions")
    output = tmp_path / "decisions"
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--split", "all", "--test-time", "flips",
                        "dihedral", "-o", str(output)]) == 0
    results = json.loads((output / "segmentation_decisions.json").read_text())
    summaries = results[phantom_folder.name]
    assert set(summaries) >= {str(tiny_models), f"{tiny_models}, flips at test time"}
    flips = summaries[f"{tiny_models}, flips at test time"]
    assert 0.0 <= flips["roi"] <= 1.0
    table = (output / "segmentation_decisions.md").read_text()
    assert f"| {tiny_models}, flips at test time | {flips['roi']:.3f} | {flips['blood_pool']:.3f} |" in table


def test_an_ensemble_runs_only_at_its_networks_own_settings():
    script = load_benchmark("measure_segmentation_decisions")
    config = SegmentationConfig(spacing_mm=1.5)
    ensemble = SegmentationEnsemble([(torch.nn.Identity(), config),
                                     (torch.nn.Identity(), SegmentationConfig(spacing_mm=1.25))])
    model = LoadedModel("heart_segmentation", ensemble, config, {})
    assert list(script.at_settings(model, "ensemble", [1.5], [config.test_time])) == ["ensemble"]
    with pytest.raises(SystemExit, match="ensemble"):
        script.at_settings(model, "ensemble", [1.5, 1.25], [config.test_time])
