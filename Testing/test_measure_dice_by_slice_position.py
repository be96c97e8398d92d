"""The slice-position diagnostic (benchmarks/measure_dice_by_slice_position.py) scores each third of a stack apart."""
import numpy as np

from ScarEnhanceLib import labels as L

from conftest import load_benchmark


def test_a_stack_is_cut_into_thirds_with_the_ends_rounded_up():
    script = load_benchmark("measure_dice_by_slice_position")
    first, middle, last = script.POSITIONS
    assert [script.position_of(i, 7) for i in range(7)] == [first] * 3 + [middle] + [last] * 3
    assert [script.position_of(i, 9) for i in range(9)] == [first] * 3 + [middle] * 3 + [last] * 3
    assert [script.position_of(i, 2) for i in range(2)] == [first, last]


def test_a_badly_segmented_end_slice_shows_in_its_third_only():
    script = load_benchmark("measure_dice_by_slice_position")
    reference = np.zeros((3, 8, 8), np.uint8)
    reference[:, 2:6, 2:6] = L.MYOCARDIUM
    reference[:, 3:5, 3:5] = L.BLOOD_POOL
    reference[:, 2, 2:6] = L.SCAR  # 4 scar pixels per slice
    predicted = reference.copy()
    predicted[0] = 0  # the first slice's heart is missed
    predicted[2, 2, 2:4] = L.MYOCARDIUM  # half the last slice's scar called healthy
    summary = script.summarise(script.slice_rows(predicted, reference))
    first, middle, last = (summary[p] for p in script.POSITIONS)
    assert first["slices"] == middle["slices"] == last["slices"] == 1
    assert first["roi"] == 0.0 and first["wall"] == 0.0 and first["scar_found"] == 0.0
    assert middle["roi"] == 1.0 and middle["wall"] == 1.0 and middle["scar_found"] == 1.0
    assert last["roi"] == 1.0 and last["scar_found"] == 0.5 and last["scar_pixels"] == 4
    table = script.markdown([(["bundled"], summary)], ["models"])
    assert "| bundled | first third | 1 | 0.000 | 0.000 | 4 | 0.0 |" in table
    assert "| bundled | last third | 1 | 1.000 | 1.000 | 4 | 50.0 |" in table


def test_slices_without_a_reference_heart_are_left_out_and_scar_free_thirds_read_n_a():
    script = load_benchmark("measure_dice_by_slice_position")
    reference = np.zeros((3, 8, 8), np.uint8)
    reference[1, 2:6, 2:6] = L.MYOCARDIUM
    rows = script.slice_rows(reference.copy(), reference)
    assert [row["position"] for row in rows] == [script.POSITIONS[1]]
    summary = script.summarise(rows)
    assert summary[script.POSITIONS[0]]["slices"] == 0 and np.isnan(summary[script.POSITIONS[1]]["scar_found"])
    assert "| x | middle third | 1 | 1.000 | 1.000 | 0 | n/a |" in script.markdown([(["x"], summary)], ["models"])


def test_a_third_averages_its_slices_dice_and_pools_its_scar():
    script = load_benchmark("measure_dice_by_slice_position")
    reference = np.zeros((4, 8, 8), np.uint8)  # thirds of 4 slices: the first two, the last two
    reference[0, 2:6, 2:6] = L.MYOCARDIUM
    reference[0, 3:5, 3:5] = L.BLOOD_POOL
    reference[0, 2, 2:6] = L.SCAR  # 4 scar pixels
    reference[1, 2:6, 2:6] = L.BLOOD_POOL
    reference[1, 2, 2:6] = L.SCAR  # 4 more, the slice's whole wall
    predicted = reference.copy()
    predicted[0, 3:5, 3:5] = L.MYOCARDIUM  # the blood pool called wall: the heart ROI right, the wall not
    predicted[1, 2, 2:6] = L.BLOOD_POOL  # the second slice's scar missed: no wall found
    rows = script.slice_rows(predicted, reference)
    assert rows[0]["roi"] == 1.0 and rows[0]["wall"] == 2 * 12 / (16 + 12)
    assert rows[1]["roi"] == 1.0 and rows[1]["wall"] == 0.0
    summary = script.summarise(rows)[script.POSITIONS[0]]
    assert summary["slices"] == 2 and summary["roi"] == 1.0 and summary["wall"] == rows[0]["wall"] / 2
    assert summary["scar_pixels"] == 8 and summary["scar_found"] == 0.5  # pooled: 4 of 8
    header = script.markdown([(["x"], script.summarise(rows))], ["models"]).splitlines()[0]
    assert header == "| models | slice | slices | heart ROI Dice | wall Dice | reference scar pixels | found (%) |"


def test_a_third_whose_slices_have_no_wall_reads_nan_wall_dice():
    script = load_benchmark("measure_dice_by_slice_position")
    reference = np.zeros((1, 8, 8), np.uint8)
    reference[0, 2:6, 2:6] = L.BLOOD_POOL
    summary = script.summarise(script.slice_rows(reference.copy(), reference))[script.POSITIONS[0]]
    assert summary["roi"] == 1.0 and np.isnan(summary["wall"])


def test_the_script_prints_a_row_per_third_for_each_models_folder(phantom_folder, tiny_models, capsys):
    script = load_benchmark("measure_dice_by_slice_position")
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--splits", "all"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"| {tiny_models} | {phantom_folder.name} | all | 3 |") == 3
