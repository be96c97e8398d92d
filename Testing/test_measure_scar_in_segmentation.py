"""The scar-landing diagnostic (benchmarks/measure_scar_in_segmentation.py) counts where a segmentation puts the
reference scar."""
import numpy as np

from ScarEnhanceLib import labels as L

from conftest import load_benchmark


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
    table = script.markdown([("emidec", "val", 1, counts)])
    assert "| emidec | val | 1 | 50.0 | 0.0 | 30.0 | 20.0 |" in table and "scar called background" in table
