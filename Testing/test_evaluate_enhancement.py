"""Enhancement evaluation beyond the paper: where the image was brightened, the label-guided gamma baseline,
the user's path (ROI from the segmentation) and cases without scar."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.datasets import Case
from ScarEnhanceLib.evaluate import change_readouts, diffusion_enhancer, evaluate, pooled_outside_scar_percent
from ScarEnhanceLib.parameters import EnhanceParameters
from ScarEnhanceLib.segmentation import dilate_roi
from ScarEnhanceLib.weights import ENHANCEMENT, load
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom

FAST = ["--steps", "2", "-k", "1", "--device", "cpu"]


def test_change_readouts_know_where_the_image_was_brightened():
    truth = np.zeros((1, 10, 10), np.uint8)
    truth[0, 2:8, 2:8] = L.MYOCARDIUM
    truth[0, 2:4, 2:8] = L.SCAR  # 12 scar pixels
    original = np.full(truth.shape, 50.0)
    enhanced = original.copy()
    enhanced[truth == L.SCAR] += 20  # all scar brightened
    enhanced[0, 6, 2:6] += 30  # 4 myocardium pixels brightened: invented scar
    enhanced[0, 7, 2:8] -= 3
    target = original + 40 * (truth == L.SCAR)
    readouts = change_readouts(original, enhanced, target, truth)
    assert readouts["scar_brightening"] == 20 and readouts["target_scar_brightening"] == 40
    assert readouts["brightened_outside_scar_percent"] == pytest.approx(100 * 4 / 16)
    assert readouts["myo_mean_abs_change"] == pytest.approx((4 * 30 + 6 * 3) / 24)
    assert math.isnan(change_readouts(original, original, target, truth)["brightened_outside_scar_percent"])
    assert readouts["brightened_pixels"] == 16 and readouts["brightened_outside_scar_pixels"] == 4


def test_the_pooled_share_outside_scar_counts_each_brightened_pixel_once():
    rows = [{"brightened_pixels": 1, "brightened_outside_scar_pixels": 1, "brightened_outside_scar_percent": 100.0},
            {"brightened_pixels": 99, "brightened_outside_scar_pixels": 0, "brightened_outside_scar_percent": 0.0}]
    assert pooled_outside_scar_percent(rows) == pytest.approx(1.0)  # the cases' mean would read 50 %
    assert math.isnan(pooled_outside_scar_percent([{"brightened_pixels": 0, "brightened_outside_scar_pixels": 0}]))
    assert math.isnan(pooled_outside_scar_percent([{"brightened_outside_scar_percent": 10.0}]))  # an older file


def test_gamma_baseline_with_reference_labels_is_the_target_and_normal_cases_are_summarised(phantom_folder,
                                                                                          tiny_models, tmp_path):
    assert main(["evaluate", str(phantom_folder), "--split", "all", "-o", str(tmp_path), "--models", str(tiny_models),
                 "--gamma-baseline", *FAST]) == 0
    results = json.loads((tmp_path / "evaluation_enhancement.json").read_text(encoding="utf-8"))
    target = results["gamma correction with the reference labels"]["summary"]
    assert target["ssim"] == pytest.approx(1.0, abs=1e-4) and target["cases"] == 2
    assert target["scar_brightening"] == pytest.approx(target["target_scar_brightening"], rel=1e-3)
    assert target["scar_brightening"] > 1 and target["brightened_outside_scar_percent"] == 0
    assert target["brightened_outside_scar_pooled_percent"] == 0
    normal = results["fast, k=1"]["summary"]["normal"]
    assert normal["cases"] == 1 and normal["fwhm_burden_original"] == 0.0
    assert {"fwhm_burden_enhanced", "brightened_pixels_percent", "myo_mean_abs_change"} <= set(normal)
    table = (tmp_path / "evaluation_enhancement.md").read_text(encoding="utf-8")
    assert "brightened outside scar (%): cases' mean / pooled" in table
    assert "| gamma correction with the reference labels | 2 |" in table


def test_the_users_path_takes_the_roi_from_the_segmentation(phantom_folder, tiny_models, tmp_path, monkeypatch):
    import ScarEnhanceLib.evaluate as evaluate_module
    asked = []
    original = evaluate_module.predicted_labels

    def counting(model):
        labels_of = original(model)

        def wrapped(case):
            asked.append(case.name)
            labels = labels_of(case).copy()
            labels[case.labels > 0] = np.where(labels[case.labels > 0] > 0, labels[case.labels > 0], L.MYOCARDIUM)
            return labels  # an untrained network's guess, widened to hold the heart
        return wrapped

    monkeypatch.setattr(evaluate_module, "predicted_labels", counting)
    assert main(["evaluate", str(phantom_folder), "--split", "all", "-o", str(tmp_path), "--models", str(tiny_models),
                 "--roi-from", "segmentation", "--gamma-baseline", *FAST]) == 0
    results = json.loads((tmp_path / "evaluation_enhancement.json").read_text(encoding="utf-8"))
    assert set(results) == {"fast, k=1", "gamma correction with the segmentation labels"}
    assert sorted(set(asked)) == ["normal1", "scar1", "scar2"]
    baseline = results["gamma correction with the segmentation labels"]["summary"]
    assert baseline["ssim"] < 0.9999  # predicted labels are not the reference: not the target


def test_the_diffusion_enhancer_dilates_the_roi_as_asked(tiny_models):
    image, labels = make_phantom(PhantomSpec(matrix=80, slices=2, spacing_mm=1.6, seed=0))
    model = load(ENHANCEMENT, tiny_models)
    original = sitk.GetArrayFromImage(image)
    ring = (sitk.GetArrayFromImage(dilate_roi(labels, 3.0)) > 0) & (sitk.GetArrayFromImage(labels) == 0)
    changed = {}
    for dilation in (0.0, 3.0):
        parameters = EnhanceParameters(k=1, steps=2, device="cpu", dilation_mm=dilation)
        changed[dilation] = sitk.GetArrayFromImage(diffusion_enhancer(model, parameters)(image, labels)) != original
    assert ring.any() and not changed[0.0][ring].any() and changed[3.0][ring].any()


def test_cases_without_scar_are_refused_before_any_is_enhanced():
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=2, spacing_mm=1.6, scar="none", seed=3))
    normal = Case("normal", sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), (1.6, 1.6))
    enhanced = []
    with pytest.raises(ValueError, match="no case with scar"):
        evaluate([normal], lambda *arguments: enhanced.append(arguments))
    assert not enhanced
