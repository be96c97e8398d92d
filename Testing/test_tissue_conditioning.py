"""Tissue-aware conditioning (blood-pool, wall and scar maps beside the image) and the heart intensity window."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file
from scipy import ndimage

from ScarEnhanceLib import augment
from ScarEnhanceLib import labels as L
from ScarEnhanceLib.augment import DiffusionSamples, degrade_labels
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.diffusion import (DiffusionConfig, build_condition, build_denoiser, condition_channels,
                                      tissue_maps, training_scheduler, warm_start)
from ScarEnhanceLib.pipeline import EnhanceParameters, enhance
from ScarEnhanceLib.volume import InputError, IntensityWindow
from ScarEnhanceLib.weights import ENHANCEMENT, SEGMENTATION, LoadedModel, load

from conftest import TINY_DIFFUSION, phantom_case
from test_pipeline import _arrays, _Output
from test_train import _png_dataset

TISSUE = replace(TINY_DIFFUSION, conditioning="tissue")
TISSUE_HEART = replace(TISSUE, normalisation="heart")
TISSUE_SCAR = replace(TISSUE_HEART, conditioning="tissue-scar")


class WallOracle(torch.nn.Module):
    """Predicts the exact noise toward original + 0.4 * one map (the wall by default): brightens what the labels
    call that, only that."""

    def __init__(self, config: DiffusionConfig, brightened: str = "wall"):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.abar = training_scheduler(config).alphas_cumprod
        self.map = condition_channels(config).index(brightened)

    def forward(self, model_input, t):
        original, chosen, x_t = model_input[:, :1], model_input[:, self.map:self.map + 1], model_input[:, -1:]
        a = self.abar[t].view(-1, 1, 1, 1)
        return _Output((x_t - a.sqrt() * (original + 0.4 * chosen)) / (1 - a).sqrt())


def _with_labels(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def test_the_condition_holds_the_channels_the_configuration_names():
    crops = np.random.default_rng(0).uniform(0, 200, (3, 32, 32)).astype(np.float32)
    tissue = np.zeros((3, 2, 32, 32), dtype=np.float32)
    tissue[:, 1, 10:20, 10:20] = 1.0
    assert condition_channels(TINY_DIFFUSION) == ("original",)
    assert condition_channels(TISSUE_HEART) == ("original", "blood_pool", "wall", "window_low", "window_high")
    condition, window = build_condition(crops, tissue, TISSUE_HEART)
    assert condition.shape == (3, 5, 32, 32)
    np.testing.assert_array_equal(condition[:, 2], tissue[:, 1])
    np.testing.assert_allclose(window.inverse(condition[:, 0]), crops, atol=1e-3)
    with pytest.raises(ValueError, match="needs blood-pool and wall maps"):
        build_condition(crops, None, TISSUE)
    for config in (TISSUE, TISSUE_HEART, replace(TISSUE, noise_hint=True)):
        network = build_denoiser(config)
        x_t = torch.zeros(2, 1, 32, 32)
        sample = torch.cat([torch.as_tensor(build_condition(crops[:2], tissue[:2], config)[0]), x_t], 1)
        assert network(sample, torch.tensor([1, 2])).sample.shape == (2, 1, 32, 32)


def test_the_heart_window_ignores_bright_pixels_away_from_the_heart():
    crops = np.full((2, 16, 16), 40.0, dtype=np.float32)
    crops[:, 5:9, 5:9] = 60.0  # a dim heart, as MyoPS's after the slice's min-max
    heart = IntensityWindow.of(crops, "heart")
    np.testing.assert_allclose(heart.forward(crops).max(axis=(1, 2)), 1.0)  # the heart's brightest is the top
    np.testing.assert_allclose(heart.forward(np.zeros_like(crops)), -1.0)  # the slice's minimum the bottom
    np.testing.assert_allclose(heart.inverse(heart.forward(crops)), crops, atol=1e-4)
    assert np.allclose(heart.grey_levels(np.ones((2, 1, 1))), 30.0)  # half of the window, in grey levels
    whole = IntensityWindow.of(crops, "slice")
    np.testing.assert_allclose(whole.forward(crops), crops / 127.5 - 1.0, atol=1e-6)  # the paper's


def test_degraded_labels_move_borders_but_keep_the_heart():
    labels = phantom_case(seed=1).labels[1]
    rng = np.random.default_rng(0)
    draws = [degrade_labels(labels, (1.6, 1.6), rng) for _ in range(20)]
    heart = labels > 0
    dice = [2 * (heart & (d > 0)).sum() / (heart.sum() + (d > 0).sum()) for d in draws]
    assert all(set(np.unique(d)) <= {L.BACKGROUND, L.BLOOD_POOL, L.MYOCARDIUM} for d in draws)  # scar merged
    assert min(dice) > 0.6 and sum(not np.array_equal(d > 0, heart) for d in draws) >= 15


def test_tissue_samples_carry_maps_from_the_reference_its_degraded_copies_and_the_predictions():
    case = phantom_case(seed=0)
    predicted = np.where(case.labels == L.BLOOD_POOL, L.MYOCARDIUM, case.labels)  # a "prediction" without blood
    samples = DiffusionSamples([[case]], TISSUE_HEART, np.random.default_rng(0), predicted_labels={case.name: predicted})
    condition, target, roi, scar = samples(30)
    assert condition.shape == (30, 5, 32, 32)
    blood, wall = condition[:, 1], condition[:, 2]
    # the maps lie inside the noised ROI (but for the odd edge pixel of a crop upsampled to model size)
    assert float(roi[:, 0][(blood + wall) > 0.5].mean()) > 0.99
    without_blood = int((blood.sum(dim=(1, 2)) == 0).sum())
    assert 3 <= without_blood <= 20  # about a third of the samples used the predictions
    assert float(target[scar > 0.9].mean()) > float(condition[:, :1][scar > 0.9].mean())  # scar brighter


def test_warm_started_tissue_network_starts_as_the_image_only_one():
    torch.manual_seed(0)
    image_only = build_denoiser(TINY_DIFFUSION).eval()
    tissue = build_denoiser(TISSUE_HEART).eval()
    warm_start(tissue, image_only.state_dict(), TISSUE_HEART)
    original, x_t = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    maps = torch.rand(2, 4, 32, 32)
    t = torch.tensor([3, 200])
    with torch.no_grad():
        expected = image_only(torch.cat([original, x_t], 1), t).sample
        np.testing.assert_allclose(tissue(torch.cat([original, maps, x_t], 1), t).sample, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="do not fit inputs"):
        warm_start(build_denoiser(TINY_DIFFUSION), tissue.state_dict(), TINY_DIFFUSION)


@pytest.mark.parametrize("config", [TISSUE, TISSUE_HEART])
def test_enhance_brightens_what_the_labels_call_wall_and_reads_the_roi_apart(phantom, config):
    image, labels = phantom
    oracle = LoadedModel("oracle", WallOracle(config), config, {})
    result = enhance(image, labels, oracle, EnhanceParameters(k=1, steps=5))
    original, enhanced, truth = _arrays(image, result.enhanced, labels)
    change = enhanced.astype(float) - original
    wall, blood = (truth == L.MYOCARDIUM) | (truth == L.SCAR), truth == L.BLOOD_POOL
    assert np.median(change[wall]) > 10 * abs(np.median(change[blood]))
    as_blood = np.where(truth > 0, L.BLOOD_POOL, 0)  # the same ROI, read as all blood pool: no wall, no change
    as_blood[truth == L.MYOCARDIUM] = L.BLOOD_POOL
    with pytest.raises(InputError, match="blood pool .label 1. and the myocardium"):
        enhance(image, _with_labels(labels, as_blood), oracle, EnhanceParameters(k=1, steps=5))
    roi_only = _with_labels(labels, truth > 0)  # a bare ROI as the region, the classes from the labels
    apart = enhance(image, labels, oracle, EnhanceParameters(k=1, steps=5), roi=roi_only)
    np.testing.assert_allclose(sitk.GetArrayFromImage(apart.enhanced), enhanced, atol=1e-3)


def test_the_heart_window_makes_the_change_independent_of_a_bright_pixel_far_from_the_heart(phantom):
    image, labels = phantom
    far = sitk.GetArrayFromImage(image).copy()
    far[:, 2, 2] = far.max() * 4  # a bright corner pixel
    brighter = sitk.GetImageFromArray(far)
    brighter.CopyInformation(image)
    heart = sitk.GetArrayFromImage(labels) > 0
    changes = {}
    for config in (TISSUE, TISSUE_HEART):
        oracle = LoadedModel("oracle", WallOracle(config), config, {})
        for name, volume in (("plain", image), ("bright corner", brighter)):
            result = enhance(volume, labels, oracle, EnhanceParameters(k=1, steps=5))
            changes[config.normalisation, name] = (sitk.GetArrayFromImage(result.enhanced).astype(float) -
                                                   sitk.GetArrayFromImage(volume))[heart]
    np.testing.assert_allclose(changes["heart", "bright corner"], changes["heart", "plain"], atol=0.02 *
                               np.abs(changes["heart", "plain"]).max())
    assert np.abs(changes["slice", "bright corner"]).mean() > 2 * np.abs(changes["slice", "plain"]).mean()


def test_train_and_bundle_a_tissue_model_that_enhances_with_the_labels(tmp_path, tiny_models, capsys):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    assert main(["train-diffusion", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--image-size", "32", "--channels", "16", "32", "--max-timestep", "300", "--device", "cpu",
                 "--run-dir", str(tmp_path / "run"), "--conditioning", "tissue", "--normalisation", "heart",
                 "--models", str(tiny_models)]) == 0
    with np.load(tmp_path / "run" / "predicted_labels.npz") as predicted:
        assert predicted.files == ["Case_P000"] and predicted["Case_P000"].shape == (2, 96, 96)
    other = shutil.copytree(tiny_models, tmp_path / "other_models")
    manifest = json.loads((other / "manifest.json").read_text(encoding="utf-8"))
    manifest[SEGMENTATION]["sha256"] = "0" * 64  # another segmentation (its file is never read: refused first)
    (other / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    resumed = ["train-diffusion", "--dataset", str(dataset), "--iterations", "2", "--batch-size", "2",
               "--image-size", "32", "--channels", "16", "32", "--max-timestep", "300", "--device", "cpu",
               "--run-dir", str(tmp_path / "run"), "--conditioning", "tissue", "--normalisation", "heart"]
    capsys.readouterr()
    assert main([*resumed, "--models", str(other)]) == 2  # was: trained on maps the other model did not make
    assert "was made by another segmentation model" in capsys.readouterr().err
    assert main([*resumed, "--models", str(tiny_models)]) == 0
    models = tmp_path / "models"
    assert main(["bundle", str(tmp_path / "run"), "--name", ENHANCEMENT, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 0
    loaded = load(ENHANCEMENT, models)
    assert loaded.config.conditioning == "tissue" and loaded.info["config"]["normalisation"] == "heart"
    case = phantom_case(seed=2, slices=2)
    image = sitk.GetImageFromArray(case.images)
    labels = _with_labels(image, case.labels)
    enhanced = sitk.GetArrayFromImage(enhance(image, labels, loaded, EnhanceParameters(k=1, steps=2)).enhanced)
    assert np.isfinite(enhanced).all() and np.array_equal(enhanced[case.labels == 0], case.images[case.labels == 0])


def test_a_tissue_scar_model_reads_the_scar_map_third():
    labels = phantom_case(seed=0).labels
    maps = tissue_maps(labels, TISSUE_SCAR)
    assert condition_channels(TISSUE_SCAR) == ("original", "blood_pool", "wall", "scar", "window_low", "window_high")
    assert (labels == L.SCAR).any()
    np.testing.assert_array_equal(maps[:, 2], labels == L.SCAR)
    np.testing.assert_array_equal(maps[:, :2], tissue_maps(labels, TISSUE))  # blood pool and wall as before
    assert tissue_maps(labels, TINY_DIFFUSION).shape == (len(labels), 0, *labels.shape[1:])
    crops = np.random.default_rng(0).uniform(0, 200, (2, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="needs blood-pool, wall and scar maps"):
        build_condition(crops, np.zeros((2, 2, 32, 32), dtype=np.float32), TISSUE_SCAR)


def test_degraded_scar_maps_miss_move_and_invent_scar_inside_the_wall():
    labels = phantom_case(seed=1).labels[1]
    scar = labels == L.SCAR
    rng = np.random.default_rng(0)
    draws = [degrade_labels(labels, (1.6, 1.6), rng, keep_scar=True) for _ in range(60)]
    assert all(set(np.unique(d)) <= {L.BACKGROUND, L.BLOOD_POOL, L.MYOCARDIUM, L.SCAR} for d in draws)
    missed = sum(not (d == L.SCAR).any() for d in draws)
    invented = sum(((d == L.SCAR) & ~ndimage.binary_dilation(scar, iterations=4)).any() for d in draws)
    assert 4 <= missed <= 24 and 8 <= invented <= 36  # about a fifth and about a third of the draws
    kept = [d for d in draws if (d == L.SCAR).any()]
    overlap = [((d == L.SCAR) & scar).sum() / scar.sum() for d in kept]
    assert np.median(overlap) > 0.4  # moved, not lost


def _ring_slice():
    """A left ventricle: blood pool disc, wall ring with scar at the top and a brighter healthy arc at the bottom."""
    rows, cols = np.mgrid[:96, :96]
    radius = np.hypot(rows - 48, cols - 48)
    labels = np.where(radius < 14, L.BLOOD_POOL, np.where(radius < 22, L.MYOCARDIUM, L.BACKGROUND)).astype(np.uint8)
    top, bottom = (labels == L.MYOCARDIUM) & (rows < 36), (labels == L.MYOCARDIUM) & (rows > 60)
    labels[top] = L.SCAR
    image = np.where(labels == L.BLOOD_POOL, 180.0, np.where(labels == L.SCAR, 200.0, 60.0))
    image[labels == L.BACKGROUND] = 20.0
    image[bottom] = 110.0
    return image, labels, bottom


def _segmentation_like_maps(monkeypatch, missed: float, spilled: float, overcalled: float, draws: int = 40):
    image, labels, _ = _ring_slice()
    degraded = np.where(labels == L.SCAR, L.MYOCARDIUM, labels)  # the reference's borders, for a sharp reading
    for name, share in (("MISSED_SCAR", missed), ("SPILLED_SCAR", spilled), ("OVERCALLED_SCAR", overcalled)):
        monkeypatch.setattr(augment, name, share)
    rng = np.random.default_rng(0)
    return [augment._segmentation_like_scar(labels, degraded, image, 1.6, rng) for _ in range(draws)]


def test_segmentation_like_scar_grows_into_the_blood_pool_only_in_the_spilled_maps(monkeypatch):
    _, labels, _ = _ring_slice()
    blood = labels == L.BLOOD_POOL
    kept = _segmentation_like_maps(monkeypatch, missed=0.0, spilled=0.0, overcalled=0.0)
    spilled = _segmentation_like_maps(monkeypatch, missed=0.0, spilled=1.0, overcalled=0.0)
    assert not any((m & blood).any() for m in kept)  # the moved border stays in the wall
    assert sum((m & blood).any() for m in spilled) > 0.7 * len(spilled)


def test_segmentation_like_false_scar_lies_on_the_brightest_healthy_myocardium(monkeypatch):
    _, labels, bright_arc = _ring_slice()
    patches = _segmentation_like_maps(monkeypatch, missed=1.0, spilled=0.0, overcalled=1.0)  # nothing but patches
    assert all(m.any() for m in patches)
    assert not any((m & (labels == L.BACKGROUND)).any() for m in patches)
    counts = sum(m.astype(int) for m in patches)
    assert counts[bright_arc].sum() > 0.7 * counts.sum()  # centred on the arc, reaching a little past it
    assert counts[labels == L.SCAR].sum() == 0  # never on the scar the map missed (it lies across the ring)


def test_segmentation_like_scar_maps_miss_scar_in_a_fifth_and_need_the_image():
    image, labels, _ = _ring_slice()
    near_scar = ndimage.binary_dilation(labels == L.SCAR, iterations=4)  # shifts move the map by up to 2 pixels
    rng = np.random.default_rng(0)
    draws = [degrade_labels(labels, (1.6, 1.6), rng, keep_scar=True, scar_errors="like-segmentation", image=image)
             for _ in range(80)]
    assert 6 <= sum(not (d == L.SCAR)[near_scar].any() for d in draws) <= 28  # about 16
    with pytest.raises(ValueError, match="need the slice's image"):
        degrade_labels(labels, (1.6, 1.6), np.random.default_rng(0), keep_scar=True, scar_errors="like-segmentation")
    with pytest.raises(ValueError, match="must be one of"):
        degrade_labels(labels, (1.6, 1.6), np.random.default_rng(0), keep_scar=True, scar_errors="anywhere")


def test_diffusion_samples_degrade_scar_maps_with_the_errors_asked_for(monkeypatch):
    asked = []

    def recording(labels, spacing, rng, keep_scar=False, scar_errors="within-wall", image=None):
        asked.append((keep_scar, scar_errors, image is not None))
        return labels

    monkeypatch.setattr(augment, "degrade_labels", recording)
    DiffusionSamples([[phantom_case(seed=0)]], TISSUE_SCAR, np.random.default_rng(0),
                     scar_map_errors="like-segmentation")(12)
    assert asked and set(asked) == {(True, "like-segmentation", True)}
    with pytest.raises(ValueError, match="scar map errors must be one of"):
        DiffusionSamples([[phantom_case(seed=0)]], TISSUE_SCAR, np.random.default_rng(0), scar_map_errors="anywhere")


def test_tissue_scar_samples_carry_a_scar_map_that_mostly_follows_the_reference():
    case = phantom_case(seed=0)
    samples = DiffusionSamples([[case]], TISSUE_SCAR, np.random.default_rng(0))
    condition, target, roi, scar = samples(30)
    assert condition.shape == (30, 6, 32, 32)
    scar_map = condition[:, 3]
    assert float(roi[:, 0][scar_map > 0.5].mean()) > 0.99  # inside the noised ROI
    with_scar = scar.sum(dim=(1, 2, 3)) > 5
    agreement = (scar_map > 0.5) & (scar[:, 0] > 0.5)
    assert float(agreement.sum()) > 0.3 * float((scar > 0.5).sum())
    assert int((scar_map[with_scar].sum(dim=(1, 2)) == 0).sum()) >= 1  # some maps miss the scar


def test_a_tissue_scar_network_warm_started_from_a_tissue_one_starts_as_it():
    torch.manual_seed(0)
    tissue = build_denoiser(TISSUE_HEART).eval()
    with_scar = build_denoiser(TISSUE_SCAR).eval()
    warm_start(with_scar, tissue.state_dict(), TISSUE_SCAR, source_config=TISSUE_HEART)
    original, x_t = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    maps, window, scar = torch.rand(2, 2, 32, 32), torch.rand(2, 2, 32, 32), torch.rand(2, 1, 32, 32)
    t = torch.tensor([3, 200])
    with torch.no_grad():
        expected = tissue(torch.cat([original, maps, window, x_t], 1), t).sample
        actual = with_scar(torch.cat([original, maps, scar, window, x_t], 1), t).sample
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="do not fit inputs"):  # without the source's layout it cannot place them
        warm_start(build_denoiser(TISSUE_SCAR), tissue.state_dict(), TISSUE_SCAR)


def test_enhance_passes_the_scar_label_as_the_scar_map(phantom):
    image, labels = phantom
    oracle = LoadedModel("oracle", WallOracle(TISSUE_SCAR, brightened="scar"), TISSUE_SCAR, {})
    result = enhance(image, labels, oracle, EnhanceParameters(k=1, steps=5))
    original, enhanced, truth = _arrays(image, result.enhanced, labels)
    change = enhanced.astype(float) - original
    assert np.median(change[truth == L.SCAR]) > 10 * abs(np.median(change[truth == L.MYOCARDIUM]))
    without_scar = _with_labels(labels, np.where(truth == L.SCAR, L.MYOCARDIUM, truth))
    unchanged = enhance(image, without_scar, oracle, EnhanceParameters(k=1, steps=5)).enhanced
    np.testing.assert_allclose(sitk.GetArrayFromImage(unchanged)[truth > 0], original[truth > 0], atol=1.0)


def test_train_a_tissue_scar_model_from_a_tissue_run(tmp_path, tiny_models, capsys):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    common = ["--dataset", str(dataset), "--iterations", "1", "--batch-size", "2", "--image-size", "32",
              "--channels", "16", "32", "--max-timestep", "300", "--device", "cpu", "--normalisation", "heart",
              "--models", str(tiny_models)]
    assert main(["train-diffusion", *common, "--run-dir", str(tmp_path / "tissue"), "--conditioning", "tissue"]) == 0
    assert main(["train-diffusion", *common, "--run-dir", str(tmp_path / "scar"), "--conditioning", "tissue-scar",
                 "--init-weights", str(tmp_path / "tissue" / "model.safetensors")]) == 0
    weights = load_file(str(tmp_path / "scar" / "model.safetensors"))
    assert weights["conv_in.weight"].shape[1] == len(condition_channels(TISSUE_SCAR)) + 1
    assert json.loads((tmp_path / "scar" / "config.json").read_text())["scar_map_errors"] == "within-wall"
    like = ["--run-dir", str(tmp_path / "like"), "--scar-map-errors", "like-segmentation"]
    assert main(["train-diffusion", *common, *like, "--conditioning", "tissue-scar"]) == 0
    assert json.loads((tmp_path / "like" / "config.json").read_text())["scar_map_errors"] == "like-segmentation"
    assert main(["train-diffusion", *common, *like, "--conditioning", "tissue"]) == 2
    assert "a 'tissue' model reads none" in capsys.readouterr().err
    resumed = list(common)
    resumed[resumed.index("--iterations") + 1] = "2"  # resume the like-segmentation run, without its setting
    assert main(["train-diffusion", *resumed, "--run-dir", str(tmp_path / "like"), "--conditioning", "tissue-scar"]) == 2
    assert "trained with scar_map_errors 'like-segmentation'" in capsys.readouterr().err
