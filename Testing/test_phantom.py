import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom


def _arrays(spec):
    image, labels = make_phantom(spec)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), image


def test_labels_are_exact_when_noise_free():
    spec = PhantomSpec(noise=0.0, bias=0.0, scar_contrast=5.0, myocardium_level=50.0)
    image, labels, _ = _arrays(spec)
    np.testing.assert_allclose(image[labels == L.MYOCARDIUM], 50.0)
    np.testing.assert_allclose(image[labels == L.SCAR], 250.0)
    np.testing.assert_allclose(image[labels == L.BLOOD_POOL], 250.0)


def test_variants_change_anatomy_and_scar():
    _, normal, image = _arrays(PhantomSpec(seed=1))
    _, thick, _ = _arrays(PhantomSpec(seed=1, wall="thick"))
    _, subendo, _ = _arrays(PhantomSpec(seed=1, scar="subendocardial"))
    _, no_scar, _ = _arrays(PhantomSpec(seed=1, scar="none"))
    assert (thick == L.MYOCARDIUM).sum() > 1.5 * (normal == L.MYOCARDIUM).sum()
    assert (subendo == L.SCAR).any() and not (no_scar == L.SCAR).any()
    assert image.GetSpacing() == (1.5, 1.5, 8.0)


def test_noise_is_rician_and_positive():
    image, labels, _ = _arrays(PhantomSpec(noise=20.0))
    assert image.min() >= 0
    assert image[labels == L.BLOOD_POOL].std() > 5


@pytest.mark.parametrize("field, value", [("wall", "huge"), ("scar", "everywhere"), ("matrix", 40)])
def test_bad_phantom_settings(field, value):
    with pytest.raises(ValueError):
        PhantomSpec(**{field: value}).validate()
