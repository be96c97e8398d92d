"""The intensity-window diagnostic (benchmarks/measure_intensity_window.py): each tissue's median in the diffusion
network's units under each window."""
import pytest

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.datasets import DatasetSpec, load_cases

from conftest import load_benchmark

script = load_benchmark("measure_intensity_window")


def test_the_heart_window_spreads_the_tissues_at_least_as_far_apart_as_the_slice_window(phantom_folder):
    case = next(c for c in load_cases(DatasetSpec.load(phantom_folder)) if c.has_scar)
    medians = {window: script.model_units(case, window) for window in ("slice", "heart")}
    for window, found in medians.items():
        assert len(found[L.SCAR]) > 0 and len(found[L.MYOCARDIUM]) == len(case.images)
        assert min(found[L.SCAR]) > max(found[L.MYOCARDIUM])  # the phantom's scar is brighter than its wall
    spread = {window: found[L.SCAR][0] - found[L.MYOCARDIUM][0] for window, found in medians.items()}
    assert spread["heart"] >= spread["slice"] - 1e-6  # the heart window ends at the crop's maximum, not the slice's


def test_the_script_prints_both_windows_per_data_set(phantom_folder, capsys):
    assert script.main([str(phantom_folder), "--split", "all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in rows] == [[f"{phantom_folder.name} (3 cases)", "slice"],
                                         [f"{phantom_folder.name} (3 cases)", "heart"]]
    assert all(float(row[5]) > 0 for row in rows)  # scar - myocardium
    with pytest.raises(ValueError, match="do not cover the data set"):
        script.main([str(phantom_folder)])
