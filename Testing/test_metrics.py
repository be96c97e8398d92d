import numpy as np
import pytest

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.metrics import (cnr, cnr_readouts, dice_per_class, myocardium_error_by_boundary, scar_burden,
                                   ssim_psnr)


def test_cnr_is_the_papers_formula(rng):
    image = rng.normal(0, 1, (10, 10))
    a = np.zeros((10, 10), dtype=bool)
    a[:3] = True
    b = ~a
    expected = abs(image[a].mean() - image[b].mean()) / image[b].std()
    assert cnr(image, a, b) == pytest.approx(expected)
    assert np.isnan(cnr(image, np.zeros_like(a), b))


def test_volume_cnr_pools_only_slices_with_scar():
    labels = np.zeros((3, 4, 4), dtype=np.uint8)
    labels[:, 0, :] = L.MYOCARDIUM
    labels[:, 1, :] = L.BLOOD_POOL
    labels[1, 2, :] = L.SCAR
    image = np.zeros((3, 4, 4))
    image[:, 0, :] = [1, 2, 3, 4]
    image[0, 0, :] = [100, 0, 100, 0]  # a scar-free slice with wild myocardium must not count
    image[:, 1, :] = [5, 6, 7, 8]
    image[1, 2, :] = 20
    readouts = cnr_readouts(image, 2 * image, labels)
    assert readouts["slices_with_scar"] == 1
    assert readouts["volume"]["cnr_scar_myo_original"] == pytest.approx((20 - 2.5) / np.std([1, 2, 3, 4]))
    assert readouts["volume"]["cnr_scar_myo_enhanced"] == pytest.approx(readouts["volume"]["cnr_scar_myo_original"])
    assert readouts["slices"][0]["slice"] == 1


def test_ssim_and_psnr_against_the_target(rng):
    target = rng.uniform(0, 255, (2, 32, 32))
    same = ssim_psnr(target, target)
    assert same["ssim"] == pytest.approx(1.0)
    noisy = ssim_psnr(target + rng.normal(0, 5, target.shape), target)
    assert noisy["ssim"] < 1.0
    assert noisy["psnr"] == pytest.approx(10 * np.log10(255**2 / 25), abs=0.5)


def test_scar_burden_thresholds():
    labels = np.full((1, 10, 10), L.MYOCARDIUM, dtype=np.uint8)
    labels[0, :2] = L.SCAR
    image = np.random.default_rng(0).normal(10, 1, (1, 10, 10))
    image[0, :2] = 100
    burden = scar_burden(image, labels, n_sd=5)
    assert burden["scar_percent_5sd"] == pytest.approx(20.0)
    assert burden["scar_percent_fwhm"] == pytest.approx(20.0)


def test_dice_per_class():
    truth = np.zeros((1, 4, 4), dtype=np.uint8)
    truth[0, :2] = L.BLOOD_POOL
    predicted = truth.copy()
    predicted[0, 0] = L.MYOCARDIUM
    scores = dice_per_class(predicted, truth)
    assert scores["roi"] == 1.0
    assert scores["blood_pool"] == pytest.approx(2 * 4 / 12)
    assert np.isnan(scores["scar"])


def test_myocardium_error_splits_at_the_border_with_blood_and_scar():
    labels = np.zeros((1, 12, 12), dtype=np.uint8)
    labels[0, :, :2] = L.BLOOD_POOL
    labels[0, :, 2:10] = L.MYOCARDIUM
    target = np.full(labels.shape, 100.0)
    prediction = target.copy()
    prediction[0, :, 2:4] -= 6.0  # the blood pool's darkening spilled into its two neighbouring columns
    prediction[0, ::2, 6:10] += 2.0  # texture error inside, on half the pixels
    errors = myocardium_error_by_boundary(prediction, target, labels, near_px=2.5)
    assert errors["myo_error_near_border"] == pytest.approx(6.0)  # columns 2 and 3, 1 and 2 pixels from blood
    assert errors["myo_error_inner"] == pytest.approx(np.sqrt(2.0 ** 2 / 2 * 4 / 6))  # columns 4-9
    assert np.isnan(myocardium_error_by_boundary(prediction, target, np.zeros_like(labels))["myo_error_inner"])
