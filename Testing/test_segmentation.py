import numpy as np
import SimpleITK as sitk
import torch

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.segmentation import build_segmenter, dilate_roi, postprocess, predict_slices, segment_heart
from ScarEnhanceLib.volume import same_geometry

from conftest import TINY_SEGMENTATION


def test_postprocess_keeps_the_largest_component_and_fills_holes():
    labels = np.zeros((3, 30, 30), dtype=np.uint8)
    labels[:, 5:20, 5:20] = L.MYOCARDIUM
    labels[:, 9:16, 9:16] = L.BLOOD_POOL
    labels[1, 12, 12] = L.BACKGROUND  # a hole inside the blood pool
    labels[1, 25:28, 25:28] = L.SCAR  # a stray island
    cleaned = postprocess(labels)
    assert cleaned[1, 12, 12] == L.BLOOD_POOL
    assert (cleaned[1, 25:28, 25:28] == 0).all()
    assert (cleaned[:, 5:20, 5:20] > 0).all()
    assert (labels[1, 25:28, 25:28] == L.SCAR).all(), "the input must not change"


def test_dilation_is_in_millimetres_and_in_plane_by_default():
    array = np.zeros((5, 40, 40), dtype=np.uint8)
    array[2, 20, 20] = 1
    roi = sitk.GetImageFromArray(array)
    roi.SetSpacing((0.5, 2.0, 8.0))  # x, y, z
    dilated = sitk.GetArrayFromImage(dilate_roi(roi, 4.0))
    assert dilated[[0, 1, 3, 4]].sum() == 0
    rows, cols = np.nonzero(dilated[2])
    assert cols.max() - cols.min() == 16  # 4 mm / 0.5 mm on each side
    assert rows.max() - rows.min() == 4  # 4 mm / 2 mm on each side
    through = sitk.GetArrayFromImage(dilate_roi(roi, 8.0, inplane_only=False))
    assert through[1].any() and through[3].any()
    assert (sitk.GetArrayFromImage(dilate_roi(roi, 0.0)) == array).all()


def test_predictions_have_the_slice_shape_for_any_matrix():
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTATION)
    slices = np.random.default_rng(0).normal(size=(2, 77, 131)).astype(np.float32)
    predicted = predict_slices(model, slices, (0.7, 0.7), TINY_SEGMENTATION, torch.device("cpu"))
    assert predicted.shape == slices.shape and predicted.max() < L.NUM_CLASSES


def test_segment_heart_keeps_geometry_with_a_thick_first_axis(phantom):
    image, _ = phantom
    permuted = sitk.PermuteAxes(image, [2, 0, 1])  # slices along x now
    permuted.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    torch.manual_seed(0)
    labels = segment_heart(permuted, build_segmenter(TINY_SEGMENTATION), TINY_SEGMENTATION, torch.device("cpu"))
    assert same_geometry(labels, permuted) and labels.GetPixelID() == sitk.sitkUInt8
