"""The scar-map diagnostic (benchmarks/measure_scar_map_on_user_path.py) takes the segmentation's false scar away, or
adds the scar it missed, and leaves every other label as segmented."""
import json

import numpy as np

from ScarEnhanceLib import labels as L

from conftest import load_benchmark


def _labels():
    reference = np.full((1, 3, 4), L.MYOCARDIUM, np.uint8)
    reference[0, 0, :] = L.BLOOD_POOL
    reference[0, 1, :2] = L.SCAR
    predicted = reference.copy()
    predicted[0, 1, 1] = L.MYOCARDIUM  # missed scar
    predicted[0, 2, 3] = L.SCAR  # false scar in healthy myocardium
    predicted[0, 0, 0] = L.SCAR  # false scar in the blood pool
    return reference, predicted


def test_without_false_scar_keeps_only_the_segmentations_true_scar():
    script = load_benchmark("measure_scar_map_on_user_path")
    reference, predicted = _labels()
    changed = script.without_false_scar(predicted, reference)
    assert np.argwhere(changed == L.SCAR).tolist() == [[0, 1, 0]]
    assert changed[0, 2, 3] == L.MYOCARDIUM and changed[0, 0, 0] == L.MYOCARDIUM
    untouched = predicted != L.SCAR
    np.testing.assert_array_equal(changed[untouched], predicted[untouched])
    assert predicted[0, 2, 3] == L.SCAR  # the segmentation's labels are not changed in place


def test_with_missed_scar_adds_the_reference_scar_and_keeps_the_false_scar():
    script = load_benchmark("measure_scar_map_on_user_path")
    reference, predicted = _labels()
    changed = script.with_missed_scar(predicted, reference)
    assert sorted(np.argwhere(changed == L.SCAR).tolist()) == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 2, 3]]
    assert predicted[0, 1, 1] == L.MYOCARDIUM
    assert set(script.SCAR_MAPS) == {"as segmented", "without its false scar", "with its missed scar added"}


def test_scaled_scar_maps_call_scar_as_the_segmentation_does_at_scale_1_and_less_below(tiny_models):
    from ScarEnhanceLib import weights
    from ScarEnhanceLib.evaluate import predicted_labels

    from conftest import phantom_case

    script = load_benchmark("measure_scar_map_on_user_path")
    model = weights.load(weights.SEGMENTATION, tiny_models)
    case = phantom_case(seed=0, slices=2)
    as_segmented = predicted_labels(model)(case)
    np.testing.assert_array_equal(script.scaled_scar_labels(model, 1.0)(case), as_segmented)
    shared = {}
    scar_at = {scale: int((script.scaled_scar_labels(model, scale, shared)(case) == L.SCAR).sum())
               for scale in (0.0, 1e6)}
    assert scar_at[0.0] == 0 and scar_at[1e6] > (as_segmented == L.SCAR).sum()
    assert list(shared) == [case.name]  # the probabilities computed once for both scales


def test_the_script_writes_a_row_per_scar_map_and_data_set(phantom_folder, tiny_models, tmp_path):
    script = load_benchmark("measure_scar_map_on_user_path")
    assert script.main([str(phantom_folder), "--models", str(tiny_models), "--split", "all", "--scar-scales", "0.5",
                        "-o", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "scar_map_on_user_path.json").read_text(encoding="utf-8"))
    data = phantom_folder.name
    assert set(results) == {f"{data}: {name}" for name in [*script.SCAR_MAPS, "scar probability x0.5"]}
    assert "scar probability x0.5" in (tmp_path / "out" / "scar_map_on_user_path.md").read_text(encoding="utf-8")
