import numpy as np
import pytest

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.gamma import blood_gamma, gamma_correct, gamma_target, scar_gamma


@pytest.mark.parametrize("mean, gamma", [(0.0, 1.7), (60.45, 1.7), (60.46, 1.6), (149.9, 1.6), (150.0, 1.5),
                                         (255.0, 1.5)])
def test_scar_gamma_table(mean, gamma):
    assert scar_gamma(mean) == gamma


@pytest.mark.parametrize("mean, gamma", [(10.0, 1.0), (56.47, 1.0), (56.48, 0.9), (86.02, 0.9), (86.03, 0.8),
                                         (115.58, 0.8), (115.59, 0.7), (130.94, 0.7), (130.95, 0.6), (250.0, 0.6)])
def test_blood_gamma_table(mean, gamma):
    assert blood_gamma(mean) == gamma


def test_gamma_correct_is_the_papers_power_law():
    values = np.array([0.0, 63.75, 127.5, 255.0])
    np.testing.assert_allclose(gamma_correct(values, 2.0), 255.0 * np.sqrt(values / 255.0))
    assert gamma_correct(np.array([255.0]), 0.6)[0] == pytest.approx(255.0)


def test_target_brightens_scar_darkens_blood_and_keeps_the_rest():
    image = np.full((20, 20), 40.0)
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[2:6, 2:6] = L.SCAR
    labels[8:12, 8:12] = L.BLOOD_POOL
    labels[14:18, 14:18] = L.MYOCARDIUM
    image[labels == L.SCAR] = 100.0  # mean < 150 -> gamma 1.6
    image[labels == L.BLOOD_POOL] = 120.0  # mean in [115.59, 130.95) -> gamma 0.7
    target = gamma_target(image, labels)
    np.testing.assert_allclose(target[labels == L.SCAR], 255 * (100 / 255) ** (1 / 1.6), rtol=1e-6)
    np.testing.assert_allclose(target[labels == L.BLOOD_POOL], 255 * (120 / 255) ** (1 / 0.7), rtol=1e-6)
    untouched = (labels == L.MYOCARDIUM) | (labels == L.BACKGROUND)
    np.testing.assert_array_equal(target[untouched], image[untouched])


def test_target_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        gamma_target(np.zeros((4, 4)), np.zeros((4, 5), dtype=np.uint8))
