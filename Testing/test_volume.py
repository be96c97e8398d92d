import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.volume import (CropBox, InputError, SliceScale, check_roi, check_volume, mask_to_model, resize,
                                   slice_axis, to_array)


def _image(size_xyz, spacing_xyz):
    image = sitk.Image(list(size_xyz), sitk.sitkFloat32)
    image.SetSpacing(spacing_xyz)
    return image


@pytest.mark.parametrize("size, spacing, axis", [((128, 128, 10), (1.4, 1.4, 8.0), 0),
                                                 ((10, 128, 128), (8.0, 1.4, 1.4), 2),
                                                 ((128, 12, 100), (1.2, 10.0, 1.2), 1),
                                                 ((64, 64, 5), (1.0, 1.0, 1.0), 0),
                                                 ((96, 96, 1), (1.5, 1.5, 1.0), 0),  # one slice, 1 mm "deep"
                                                 ((1, 96, 96), (1.0, 1.5, 1.5), 2)])
def test_slice_axis_is_the_thick_one(size, spacing, axis):
    assert slice_axis(_image(size, spacing)) == axis


def test_slice_scale_round_trips(rng):
    slices = rng.normal(300, 80, (4, 20, 30)).astype(np.float32)
    slices[2] = 7.0  # a flat slice must not divide by zero
    scale = SliceScale.of(slices)
    scaled = scale.forward(slices)
    assert scaled[[0, 1, 3]].min() == pytest.approx(0) and scaled[[0, 1, 3]].max() == pytest.approx(255, rel=1e-5)
    np.testing.assert_allclose(scale.inverse(scaled), slices, rtol=1e-5, atol=1e-3)


def test_crop_box_extracts_and_adds_back_past_the_border():
    slices = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    box = CropBox(-2, 7, 6)
    crop = box.extract(slices)
    assert crop.shape == (2, 6, 6)
    assert (crop[:, :2] == 0).all() and (crop[:, :, 5:] == 0).all()
    np.testing.assert_array_equal(crop[:, 2:, :5], slices[:, 0:4, 7:12])
    added = box.add_into(np.zeros_like(slices), np.ones_like(crop))
    assert added.sum() == 2 * 4 * 5


def test_crop_box_is_square_around_the_roi_with_margin():
    mask = np.zeros((3, 100, 100), dtype=bool)
    mask[1, 40:60, 30:50] = True
    box = CropBox.around(mask, margin=1.5)
    assert box.size == 30
    assert box.row0 <= 40 and box.row0 + box.size >= 60 and box.col0 <= 30 and box.col0 + box.size >= 50


def test_mask_at_model_size_covers_every_touched_pixel():
    mask = np.zeros((1, 64, 64), dtype=bool)
    mask[0, 10, 10] = True
    small = mask_to_model(mask, 16)
    assert small.sum() == 1 and small[0, 2, 2]
    assert resize(np.ones((2, 64, 64)), 16).shape == (2, 16, 16)


@pytest.mark.parametrize("convert", [check_volume, to_array])
def test_bad_volumes_are_rejected_clearly(convert):
    with pytest.raises(InputError, match="3D"):
        convert(sitk.Image([8, 8], sitk.sitkFloat32))
    with pytest.raises(InputError, match="3D"):
        convert(sitk.Image([8, 8, 4, 2], sitk.sitkFloat32))
    nan = sitk.GetImageFromArray(np.full((2, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        convert(nan)
    with pytest.raises(InputError, match="scalar"):
        convert(sitk.Image([8, 8, 4], sitk.sitkVectorFloat32, 3))
    with pytest.raises(InputError, match="one value everywhere"):
        convert(sitk.GetImageFromArray(np.full((2, 4, 4), 7, dtype=np.int16)))
    with pytest.raises(InputError, match="one value everywhere"):  # two values that float32 cannot tell apart
        convert(sitk.GetImageFromArray(np.array([[[1.0, 1.0 + 1e-12]]])))
    with pytest.raises(InputError, match="float32 range"):
        convert(sitk.GetImageFromArray(np.array([[[0.0, 1e39]]])))


def test_a_checked_volume_is_left_as_it_was_and_converts_to_float32():
    voxels = np.arange(32, dtype=np.int16).reshape(2, 4, 4)
    image = sitk.GetImageFromArray(voxels)
    check_volume(image)
    assert np.array_equal(sitk.GetArrayViewFromImage(image), voxels)
    array = to_array(image)
    assert array.dtype == np.float32 and np.array_equal(array, voxels)


def test_roi_checks():
    roi = np.zeros((2, 10, 10), dtype=bool)
    with pytest.raises(InputError, match="empty"):
        check_roi(roi)
    roi[1, 0, 4] = True
    with pytest.raises(InputError, match="border"):
        check_roi(roi)
    roi[1, 0, 4] = False
    roi[1, 4, 4] = True
    check_roi(roi)
