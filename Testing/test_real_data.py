"""Checks on the real LGE in ../shared/data (skipped where it is absent) and on the bundled sample."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.datasets import DatasetSpec, case_names, load_cases
from ScarEnhanceLib.evaluate import diffusion_enhancer, evaluate, evaluate_segmentation, heart_crop_ssim_psnr
from ScarEnhanceLib.io import read_image
from ScarEnhanceLib.gamma import gamma_target
from ScarEnhanceLib.metrics import cnr_readouts
from ScarEnhanceLib.parameters import EnhanceParameters
from ScarEnhanceLib.pipeline import enhance
from ScarEnhanceLib.sample import SAMPLE_IMAGE, SAMPLE_LABELS
from ScarEnhanceLib.splits import build_splits, load_splits, mscmrseg_patient, myops_patients
from ScarEnhanceLib.volume import SliceScale
from ScarEnhanceLib.weights import ENHANCEMENT, MODELS_DIR, SEGMENTATION, load

from conftest import SHARED_DATA, needs_shared_data

needs_models = pytest.mark.skipif(not (MODELS_DIR / "manifest.json").exists(), reason="no bundled models")


@pytest.mark.parametrize("dataset", ["emidec", "mscmrseg19_lge", "myops2020_train25"])
def test_splits_are_case_level_and_cover_every_case(dataset):
    if not (SHARED_DATA / dataset).exists():
        pytest.skip(f"real data not present at {SHARED_DATA / dataset}")
    split = load_splits()[dataset]
    parts = [set(split[name]) for name in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(case_names(DatasetSpec.load(SHARED_DATA / dataset)))


@needs_shared_data("myops2020_train25")
def test_a_patient_of_myops_and_mscmrseg_lands_in_one_split():
    splits = load_splits()
    patient_of = myops_patients(SHARED_DATA / "myops2020_train25")
    for part in ("train", "val", "test"):
        mscmrseg = {mscmrseg_patient(case) for case in splits["mscmrseg19_lge"][part]}
        assert {patient_of[case] for case in splits["myops2020_train25"][part]} <= mscmrseg, part


@needs_shared_data()
def test_the_recorded_splits_are_what_the_data_gives():
    """Fails when the data change and Resources/splits.json is not regenerated."""
    recorded = load_splits()
    assert build_splits(SHARED_DATA, previous=recorded) == recorded


def test_the_sample_case_is_held_out():
    assert "Case_P050" in load_splits()["emidec"]["test"]


@needs_models
@needs_shared_data("emidec")
@needs_shared_data("mscmrseg19_lge")
def test_bundled_segmentation_finds_the_heart_on_held_out_cases():
    model = load(SEGMENTATION)
    splits = load_splits()
    for dataset, merge in (("emidec", False), ("mscmrseg19_lge", True)):
        cases = load_cases(DatasetSpec.load(SHARED_DATA / dataset), splits[dataset]["test"][-2:])
        summary = evaluate_segmentation(cases, model, merge_scar=merge)["summary"]
        assert summary["roi"] > 0.6, (dataset, summary)


@needs_models
def test_bundled_enhancement_raises_scar_contrast_on_the_held_out_sample():
    image, labels = read_image(SAMPLE_IMAGE), read_image(SAMPLE_LABELS)
    result = enhance(image, labels, load(ENHANCEMENT), EnhanceParameters(k=3, seed=1))
    original, enhanced, truth = (sitk.GetArrayFromImage(i).astype(np.float32) for i in (image, result.enhanced, labels))
    volume = cnr_readouts(original, enhanced, truth.astype(np.uint8))["volume"]
    assert volume["cnr_scar_myo_enhanced"] > volume["cnr_scar_myo_original"], volume
    assert volume["cnr_scar_blood_enhanced"] > 1.5 * volume["cnr_scar_blood_original"], volume
    np.testing.assert_array_equal(enhanced[truth == 0], original[truth == 0])


@needs_models
@needs_shared_data("emidec")
def test_bundled_enhancement_moves_a_held_out_case_towards_the_gamma_target():
    case = load_cases(DatasetSpec.load(SHARED_DATA / "emidec"), ["Case_P007"])[0]
    enhanced = evaluate([case], diffusion_enhancer(load(ENHANCEMENT), EnhanceParameters(k=3)))["summary"]
    scale = SliceScale.of(case.images)
    original255 = scale.forward(case.images)
    target255 = np.stack([gamma_target(o, lab) for o, lab in zip(original255, case.labels)])
    unchanged = heart_crop_ssim_psnr(original255, target255, case.labels)
    assert enhanced["ssim"] > unchanged["ssim"] and enhanced["psnr"] > unchanged["psnr"], (enhanced, unchanged)


@needs_models
def test_demo_segments_enhances_and_reports(tmp_path, capsys):
    from ScarEnhanceLib.cli import main
    assert main(["demo", "-o", str(tmp_path), "-k", "2", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "segmentation Dice" in out and "CNR scar/myocardium" in out
    readouts = json.loads((tmp_path / "cnr.json").read_text(encoding="utf-8"))
    assert readouts["regions"]["scar_segment"]["slices_with_scar"] == 4  # reference labels: scar on 4 of 6 slices
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "roi.nii.gz")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_LABELS)))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nii.gz")))
    np.testing.assert_array_equal(written, reference)  # the labels the CNR was read in; the model saw the U-Net's
    assert 2 * (roi.astype(bool) & (reference > 0)).sum() / (roi.astype(bool).sum() + (reference > 0).sum()) > 0.7


@needs_models
@needs_shared_data("myops2020_train25")
def test_bundled_segmentation_does_as_well_on_whole_frames_as_on_crops_around_the_heart():
    """MyoPS test cases arrive as 480x480 whole frames: no window border may cut the heart."""
    cases = load_cases(DatasetSpec.load(SHARED_DATA / "myops2020_train25"), load_splits()["myops2020_train25"]["test"])
    summary = evaluate_segmentation(cases, load(SEGMENTATION))["summary"]
    assert summary["roi_whole_frame_in_crop"] >= summary["roi_heart_crop"] - 0.01, summary
    assert summary["roi"] > 0.9 and summary["myocardium"] > 0.75, summary
