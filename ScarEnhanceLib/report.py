"""PNG report: original, enhanced, difference and uncertainty of the slices with the most scar, with the ROI outline,
and the readouts of each region named."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import labels as L  # noqa: E402
from .volume import CropBox  # noqa: E402


def _table_text(regions: dict) -> str:
    def fmt(value):
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
    lines = []
    for region in regions.values():
        volume, burden = region["volume"], region["burden_percent"]
        lines.append(f"in the {region['name']}: CNR scar/myocardium {fmt(volume.get('cnr_scar_myo_original'))} -> "
                     f"{fmt(volume.get('cnr_scar_myo_enhanced'))}, CNR scar/blood "
                     f"{fmt(volume.get('cnr_scar_blood_original'))} -> {fmt(volume.get('cnr_scar_blood_enhanced'))}, "
                     f"scar {fmt(burden.get('original'))} -> {fmt(burden.get('enhanced'))} % of myocardium")
    return "\n".join(lines)


def slices_to_show(roi: np.ndarray, labels: np.ndarray, max_slices: int) -> np.ndarray:
    """Up to ``max_slices`` slices with the most scar, in order; slices with the most ROI where there is none."""
    scar = (labels == L.SCAR).sum(axis=(1, 2))
    amount = scar if scar.any() else roi.sum(axis=(1, 2))
    order = np.argsort(-amount, kind="stable")[:max_slices]
    order = order[amount[order] > 0]
    return np.sort(order) if len(order) else np.arange(min(max_slices, len(roi)))


def write_report(path: Path, original: np.ndarray, enhanced: np.ndarray, uncertainty: np.ndarray, roi: np.ndarray,
                 labels: np.ndarray, regions: dict, title: str = "ScarEnhance", max_slices: int = 3) -> Path:
    """All arrays are (n, h, w) slice stacks; shows up to ``max_slices`` slices cropped around the heart."""
    order = slices_to_show(roi, labels, max_slices)
    box = CropBox.around(roi, margin=1.6) if roi.any() else CropBox(0, 0, max(original.shape[1:]))
    columns = (("original", original, "gray"), ("enhanced", enhanced, "gray"),
               ("enhanced - original", enhanced - original, "RdBu_r"), ("uncertainty (SD over k)", uncertainty, "magma"))
    height = 3.1 * len(order) + 1.2
    figure, axes = plt.subplots(len(order), 4, figsize=(12, height), squeeze=False)
    for row, index in enumerate(order):
        window = np.percentile(box.extract(original[index:index + 1]), (0.5, 99.5))
        for column, (name, volume, cmap) in enumerate(columns):
            crop = box.extract(volume[index:index + 1])[0]
            if cmap == "gray":
                limits = dict(vmin=window[0], vmax=window[1])
            elif cmap == "RdBu_r":
                extent = max(float(np.abs(crop).max()), 1e-6)
                limits = dict(vmin=-extent, vmax=extent)
            else:
                limits = dict(vmin=0, vmax=max(float(crop.max()), 1e-6))
            axis = axes[row, column]
            axis.imshow(crop, cmap=cmap, **limits)
            axis.contour(box.extract(roi[index:index + 1])[0], levels=[0.5], colors="yellow", linewidths=0.6)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name)
            if column == 0:
                axis.set_ylabel(f"slice {index}")
    figure.suptitle(f"{title}\n{_table_text(regions)}", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 1.0 / height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
