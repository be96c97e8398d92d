"""The report shows the slices with the most scar and names the region of every readout."""
import numpy as np

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.metrics import region_readouts
from ScarEnhanceLib.report import _table_text, slices_to_show, write_report


def _stack():
    labels = np.zeros((5, 40, 40), np.uint8)
    labels[:, 10:30, 10:30] = L.MYOCARDIUM
    labels[:, 15:25, 15:25] = L.BLOOD_POOL
    labels[0, 5:35, 5:35] = L.MYOCARDIUM  # the largest ROI, but no scar
    labels[3, 10:12, 10:30] = L.SCAR
    labels[1, 10:11, 10:14] = L.SCAR
    return labels


def test_the_slices_with_the_most_scar_are_shown_not_those_with_the_most_roi():
    labels = _stack()
    assert list(slices_to_show(labels > 0, labels, 2)) == [1, 3]
    no_scar = np.where(labels == L.SCAR, L.MYOCARDIUM, labels)
    assert 0 in slices_to_show(no_scar > 0, no_scar, 1)  # without scar: the most ROI


def test_report_names_the_region_of_every_readout(tmp_path):
    labels = _stack()
    image = np.random.default_rng(0).normal(50, 5, labels.shape) + 200.0 * (labels == L.SCAR)
    regions = region_readouts(image, image * 1.1, labels)["regions"]
    text = _table_text(regions)
    assert [line.split(":")[0] for line in text.splitlines()] == \
        ["in the Scar segment", "in the 5-SD region", "in the FWHM region"]
    path = write_report(tmp_path / "r.png", image, image * 1.1, np.zeros_like(image), labels > 0, labels, regions)
    assert path.stat().st_size > 10_000
