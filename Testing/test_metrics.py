import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.metrics import (MIN_REMOTE_PIXELS, cnr, cnr_readouts, dice_per_class, enhanced_regions,
                                    myocardium_error_by_boundary, percent_of_myocardium, region_readouts,
                                    remote_myocardium, remote_reference, sd_above_remote, ssim_psnr)
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom


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


def test_threshold_regions_find_bright_scar_and_ignore_a_few_noisy_pixels():
    labels = np.full((1, 20, 20), L.MYOCARDIUM, dtype=np.uint8)
    labels[0, :4] = L.SCAR
    image = np.random.default_rng(0).normal(10, 1, (1, 20, 20))
    image[0, :4] = 100  # 80 bright pixels: 20 % of the myocardium
    image[0, 15, 15] = 60  # one noisy pixel: not enhancement
    regions = enhanced_regions(image, labels)
    assert percent_of_myocardium(regions["nsd"], labels) == pytest.approx(20.0)
    assert percent_of_myocardium(regions["fwhm"], labels) == pytest.approx(20.0)


def test_a_remote_myocardium_without_spread_draws_no_threshold_region():
    """A clipped or nulled image whose darkest sector is all 0: mean + 5 SD is the mean, which is not enhancement."""
    rows, cols = np.mgrid[:40, :40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    labels = np.where((radius > 10) & (radius < 16), L.MYOCARDIUM, 0).astype(np.uint8)[None].repeat(3, axis=0)
    image = np.where(cols < 20, 0.0, 1.0)[None].repeat(3, axis=0)  # no scar; half the wall nulled to exactly 0
    regions = enhanced_regions(image, labels)
    assert not regions["nsd"].any() and not regions["fwhm"].any()
    for null in (0.1, 0.7, 12.7):  # nulled to a value whose float64 SD comes out near 1e-16, not 0
        regions = enhanced_regions(np.where(image == 0, null, null + 1.0), labels)
        assert not regions["nsd"].any() and not regions["fwhm"].any()  # was: half the wall called scar
        assert np.isnan(sd_above_remote(np.where(image == 0, null, null + 1.0), labels)).all()
    flat = np.full((10, 10), 0.1)
    flat[0] = 1.1
    assert flat[5:].std() > 0 and np.isnan(cnr(flat, rows[:10, :10] == 0, rows[:10, :10] >= 5))  # was about 1e16


def test_each_slice_is_read_against_its_own_remote_myocardium():
    """Slices rescaled one by one (EMIDEC's PNGs) or under another coil sensitivity: healthy wall at 100 to 190.
    Pooled over the volume, the slices' differences would make one SD of about 34 and hide slice 0's scar."""
    rows, cols = np.mgrid[:40, :40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    wall = (radius > 10) & (radius < 16)
    labels = np.where(wall, L.MYOCARDIUM, 0).astype(np.uint8)[None].repeat(4, axis=0)
    scar = wall & (cols > 30)
    labels[0][scar] = L.SCAR
    rng = np.random.default_rng(0)
    image = np.stack([np.where(wall, level, 0.0) + rng.normal(0, 5, wall.shape) for level in (100, 130, 160, 190)])
    image[0][scar] += 45  # 9 SD above its own slice's wall
    truth = percent_of_myocardium(labels == L.SCAR, labels)
    regions = enhanced_regions(image, labels)
    for key in ("nsd", "fwhm"):
        assert percent_of_myocardium(regions[key], labels) == pytest.approx(truth, abs=0.5), key
        assert not regions[key][1:].any(), key  # the brighter slices are not scar
    means, spreads = remote_reference(image, labels)
    assert means == pytest.approx([100, 130, 160, 190], abs=2) and spreads == pytest.approx([5] * 4, abs=1)


def test_sd_above_remote_reads_each_slice_against_its_own_and_none_without_one():
    rows, cols = np.mgrid[:40, :40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    wall = (radius > 10) & (radius < 16)
    labels = np.stack([np.where(wall, L.MYOCARDIUM, 0)] * 2 + [np.zeros_like(wall)]).astype(np.uint8)  # no wall: 2
    noise = np.where((rows + cols) % 2, 5.0, -5.0)  # SD 5 in every sector
    image = np.stack([100.0 + noise, 200.0 + noise, 100.0 + noise]).astype(np.uint8)  # integer images, as loaded
    image[:2][:, wall & (cols > 30)] += 30  # 6 SD above each slice's own wall
    z = sd_above_remote(image, labels)
    scar = wall & (cols > 30)
    for index, level in ((0, 100.0), (1, 200.0)):  # pooled, slice 1's scar would read about 1 SD above the mean
        assert z[index][scar] == pytest.approx((image[index][scar] - level) / 5.0, abs=0.1)
        assert z[index][scar].mean() == pytest.approx(6.0, abs=0.1)
    assert np.isnan(z[2]).all()


def test_remote_myocardium_is_the_darkest_sector_of_each_slice():
    rows, cols = np.mgrid[:40, :40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    labels = np.where((radius > 10) & (radius < 16), L.MYOCARDIUM, 0).astype(np.uint8)[None]
    image = np.where(cols < 20, 50.0, 80.0)[None] + np.where(rows < 20, 0.0, 10.0)[None]  # darkest: upper left
    remote = remote_myocardium(image, labels)
    assert remote.any() and (image[remote] <= 60).all() and remote.sum() < (labels > 0).sum() / 3


@pytest.mark.parametrize("wall", ["normal", "thick"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_scar_free_heart_reads_no_scar(wall, seed):
    image, labels = make_phantom(PhantomSpec(scar="none", wall=wall, seed=seed))
    image, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    for region in region_readouts(image, image, labels)["regions"].values():
        assert region["burden_percent"] == {"original": 0.0, "enhanced": 0.0}, region["name"]
        assert region["slices_with_scar"] == 0 and np.isnan(region["volume"]["cnr_scar_myo_original"])


@pytest.mark.parametrize("scar", ["patchy", "subendocardial"])
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_regions_measure_a_phantoms_known_burden(scar, seed):
    image, labels = make_phantom(PhantomSpec(scar=scar, seed=seed))
    image, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    truth = percent_of_myocardium(labels == L.SCAR, labels)
    regions = region_readouts(image, image, labels)["regions"]
    assert truth > 3
    for key in ("nsd", "fwhm"):
        assert regions[key]["burden_percent"]["original"] == pytest.approx(truth, abs=1.0), key


def _ring(inner=10.0, outer=16.0, size=40):
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2)
    return (radius > inner) & (radius < outer), radius, np.arctan2(rows - (size - 1) / 2, cols - (size - 1) / 2)


def test_scar_in_every_sector_is_still_found():
    """Subendocardial scar all round (several territories, or diffuse disease): the darkest sector holds scar too,
    and its mean and SD put the 5-SD threshold above all the scar."""
    wall, radius, _ = _ring()
    scar = wall & (radius < 12.5)
    labels = np.where(scar, L.SCAR, np.where(wall, L.MYOCARDIUM, 0)).astype(np.uint8)[None]
    image = np.random.default_rng(3).normal(20, 5, (1, 40, 40))
    image[0][scar] += 60
    true_burden = percent_of_myocardium(labels == L.SCAR, labels)
    regions = enhanced_regions(image, labels)
    for key in ("nsd", "fwhm"):
        assert percent_of_myocardium(regions[key], labels) == pytest.approx(true_burden, abs=5)  # was 0 %


def test_a_thin_rim_touching_at_corners_is_one_part():
    wall, radius, angle = _ring(size=60, inner=15, outer=22)
    rim = wall & (np.abs(radius - 15.7) < 0.5) & (angle > 0) & (angle < 2.1)  # one pixel thick, 120 degrees
    labels = np.where(wall, L.MYOCARDIUM, 0).astype(np.uint8)[None]
    image = np.random.default_rng(4).normal(20, 5, (1, 60, 60))
    image[0][rim] += 100
    assert rim.sum() >= 20 and enhanced_regions(image, labels)["nsd"][0][rim].mean() > 0.9  # was dropped as noise


def test_a_wall_too_small_for_a_remote_sector_gives_no_reference():
    """An apical slice's wall of a few dozen pixels: the darkest sector of six or seven pixels would be chance."""
    wall, _, _ = _ring(inner=2.5, outer=4.5, size=12)
    labels = np.where(wall, L.MYOCARDIUM, 0).astype(np.uint8)[None]
    image = np.random.default_rng(5).normal(50, 5, (1, 12, 12))
    assert 20 < wall.sum() < 6 * MIN_REMOTE_PIXELS
    assert not remote_myocardium(image, labels).any() and remote_reference(image, labels) is None


def test_label_values_beyond_a_byte_are_no_tissue_in_the_readouts():
    image, labels = make_phantom(PhantomSpec(scar="patchy", seed=1))
    image, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels).astype(np.int16)
    with_other = labels.copy()
    with_other[(labels == 0) & (image < np.percentile(image, 20))] = 259  # a dark structure someone labelled
    expected = region_readouts(image, image, labels)["regions"]["scar_segment"]["volume"]
    read = region_readouts(image, image, with_other)["regions"]["scar_segment"]["volume"]
    assert read == pytest.approx(expected)  # 259 wrapped round to 3, scar, in a byte


def test_regions_are_drawn_on_the_original_and_read_in_both_images():
    image, labels = make_phantom(PhantomSpec(scar="patchy", seed=1))
    image, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    brighter = image * np.where(labels == L.SCAR, 1.5, 1.0)
    regions = region_readouts(image, brighter, labels)["regions"]
    for region in regions.values():
        volume = region["volume"]
        assert volume["cnr_scar_myo_enhanced"] > volume["cnr_scar_myo_original"]
    assert regions["nsd"]["burden_percent"]["enhanced"] >= regions["nsd"]["burden_percent"]["original"]


def test_dice_per_class():
    truth = np.zeros((1, 4, 4), dtype=np.uint8)
    truth[0, :2] = L.BLOOD_POOL
    predicted = truth.copy()
    predicted[0, 0] = L.MYOCARDIUM
    scores = dice_per_class(predicted, truth)
    assert scores["roi"] == 1.0
    assert scores["blood_pool"] == pytest.approx(2 * 4 / 12)
    assert np.isnan(scores["scar"]) and scores["wall"] == 0.0


def test_wall_dice_counts_scar_and_healthy_myocardium_as_one_region():
    truth = np.full((1, 4, 4), L.MYOCARDIUM, dtype=np.uint8)
    truth[0, :, :2] = L.SCAR
    predicted = np.full(truth.shape, L.MYOCARDIUM, dtype=np.uint8)  # all healthy: scar missed, wall right
    scores = dice_per_class(predicted, truth)
    assert scores["wall"] == 1.0 and scores["scar"] == 0.0 and scores["myocardium"] == pytest.approx(2 * 8 / 24)


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


def test_fwhm_is_measured_from_the_remote_myocardium_when_the_image_has_an_offset():
    """EMIDEC's PNGs put healthy myocardium near 150 of 255: half of the maximum (100) lies below the whole wall."""
    image, labels = make_phantom(PhantomSpec(scar="patchy", seed=1))
    image, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
    offset = image + 400.0  # healthy myocardium near 460, scar near 760
    truth = percent_of_myocardium(labels == L.SCAR, labels)
    assert percent_of_myocardium(enhanced_regions(offset, labels)["fwhm"], labels) == pytest.approx(truth, abs=1.0)
