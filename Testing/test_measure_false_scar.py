"""The false-scar diagnostic (benchmarks/measure_false_scar.py) counts where a segmentation's scar lies in the
reference, no-reflow apart."""
import numpy as np

from ScarEnhanceLib import labels as L

from conftest import load_benchmark


def test_predicted_scar_is_counted_by_the_reference_class_under_it():
    script = load_benchmark("measure_false_scar")
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
    table = script.markdown([("bundled", "emidec", "val", 1, counts)])
    assert "| bundled | emidec | val | 1 | 8 | 62.5 | 25.0 | 0.0 | 12.5 | 0.0 |" in table
    assert "in reference no-reflow" in table
