"""The scar diagnostic (benchmarks/measure_scar_in_segmentation.py) counts where a segmentation puts the reference
scar, and where its own scar lies in the reference (no-reflow apart), and how enhanced the reference scar is where it
is missed."""
import numpy as np
import pytest

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.metrics import remote_reference

from conftest import load_benchmark, phantom_case


def test_reference_scar_is_counted_by_the_class_the_segmentation_gives_it():
    script = load_benchmark("measure_scar_in_segmentation")
    reference = np.zeros((1, 4, 5), np.uint8)
    reference[0, 1:3, :] = L.SCAR  # 10 scar pixels
    reference[0, 3, :] = L.MYOCARDIUM
    predicted = np.zeros_like(reference)
    predicted[0, 1, :] = L.SCAR  # 5 found
    predicted[0, 2, :3] = L.BLOOD_POOL  # 3 called blood pool, 2 left background
    predicted[0, 3, :] = L.SCAR  # scar invented in myocardium is not reference scar
    counts = script.scar_landing(predicted, reference)
    assert counts.tolist() == [2, 3, 0, 5]
    table = script.markdown([(["bundled", "emidec", "val", "1"], counts)], ["models", "data", "split", "cases"],
                            {k: f"called {v}" for k, v in script.LANDING.items()})
    assert "| bundled | emidec | val | 1 | 10 | 50.0 | 0.0 | 30.0 | 20.0 |" in table
    assert "called background (%)" in table


def test_predicted_scar_is_counted_by_the_reference_class_under_it():
    script = load_benchmark("measure_scar_in_segmentation")
    reference = np.zeros((1, 4, 5), np.uint8)
    reference[0, 0, :] = L.BLOOD_POOL
    reference[0, 1, :] = L.SCAR
    reference[0, 2, :] = L.MVO
    reference[0, 3, :] = L.MYOCARDIUM
    predicted = np.zeros_like(reference)
    predicted[0, 1, :] = L.SCAR  # 5 in scar
    predicted[0, 2, :2] = L.SCAR  # 2 in no-reflow
    predicted[0, 0, :1] = L.SCAR  # 1 in blood pool
    predicted[0, 3, :] = L.MYOCARDIUM  # healthy myocardium called healthy: no scar
    counts = script.scar_placement(predicted, reference)
    assert counts.tolist() == [0, 1, 0, 5, 2]
    table = script.markdown([(["bundled", "emidec", "val", "1"], counts)], ["models", "data", "split", "cases"],
                            {k: f"in reference {v}" for k, v in script.PLACEMENT.items()})
    assert "| bundled | emidec | val | 1 | 8 | 62.5 | 25.0 | 0.0 | 12.5 | 0.0 |" in table
    assert "in reference no-reflow (%)" in table


def test_reference_scar_is_scored_in_sd_above_the_remote_myocardium_by_the_class_it_is_called():
    script = load_benchmark("measure_scar_in_segmentation")
    reference = np.zeros((1, 40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 19.5, xx - 19.5)
    reference[0][(radius >= 10) & (radius < 14)] = L.MYOCARDIUM
    reference[0][radius < 10] = L.BLOOD_POOL
    image = np.where(reference > 0, 100.0, 0.0) + np.where((yy + xx) % 2, 5.0, -5.0)  # remote mean 100, SD 5
    scar = (reference[0] == L.MYOCARDIUM) & (xx > 28)
    reference[0][scar] = L.SCAR
    image[0][scar & (yy < 20)] = 130.0  # 6 SD: enhanced scar
    image[0][scar & (yy >= 20)] = 105.0  # 1 SD: scar by the label only
    predicted = reference.copy()
    predicted[0][scar & (yy >= 20)] = L.MYOCARDIUM  # the segmentation calls the unenhanced half healthy
    scores = script.scar_enhancement(image, predicted, reference)
    (mean,), (sd,) = remote_reference(image, reference)  # the one slice's darkest sector: about 100 and 5
    enhanced, unenhanced = (130.0 - mean) / sd, (105.0 - mean) / sd
    assert 5.5 < enhanced < 6.5 and 0.5 < unenhanced < 1.5
    np.testing.assert_allclose(scores[L.SCAR], enhanced)
    np.testing.assert_allclose(scores[L.MYOCARDIUM], unenhanced)
    assert scores[L.BLOOD_POOL].size == 0 and scores[L.BACKGROUND].size == 0
    table = script.enhancement_markdown([(["bundled"], {k: [v] for k, v in scores.items()})], ["models"])
    assert (f"| bundled | {enhanced:.1f} / {enhanced:.1f} / {enhanced:.1f}, 0 % | "
            f"{unenhanced:.1f} / {unenhanced:.1f} / {unenhanced:.1f}, 100 % | none | none |") in table


def test_no_reflow_counts_as_wall_in_the_remote_reference_as_the_readouts_read_a_users_labels():
    script = load_benchmark("measure_scar_in_segmentation")
    reference = np.zeros((1, 40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 19.5, xx - 19.5)
    wall = (radius >= 10) & (radius < 14)
    reference[0][wall] = L.MYOCARDIUM
    reference[0][wall & (xx > 28)] = L.SCAR
    reference[0][wall & (xx < 12)] = L.MVO  # a dark core: the darkest sector once it counts as wall
    image = np.where(wall, 100.0, 0.0)[None] + np.where((yy + xx) % 2, 5.0, -5.0)
    image[0][wall & (xx > 28)] = 130.0
    image[0][wall & (xx < 12)] = 60.0
    scores = script.scar_enhancement(image, reference, reference)
    folded = np.where(reference == L.MVO, L.MYOCARDIUM, reference)
    (mean,), (sd,) = remote_reference(image, folded)
    assert mean < 80  # the no-reflow sector is the remote reference
    np.testing.assert_allclose(scores[L.SCAR], (130.0 - mean) / sd)


@pytest.mark.parametrize("image", [np.ones((1, 4, 4)), np.arange(16.0).reshape(1, 4, 4)])
def test_scar_without_a_remote_reference_or_its_spread_gets_no_scores(image):
    script = load_benchmark("measure_scar_in_segmentation")
    reference = np.zeros((1, 4, 4), np.uint8)
    if image.max() == 1:  # a wall of one value: a remote reference without spread
        reference[0, 1:3, 1:3] = L.SCAR
    else:  # a single wall pixel: no remote reference at all
        reference[0, 1, 1] = L.SCAR
        assert remote_reference(image, reference) is None
    scores = script.scar_enhancement(image, reference, reference)
    assert all(v.size == 0 for v in scores.values())
    table = script.enhancement_markdown([(["bundled"], {k: [v] for k, v in scores.items()}),
                                         (["no scar cases"], {k: [] for k in scores})], ["models"])
    assert "| bundled | none | none | none | none |" in table
    assert "| no scar cases | none | none | none | none |" in table


def test_degraded_maps_are_placed_like_a_segmentation_and_the_segmentation_like_ones_reach_the_blood_pool():
    script = load_benchmark("measure_scar_in_segmentation")
    cases = [phantom_case(seed) for seed in range(3)]
    within, like = (script.degraded_map_placement(cases, errors, np.random.default_rng(0))
                    for errors in ("within-wall", "like-segmentation"))
    for counts in (within, like):
        assert counts[L.SCAR] == counts.max()  # more on the reference scar than on any other class
    assert like[L.BLOOD_POOL] / like.sum() > 2 * within[L.BLOOD_POOL] / within.sum()


def test_the_script_prints_its_three_tables_for_each_models_folder(phantom_folder, tiny_models, capsys):
    script = load_benchmark("measure_scar_in_segmentation")
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--splits", "all"]) == 0
    printed = capsys.readouterr().out
    assert "Reference scar, by the class the segmentation gives it" in printed
    assert "The segmentation's scar, by the reference class under it" in printed
    assert "How enhanced the reference scar is, by the class the segmentation gives it" in printed
    assert printed.count(f"| {tiny_models} | {phantom_folder.name} | all | 2 |") == 3  # the two cases with scar
