"""The scar diagnostic (benchmarks/measure_scar_in_segmentation.py) counts where a segmentation puts the reference
scar, and where its own scar lies in the reference (no-reflow apart)."""
import numpy as np

from ScarEnhanceLib import labels as L

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


def test_degraded_maps_are_placed_like_a_segmentation_and_the_segmentation_like_ones_reach_the_blood_pool():
    script = load_benchmark("measure_scar_in_segmentation")
    cases = [phantom_case(seed) for seed in range(3)]
    within, like = (script.degraded_map_placement(cases, errors, np.random.default_rng(0))
                    for errors in ("within-wall", "like-segmentation"))
    for counts in (within, like):
        assert counts[L.SCAR] == counts.max()  # more on the reference scar than on any other class
    assert like[L.BLOOD_POOL] / like.sum() > 2 * within[L.BLOOD_POOL] / within.sum()


def test_the_script_prints_both_tables_for_each_models_folder(phantom_folder, tiny_models, capsys):
    script = load_benchmark("measure_scar_in_segmentation")
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--splits", "all"]) == 0
    printed = capsys.readouterr().out
    assert "Reference scar, by the class the segmentation gives it" in printed
    assert "The segmentation's scar, by the reference class under it" in printed
    assert printed.count(f"| {tiny_models} | {phantom_folder.name} | all | 2 |") == 2  # the two cases with scar
