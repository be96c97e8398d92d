"""PNG report: original, enhanced, difference and uncertainty of the slices with most ROI, with the ROI outline."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .volume import CropBox  # noqa: E402


def _table_text(volume: dict) -> str:
    def fmt(value):
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
    return (f"CNR scar/myocardium  {fmt(volume.get('cnr_scar_myo_original'))} -> "
            f"{fmt(volume.get('cnr_scar_myo_enhanced'))}     "
            f"CNR scar/blood  {fmt(volume.get('cnr_scar_blood_original'))} -> "
            f"{fmt(volume.get('cnr_scar_blood_enhanced'))}")


def write_report(path: Path, original: np.ndarray, enhanced: np.ndarray, uncertainty: np.ndarray, roi: np.ndarray,
                 cnr_volume: dict, title: str = "ScarEnhance", max_slices: int = 3) -> Path:
    """All arrays are (n, h, w) slice stacks; shows up to ``max_slices`` slices cropped around the heart."""
    order = np.argsort(-roi.sum(axis=(1, 2)))[:max_slices]
    order = np.sort(order[roi[order].any(axis=(1, 2))]) if roi.any() else np.arange(min(max_slices, len(roi)))
    box = CropBox.around(roi, margin=1.6) if roi.any() else CropBox(0, 0, max(original.shape[1:]))
    columns = (("original", original, "gray"), ("enhanced", enhanced, "gray"),
               ("enhanced - original", enhanced - original, "RdBu_r"), ("uncertainty (SD over k)", uncertainty, "magma"))
    figure, axes = plt.subplots(len(order), 4, figsize=(12, 3.1 * len(order) + 0.6), squeeze=False)
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
    figure.suptitle(f"{title}\n{_table_text(cnr_volume)}", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
