"""Reproducible evaluation in the paper's form: for each held-out case with scar, enhance inside the
ground-truth heart ROI and report SSIM and PSNR against the gamma target (on a crop around the heart)
and CNR(scar, myo), CNR(scar, blood) of the original and the enhanced image."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from . import labels as L
from .datasets import Case
from .gamma import gamma_target
from .metrics import cnr_readouts, myocardium_error_by_boundary, ssim_psnr
from .pipeline import EnhanceParameters, enhance
from .volume import CropBox, SliceScale, as_slices, slice_axis
from .weights import LoadedModel

SLICE_THICKNESS_MM = 10.0  # EMIDEC-like; only used to make a volume of a case's slices
METRICS = ("ssim", "psnr", "cnr_scar_myo_original", "cnr_scar_myo_enhanced",
           "cnr_scar_blood_original", "cnr_scar_blood_enhanced", "myo_error_near_border", "myo_error_inner")


def case_volume(case: Case) -> tuple[sitk.Image, sitk.Image]:
    image = sitk.GetImageFromArray(case.images.astype(np.float32))
    image.SetSpacing((case.spacing[1], case.spacing[0], SLICE_THICKNESS_MM))
    labels = sitk.GetImageFromArray(case.labels.astype(np.uint8))
    labels.CopyInformation(image)
    return image, labels


def heart_crop_ssim_psnr(prediction255: np.ndarray, reference255: np.ndarray, truth: np.ndarray) -> dict:
    """SSIM and PSNR on a square crop around the heart ROI of ``truth``; (n, h, w) stacks on the [0, 255] scale."""
    box = CropBox.around(L.heart_roi(truth), margin=1.3)
    return ssim_psnr(box.extract(prediction255), box.extract(reference255))


def evaluate_case(case: Case, model: LoadedModel, parameters: EnhanceParameters) -> dict:
    image, labels = case_volume(case)
    result = enhance(image, labels, model, replace(parameters, dilation_mm=0.0))
    axis = slice_axis(image)
    original = as_slices(sitk.GetArrayFromImage(image), axis)
    enhanced = as_slices(sitk.GetArrayFromImage(result.enhanced), axis)
    truth = as_slices(sitk.GetArrayFromImage(labels), axis)
    scale = SliceScale.of(original)
    original255, enhanced255 = scale.forward(original), scale.forward(enhanced)
    with_roi = np.flatnonzero(truth.reshape(len(truth), -1).any(axis=1))
    target255 = np.stack([gamma_target(original255[i], truth[i]) for i in with_roi])
    row = {"case": case.name, "slices": int(len(with_roi))}
    row.update(heart_crop_ssim_psnr(enhanced255[with_roi], target255, truth[with_roi]))
    row.update(myocardium_error_by_boundary(enhanced255[with_roi], target255, truth[with_roi]))
    row.update(cnr_readouts(original, enhanced, truth)["volume"])
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean over cases of each metric (NaN-free cases only for CNR)."""
    summary = {}
    for key in METRICS:
        values = np.array([r[key] for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        summary[key] = float(values.mean()) if values.size else float("nan")
    if np.isfinite(summary["cnr_scar_myo_original"]) and summary["cnr_scar_myo_original"] > 0:
        summary["cnr_scar_myo_gain_percent"] = 100.0 * (summary["cnr_scar_myo_enhanced"] /
                                                        summary["cnr_scar_myo_original"] - 1.0)
    summary["cases"] = len(rows)
    return summary


def evaluate(cases: list[Case], model: LoadedModel, parameters: EnhanceParameters,
             on_case: Optional[Callable[[str], None]] = None) -> dict:
    """Per-case rows and their summary, over the cases that contain scar."""
    rows = []
    for case in cases:
        if case.has_scar:
            rows.append(evaluate_case(case, model, parameters))
        if on_case is not None:
            on_case(case.name)
    if not rows:
        raise ValueError("no case with scar to evaluate")
    return {"rows": rows, "summary": summarise(rows)}


def evaluate_segmentation(cases: list[Case], model: LoadedModel, merge_scar: bool = False) -> dict:
    """Dice per case and class of the post-processed U-Net prediction; ``merge_scar`` for data without scar labels."""
    from .metrics import dice_per_class
    from .segmentation import postprocess, predict_slices
    device = next(model.network.parameters()).device
    rows = []
    for case in cases:
        predicted = postprocess(predict_slices(model.network, case.images, case.spacing, model.config, device))
        truth = case.labels
        if merge_scar:
            predicted, truth = (np.where(a == L.SCAR, L.MYOCARDIUM, a) for a in (predicted, truth))
        scores = dice_per_class(predicted, truth)
        if merge_scar:
            del scores["scar"]
        rows.append({"case": case.name, **scores})
    keys = [k for k in rows[0] if k != "case"] if rows else []
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    summary["cases"] = len(rows)
    return {"rows": rows, "summary": summary}


def segmentation_table(results: dict[str, dict]) -> str:
    lines = ["| data | cases | Dice ROI | blood pool | myocardium | scar |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        s = result["summary"]
        cells = [f"{s[k]:.3f}" if k in s else "n/a" for k in ("roi", "blood_pool", "myocardium", "scar")]
        lines.append(f"| {name} | {s['cases']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(results: dict[str, dict]) -> str:
    """One line per variant, in the paper's form."""
    lines = ["| variant | cases | SSIM (%) | PSNR (dB) | CNR scar/myo orig -> enh | CNR scar/blood orig -> enh |",
             "|---|---|---|---|---|---|"]
    for name, result in results.items():
        s = result["summary"]
        lines.append(f"| {name} | {s['cases']} | {100 * s['ssim']:.1f} | {s['psnr']:.1f} | "
                     f"{s['cnr_scar_myo_original']:.2f} -> {s['cnr_scar_myo_enhanced']:.2f} | "
                     f"{s['cnr_scar_blood_original']:.2f} -> {s['cnr_scar_blood_enhanced']:.2f} |")
    return "\n".join(lines) + "\n"
