from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.segmentation import (SegmentationConfig, SegmentationEnsemble, build_segmenter, context_indices,
                                         contrast_gammas, dilate_roi, fold_mvo, has_context, heart_centres,
                                         normalise_for_segmentation, normalise_windows, neighbour_orders,
                                         orientation_averaged_probabilities, orientations, postprocess, predict_slices,
                                         resample_slice, segment_heart, slice_probabilities, warm_start_segmenter,
                                         _adjust_contrast, _reverse_neighbours)
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


def test_slice_probabilities_are_per_class_and_give_the_predicted_labels():
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTATION)
    slices = np.random.default_rng(1).normal(size=(2, 60, 90)).astype(np.float32)
    probabilities = slice_probabilities(model, slices, (1.0, 1.0), TINY_SEGMENTATION, torch.device("cpu"))
    assert probabilities.shape == (2, L.NUM_CLASSES, 60, 90)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predicted = predict_slices(model, slices, (1.0, 1.0), TINY_SEGMENTATION, torch.device("cpu"))
    np.testing.assert_array_equal(predicted, probabilities.argmax(axis=1))


def test_segment_heart_keeps_geometry_with_a_thick_first_axis(phantom):
    image, _ = phantom
    permuted = sitk.PermuteAxes(image, [2, 0, 1])  # slices along x now
    permuted.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    torch.manual_seed(0)
    labels = segment_heart(permuted, build_segmenter(TINY_SEGMENTATION), TINY_SEGMENTATION, torch.device("cpu"))
    assert same_geometry(labels, permuted) and labels.GetPixelID() == sitk.sitkUInt8


def test_segment_heart_with_a_25d_model_keeps_geometry(phantom):
    image, _ = phantom
    config = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window",
                                context_slices=1)
    torch.manual_seed(0)
    labels = segment_heart(image, build_segmenter(config), config, torch.device("cpu"))
    assert same_geometry(labels, image) and labels.GetPixelID() == sitk.sitkUInt8


class _WindowInteriorOnly(torch.nn.Module):
    """A stand-in network that, like a real one near zero-padded window borders, finds the heart only farther
    than ``margin`` pixels from its window's edge: blood pool where a 7x7 neighbourhood is bright (> 0.5)."""

    def __init__(self, margin: int = 24):
        super().__init__()
        self.margin = margin

    def forward(self, x):
        bright = (x > 0.5).float()
        blob = (bright > 0) & (F.avg_pool2d(bright, 7, stride=1, padding=3, count_include_pad=False) > 0.95)
        interior = torch.zeros_like(blob)
        interior[..., self.margin:-self.margin, self.margin:-self.margin] = True
        logits = torch.zeros(x.shape[0], L.NUM_CLASSES, *x.shape[-2:])
        logits[:, L.BLOOD_POOL] = 20 * (blob & interior).float()[:, 0] - 10
        return logits


def _frame_with_heart(size: int, centre: tuple[int, int], radius: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A noisy frame with a bright disc, and the disc."""
    rows, cols = np.mgrid[:size, :size]
    frame = np.random.default_rng(0).uniform(0.0, 0.3, (size, size)).astype(np.float32)
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2
    frame[disc] = 1.0
    return frame[None], disc


def _found_whole(predicted: np.ndarray, disc: np.ndarray) -> bool:
    """The stand-in finds the disc less a rim of up to 5 pixels, and nothing outside it."""
    core = ndimage.binary_erosion(disc, iterations=5)
    return bool((predicted > 0)[core].all() and not (predicted > 0)[~disc].any())


WINDOW_PERCENTILES = SegmentationConfig(spacing_mm=1.5, patch_size=128, normalisation="window")


def test_a_heart_across_window_borders_of_a_whole_frame_is_segmented_without_seams():
    """A 330-pixel frame takes 3 x 3 sliding windows (stride 96); the heart sits where two meet (column 112),
    where the stand-in sees it in no window's interior: one pass of sliding windows cuts a band out of it."""
    frame, disc = _frame_with_heart(330, centre=(165, 112))
    predicted = predict_slices(_WindowInteriorOnly(), frame, (1.5, 1.5), WINDOW_PERCENTILES, torch.device("cpu"))
    assert _found_whole(predicted[0], disc)


def test_whole_frame_and_heart_crop_give_the_same_labels():
    frame, _ = _frame_with_heart(330, centre=(200, 112))
    crop = frame[:, 120:280, 40:200]
    whole = predict_slices(_WindowInteriorOnly(), frame, (1.5, 1.5), WINDOW_PERCENTILES, torch.device("cpu"))[0]
    cropped = predict_slices(_WindowInteriorOnly(), crop, (1.5, 1.5), WINDOW_PERCENTILES, torch.device("cpu"))[0]
    assert np.array_equal(whole[120:280, 40:200], cropped) and whole.sum() == cropped.sum() > 0


def test_a_bright_rim_far_from_the_heart_does_not_hide_it():
    """Window percentiles: bright rims along the frame's edges (3 % of it, like fat under the coil) leave the
    heart's window alone; whole-slice percentiles squeeze the heart below the stand-in's threshold."""
    frame, disc = _frame_with_heart(330, centre=(165, 165))
    frame[0, :5], frame[0, -5:] = 50.0, 50.0
    predicted = predict_slices(_WindowInteriorOnly(), frame, (1.5, 1.5), WINDOW_PERCENTILES, torch.device("cpu"))
    assert _found_whole(predicted[0], disc)
    whole_slice = SegmentationConfig(spacing_mm=1.5, patch_size=128, normalisation="slice")
    assert not predict_slices(_WindowInteriorOnly(), frame, (1.5, 1.5), whole_slice, torch.device("cpu")).any()


def test_neighbour_slices_are_shown_only_where_slices_are_close():
    assert context_indices(4, 1, slice_mm=10.0).tolist() == [[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 2, 3]]
    assert context_indices(3, 2, slice_mm=5.0)[0].tolist() == [0, 0, 1, 0, 2]
    assert context_indices(3, 1, slice_mm=12.0).tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    assert context_indices(3, 1, slice_mm=None).tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    assert context_indices(2, 0, slice_mm=5.0).tolist() == [[0], [1]]
    assert has_context(5.0) and has_context(10.0) and not has_context(12.0) and not has_context(None)
    with pytest.raises(ValueError, match="window normalisation"):
        SegmentationConfig(context_slices=1, normalisation="slice")


class _SeesSliceBefore(_WindowInteriorOnly):
    """The stand-in looking only at the neighbour slice before (channel 1 of a 2.5D input)."""

    def forward(self, x):
        return super().forward(x[:, 1:2])


def test_a_25d_model_sees_the_neighbour_slice_where_slices_are_contiguous():
    frame, disc = _frame_with_heart(128, centre=(64, 64))
    empty = np.random.default_rng(1).uniform(0.0, 0.3, frame.shape).astype(np.float32)
    slices = np.concatenate([frame, empty])  # the heart in the first slice only
    config = SegmentationConfig(spacing_mm=1.5, patch_size=128, normalisation="window", context_slices=1)
    stand_in = _SeesSliceBefore(margin=1)
    close = predict_slices(stand_in, slices, (1.5, 1.5), config, torch.device("cpu"), slice_mm=5.0)
    assert _found_whole(close[1], disc), "slice 2 shows what its neighbour before holds"
    apart = predict_slices(stand_in, slices, (1.5, 1.5), config, torch.device("cpu"), slice_mm=20.0)
    assert _found_whole(apart[0], disc) and not apart[1].any(), "20 mm apart: each slice stands in for its neighbours"


def test_a_2d_model_warm_started_into_a_25d_one_predicts_as_before():
    torch.manual_seed(0)
    flat = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window")
    deep = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, normalisation="window",
                              context_slices=2)
    source, target = build_segmenter(flat), build_segmenter(deep)
    warm_start_segmenter(target, source.state_dict())
    slices = np.random.default_rng(0).gamma(2.0, 50.0, size=(4, 90, 90)).astype(np.float32)
    slices[1:3, 30:60, 30:60] += 400.0  # neighbours differ: scaled on their own, they would change the output
    before = predict_slices(source, slices, (1.5, 1.5), flat, torch.device("cpu"))
    after = predict_slices(target, slices, (1.5, 1.5), deep, torch.device("cpu"), slice_mm=8.0)
    assert np.array_equal(before, after) and len(np.unique(before)) > 1
    with pytest.raises(RuntimeError):
        warm_start_segmenter(build_segmenter(flat), target.state_dict())  # more inputs do not fit fewer


@pytest.mark.parametrize("num_res_units", [0, 1])
def test_weights_without_the_mvo_class_warm_start_a_network_with_it_that_predicts_as_before(num_res_units):
    torch.manual_seed(0)
    plain = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64, num_res_units=num_res_units)
    with_mvo = SegmentationConfig(**{**plain.to_dict(), "mvo_class": True})
    source, target = build_segmenter(plain), build_segmenter(with_mvo)
    warm_start_segmenter(target, source.state_dict())
    slices = np.random.default_rng(0).gamma(2.0, 50.0, size=(2, 90, 90)).astype(np.float32)
    before = slice_probabilities(source, slices, (1.5, 1.5), plain, torch.device("cpu"))
    after = slice_probabilities(target, slices, (1.5, 1.5), with_mvo, torch.device("cpu"))
    assert after.shape == before.shape == (2, L.NUM_CLASSES, 90, 90)  # MVO is read as myocardium in every result
    np.testing.assert_allclose(after, before, atol=0.01)
    with torch.no_grad():
        logits = target(torch.randn(1, 1, 64, 64))
    assert logits.shape[1] == L.NUM_CLASSES + 1 and torch.softmax(logits, 1)[:, L.MVO].max() < 0.01


def test_folding_mvo_adds_its_probability_to_myocardium():
    probabilities = torch.softmax(torch.randn(2, L.NUM_CLASSES + 1, 4, 4), dim=1)
    folded = fold_mvo(probabilities)
    assert folded.shape == (2, L.NUM_CLASSES, 4, 4)
    torch.testing.assert_close(folded[:, L.MYOCARDIUM], probabilities[:, L.MYOCARDIUM] + probabilities[:, L.MVO])
    torch.testing.assert_close(folded[:, L.SCAR], probabilities[:, L.SCAR])
    assert fold_mvo(folded) is folded


def test_heart_centres_follow_the_largest_component_and_fill_slices_without_it():
    heart = np.zeros((3, 50, 60), dtype=bool)
    heart[0, 10:20, 30:40] = True
    heart[1, 12:22, 32:42] = True
    heart[1, 45:47, 2:4] = True  # a small stray island
    centres = heart_centres(heart)
    np.testing.assert_allclose(centres[0], (14.5, 34.5))
    np.testing.assert_allclose(centres[1], (16.5, 36.5))
    np.testing.assert_allclose(centres[2], (15.5, 35.5))  # no heart in slice 2: the component's mean centre
    np.testing.assert_allclose(heart_centres(np.zeros((2, 9, 9), bool)), [[4, 4], [4, 4]])


def test_heart_parts_split_by_a_seam_are_bridged_into_one_heart():
    heart = np.zeros((1, 40, 80), dtype=bool)
    heart[0, 10:30, 10:30] = True
    heart[0, 10:30, 40:55] = True  # 10 pixels apart
    np.testing.assert_allclose(heart_centres(heart)[0], (19.5, 19.5))
    np.testing.assert_allclose(heart_centres(heart, bridge_px=5)[0], (19.5, (20 * 19.5 + 15 * 47) / 35))


def test_window_normalisation_matches_the_per_slice_percentile_scaling():
    window = np.random.default_rng(1).gamma(2.0, 3.0, (32, 32)).astype(np.float32)
    np.testing.assert_allclose(normalise_windows(torch.from_numpy(window)[None, None])[0, 0].numpy(),
                               normalise_for_segmentation(window), rtol=1e-5, atol=1e-5)


def test_resampling_scales_each_axis_on_its_own():
    resampled = resample_slice(np.zeros((40, 60), np.float32), (1.0, 1.0), (2.0, 0.5))
    assert resampled.shape[-2:] == (20, 120)


class _BrightIsBloodPool(torch.nn.Module):
    """Calls blood pool where the image is bright: the same whichever way the image is mirrored."""

    def forward(self, x):
        logits = torch.zeros((len(x), L.NUM_CLASSES, *x.shape[2:]))
        logits[:, L.BLOOD_POOL] = 20 * (x[:, 0] - 0.5)
        return logits


class _LeansLeft(torch.nn.Module):
    """Calls blood pool more the further left a pixel is: errors tied to the orientation."""

    def forward(self, x):
        logits = torch.zeros((len(x), L.NUM_CLASSES, *x.shape[2:]))
        logits[:, L.BLOOD_POOL] = torch.linspace(4.0, -4.0, x.shape[-1])
        return logits


def test_probabilities_are_averaged_over_mirror_images_and_mapped_back():
    frame, _ = _frame_with_heart(64, centre=(20, 40), radius=8)
    batch = torch.from_numpy(frame)[None]
    plain = torch.softmax(_BrightIsBloodPool()(batch), dim=1)
    assert torch.allclose(orientation_averaged_probabilities(_BrightIsBloodPool(), batch, "flips"), plain, atol=1e-6)
    averaged = orientation_averaged_probabilities(_LeansLeft(), batch, "flips")
    assert torch.allclose(averaged.sum(dim=1), torch.ones(1, 64, 64))
    assert torch.allclose(averaged, averaged.flip(-1), atol=1e-6), "left and right errors cancel"
    assert not torch.allclose(torch.softmax(_LeansLeft()(batch), dim=1), averaged, atol=1e-3)


class _RowsNearTheEdge(torch.nn.Module):
    """Calls blood pool more the nearer a pixel's row is to the top or bottom: errors mirror images leave as they are."""

    def forward(self, x):
        logits = torch.zeros((len(x), L.NUM_CLASSES, *x.shape[2:]))
        logits[:, L.BLOOD_POOL] = 4.0 * torch.linspace(-1.0, 1.0, x.shape[-2]).abs()[:, None]
        return logits


def test_dihedral_averaging_maps_transposed_windows_back():
    frame, _ = _frame_with_heart(64, centre=(20, 40), radius=8)
    batch = torch.from_numpy(frame)[None]
    plain = torch.softmax(_BrightIsBloodPool()(batch), dim=1)
    assert len(orientations("dihedral")) == 8 and len(orientations("flips")) == 4
    dihedral = orientation_averaged_probabilities(_BrightIsBloodPool(), batch, "dihedral")
    assert torch.allclose(dihedral, plain, atol=1e-6), "an orientation-free network is left as it is"
    averaged = orientation_averaged_probabilities(_RowsNearTheEdge(), batch, "dihedral")
    assert torch.allclose(averaged, averaged.transpose(-2, -1), atol=1e-6), "row and column errors mix"
    flips = orientation_averaged_probabilities(_RowsNearTheEdge(), batch, "flips")
    assert not torch.allclose(flips, flips.transpose(-2, -1), atol=1e-3)


def test_the_models_test_time_setting_decides_the_orientations_it_is_segmented_in():
    frame, _ = _frame_with_heart(96, centre=(48, 48), radius=12)
    spacing, device = (1.5, 1.5), torch.device("cpu")
    setting = {test_time: slice_probabilities(_RowsNearTheEdge(), frame, spacing,
                                              replace(TINY_SEGMENTATION, test_time=test_time), device)
               for test_time in ("flips", "dihedral")}
    assert not np.allclose(setting["flips"], setting["dihedral"], atol=1e-3)
    assert SegmentationConfig.from_dict({"spacing_mm": 1.5}).test_time == "dihedral", \
        "a manifest written before the setting existed segments in the eight orientations"


class _BloodWhereBright(torch.nn.Module):
    """Blood pool where input ``channel`` is above 0.5 (0: the slice, 1: the slice before): a decision that the
    neighbours' order and a contrast curve move."""

    def __init__(self, channel: int = 0):
        super().__init__()
        self.channel = channel

    def forward(self, x):
        logits = torch.zeros((len(x), L.NUM_CLASSES, *x.shape[2:]))
        logits[:, L.BLOOD_POOL] = 8.0 * (x[:, self.channel] - 0.5)
        return logits


def test_the_neighbour_slices_are_also_shown_the_other_way_round():
    window = torch.zeros((1, 5, 8, 8))
    window[:, 1], window[:, 3] = 1.0, 2.0  # the slice before is bright, the one after dark
    assert torch.equal(_reverse_neighbours(window)[:, [0, 2, 1, 4, 3]], window)
    assert neighbour_orders("dihedral-neighbours", 1) == [False], "a 2D model has no neighbours to turn round"
    model = _BloodWhereBright(channel=1)  # the slice before
    one_order = orientation_averaged_probabilities(model, window[:, :3], "dihedral")
    both = orientation_averaged_probabilities(model, window[:, :3], "dihedral-neighbours")
    assert torch.allclose(one_order[:, L.BLOOD_POOL], torch.softmax(model(window[:, :3]), 1)[:, L.BLOOD_POOL])
    half_way = (torch.softmax(model(window[:, [0, 2, 1]]), 1) + torch.softmax(model(window[:, :3]), 1)) / 2
    assert torch.allclose(both, half_way, atol=1e-6)


def test_a_contrast_curve_keeps_each_windows_range_and_bends_it_as_training_does():
    window = torch.linspace(0.0, 2.0, 3 * 16).view(1, 3, 4, 4)
    for gamma in (0.8, 1.25):
        bent = _adjust_contrast(window, gamma)
        assert torch.isclose(bent.min(), window.min()) and torch.isclose(bent.max(), window.max())
        half_way = _adjust_contrast(torch.tensor([[[[0.0, 1.0, 2.0]]]]), gamma)[0, 0, 0, 1]
        assert torch.isclose(half_way, torch.tensor(2.0 * 0.5 ** gamma))
    assert torch.equal(_adjust_contrast(window, 1.0), window)
    pair = torch.stack([window[0], 10.0 * window[0] + 5.0])  # two windows of other ranges: each bent on its own
    bent = _adjust_contrast(pair, 0.8)
    assert torch.allclose(bent[1], 10.0 * bent[0] + 5.0, atol=1e-4)


def test_dihedral_contrast_averages_the_eight_orientations_over_three_contrasts():
    assert contrast_gammas("dihedral") == (1.0,) and len(contrast_gammas("dihedral-contrast")) == 3
    window = torch.linspace(0.0, 1.0, 64).view(1, 1, 8, 8)
    model = _BloodWhereBright()
    averaged = orientation_averaged_probabilities(model, window, "dihedral-contrast")
    expected = sum(orientation_averaged_probabilities(model, _adjust_contrast(window, gamma), "dihedral")
                   for gamma in contrast_gammas("dihedral-contrast")) / 3
    assert torch.allclose(averaged, expected, atol=1e-6)
    plain = orientation_averaged_probabilities(model, window, "dihedral")
    assert not torch.allclose(averaged, plain, atol=1e-3), "the contrast curves change what this network says"


def test_an_ensemble_averages_its_networks_probabilities_each_at_its_own_spacing():
    frame, _ = _frame_with_heart(96, centre=(48, 48), radius=12)
    spacing, device = (1.5, 1.5), torch.device("cpu")
    members = [(_BrightIsBloodPool(), TINY_SEGMENTATION),
               (_RowsNearTheEdge(), replace(TINY_SEGMENTATION, spacing_mm=1.25, test_time="flips"))]
    alone = [slice_probabilities(network, frame, spacing, config, device) for network, config in members]
    assert not np.allclose(alone[0], alone[1], atol=1e-2), "two networks that disagree"
    ensemble = SegmentationEnsemble(members)
    averaged = slice_probabilities(ensemble, frame, spacing, TINY_SEGMENTATION, device)
    np.testing.assert_allclose(averaged, (alone[0] + alone[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(predict_slices(ensemble, frame, spacing, TINY_SEGMENTATION, device),
                                  averaged.argmax(axis=1))
    with pytest.raises(ValueError, match="at least two"):
        SegmentationEnsemble(members[:1])


def test_segmentation_config_refuses_an_unknown_test_time_augmentation():
    with pytest.raises(ValueError, match="test_time"):
        SegmentationConfig(test_time="rotations")
