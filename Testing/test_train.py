"""Training: datasets in both layouts, resumable checkpoints, EMA weights, snapshots, bundling."""
import dataclasses
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from safetensors.torch import load_file

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.datasets import DatasetSpec, case_names, load_cases
from ScarEnhanceLib.augment import (HEART_CROP_SIDE_MM, SYNTHETIC_SCAR, TISSUE_GAINS, DiffusionSamples, PatchOptions,
                                   SegmentationSamples, first_third_end, heart_crop, synthetic_scar,
                                   tissue_contrast)
from ScarEnhanceLib.diffusion import DiffusionConfig, NoiseHintDenoiser, add_masked_noise, training_scheduler
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom
from ScarEnhanceLib.pipeline import EnhanceParameters, enhance
from ScarEnhanceLib.segmentation import SegmentationConfig, SegmentationEnsemble, build_segmenter
from ScarEnhanceLib.train import (MAX_BALANCE, WARMUP_ITERATIONS, TrainSettings, _MixedSegmentationSamples, _batches,
                                  _merged_logits, _original_starts, change_balance, learning_rate_at, train_diffusion,
                                  train_segmentation, validation_dice)
from ScarEnhanceLib.weights import ENHANCEMENT, SEGMENTATION, load, sha256

from conftest import TINY_DIFFUSION, TINY_SEGMENTATION, phantom_case


def _png_dataset(root, cases=2, slices=3):
    """EMIDEC layout: train/ and trainannot/ PNG slices, EMIDEC label values (4 = no-reflow)."""
    for folder in ("train", "trainannot"):
        (root / folder).mkdir(parents=True)
    for c in range(cases):
        case = phantom_case(seed=c, slices=slices)
        for s in range(slices):
            image = np.clip(case.images[s] / case.images.max() * 255, 0, 255).astype(np.uint8)
            raw = case.labels[s].copy()
            raw[(raw == L.SCAR) & (np.arange(raw.shape[1])[None, :] % 2 == 0)] = 4
            sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "train" / f"Case_P{c:03d}_slice{s:03d}.png"))
            sitk.WriteImage(sitk.GetImageFromArray(raw), str(root / "trainannot" / f"Case_P{c:03d}_slice{s:03d}.png"))
    return root


def test_png_layout_reads_cases_and_maps_emidec_labels(tmp_path):
    spec = DatasetSpec.load(_png_dataset(tmp_path / "emidec"))
    assert spec.layout == "png" and spec.labels_scar
    assert case_names(spec) == ["Case_P000", "Case_P001"]
    cases = load_cases(spec)
    assert cases[0].images.shape[0] == 3 and set(np.unique(cases[0].labels)) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="not found"):
        load_cases(spec, ["Case_X"])
    kept = load_cases(spec, keep_mvo=True)  # no-reflow apart, for a segmentation network that learns it
    assert (kept[0].labels == L.MVO).any() and spec.labelled_classes == L.MVO + 1
    assert DatasetSpec(tmp_path, label_map={1: L.BLOOD_POOL}).labelled_classes == L.MYOCARDIUM + 1  # heart read as such
    np.testing.assert_array_equal(np.where(kept[0].labels == L.MVO, L.MYOCARDIUM, kept[0].labels), cases[0].labels)


def test_png_layout_reads_its_label_values_as_volumes_do(tmp_path):
    no_scar = _png_dataset(tmp_path / "no_scar")
    for label_file in (no_scar / "trainannot").glob("*.png"):  # a PNG set whose scar was never labelled
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        sitk.WriteImage(sitk.GetImageFromArray(np.minimum(raw, L.MYOCARDIUM)), str(label_file))
    assert not DatasetSpec.load(no_scar).labels_scar  # was read as EMIDEC: its hearts as scar-free
    scaled = _png_dataset(tmp_path / "scaled")
    for label_file in (scaled / "trainannot").glob("*.png"):  # masks saved for display: 0, 60, 120, 180, 240
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        sitk.WriteImage(sitk.GetImageFromArray((raw * 60).astype(np.uint8)), str(label_file))
    with pytest.raises(ValueError, match="hold values no preset reads: 60 .*dataset.json"):
        DatasetSpec.load(scaled)  # was read as EMIDEC: every label background, every slice dropped unsaid
    unlabelled = _png_dataset(tmp_path / "unlabelled")
    next((unlabelled / "trainannot").glob("*.png")).unlink()
    with pytest.raises(ValueError, match="1 PNG slice.* no label file"):
        DatasetSpec.load(unlabelled)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no cases found .* neither volumes .* nor PNG slices"):
        DatasetSpec.load(tmp_path / "empty")


def test_nifti_layout_guesses_mscmrseg_values(tmp_path):
    case = phantom_case(seed=1)
    raw = np.select([case.labels == L.BLOOD_POOL, case.labels >= L.MYOCARDIUM], [500, 200], 0).astype(np.uint16)
    raw[:, :3] = 600  # the right ventricle, outside the heart ROI
    _write_labelled(tmp_path / "ms", "p1_LGE", raw, case.images)
    spec = DatasetSpec.load(tmp_path / "ms")
    assert spec.layout == "nifti" and not spec.labels_scar and spec.labelled_classes == L.MYOCARDIUM + 1
    loaded = load_cases(spec)[0]
    np.testing.assert_array_equal(loaded.labels > 0, case.labels[case.labels.reshape(len(case.labels), -1).any(1)] > 0)


def test_nifti_layout_reads_our_values_as_labelling_scar_only_where_a_label_file_holds_it(tmp_path):
    for name, scar in (("a_normal", "none"), ("b_scar", "patchy")):
        image, labels = make_phantom(PhantomSpec(matrix=96, slices=2, spacing_mm=1.6, scar=scar, seed=1))
        for folder in ("with_scar", "without_scar") if scar == "none" else ("with_scar",):
            (tmp_path / folder).mkdir(exist_ok=True)
            sitk.WriteImage(image, str(tmp_path / folder / f"{name}.nii.gz"))
            sitk.WriteImage(labels, str(tmp_path / folder / f"{name}_manual.nii.gz"))
    with_scar = DatasetSpec.load(tmp_path / "with_scar")  # its first case is normal: the second labels scar
    assert with_scar.labels_scar and with_scar.labelled_classes == L.SCAR + 1
    without_scar = DatasetSpec.load(tmp_path / "without_scar")
    assert not without_scar.labels_scar and without_scar.labelled_classes == L.MYOCARDIUM + 1
    described = tmp_path / "without_scar" / "dataset.json"
    described.write_text(json.dumps({"label_map": "scarenhance"}), encoding="utf-8")  # said so: it labels scar
    assert DatasetSpec.load(tmp_path / "without_scar").labels_scar


def _write_labelled(folder: Path, name: str, raw: np.ndarray, images: np.ndarray, suffix: str = ".nii.gz") -> None:
    folder.mkdir(exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(images), str(folder / f"{name}{suffix}"))
    sitk.WriteImage(sitk.GetImageFromArray(raw), str(folder / f"{name}_manual{suffix}"))


def test_nifti_layout_reads_myops_values_with_their_scar_and_edema(tmp_path):
    case = phantom_case(seed=1)
    myops = {L.BLOOD_POOL: 500, L.MYOCARDIUM: 200, L.SCAR: 2221}
    raw = np.zeros(case.labels.shape, np.uint16)
    for label, value in myops.items():
        raw[case.labels == label] = value
    raw[(case.labels == L.MYOCARDIUM) & (np.arange(raw.shape[-1]) < raw.shape[-1] // 2)] = 1220  # edema in the wall
    raw[:, :3] = 600  # the right ventricle: labelled, not in the heart ROI
    _write_labelled(tmp_path / "myops", "c1", raw, case.images)
    spec = DatasetSpec.load(tmp_path / "myops")
    assert spec.labels_scar  # MS-CMRSeg's preset would read the scar and the edema as background
    loaded = load_cases(spec)[0]
    kept = case.labels.reshape(len(case.labels), -1).any(1)
    expected = case.labels.copy()
    expected[:, :3] = L.BACKGROUND
    np.testing.assert_array_equal(loaded.labels, expected[kept])
    raw[raw == 2221] = 200  # edema, but no scar labelled anywhere: scar-free hearts or unlabelled scar?
    _write_labelled(tmp_path / "edema_only", "c1", raw, case.images)
    with pytest.raises(ValueError, match=r"edema \(1220, in c1_manual.nii.gz\) but no scar.*dataset.json"):
        DatasetSpec.load(tmp_path / "edema_only")


def test_nifti_layout_recognises_values_in_any_label_file_and_refuses_what_no_preset_reads(tmp_path):
    case = phantom_case(seed=1)
    ms = np.select([case.labels == L.BLOOD_POOL, case.labels >= L.MYOCARDIUM], [500, 200], 0).astype(np.uint16)
    _write_labelled(tmp_path / "mixed", "a_ours", case.labels.astype(np.uint16), case.images)
    _write_labelled(tmp_path / "mixed", "b_mscmrseg", ms, case.images)  # not the first file: went unseen before
    with pytest.raises(ValueError, match=r"mix the values of two presets \(1 \(in a_ours_manual.nii.gz\).*"
                                         r"200 \(in b_mscmrseg_manual.nii.gz\).*dataset.json"):
        DatasetSpec.load(tmp_path / "mixed")
    unknown = case.labels.astype(np.uint16)
    unknown[case.labels == L.SCAR] = 7
    _write_labelled(tmp_path / "unknown", "a", unknown, case.images)
    with pytest.raises(ValueError, match=r"values no preset reads: 7 \(in a_manual.nii.gz\)\. Say what"):
        DatasetSpec.load(tmp_path / "unknown")
    (tmp_path / "unknown" / "dataset.json").write_text(json.dumps({"label_map": {"1": 1, "2": 2, "7": 3}}))
    assert DatasetSpec.load(tmp_path / "unknown").labels_scar  # said what 7 is: read as scar
    with_mvo = case.labels.astype(np.uint16)
    with_mvo[case.labels == L.SCAR] = L.MVO
    _write_labelled(tmp_path / "emidec_nifti", "a", with_mvo, case.images)
    assert DatasetSpec.load(tmp_path / "emidec_nifti").label_map == {1: 1, 2: 2, 3: 3, 4: L.MVO}
    _write_labelled(tmp_path / "fractions", "a", case.labels.astype(np.float32) / 2, case.images)
    with pytest.raises(ValueError, match="whole numbers"):
        DatasetSpec.load(tmp_path / "fractions")
    not_a_number = case.labels.astype(np.float32)
    not_a_number[0, 0, 0] = np.nan
    _write_labelled(tmp_path / "nan", "a", not_a_number, case.images, ".nrrd")  # NIfTI does not keep the NaN
    with pytest.raises(ValueError, match="a_manual.nrrd holds nan, not a label"):
        DatasetSpec.load(tmp_path / "nan")


def test_diffusion_training_checkpoints_resumes_and_keeps_snapshots(tmp_path):
    cases = [phantom_case(seed=s) for s in range(2)]
    settings = TrainSettings(run_dir=tmp_path / "run", iterations=4, batch_size=2, checkpoint_every=2,
                             snapshot_every=2, device="cpu", max_timestep=300)
    train_diffusion([cases], TINY_DIFFUSION, settings, [cases[:1]])
    first = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert [h["iteration"] for h in first["history"]] == [2, 4] and "val_loss" in first["history"][0]
    settings.iterations = 6
    settings.learning_rate = 5e-4
    train_diffusion([cases], TINY_DIFFUSION, settings)
    resumed = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert [h["iteration"] for h in resumed["history"]] == [2, 4, 6]
    assert [h["learning_rate"] for h in resumed["history"]] == [2e-4, 2e-4, 5e-4]
    assert resumed["max_timestep"] == 300
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "model_000002.safetensors", "model_000004.safetensors", "model_000006.safetensors"]


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_iteration():
    cosine = TrainSettings(run_dir=".", iterations=10000, learning_rate=1e-3, lr_schedule="cosine")
    rates = [learning_rate_at(cosine, i) for i in range(cosine.iterations)]
    assert rates[0] == pytest.approx(1e-3 / WARMUP_ITERATIONS)
    assert max(rates) == pytest.approx(1e-3, rel=1e-2) and int(np.argmax(rates)) == WARMUP_ITERATIONS - 1
    assert rates[cosine.iterations // 2] == pytest.approx(0.5e-3)
    assert all(a >= b for a, b in zip(rates[WARMUP_ITERATIONS:], rates[WARMUP_ITERATIONS + 1:]))
    assert rates[-1] < 1e-9
    constant = TrainSettings(run_dir=".", iterations=10000, learning_rate=1e-3)
    assert {learning_rate_at(constant, i) for i in (0, 5000, 9999)} == {1e-3}
    with pytest.raises(ValueError, match="schedule"):
        TrainSettings(run_dir=".", lr_schedule="step")


def test_cosine_runs_record_the_rate_they_used_and_stay_on_the_curve_when_resumed(tmp_path):
    cases = [phantom_case(seed=0)]
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=4, batch_size=2, checkpoint_every=1, device="cpu",
                             learning_rate=1e-3, lr_schedule="cosine", time_limit_minutes=0.0)
    train_segmentation([(cases, L.SCAR + 1)], TINY_SEGMENTATION, settings)  # stops after one step, checkpointed
    settings.time_limit_minutes = None
    train_segmentation([(cases, L.SCAR + 1)], TINY_SEGMENTATION, settings)
    history = json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["history"]
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert [h["learning_rate"] for h in history] == pytest.approx([learning_rate_at(settings, i) for i in range(4)])
    assert {h["lr_schedule"] for h in history} == {"cosine"}


def test_diffusion_samples_mark_scar_inside_the_roi_where_the_target_brightens():
    original, target, roi, scar = DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0))(8)
    assert scar.sum() > 0 and bool((scar <= roi).all()) and bool((scar >= 0).all())
    brightening = (target - original)[scar > 0.9]  # gamma > 1 on scar (antialiasing blurs the odd pixel)
    assert float(brightening.mean()) > 0.02 and float((brightening > 0).float().mean()) > 0.95
    healthy = (roi > 0) & (scar == 0)
    assert float((target - original)[healthy].mean()) <= 0  # blood darker, myocardium unchanged


def test_strong_augmentation_keeps_the_target_the_gamma_correction_of_the_augmented_image():
    standard = DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0))(8)
    strong = DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0), augmentation="strong")(8)
    assert not torch.allclose(standard[0], strong[0])  # same draws, more transforms
    original, target, roi, scar = strong
    assert bool((scar <= roi).all()) and torch.equal(target[roi == 0], original[roi == 0])
    brightening = (target - original)[scar > 0.9]
    assert float(brightening.mean()) > 0.02 and float((brightening > 0).float().mean()) > 0.9
    with pytest.raises(ValueError, match="augmentation must be one of"):
        DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0), augmentation="heavy")


@pytest.mark.parametrize("option", [{"scar_weight": 5.0}, {"min_snr_gamma": 5.0}, {"augmentation": "strong"}])
def test_training_options_change_the_first_loss_and_are_recorded(tmp_path, option):
    cases = [phantom_case(seed=0)]
    first_losses = []
    for run, extra in ((tmp_path / "plain", {}), (tmp_path / "with_option", option)):
        # t below 50: SNR above 5 and unequal, so Min-SNR weighs the two samples of the batch differently
        settings = TrainSettings(run_dir=run, iterations=1, batch_size=2, checkpoint_every=1, device="cpu",
                                 max_timestep=50, **extra)
        train_diffusion([cases], TINY_DIFFUSION, settings, [cases])
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        assert all(config[key] == value for key, value in extra.items())
        assert config["history"][0]["val_scar_loss"] > 0
        first_losses.append(config["history"][0]["loss"])
    assert first_losses[0] != pytest.approx(first_losses[1])  # same seed: only the option differs


def test_original_start_balance_changes_the_loss_of_original_starts_and_is_recorded(tmp_path):
    cases = [phantom_case(seed=0)]
    first_losses = []
    for name, balance in (("plain", 0.0), ("balanced", 100.0)):  # 100: every phantom scar weighs MAX_BALANCE
        settings = TrainSettings(run_dir=tmp_path / name, iterations=1, batch_size=8, checkpoint_every=1,
                                 device="cpu", max_timestep=300, original_starts=1.0, original_start_balance=balance)
        train_diffusion([cases], TINY_DIFFUSION, settings)
        config = json.loads((tmp_path / name / "config.json").read_text(encoding="utf-8"))
        assert config["original_start_balance"] == balance
        first_losses.append(config["history"][0]["loss"])
    assert first_losses[0] != pytest.approx(first_losses[1])


@pytest.mark.parametrize("option, message", [({"scar_weight": 0}, "scar weight must be positive"),
                                             ({"min_snr_gamma": -1}, "Min-SNR gamma must be positive"),
                                             ({"original_starts": 1.5}, "original starts must be 0 to 1"),
                                             ({"original_start_balance": 1.0}, "needs original starts"),
                                             ({"original_starts": 0.5, "original_start_balance": -1.0},
                                              "balance must be positive")])
def test_bad_loss_weightings_are_refused(tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION, TrainSettings(run_dir=tmp_path, device="cpu", **option))


def test_original_starts_learn_the_noise_that_leads_from_the_noised_original_to_the_target():
    scheduler = training_scheduler(TINY_DIFFUSION)
    generator = torch.Generator().manual_seed(0)
    original, target, noise = (torch.randn((4, 1, 8, 8), generator=generator) for _ in range(3))
    t = torch.tensor([10, 60, 150, 299])
    start, aim, chosen = _original_starts(scheduler, original, target, noise, t, max_t=300, fraction=1.0)
    from_original = t >= 150
    assert torch.equal(chosen, from_original)
    assert torch.equal(start[from_original], original[from_original])
    assert torch.equal(start[~from_original], target[~from_original]) and torch.equal(aim[~from_original],
                                                                                      noise[~from_original])
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = add_masked_noise(scheduler, start, noise, t, torch.ones_like(noise))
    estimate = (noisy - (1 - abar).sqrt() * aim) / abar.sqrt()  # the x0 a perfect prediction of ``aim`` implies
    assert torch.allclose(estimate, target, atol=1e-4)
    none = _original_starts(scheduler, original, target, noise, t, max_t=300, fraction=0.0)
    assert torch.equal(none[0], target) and torch.equal(none[1], noise) and not none[2].any()


def test_change_balance_weighs_a_small_scar_change_up_to_the_cap_and_leaves_crops_without_scar_alone():
    original = torch.zeros((4, 1, 8, 8))
    scar = torch.zeros_like(original)
    scar[:3, :, 2:5, 2:5] = 1.0  # 9 scar pixels in the first three crops
    target = original + scar * torch.tensor([0.25, 2.0, 0.01, 0.0]).view(-1, 1, 1, 1)
    weights = change_balance(original, target, scar, reference=1.0)
    assert torch.allclose(weights, torch.tensor([4.0, 1.0, MAX_BALANCE, 1.0]))
    target[3] += 0.05  # a change without scar pixels is not measured
    assert change_balance(original, target, scar, reference=1.0)[3] == 1.0


def test_noise_hint_training_warm_starts_from_plain_weights_and_bundles(tmp_path):
    cases = [phantom_case(seed=0)]
    settings = dict(iterations=1, batch_size=2, checkpoint_every=1, device="cpu", max_timestep=300)
    train_diffusion([cases], TINY_DIFFUSION, TrainSettings(run_dir=tmp_path / "plain", **settings))
    hinted = DiffusionConfig(**{**TINY_DIFFUSION.to_dict(), "noise_hint": True})
    train_diffusion([cases], hinted, TrainSettings(run_dir=tmp_path / "hint", init_weights=tmp_path / "plain" /
                                                 "model.safetensors", **settings))
    config = json.loads((tmp_path / "hint" / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["noise_hint"] and config["init_weights"] == "model.safetensors"
    with pytest.raises(ValueError, match="does not fit this network"):  # hint weights into a plain network
        train_diffusion([cases], TINY_DIFFUSION, TrainSettings(run_dir=tmp_path / "bad", init_weights=tmp_path / "hint" /
                                                             "model.safetensors", **settings))
    models = tmp_path / "models"
    assert main(["bundle", str(tmp_path / "hint"), "--name", ENHANCEMENT, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 0
    loaded = load(ENHANCEMENT, models)
    assert isinstance(loaded.network, NoiseHintDenoiser) and loaded.info["training"]["init_weights"]
    assert loaded.info["training"]["augmentation"] == "standard"
    image, labels = make_phantom(PhantomSpec(matrix=80, slices=2, spacing_mm=1.6, seed=0))
    enhanced = sitk.GetArrayFromImage(enhance(image, labels, loaded, EnhanceParameters(k=2, steps=3)).enhanced)
    outside = sitk.GetArrayFromImage(labels) == 0
    assert np.isfinite(enhanced).all() and np.array_equal(enhanced[outside], sitk.GetArrayFromImage(image)[outside])


def test_train_diffusion_command_passes_the_loss_weightings_hint_and_warm_start(tmp_path):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    common = ["train-diffusion", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
              "--image-size", "32", "--channels", "16", "32", "--max-timestep", "300", "--device", "cpu"]
    assert main(common + ["--run-dir", str(tmp_path / "plain")]) == 0
    assert main(common + ["--run-dir", str(tmp_path / "hint"), "--noise-hint", "--scar-weight", "3",
                          "--min-snr-gamma", "5", "--augmentation", "strong", "--dropout", "0.1",
                          "--original-starts", "0.5", "--original-start-balance", "1.0",
                          "--init-weights", str(tmp_path / "plain" / "model.safetensors")]) == 0
    config = json.loads((tmp_path / "hint" / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["noise_hint"] and config["scar_weight"] == 3.0 and config["min_snr_gamma"] == 5.0
    assert config["augmentation"] == "strong" and config["model"]["dropout"] == 0.1 and config["original_starts"] == 0.5
    assert config["original_start_balance"] == 1.0
    assert config["init_weights"] == "model.safetensors"


@pytest.mark.parametrize("make_samples", [
    lambda rng: DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, rng, augmentation="strong"),
    lambda rng: SegmentationSamples([phantom_case(seed=0)], SegmentationConfig(
        channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window", context_slices=1), rng,
        PatchOptions(tissue_contrast=0.5, synthetic_scar=0.5)),
], ids=["diffusion", "segmentation"])
def test_batches_drawn_without_monai_metadata_are_those_drawn_with_it(make_samples, monkeypatch):
    """Batches are drawn with MONAI's metadata off (25-43 % less time); the values are those drawn with it on, and the
    setting is back as it was afterwards."""
    import contextlib
    import ScarEnhanceLib.augment as augment
    from monai.data import MetaTensor, get_track_meta

    samples = make_samples(np.random.default_rng(5))
    tracking_while_drawn = []
    draw_one = samples._one
    monkeypatch.setattr(samples, "_one", lambda *args: tracking_while_drawn.append(get_track_meta()) or draw_one(*args))
    plain = samples(4)
    assert tracking_while_drawn == [False] * 4
    assert get_track_meta() and not any(isinstance(part, MetaTensor) for part in plain)
    monkeypatch.setattr(augment, "_plain_tensors", contextlib.nullcontext)
    tracked = make_samples(np.random.default_rng(5))(4)
    for without, with_metadata in zip(plain, tracked):
        torch.testing.assert_close(without, with_metadata.as_tensor() if isinstance(with_metadata, MetaTensor)
                                   else with_metadata, rtol=0, atol=0)


def test_data_loader_workers_draw_different_batches_and_resume_draws_new_ones():
    samples = DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0))
    settings = TrainSettings(run_dir=None, batch_size=2, workers=2)
    first = _batches(samples, settings, rank=0, start=0, pin_memory=False)
    originals = [next(first)[0] for _ in range(4)]  # the loader alternates between its two workers
    assert not torch.equal(originals[0], originals[1])
    resumed = _batches(samples, settings, rank=0, start=100, pin_memory=False)
    assert not torch.equal(next(resumed)[0], originals[0])


def test_in_process_batches_are_reproducible_and_resume_draws_new_ones():
    samples = DiffusionSamples([[phantom_case(seed=0)]], TINY_DIFFUSION, np.random.default_rng(0))
    settings = TrainSettings(run_dir=None, batch_size=2)
    first = next(_batches(samples, settings, rank=0, start=0, pin_memory=False))[0]
    assert torch.equal(next(_batches(samples, settings, rank=0, start=0, pin_memory=False))[0], first)
    assert not torch.equal(next(_batches(samples, settings, rank=0, start=100, pin_memory=False))[0], first)
    assert not torch.equal(next(_batches(samples, settings, rank=1, start=0, pin_memory=False))[0], first)


def test_training_with_workers_stops_at_the_time_limit_with_a_checkpoint(tmp_path):
    settings = TrainSettings(run_dir=tmp_path / "run", iterations=10_000, batch_size=2, checkpoint_every=1000,
                             device="cpu", workers=1, time_limit_minutes=0.0)
    train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION, settings)
    history = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["history"]
    assert [h["iteration"] for h in history] == [1]
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_segmentation_training_with_data_that_lacks_scar(tmp_path):
    labelled = [phantom_case(seed=0)]
    unlabelled = [phantom_case(seed=1)]
    unlabelled[0].labels[unlabelled[0].labels == L.SCAR] = L.MYOCARDIUM
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=2, batch_size=2, checkpoint_every=2, device="cpu")
    train_segmentation([(labelled, L.SCAR + 1), (unlabelled, L.SCAR)], TINY_SEGMENTATION, settings,
                       validation_cases=[(labelled, L.SCAR + 1)])
    history = json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["history"]
    assert history[-1]["iteration"] == 2 and 0 <= history[-1]["val_dice_roi"] <= 1


def test_validation_dice_reads_each_class_over_the_cases_that_have_it(monkeypatch):
    with_scar, normal, unlabelled = phantom_case(seed=0), phantom_case(seed=1), phantom_case(seed=2)
    normal.labels[normal.labels == L.SCAR] = L.MYOCARDIUM
    truth_with_scar = unlabelled.labels.copy()
    unlabelled.labels[unlabelled.labels == L.SCAR] = L.MYOCARDIUM  # a data set that does not label scar
    answers = {id(with_scar.images): with_scar.labels, id(normal.images): normal.labels,
               id(unlabelled.images): truth_with_scar}  # right everywhere; it finds the scar nobody labelled
    monkeypatch.setattr("ScarEnhanceLib.segmentation.segment_slices", lambda _m, images, *_a: answers[id(images)])
    dice = validation_dice(torch.nn.Linear(1, 1), [([with_scar, normal], L.SCAR + 1), ([unlabelled], L.SCAR)],
                           TINY_SEGMENTATION)
    assert dice == {"val_dice_roi": 1.0, "val_dice_blood_pool": 1.0, "val_dice_myocardium": 1.0,
                    "val_dice_scar": 1.0, "val_dice_wall": 1.0}  # was: scar 0.5, myocardium below 1
    assert validation_dice(torch.nn.Linear(1, 1), [([normal], L.SCAR + 1)], TINY_SEGMENTATION)["val_dice_scar"] is None


def test_segmentation_scar_weight_changes_the_loss_of_scar_data_only_and_is_recorded(tmp_path):
    labelled = [phantom_case(seed=0)]
    unlabelled = [phantom_case(seed=0)]  # the same case, its scar not labelled (merged into myocardium)
    losses = {}
    for data, labels_scar in ((labelled, True), (unlabelled, False)):
        classes = L.SCAR + int(labels_scar)
        for weight in (1.0, 4.0):
            run = tmp_path / f"{labels_scar}_{weight}"
            settings = TrainSettings(run_dir=run, iterations=1, batch_size=2, checkpoint_every=1, device="cpu",
                                     scar_weight=weight)
            train_segmentation([(data, classes)], TINY_SEGMENTATION, settings)
            config = json.loads((run / "config.json").read_text(encoding="utf-8"))
            assert config["scar_weight"] == weight
            losses[labels_scar, weight] = config["history"][0]["loss"]
    assert losses[True, 1.0] != pytest.approx(losses[True, 4.0])  # same seed: only the weight differs
    assert losses[False, 1.0] == pytest.approx(losses[False, 4.0])  # scar merged into myocardium: nothing to weigh
    with pytest.raises(ValueError, match="scar weight must be positive"):
        train_segmentation([(labelled, L.SCAR + 1)], TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path, scar_weight=0))


def test_bundle_installs_weights_with_checksum_and_provenance(tmp_path, capsys):
    cases = [phantom_case(seed=0)]
    train_diffusion([cases], TINY_DIFFUSION, TrainSettings(run_dir=tmp_path / "run", iterations=2, batch_size=2,
                                                         checkpoint_every=2, device="cpu", max_timestep=300,
                                                         scar_weight=3.0))
    models = tmp_path / "models"
    assert main(["bundle", str(tmp_path / "run"), "--name", ENHANCEMENT, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 0
    entry = json.loads((models / "manifest.json").read_text(encoding="utf-8"))[ENHANCEMENT]
    assert entry["training"]["max_timestep"] == 300 and entry["training"]["scar_weight"] == 3.0
    assert entry["license"] == "test" and len(entry["sha256"]) == 64
    assert load(ENHANCEMENT, models).info["training"]["data"] == "phantoms"
    with pytest.raises(Exception, match="not in"):
        load(SEGMENTATION, models)
    assert main(["bundle", str(tmp_path / "run"), "--ensemble", "--name", ENHANCEMENT, "--data", "phantoms",
                 "--license", "test", "--models", str(models)]) == 2
    assert "only the segmentation can be an ensemble" in capsys.readouterr().err
    before = (models / "manifest.json").read_bytes()
    assert main(["bundle", str(tmp_path / "run"), "--name", SEGMENTATION, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 2  # a diffusion run is not a segmentation model
    assert "a diffusion model is installed as 'enhancement', not 'heart_segmentation'" in capsys.readouterr().err
    assert (models / "manifest.json").read_bytes() == before and not (models / f"{SEGMENTATION}.safetensors").exists()
    with pytest.raises(SystemExit):  # a name no command loads
        main(["bundle", str(tmp_path / "run"), "--name", "enhancment", "--data", "phantoms", "--license", "test",
              "--models", str(models)])
    assert "invalid choice: 'enhancment'" in capsys.readouterr().err


def test_bundle_of_several_runs_installs_the_mean_of_their_weights_and_each_runs_settings(tmp_path):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "base", iterations=1, batch_size=2,
                                                               checkpoint_every=1, device="cpu"))
    start = tmp_path / "start.safetensors"  # a copy under another name is the same start
    start.write_bytes((tmp_path / "base" / "model.safetensors").read_bytes())
    for seed, iterations, weights in ((0, 2, tmp_path / "base" / "model.safetensors"), (1, 3, start)):
        train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / f"seed{seed}", seed=seed,
                                                                   iterations=iterations, batch_size=2,
                                                                   checkpoint_every=iterations, device="cpu",
                                                                   init_weights=weights))
    runs = [tmp_path / "seed0", tmp_path / "seed1"]
    models = tmp_path / "models"
    assert main(["bundle", *map(str, runs), "--name", SEGMENTATION, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 0
    bundled = load_file(str(models / "heart_segmentation.safetensors"))
    first, second = (load_file(str(run / "model.safetensors")) for run in runs)
    assert any(not torch.equal(first[key], second[key]) for key in first)  # two seeds: an average that means something
    for key in first:
        torch.testing.assert_close(bundled[key], (first[key] + second[key]) / 2)
    training = load(SEGMENTATION, models).info["training"]
    assert [run["run"] for run in training["averaged_runs"]] == [run.as_posix() for run in runs]
    assert [run["iterations"] for run in training["averaged_runs"]] == [2, 3] and training["data"] == "phantoms"
    assert {run["start"]["sha256"] for run in training["averaged_runs"]} == {sha256(start)}


def test_bundle_with_start_installs_the_mean_of_a_run_and_the_weights_it_started_from(tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = dict(batch_size=2, checkpoint_every=2, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "base", iterations=1, **settings))
    start = tmp_path / "base" / "model.safetensors"
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "tuned", iterations=2,
                                                               init_weights=start, **settings))
    common = ["--name", SEGMENTATION, "--data", "phantoms", "--license", "test", "--models", str(tmp_path / "models")]
    assert main(["bundle", str(tmp_path / "tuned"), "--with-start", str(start), *common]) == 0
    bundled = load_file(str(tmp_path / "models" / "heart_segmentation.safetensors"))
    tuned, first = load_file(str(tmp_path / "tuned" / "model.safetensors")), load_file(str(start))
    assert any(not torch.equal(tuned[key], first[key]) for key in tuned)
    for key in tuned:
        torch.testing.assert_close(bundled[key], (tuned[key] + first[key]) / 2)
    training = load(SEGMENTATION, tmp_path / "models").info["training"]
    assert "started from (model.safetensors; WiSE-FT)" in training["weights"]
    assert training["start"] == {"weights": "model.safetensors", "sha256": sha256(start)}
    assert training["run"]["iterations"] == 2 and training["run"]["run"] == (tmp_path / "tuned").as_posix()
    deeper = SegmentationConfig(**{**TINY_SEGMENTATION.to_dict(), "normalisation": "window", "context_slices": 1})
    train_segmentation(cases, deeper, TrainSettings(run_dir=tmp_path / "deeper", iterations=1, init_weights=start,
                                                    **settings))  # a 2.5D run from 2D weights
    before = {path.name: path.read_bytes() for path in (tmp_path / "models").iterdir()}
    refusals = {(str(tmp_path / "tuned"), str(tmp_path / "tuned" / "model.safetensors")): "are not the weights",
                (str(tmp_path / "base"), str(start)): "started from random weights",
                (str(tmp_path / "tuned"), str(tmp_path / "missing.safetensors")): "no such weights file",
                (str(tmp_path / "tuned"), str(tmp_path / "base")): "is not a weights file",
                (str(tmp_path / "deeper"), str(start)): "only weights of one network can be averaged"}
    for (run, weights), message in refusals.items():
        assert main(["bundle", run, "--with-start", weights, *common]) == 2
        assert message in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in (tmp_path / "models").iterdir()} == before
    assert main(["bundle", str(tmp_path / "tuned"), str(tmp_path / "base"), "--with-start", str(start), *common]) == 2
    assert "base records no start weights: it started from random weights" in capsys.readouterr().err
    config = _run_config(tmp_path / "tuned")
    del config["start"]  # as runs saved before starts were recorded
    (tmp_path / "tuned" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert main(["bundle", str(tmp_path / "tuned"), "--with-start", str(start), *common]) == 0
    assert "does not record its start weights" in capsys.readouterr().err
    assert main(["bundle", str(tmp_path / "tuned"), "--with-start", str(tmp_path / "tuned" / "model.safetensors"),
                 *common]) == 2
    assert "'s own weights: each counts once in the mean" in capsys.readouterr().err


def test_bundle_ensemble_adds_a_run_as_one_more_network_of_the_installed_segmentation(tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = dict(iterations=1, batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "coarse", **settings))
    finer = dataclasses.replace(TINY_SEGMENTATION, spacing_mm=1.25)
    train_segmentation(cases, finer, TrainSettings(run_dir=tmp_path / "fine", seed=1, **settings))
    common = ["--name", SEGMENTATION, "--data", "phantoms", "--license", "test", "--models", str(tmp_path / "models")]
    assert main(["bundle", str(tmp_path / "fine"), "--ensemble", *common]) == 2
    assert "to add an ensemble member to: install it first" in capsys.readouterr().err
    assert main(["bundle", str(tmp_path / "coarse"), *common]) == 0
    assert main(["bundle", str(tmp_path / "fine"), "--ensemble", *common]) == 0
    model = load(SEGMENTATION, tmp_path / "models")
    assert [c.spacing_mm for c in model.network.configs] == [TINY_SEGMENTATION.spacing_mm, 1.25]
    fine = load_file(str(tmp_path / "fine" / "model.safetensors"))
    for key, value in model.network.networks[1].state_dict().items():
        torch.testing.assert_close(value, fine[key])
    member = model.info["members"][0]
    assert member["training"]["iterations"] == 1 and member["training"]["data"] == "phantoms"
    assert member["license"] == "test" and member["sha256"] == sha256(tmp_path / "models" / member["file"])
    assert main(["bundle", str(tmp_path / "coarse"), *common]) == 0
    assert not isinstance(load(SEGMENTATION, tmp_path / "models").network, SegmentationEnsemble), \
        "installing a model replaces the ensemble"


def test_bundle_with_start_of_several_runs_installs_the_mean_of_them_and_their_start_in_equal_parts(tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = dict(batch_size=2, checkpoint_every=2, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "base", iterations=1, **settings))
    start = tmp_path / "base" / "model.safetensors"
    for seed in (0, 1):
        train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / f"tuned{seed}", iterations=2,
                                                                   init_weights=start, seed=seed, **settings))
    runs = [tmp_path / "tuned0", tmp_path / "tuned1"]
    assert main(["bundle", *map(str, runs), "--with-start", str(start), "--name", SEGMENTATION, "--data", "phantoms",
                 "--license", "test", "--models", str(tmp_path / "models")]) == 0
    bundled = load_file(str(tmp_path / "models" / "heart_segmentation.safetensors"))
    parts = [load_file(str(run / "model.safetensors")) for run in runs] + [load_file(str(start))]
    assert any(not torch.equal(parts[0][key], parts[1][key]) for key in bundled)
    for key in bundled:
        torch.testing.assert_close(bundled[key], sum(part[key] for part in parts) / 3)
    training = load(SEGMENTATION, tmp_path / "models").info["training"]
    assert "the mean of 2 runs' weights and the weights they started from (model.safetensors)" in training["weights"]
    assert [run["run"] for run in training["averaged_runs"]] == [run.as_posix() for run in runs]
    before = {path.name: path.read_bytes() for path in (tmp_path / "models").iterdir()}
    refusals = {(runs[0], runs[0]): "given twice", (runs[0], tmp_path / "base"): "records no start weights"}
    for pair, message in refusals.items():
        assert main(["bundle", *map(str, pair), "--with-start", str(start), "--name", SEGMENTATION, "--data",
                     "phantoms", "--license", "test", "--models", str(tmp_path / "models")]) == 2
        assert message in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in (tmp_path / "models").iterdir()} == before


def test_a_run_records_its_start_and_keeps_it_when_resumed(tmp_path):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = dict(batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "scratch", iterations=1, seed=4,
                                                               **settings))
    assert _run_config(tmp_path / "scratch")["start"] == {"seed": 4}
    weights = tmp_path / "scratch" / "model.safetensors"
    warm = TrainSettings(run_dir=tmp_path / "warm", iterations=1, init_weights=weights, **settings)
    train_segmentation(cases, TINY_SEGMENTATION, warm)
    recorded = {"weights": "model.safetensors", "sha256": sha256(weights)}
    assert _run_config(tmp_path / "warm")["start"] == recorded
    # resumed without --init-weights, after the start file changed: still the start it had
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "scratch", iterations=2, seed=4,
                                                               **settings))
    train_segmentation(cases, TINY_SEGMENTATION, dataclasses.replace(warm, iterations=2, init_weights=None))
    assert _run_config(tmp_path / "warm")["start"] == recorded and _run_config(tmp_path / "warm")["iteration"] == 2


def test_a_resume_that_would_change_the_network_or_the_noise_levels_is_refused_and_other_weights_are_noted(
        tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=1, batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, settings)
    for change in ({"spacing_mm": 1.25}, {"channels": (4, 8, 16)}):
        other = SegmentationConfig(**{**TINY_SEGMENTATION.to_dict(), **change})
        key, value = next(iter(change.items()))
        expected = f"model {key} {getattr(TINY_SEGMENTATION, key)!r}, not {value!r}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            train_segmentation(cases, other, dataclasses.replace(settings, iterations=2))
    assert _run_config(tmp_path / "seg")["iteration"] == 1
    other_weights = tmp_path / "seg" / "model.safetensors"  # not the run's start (random weights of its seed)
    capsys.readouterr()
    train_segmentation(cases, TINY_SEGMENTATION,
                       dataclasses.replace(settings, iterations=2, init_weights=other_weights))
    assert "resumes from its checkpoint" in capsys.readouterr().err and _run_config(tmp_path / "seg")["iteration"] == 2
    train_segmentation(cases, TINY_SEGMENTATION, dataclasses.replace(settings, iterations=2))
    assert "has already reached 2 iterations" in capsys.readouterr().err
    diffusion = TrainSettings(run_dir=tmp_path / "diffusion", iterations=1, batch_size=2, checkpoint_every=1,
                              device="cpu", max_timestep=300)
    train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION, diffusion)
    for change in ({"max_timestep": 1000}, {"augmentation": "strong"}):
        with pytest.raises(ValueError, match=f"{next(iter(change))} "):
            train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION,
                            dataclasses.replace(diffusion, iterations=2, **change))
    train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION, dataclasses.replace(diffusion, iterations=2,
                                                                                  learning_rate=1e-4, scar_weight=2.0))
    assert _run_config(tmp_path / "diffusion")["iteration"] == 2  # the rate and the loss weights may change


def test_an_interrupted_save_leaves_the_last_weights_whole(tmp_path, monkeypatch):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=1, batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, settings)
    saved = {name: (tmp_path / "seg" / name).read_bytes() for name in ("model.safetensors", "config.json")}

    def interrupted(tensors, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr("ScarEnhanceLib.train.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation(cases, TINY_SEGMENTATION, dataclasses.replace(settings, iterations=2))
    assert {name: (tmp_path / "seg" / name).read_bytes() for name in saved} == saved
    assert load_file(str(tmp_path / "seg" / "model.safetensors"))
    checkpoint = torch.load(tmp_path / "seg" / "checkpoint.pt", weights_only=True)  # plain tensors and values
    assert checkpoint["iteration"] == 1  # saved last: the resume redoes the iteration whose save was cut
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["checkpoint.pt", "config.json", "model.safetensors"]


class _RunsCodeWhenLoaded:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=1, batch_size=2, device="cpu")
    settings.run_dir.mkdir()
    torch.save({"model": _RunsCodeWhenLoaded(marker)}, settings.run_dir / "checkpoint.pt")  # a run from elsewhere
    with pytest.raises(pickle.UnpicklingError):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], TINY_SEGMENTATION, settings)
    assert not marker.exists()


def test_a_checkpoint_saved_with_numpy_learning_rates_still_resumes(tmp_path):
    from ScarEnhanceLib.train import _load_checkpoint
    torch.save({"iteration": 3, "history": [{"learning_rate": np.float64(2e-4)}]}, tmp_path / "checkpoint.pt")
    state = _load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))  # as runs before 2026-11-29 saved
    assert state["iteration"] == 3 and state["history"][0]["learning_rate"] == 2e-4


def test_a_resume_on_other_data_is_refused(tmp_path, capsys):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    other = _png_dataset(tmp_path / "other", cases=1, slices=2)
    common = ["train-segmentation", "--iterations", "1", "--batch-size", "2", "--patch-size", "64",
              "--channels", "8", "16", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    assert main([*common, "--dataset", str(dataset)]) == 0
    capsys.readouterr()
    assert main([*common[:2], "2", *common[3:], "--dataset", str(other)]) == 2
    assert "data sets and splits (('pngs',), 'Resources/splits.json'), not (('other',)" in capsys.readouterr().err
    assert main([*common[:2], "2", *common[3:], "--dataset", str(dataset)]) == 0  # the same data: resumed
    both = [*common[:2], "3", *common[3:-1], str(tmp_path / "shares"), "--dataset", str(dataset), "--dataset",
            str(other)]
    assert main([*both, "--dataset-share", "1", "1"]) == 0
    capsys.readouterr()
    assert main([*both[:2], "4", *both[3:], "--dataset-share", "3", "1"]) == 2
    assert "dataset_shares [0.5, 0.5], not [0.75, 0.25]" in capsys.readouterr().err


def _run_config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text(encoding="utf-8"))


def test_bundle_refuses_a_mean_that_is_not_one_model_before_writing_anything(tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    settings = dict(iterations=1, batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "run", **settings))
    # the same shapes, another network: only the configuration check can tell (the weights would average)
    other = SegmentationConfig(**{**TINY_SEGMENTATION.to_dict(), "normalisation": "window"})
    train_segmentation(cases, other, TrainSettings(run_dir=tmp_path / "other", **settings))
    train_diffusion([[phantom_case(seed=0)]], TINY_DIFFUSION, TrainSettings(run_dir=tmp_path / "diffusion",
                                                                            max_timestep=300, **settings))
    models = tmp_path / "models"
    assert main(["bundle", str(tmp_path / "run"), "--name", SEGMENTATION, "--data", "phantoms", "--license", "test",
                 "--models", str(models)]) == 0
    before = {path.name: path.read_bytes() for path in models.iterdir()}
    train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / "seed1", seed=1, **settings))
    refusals = {(tmp_path / "run", tmp_path / "other"): "trained another network",
                (tmp_path / "run", tmp_path / "seed1"): "only runs from the same start weights",
                (tmp_path / "run", tmp_path / "run"): "given twice",
                (tmp_path / "diffusion", tmp_path / "diffusion" / "."): "given twice",
                (tmp_path / "diffusion", tmp_path / "run"): "only segmentation runs",
                (tmp_path / "run", tmp_path): "is not a training run's folder: it has no config.json and no "
                                              "model.safetensors"}
    for runs, message in refusals.items():
        assert main(["bundle", *map(str, runs), "--name", SEGMENTATION, "--data", "phantoms", "--license", "test",
                     "--models", str(models)]) == 2
        assert message in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in models.iterdir()} == before  # nothing written


def test_bundle_averages_runs_saved_before_starts_were_recorded_with_a_warning(tmp_path, capsys):
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    for name in ("old", "older"):
        run = tmp_path / name
        train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=run, iterations=1, batch_size=2,
                                                                   checkpoint_every=1, device="cpu"))
        config = _run_config(run)
        del config["start"]
        if name == "older":  # saved before the test-time orientations were a setting: the same network all the same
            del config["model"]["test_time"]
        (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert main(["bundle", str(tmp_path / "old"), str(tmp_path / "older"), "--name", SEGMENTATION, "--data",
                 "phantoms", "--license", "test", "--models", str(tmp_path / "models")]) == 0
    assert "do not record their start weights" in capsys.readouterr().err
    for seed in (0, 1):  # beside an old run, runs that record other starts are still refused
        train_segmentation(cases, TINY_SEGMENTATION, TrainSettings(run_dir=tmp_path / f"new{seed}", iterations=1,
                                                                   batch_size=2, checkpoint_every=1, device="cpu",
                                                                   seed=seed))
    assert main(["bundle", str(tmp_path / "old"), str(tmp_path / "new0"), str(tmp_path / "new1"), "--name",
                 SEGMENTATION, "--data", "phantoms", "--license", "test", "--models", str(tmp_path / "models")]) == 2
    assert "only runs from the same start weights" in capsys.readouterr().err


def test_average_weights_refuses_files_of_other_networks_and_weights_that_are_not_floating_point(tmp_path):
    from safetensors.torch import save_file
    from ScarEnhanceLib.weights import average_weights
    files = {"a": {"w": torch.ones(2)}, "b": {"w": torch.ones(3)}, "c": {"v": torch.ones(2)},
             "d": {"w": torch.ones(2, dtype=torch.float64)}, "e": {"w": torch.ones(2, dtype=torch.int64)}}
    for name, tensors in files.items():
        save_file(tensors, str(tmp_path / name))
    with pytest.raises(ValueError, match="at least two"):
        average_weights([tmp_path / "a"], tmp_path / "mean")
    for other in ("b", "c", "d"):
        with pytest.raises(ValueError, match="other tensors"):
            average_weights([tmp_path / "a", tmp_path / other], tmp_path / "mean")
    with pytest.raises(ValueError, match="not floating point"):
        average_weights([tmp_path / "e", tmp_path / "e"], tmp_path / "mean")
    assert not (tmp_path / "mean").exists()


def test_classes_a_data_set_does_not_label_count_as_myocardium_in_the_loss():
    logits = torch.randn(2, L.NUM_CLASSES + 1, 3, 3)  # a network with the MVO class
    torch.testing.assert_close(_merged_logits(logits, L.MVO + 1), logits)  # EMIDEC: every class labelled
    without_mvo = _merged_logits(logits, L.SCAR + 1)  # MyoPS: scar, no MVO
    assert without_mvo.shape[1] == L.NUM_CLASSES
    torch.testing.assert_close(without_mvo[:, L.MYOCARDIUM], torch.logsumexp(logits[:, [L.MYOCARDIUM, L.MVO]], dim=1))
    torch.testing.assert_close(without_mvo[:, L.SCAR], logits[:, L.SCAR])
    torch.testing.assert_close(without_mvo[:, :L.MYOCARDIUM], logits[:, :L.MYOCARDIUM])
    neither = _merged_logits(logits, L.SCAR)  # MS-CMRSeg: myocardium only
    assert neither.shape[1] == L.SCAR
    torch.testing.assert_close(neither[:, L.MYOCARDIUM],
                               torch.logsumexp(logits[:, [L.MYOCARDIUM, L.SCAR, L.MVO]], dim=1))


def test_train_segmentation_command_learns_mvo_apart_from_weights_without_it(tmp_path, monkeypatch, capsys):
    import ScarEnhanceLib.train as training
    given = []  # the (cases, labelled classes) of each data set the command trains on
    original = training.train_segmentation
    monkeypatch.setattr(training, "train_segmentation",
                        lambda datasets, *args, **kwargs: given.append(datasets) or original(datasets, *args, **kwargs))
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)  # EMIDEC values: 4 is no-reflow
    common = ["--dataset", str(dataset), "--iterations", "1", "--batch-size", "2", "--patch-size", "64",
              "--channels", "8", "16", "--device", "cpu"]
    assert main(["train-segmentation", *common, "--run-dir", str(tmp_path / "plain")]) == 0
    assert not any((c.labels == L.MVO).any() for c in given[-1][0][0])  # read as myocardium
    assert main(["train-segmentation", *common, "--mvo-class", "--run-dir", str(tmp_path / "mvo"),
                 "--init-weights", str(tmp_path / "plain" / "model.safetensors")]) == 0
    [(cases, classes)] = given[-1]
    assert classes == L.MVO + 1 and any((c.labels == L.MVO).any() for c in cases)
    config = json.loads((tmp_path / "mvo" / "config.json").read_text(encoding="utf-8"))
    model = SegmentationConfig.from_dict(config["model"])
    assert model.mvo_class
    network = build_segmenter(model)
    network.load_state_dict(load_file(str(tmp_path / "mvo" / "model.safetensors")))
    assert network(torch.zeros(1, 1, 64, 64)).shape[1] == L.NUM_CLASSES + 1
    (dataset / "dataset.json").write_text('{"label_map": {"1": 1, "2": 2, "3": 3}}', encoding="utf-8")  # no MVO
    assert main(["train-segmentation", *common, "--mvo-class", "--run-dir", str(tmp_path / "none")]) != 0
    assert "labels no-reflow" in capsys.readouterr().err


def test_a_model_without_the_mvo_class_trains_on_mvo_labels_as_myocardium(tmp_path):
    cases = load_cases(DatasetSpec.load(_png_dataset(tmp_path / "pngs", cases=1, slices=2)), keep_mvo=True)
    assert any((c.labels == L.MVO).any() for c in cases)
    settings = TrainSettings(run_dir=tmp_path / "seg", iterations=1, batch_size=4, checkpoint_every=1, device="cpu")
    train_segmentation([(cases, L.MVO + 1)], TINY_SEGMENTATION, settings)  # 4 classes: label 4 must become 2
    assert json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["history"][0]["loss"] > 0


def test_each_training_data_set_gives_an_equal_share_of_segmentation_batches():
    big = [phantom_case(seed=s, slices=6) for s in range(4)]
    small = [phantom_case(seed=9, slices=2)]
    big_and_small = [(big, L.SCAR + 1), (small, L.SCAR)]  # the small one does not label scar
    samples = _MixedSegmentationSamples(big_and_small, TINY_SEGMENTATION, np.random.default_rng(0))
    merged = [int(samples(1)[2]) == L.SCAR for _ in range(400)]
    assert 0.4 < np.mean(merged) < 0.6  # 2 of 26 slices, yet half of the batches


def test_dataset_shares_weigh_the_segmentation_batches():
    big = [phantom_case(seed=s, slices=6) for s in range(2)]
    small = [phantom_case(seed=9, slices=2)]
    big_and_small = [(big, L.SCAR + 1), (small, L.SCAR)]  # the small one does not label scar
    samples = _MixedSegmentationSamples(big_and_small, TINY_SEGMENTATION, np.random.default_rng(0),
                                        shares=[3, 1])
    merged = [int(samples(1)[2]) == L.SCAR for _ in range(800)]
    assert 0.18 < np.mean(merged) < 0.32 and samples.shares.tolist() == [0.75, 0.25]
    left_out = _MixedSegmentationSamples(big_and_small, TINY_SEGMENTATION, np.random.default_rng(0),
                                         shares=[1, 0])
    assert all(int(left_out(1)[2]) == L.SCAR + 1 for _ in range(50))
    for shares in ([1], [1, -1], [0, 0]):
        with pytest.raises(ValueError, match="one non-negative share per data set"):
            _MixedSegmentationSamples(big_and_small, TINY_SEGMENTATION, np.random.default_rng(0),
                                      shares=shares)


def test_segmentation_patches_are_scaled_per_window_as_at_inference():
    config = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window")
    samples = SegmentationSamples([phantom_case(seed=0)], config, np.random.default_rng(0))
    samples.intensity = lambda item: item  # intensity augmentation off: look at the scaling alone
    images, labels = samples(8)
    assert images.shape == labels.shape == (8, 1, 64, 64) and labels.dtype == torch.long
    for image in images:
        low, high = np.percentile(image.numpy(), (1, 99))
        assert abs(low) < 1e-3 and abs(high - 1) < 1e-3


def test_train_segmentation_command_builds_the_network_it_is_asked_for(tmp_path):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    assert main(["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "64", "--channels", "8", "16", "32", "--num-res-units", "1",
                 "--normalisation", "slice", "--device", "cpu", "--run-dir", str(tmp_path / "seg")]) == 0
    model = json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["model"]
    assert model["channels"] == [8, 16, 32] and model["strides"] == [2, 2] and model["num_res_units"] == 1
    assert model["normalisation"] == "slice" and model["patch_size"] == 64
    assert main(["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "64", "--channels", "8", "16", "--device", "cpu", "--scar-weight", "3",
                 "--run-dir", str(tmp_path / "weighted")]) == 0
    weighted = json.loads((tmp_path / "weighted" / "config.json").read_text(encoding="utf-8"))
    assert weighted["scar_weight"] == 3.0 and weighted["dataset_shares"] == [1.0]
    two = ["--dataset", str(dataset), "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
           "--patch-size", "64", "--channels", "8", "16", "--device", "cpu"]
    assert main(["train-segmentation", *two, "--dataset-share", "3", "1", "--run-dir", str(tmp_path / "shared")]) == 0
    shared = json.loads((tmp_path / "shared" / "config.json").read_text(encoding="utf-8"))
    assert shared["dataset_shares"] == [0.75, 0.25]
    assert main(["train-segmentation", *two, "--lr-schedule", "cosine", "--run-dir", str(tmp_path / "cosine")]) == 0
    cosine = json.loads((tmp_path / "cosine" / "config.json").read_text(encoding="utf-8"))
    assert cosine["history"][0]["lr_schedule"] == "cosine"
    assert main(["train-segmentation", *two, "--dataset-share", "1", "--run-dir", str(tmp_path / "short")]) != 0


def test_25d_patches_carry_the_neighbour_slices_in_either_order():
    config = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window",
                                context_slices=1)
    case = phantom_case(seed=0)
    ramp = np.linspace(0.0, 1.0, case.images.shape[-1], dtype=np.float32)
    case.images[:] = ramp + 10.0 * np.arange(len(case.images), dtype=np.float32)[:, None, None]  # slice k: k * 10 up
    samples = SegmentationSamples([case], config, np.random.default_rng(0))
    samples.intensity = lambda item: item
    assert samples(2)[0].shape == (2, 3, 64, 64)
    samples.spatial = lambda item: [item]  # no rotation or crop: compare whole channels
    means = [samples._one(case, 1)[0].mean(dim=(1, 2)) for _ in range(20)]
    orders = {tuple(np.sign((m[1:] - m[0]).numpy()).tolist()) for m in means}
    assert orders == {(-1.0, 1.0), (1.0, -1.0)}, "slice 2's neighbours are slices 1 and 3, in either order"
    case.slice_mm = 20.0  # not contiguous: the slice stands in for its neighbours
    patch = samples._one(case, 1)[0]
    assert torch.equal(patch[1], patch[0]) and torch.equal(patch[2], patch[0])


def test_train_segmentation_command_warm_starts_a_25d_model_from_2d_weights(tmp_path, capsys):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=3)
    common = ["--dataset", str(dataset), "--iterations", "1", "--batch-size", "2", "--patch-size", "64",
              "--channels", "8", "16", "32", "--num-res-units", "1", "--device", "cpu"]
    assert main(["train-segmentation", *common, "--run-dir", str(tmp_path / "flat")]) == 0
    assert main(["train-segmentation", *common, "--context-slices", "1", "--run-dir", str(tmp_path / "deep"),
                 "--init-weights", str(tmp_path / "flat" / "model.safetensors")]) == 0
    config = json.loads((tmp_path / "deep" / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["context_slices"] == 1 and config["init_weights"] == "model.safetensors"
    deep = load_file(str(tmp_path / "deep" / "model.safetensors"))
    assert max(v.shape[1] for v in deep.values() if v.ndim == 4 and v.shape[-1] == 3) >= 3
    assert main(["train-segmentation", *common, "--run-dir", str(tmp_path / "bad"),
                 "--init-weights", str(tmp_path / "deep" / "model.safetensors")]) != 0
    assert "does not fit this network" in capsys.readouterr().err


def test_training_refuses_a_renamed_copy_of_data_whose_cases_the_splits_hold_out(tmp_path, capsys):
    dataset = _png_dataset(tmp_path / "copy_of_pngs", cases=2, slices=2)
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"pngs": {"train": ["Case_P000"], "val": [], "test": ["Case_P001"]}}),
                      encoding="utf-8")
    code = main(["train-segmentation", "--dataset", str(dataset), "--splits", str(splits), "--iterations", "1",
                 "--batch-size", "2", "--patch-size", "64", "--channels", "8", "16", "--device", "cpu",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "holds 1 case(s) they hold out, e.g. Case_P001 (pngs test)" in err
    assert not (tmp_path / "run").exists()  # refused before any training


def test_training_refuses_a_splits_file_that_is_not_there_and_names_data_it_does_not_split(tmp_path, capsys):
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    common = ["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
              "--patch-size", "64", "--channels", "8", "16", "--device", "cpu"]
    assert main([*common, "--splits", str(tmp_path / "typo.json"), "--run-dir", str(tmp_path / "a")]) == 2
    assert "no splits file at" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*common, "--run-dir", str(tmp_path / "b")]) == 0
    assert "the splits do not name" in capsys.readouterr().err
    assert _run_config(tmp_path / "b")["trained_on"] == {"datasets": [dataset.as_posix()],
                                                          "splits": "Resources/splits.json"}
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"pngs": {"train": ["Case_P000"], "val": [], "test": []}}), encoding="utf-8")
    assert main([*common, "--splits", str(splits), "--run-dir", str(tmp_path / "c")]) == 0
    assert _run_config(tmp_path / "c")["trained_on"]["splits"] == splits.resolve().as_posix()
    assert main(["bundle", str(tmp_path / "c"), "--name", SEGMENTATION, "--data", "phantoms", "--license", "test",
                 "--models", str(tmp_path / "models")]) == 0
    entry = json.loads((tmp_path / "models" / "manifest.json").read_text(encoding="utf-8"))[SEGMENTATION]
    assert entry["split"] == splits.resolve().as_posix()  # the manifest names the splits the run trained on
    assert entry["training"]["trained_on"]["datasets"] == [dataset.as_posix()]


def test_segmentation_dropout_acts_while_training_only_and_is_recorded(tmp_path):
    with pytest.raises(ValueError, match="dropout"):
        SegmentationConfig(dropout=1.0)
    config = SegmentationConfig(channels=(8, 16), strides=(2,), patch_size=64, dropout=0.5)
    network = build_segmenter(config)
    batch = torch.randn(2, 1, 64, 64)
    network.train()
    assert not torch.equal(network(batch), network(batch))  # a new mask each call
    network.eval()
    assert torch.equal(network(batch), network(batch))  # inference is deterministic
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    assert main(["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "64", "--channels", "8", "16", "--dropout", "0.2", "--device", "cpu",
                 "--run-dir", str(tmp_path / "seg")]) == 0
    assert json.loads((tmp_path / "seg" / "config.json").read_text(encoding="utf-8"))["model"]["dropout"] == 0.2


def test_tissue_contrast_gives_each_tissue_of_the_slice_a_gain_of_its_own():
    labels = np.zeros((64, 64), dtype=np.int64)
    labels[12:28, 12:52] = L.BLOOD_POOL
    labels[32:52, 12:30] = L.MYOCARDIUM
    labels[32:52, 34:52] = L.SCAR
    image = torch.rand(3, 64, 64) + 0.5  # the slice and two neighbours
    changed = tissue_contrast(image, labels, np.random.default_rng(3))
    assert torch.equal(changed[1:], image[1:])  # the neighbours have no labels: left as they are
    ratio = (changed[0] / image[0]).numpy()
    gains = {}
    for tissue in (L.BACKGROUND, *TISSUE_GAINS):
        values = ratio[ndimage.binary_erosion(labels == tissue, iterations=4, border_value=1)]
        assert np.ptp(values) < 1e-3  # one gain per tissue, away from its borders
        gains[tissue] = float(values.mean())
    assert gains[L.BACKGROUND] == pytest.approx(1.0, abs=1e-4)
    for tissue, (low, high) in TISSUE_GAINS.items():
        assert low <= gains[tissue] <= high
    assert len({round(g, 4) for g in gains.values()}) == 4  # the tissues' contrasts changed against each other


def _patch_without_and_with(option: str, case=None, **more) -> dict:
    """share -> the first (image, labels) patch of ``case`` (a phantom) with ``option`` (of PatchOptions) at that
    share and ``more`` options, intensity augmentation off so that the option's change is seen alone."""
    config = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64)
    drawn = {}
    for share in (0.0, 1.0):
        samples = SegmentationSamples([case or phantom_case(seed=0)], config, np.random.default_rng(0),
                                      PatchOptions(**{option: share}, **more))
        samples.intensity = lambda item: item
        drawn[share] = samples(1)
    return drawn


def test_a_heart_crop_keeps_a_square_around_the_whole_heart_in_every_channel_and_blanks_the_rest():
    labels = np.zeros((400, 400), dtype=np.int64)
    labels[180:230, 180:220] = L.MYOCARDIUM  # a heart of 50 x 40 pixels, far from the frame's edges
    image = torch.rand(3, 400, 400) + 1.0  # the slice and two neighbours, nowhere zero
    sides = []
    for seed in range(20):
        for pixel_mm in ((1.0, 1.0), (2.0, 1.0)):  # square pixels, and rows twice as long as columns
            cropped = heart_crop(image, labels, pixel_mm, np.random.default_rng(seed))
            kept = (cropped != 0).numpy()
            assert (kept == kept[0]).all()  # every channel cut alike
            assert kept[0][labels > 0].all() and torch.equal(cropped[:, kept[0]], image[:, kept[0]])
            rows, cols = np.nonzero(kept[0])
            assert kept[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle ...
            side_mm = np.array([rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()]) * pixel_mm
            assert abs(side_mm[0] - side_mm[1]) <= 2 * pixel_mm[0]  # ... a square in millimetres
            assert HEART_CROP_SIDE_MM[0] - 2 <= side_mm.min() and side_mm.max() <= HEART_CROP_SIDE_MM[1] + 4
            sides.append(side_mm[1])
    assert min(sides) < 135 and max(sides) > 175  # sides drawn over the whole range
    assert torch.equal(heart_crop(image, np.zeros_like(labels), (1.0, 1.0), np.random.default_rng(0)), image)


def _recorded_and_kept_on_resume(tmp_path, option: str) -> None:
    """A run trained with ``--OPTION 0.5`` records it, and resuming it without the option is refused."""
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=3)
    run = tmp_path / "seg"
    assert main(["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "64", "--channels", "8", "16", f"--{option.replace('_', '-')}", "0.5",
                 "--device", "cpu", "--run-dir", str(run)]) == 0
    assert _run_config(run)[option] == 0.5
    resumed = TrainSettings(run_dir=run, iterations=2, batch_size=2, checkpoint_every=1, device="cpu")
    with pytest.raises(ValueError, match=f"{option} 0.5"):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], TINY_SEGMENTATION, resumed)


def test_heart_crops_reach_the_patches_the_share_asked_for_and_are_recorded(tmp_path):
    drawn = _patch_without_and_with("heart_crops")
    assert torch.equal(drawn[0.0][1], drawn[1.0][1])  # the same patches and labels ...
    blanked = (drawn[1.0][0] == 0) & (drawn[0.0][0] != 0)
    assert blanked.any() and not blanked[drawn[1.0][1].expand_as(blanked) > 0].any()  # ... cut outside the heart
    _recorded_and_kept_on_resume(tmp_path, "heart_crops")
    with pytest.raises(ValueError, match="cut around the heart must be 0 to 1"):
        PatchOptions(heart_crops=2.0)
    whole_slice = SegmentationConfig(**{**TINY_SEGMENTATION.to_dict(), "normalisation": "slice"})
    with pytest.raises(ValueError, match="heart crops need the window normalisation"):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], whole_slice,
                           TrainSettings(run_dir=tmp_path / "slice", patches=PatchOptions(heart_crops=0.5)))


def test_the_first_third_of_a_stack_holds_a_third_of_its_slices_rounded_up():
    assert [first_third_end(count) for count in (1, 2, 3, 4, 6, 7, 9, 10)] == [1, 1, 1, 2, 2, 3, 3, 4]


def test_first_third_patches_come_from_the_first_third_of_each_cases_slices_as_often_as_asked(tmp_path):
    cases = [phantom_case(seed=0, slices=9), phantom_case(seed=1, slices=4)]
    config = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64)
    drawn_first = {}
    for share in (0.0, 0.5, 1.0):
        samples = SegmentationSamples(cases, config, np.random.default_rng(0), PatchOptions(first_third=share))
        slices = []
        samples._one = lambda case, index: slices.append((case, index)) or (torch.zeros(1), torch.zeros(1))
        for _ in range(300):  # drawn as training draws them
            samples(10)
        first = [index < first_third_end(len(case.images)) for case, index in slices]
        drawn_first[share] = np.mean(first)
        assert {case.name for case, _ in slices} == {"phantom0", "phantom1"}
    # 5 of the 13 slices lie in a first third: a share s draws s + (1 - s) * 5 / 13 of the patches from there
    for share, seen in drawn_first.items():
        assert seen == pytest.approx(share + (1 - share) * 5 / 13, abs=0.03)
    with pytest.raises(ValueError, match="first third of the slices must be 0 to 1"):
        PatchOptions(first_third=1.5)
    _recorded_and_kept_on_resume(tmp_path, "first_third")


def test_a_run_saved_before_the_patch_options_and_starts_resumes_as_it_was(tmp_path):
    run = tmp_path / "old"
    cases = [([phantom_case(seed=0)], L.SCAR + 1)]
    window = SegmentationConfig(**{**TINY_SEGMENTATION.to_dict(), "normalisation": "window"})  # heart crops need it
    settings = TrainSettings(run_dir=run, iterations=1, batch_size=2, checkpoint_every=1, device="cpu")
    train_segmentation(cases, window, settings)
    config = _run_config(run)
    for key in ("tissue_contrast", "synthetic_scar", "synthetic_scar_patches", "heart_crops", "first_third", "start"):
        del config[key]  # as runs of earlier sessions saved it
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    train_segmentation(cases, window, dataclasses.replace(settings, iterations=2))
    resumed = _run_config(run)
    assert resumed["iteration"] == 2 and "start" not in resumed  # its start is unknown, and not made up
    assert resumed["heart_crops"] == 0.0 and resumed["synthetic_scar"] == 0.0
    with pytest.raises(ValueError, match="heart_crops 0.0"):  # an option it was not trained with is refused
        train_segmentation(cases, window, dataclasses.replace(settings, iterations=3,
                                                                         patches=PatchOptions(heart_crops=0.5)))


def test_tissue_contrast_reaches_the_patches_the_share_asked_for_and_is_recorded(tmp_path):
    drawn = _patch_without_and_with("tissue_contrast")
    assert torch.equal(drawn[0.0][1], drawn[1.0][1])  # the same patches and labels ...
    assert not torch.allclose(drawn[0.0][0], drawn[1.0][0])  # ... with the tissues' contrast changed
    run = tmp_path / "seg"
    settings = TrainSettings(run_dir=run, iterations=1, batch_size=2, checkpoint_every=1, device="cpu",
                             patches=PatchOptions(tissue_contrast=0.5))
    train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], TINY_SEGMENTATION, settings)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["tissue_contrast"] == 0.5
    resumed = TrainSettings(run_dir=run, iterations=2, batch_size=2, checkpoint_every=1, device="cpu")
    with pytest.raises(ValueError, match="tissue_contrast 0.5"):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], TINY_SEGMENTATION, resumed)
    with pytest.raises(ValueError, match="tissue contrast must be 0 to 1"):
        PatchOptions(tissue_contrast=1.5)


def _ring_slice(size: int = 96):
    """A left ventricle: a bright blood-pool disc in a darker ring of healthy myocardium, neighbours as channels 1-2."""
    rows, cols = np.indices((size, size))
    radius = np.hypot(rows - size / 2, cols - size / 2)
    labels = np.where(radius < 18, L.BLOOD_POOL, np.where(radius < 28, L.MYOCARDIUM, L.BACKGROUND)).astype(np.int64)
    levels = np.array([0.2, 1.0, 0.3, 0.9], dtype=np.float32)
    image = torch.from_numpy(np.stack([levels[labels]] * 3) + np.random.default_rng(0).normal(0, 0.02, (3, size, size))
                             .astype(np.float32))
    return image, labels, radius


def test_synthetic_scar_is_a_bright_sector_of_healthy_wall_grown_from_the_blood_pool():
    image, labels, radius = _ring_slice()
    before_image, before_labels = image.clone(), labels.copy()
    wall = labels == L.MYOCARDIUM
    angles, depths = [], []
    for seed in range(12):
        changed, drawn = synthetic_scar(image, labels, np.random.default_rng(seed))
        scar = drawn == L.SCAR
        assert scar.sum() >= 10 and not (scar & ~wall).any()  # only healthy myocardium becomes scar
        assert np.array_equal(drawn[~scar], labels[~scar])
        assert (scar & (radius < 19)).any()  # it starts at the endocardium
        assert torch.equal(changed[1:], image[1:])  # the neighbours have no labels: left as they are
        assert torch.equal(changed[0][torch.from_numpy(~wall)], image[0][torch.from_numpy(~wall)])
        lift = (changed[0] - image[0]).numpy()[scar]
        low, high = SYNTHETIC_SCAR["brightness"]
        assert low * 0.7 - 1e-3 <= lift.min() and lift.max() <= high * 0.7 + 1e-3  # blood 1.0 - myocardium 0.3
        assert np.ptp(lift) < 1e-4  # one brightness, the texture kept
        rows, cols = np.nonzero(scar)
        angles.append(np.angle(np.mean(np.exp(1j * np.arctan2(rows - 48, cols - 48)))))
        depths.append(radius[scar].max())
    assert torch.equal(image, before_image) and np.array_equal(labels, before_labels)  # the inputs are not changed
    assert np.ptp(angles) > 1.0  # anywhere around the wall ...
    assert min(depths) < 25 and max(depths) > 27  # ... some subendocardial, some through the wall


class _Drawn:
    """A stand-in random generator whose uniform draws are given: sector (degrees), transmurality, brightness, start
    angle, in the order ``synthetic_scar`` draws them."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, low, high):
        return self.values.pop(0)


def test_synthetic_scar_sector_wraps_around_the_circle():
    image, labels, radius = _ring_slice()
    _, drawn = synthetic_scar(image, labels, _Drawn(150.0, 1.0, 1.0, 3.0))  # starts near +180 degrees
    wall = labels == L.MYOCARDIUM
    assert (drawn[wall] == L.SCAR).mean() == pytest.approx(150 / 360, abs=0.02)  # the whole sector, across +-180


def test_synthetic_scar_leaves_a_slice_without_a_brighter_blood_pool_or_healthy_wall_as_it_is():
    image, labels, _ = _ring_slice()
    dark_blood = image.clone()
    dark_blood[0][torch.from_numpy(labels == L.BLOOD_POOL)] = 0.1
    all_scar = np.where(labels == L.MYOCARDIUM, L.SCAR, labels)
    for slice_image, slice_labels in ((dark_blood, labels), (image, all_scar), (image, np.zeros_like(labels))):
        changed, drawn = synthetic_scar(slice_image, slice_labels, np.random.default_rng(0))
        assert torch.equal(changed, slice_image) and np.array_equal(drawn, slice_labels)
    healthy_right_only = np.where((labels == L.MYOCARDIUM) & (np.indices(labels.shape)[1] < 70), L.SCAR, labels)
    changed, drawn = synthetic_scar(image, healthy_right_only, _Drawn(40.0, 1.0, 1.0, -2.0))  # a sector on the left
    assert torch.equal(changed, image) and np.array_equal(drawn, healthy_right_only)


def test_synthetic_scar_reaches_the_patches_the_share_asked_for_and_is_recorded(tmp_path):
    drawn = _patch_without_and_with("synthetic_scar")
    added = (drawn[1.0][1] == L.SCAR) & (drawn[0.0][1] == L.MYOCARDIUM)
    assert added.any()  # healthy myocardium became scar ...
    assert torch.equal(drawn[0.0][1][~added], drawn[1.0][1][~added])  # ... and nothing else changed label
    assert (drawn[1.0][0][:, :1] > drawn[0.0][0][:, :1])[added].all()  # ... and it is brighter
    dataset = _png_dataset(tmp_path / "pngs", cases=1, slices=2)
    run = tmp_path / "seg"
    assert main(["train-segmentation", "--dataset", str(dataset), "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "64", "--channels", "8", "16", "--synthetic-scar", "0.5", "--device", "cpu",
                 "--run-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["synthetic_scar"] == 0.5
    resumed = TrainSettings(run_dir=run, iterations=2, batch_size=2, checkpoint_every=1, device="cpu")
    with pytest.raises(ValueError, match="synthetic_scar 0.5"):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)], TINY_SEGMENTATION, resumed)
    with pytest.raises(ValueError, match="synthetic scar must be 0 to 1"):
        PatchOptions(synthetic_scar=-0.1)


def test_scars_are_drawn_only_into_patches_that_hold_scar_when_asked():
    without_scar = phantom_case(seed=0)
    without_scar.labels[without_scar.labels == L.SCAR] = L.MYOCARDIUM
    for case, changes in ((without_scar, False), (phantom_case(seed=0), True)):
        drawn = _patch_without_and_with("synthetic_scar", case, synthetic_scar_patches="scarred")
        assert (drawn[0.0][1] == L.SCAR).any() == changes
        assert (not torch.equal(drawn[0.0][1], drawn[1.0][1])) == changes
        assert (not torch.equal(drawn[0.0][0], drawn[1.0][0])) == changes
    drawn_anywhere = _patch_without_and_with("synthetic_scar", without_scar)  # the default: any patch
    assert not torch.equal(drawn_anywhere[0.0][1], drawn_anywhere[1.0][1])
    with pytest.raises(ValueError, match="synthetic scar must be one of"):
        PatchOptions(synthetic_scar_patches="some")
    with pytest.raises(ValueError, match="take one synthetic-scar share"):
        SegmentationSamples([without_scar], TINY_SEGMENTATION, np.random.default_rng(0),
                            PatchOptions(synthetic_scar=(0.5, 0.0)))


def test_each_data_set_can_have_its_own_share_of_drawn_scars():
    two = [([phantom_case(seed=0)], L.SCAR + 1), ([phantom_case(seed=1)], L.SCAR + 1)]
    each = PatchOptions(synthetic_scar=[0.5, 0.0], synthetic_scar_patches="scarred")
    samples = _MixedSegmentationSamples(two, TINY_SEGMENTATION, np.random.default_rng(0), options=each)
    assert [s.options for s, _ in samples.sources] == [
        PatchOptions(synthetic_scar=0.5, synthetic_scar_patches="scarred"),
        PatchOptions(synthetic_scar=0.0, synthetic_scar_patches="scarred")]
    for alike in (PatchOptions(synthetic_scar=0.3), PatchOptions(synthetic_scar=[0.3])):  # one share for all
        samples = _MixedSegmentationSamples(two, TINY_SEGMENTATION, np.random.default_rng(0), options=alike)
        assert [s.options.synthetic_scar for s, _ in samples.sources] == [0.3, 0.3]
    with pytest.raises(ValueError, match="one per data set"):
        _MixedSegmentationSamples(two, TINY_SEGMENTATION, np.random.default_rng(0),
                                  options=PatchOptions(synthetic_scar=(0.5, 0.0, 0.0)))
    with pytest.raises(ValueError, match="not none"):
        PatchOptions(synthetic_scar=())


def test_train_segmentation_command_records_shares_per_data_set_and_refuses_other_patches_on_resume(tmp_path):
    first, second = _png_dataset(tmp_path / "a", cases=1, slices=2), _png_dataset(tmp_path / "b", cases=1, slices=2)
    run = tmp_path / "seg"
    assert main(["train-segmentation", "--dataset", str(first), "--dataset", str(second), "--iterations", "1",
                 "--batch-size", "2", "--patch-size", "64", "--channels", "8", "16", "--synthetic-scar", "0.5", "0",
                 "--synthetic-scar-patches", "scarred", "--device", "cpu", "--run-dir", str(run)]) == 0
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["synthetic_scar"] == [0.5, 0.0] and config["synthetic_scar_patches"] == "scarred"
    resumed = TrainSettings(run_dir=run, iterations=2, batch_size=2, checkpoint_every=1, device="cpu",
                            patches=PatchOptions(synthetic_scar=(0.5, 0.0)))
    with pytest.raises(ValueError, match="synthetic_scar_patches 'scarred'"):
        train_segmentation([([phantom_case(seed=0)], L.SCAR + 1)] * 2, TINY_SEGMENTATION, resumed)
    with pytest.raises(ValueError, match="synthetic scar must be 0 to 1"):
        PatchOptions(synthetic_scar=(0.5, 1.5))
