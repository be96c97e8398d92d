"""Reproducible evaluation in the paper's form: for each held-out case with scar, enhance inside the heart ROI
and report SSIM and PSNR against the gamma target (on a crop around the heart) and CNR(scar, myo),
CNR(scar, blood) of the original and the enhanced image, always read in the reference labels.

The ROI comes from the reference labels (the paper's protocol) or, on the user's path, from the bundled
segmentation model. Beyond the paper, each case also reports how much scar is brightened against how much
the target brightens it, which share of the brightened pixels lies outside scar (invented scar), the mean
change in healthy myocardium, and on cases without scar the FWHM scar burden before and after.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from . import labels as L
from .datasets import Case
from .gamma import gamma_target
from .metrics import cnr_readouts, enhanced_regions, myocardium_error_by_boundary, percent_of_myocardium, ssim_psnr
from .pipeline import EnhanceParameters, enhance
from .volume import CropBox, SliceScale, as_slices, like, slice_axis
from .weights import LoadedModel

SLICE_THICKNESS_MM = 10.0  # EMIDEC-like; only used to make a volume of a case's slices
BRIGHTENED = 10.0  # grey levels on [0, 255]: a pixel brightened by more counts as brightened
METRICS = ("ssim", "psnr", "cnr_scar_myo_original", "cnr_scar_myo_enhanced",
           "cnr_scar_blood_original", "cnr_scar_blood_enhanced", "myo_error_near_border", "myo_error_inner",
           "scar_brightening", "target_scar_brightening", "brightened_outside_scar_percent", "myo_mean_abs_change")
NORMAL_METRICS = ("fwhm_burden_original", "fwhm_burden_enhanced", "brightened_pixels_percent", "myo_mean_abs_change")

# (image, labels whose heart is the ROI and whose tissues guide a baseline) -> enhanced image
Enhancer = Callable[[sitk.Image, sitk.Image], sitk.Image]


def diffusion_enhancer(model: LoadedModel, parameters: EnhanceParameters) -> Enhancer:
    """The enhancement model inside the labels' heart ROI, dilated by ``parameters.dilation_mm`` as a user would
    (default none)."""
    return lambda image, labels: enhance(image, labels, model, parameters).enhanced


def gamma_enhancer(image: sitk.Image, labels: sitk.Image) -> sitk.Image:
    """The paper's gamma correction applied with ``labels`` (the label-guided baseline: with predicted labels it
    is what a segmentation alone gives; with the reference labels it is the target itself)."""
    axis = slice_axis(image)
    original = as_slices(sitk.GetArrayFromImage(image).astype(np.float32), axis)
    tissues = as_slices(sitk.GetArrayFromImage(labels), axis)
    scale = SliceScale.of(original)
    corrected = np.stack([gamma_target(s, t) for s, t in zip(scale.forward(original), tissues)])
    return like(np.moveaxis(scale.inverse(corrected), 0, axis), image)


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


def change_readouts(original255: np.ndarray, enhanced255: np.ndarray, target255: np.ndarray,
                    truth: np.ndarray) -> dict:
    """What the enhancement changed, on the [0, 255] scale: mean brightening of scar (and the target's), the
    share of pixels brightened by more than BRIGHTENED grey levels that lie outside scar, and the mean absolute
    change in healthy myocardium (which the target leaves alone)."""
    change = enhanced255.astype(np.float64) - original255
    scar, myocardium = truth == L.SCAR, truth == L.MYOCARDIUM
    brightened = change > BRIGHTENED
    count, outside = int(brightened.sum()), int((brightened & ~scar).sum())
    nan = float("nan")
    return {"scar_brightening": float(change[scar].mean()) if scar.any() else nan,
            "target_scar_brightening": float((target255 - original255)[scar].mean()) if scar.any() else nan,
            "brightened_outside_scar_percent": 100.0 * outside / count if count else nan,
            "brightened_pixels": count, "brightened_outside_scar_pixels": outside,
            "brightened_pixels_percent": 100.0 * count / max(int((truth > 0).sum()), 1),
            "myo_mean_abs_change": float(np.abs(change[myocardium]).mean()) if myocardium.any() else nan}


def evaluate_case(case: Case, enhancer: Enhancer, roi_labels: Optional[np.ndarray] = None) -> dict:
    """Enhance inside the heart of ``roi_labels`` (default: the reference), read everything in the reference."""
    image, reference = case_volume(case)
    given = reference if roi_labels is None else like(roi_labels.astype(np.uint8), reference)
    enhanced_image = enhancer(image, given)
    axis = slice_axis(image)
    original = as_slices(sitk.GetArrayFromImage(image), axis)
    enhanced = as_slices(sitk.GetArrayFromImage(enhanced_image), axis)
    truth = as_slices(sitk.GetArrayFromImage(reference), axis)
    scale = SliceScale.of(original)
    original255, enhanced255 = scale.forward(original), scale.forward(enhanced)
    with_roi = np.flatnonzero(truth.reshape(len(truth), -1).any(axis=1))
    target255 = np.stack([gamma_target(original255[i], truth[i]) for i in with_roi])
    row = {"case": case.name, "slices": int(len(with_roi)), "has_scar": case.has_scar}
    row.update(heart_crop_ssim_psnr(enhanced255[with_roi], target255, truth[with_roi]))
    row.update(myocardium_error_by_boundary(enhanced255[with_roi], target255, truth[with_roi]))
    row.update(change_readouts(original255[with_roi], enhanced255[with_roi], target255, truth[with_roi]))
    row.update(cnr_readouts(original, enhanced, truth)["volume"])
    row["fwhm_burden_original"] = percent_of_myocardium(enhanced_regions(original, truth)["fwhm"], truth)
    row["fwhm_burden_enhanced"] = percent_of_myocardium(enhanced_regions(enhanced, truth)["fwhm"], truth)
    return row


def _means(rows: list[dict], keys) -> dict:
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        summary[key] = float(values.mean()) if values.size else float("nan")
    return summary


def pooled_outside_scar_percent(rows: list[dict]) -> float:
    """The share of all the cases' brightened pixels that lie outside scar. The cases' mean of their own shares
    swings with a case that brightens a handful of pixels (0 or 100 %); pooled, each pixel counts once. NaN for
    rows without the counts (files written before them) or without brightened pixels."""
    if not rows or any("brightened_pixels" not in r for r in rows):
        return float("nan")
    brightened = sum(r["brightened_pixels"] for r in rows)
    return 100.0 * sum(r["brightened_outside_scar_pixels"] for r in rows) / brightened if brightened else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Means over the cases with scar (NaN-free cases only for CNR), and over the cases without scar of what
    must not happen there: FWHM scar burden before and after, brightened pixels, change in the myocardium."""
    scar_rows = [r for r in rows if r.get("has_scar", True)]
    normal_rows = [r for r in rows if not r.get("has_scar", True)]
    summary = _means(scar_rows, METRICS)
    if np.isfinite(summary["cnr_scar_myo_original"]) and summary["cnr_scar_myo_original"] > 0:
        summary["cnr_scar_myo_gain_percent"] = 100.0 * (summary["cnr_scar_myo_enhanced"] /
                                                        summary["cnr_scar_myo_original"] - 1.0)
    gains = [100.0 * (r["cnr_scar_myo_enhanced"] / r["cnr_scar_myo_original"] - 1.0) for r in scar_rows
             if np.isfinite(r["cnr_scar_myo_enhanced"]) and r["cnr_scar_myo_original"] > 0]
    summary["worst_case_cnr_scar_myo_gain_percent"] = float(min(gains)) if gains else float("nan")
    summary["brightened_outside_scar_pooled_percent"] = pooled_outside_scar_percent(scar_rows)
    summary["cases"] = len(scar_rows)
    if normal_rows:
        summary["normal"] = {**_means(normal_rows, NORMAL_METRICS), "cases": len(normal_rows)}
    return summary


def evaluate(cases: list[Case], enhancer: Enhancer, roi_labels: Optional[Callable[[Case], np.ndarray]] = None,
             on_case: Optional[Callable[[str], None]] = None) -> dict:
    """Per-case rows and their summary (see ``summarise``). ``roi_labels(case)``: the labels that give the ROI
    (and guide a baseline) on the user's path; default the reference."""
    if not any(case.has_scar for case in cases):  # before any case is enhanced
        raise ValueError("no case with scar to evaluate")
    rows = []
    for case in cases:
        rows.append(evaluate_case(case, enhancer, roi_labels(case) if roi_labels else None))
        if on_case is not None:
            on_case(case.name)
    return {"rows": rows, "summary": summarise(rows)}


def predicted_labels(model: LoadedModel) -> Callable[[Case], np.ndarray]:
    """The segmentation model's post-processed labels of a case (the user's path), computed once per case."""
    from .segmentation import segment_slices
    device = next(model.network.parameters()).device
    cache: dict[str, np.ndarray] = {}

    def labels_of(case: Case) -> np.ndarray:
        if case.name not in cache:
            cache[case.name] = segment_slices(model.network, case.images, case.spacing, model.config, device,
                                              case.slice_mm)
        return cache[case.name]
    return labels_of


HEART_CROP_MM = 144.0  # MS-CMRSeg's crops: 192 pixels of 0.75 mm


def _heart_crop(case: Case) -> tuple[slice, slice]:
    """A square of HEART_CROP_MM around the reference heart (clipped to the frame)."""
    centre = np.argwhere(case.labels > 0)[:, 1:].mean(axis=0)
    half = [int(round(HEART_CROP_MM / 2 / s)) for s in case.spacing]
    return tuple(slice(max(0, int(c) - h), int(c) + h) for c, h in zip(centre, half))


def scar_percent(labels: np.ndarray) -> float:
    """Scar as % of the myocardium (healthy + scar); NaN without myocardium."""
    myocardium = np.isin(labels, (L.MYOCARDIUM, L.SCAR)).sum()
    return 100.0 * float((labels == L.SCAR).sum()) / myocardium if myocardium else float("nan")


def segmentation_row(case: Case, predicted: np.ndarray, merge_scar: bool) -> dict:
    """Dice per class (NaN where the reference lacks the class), and for scar-labelled data the scar burden
    predicted and in the reference, and the scar volume predicted on a case without scar (false positive)."""
    from .metrics import dice_per_class
    truth = case.labels
    if merge_scar:
        predicted, truth = (np.where(a == L.SCAR, L.MYOCARDIUM, a) for a in (predicted, truth))
    scores = dice_per_class(predicted, truth)
    for label, name in L.NAMES.items():  # Dice over the cases that have the class, as the field reports it
        if not (truth == label).any():
            scores[name.replace(" ", "_")] = float("nan")
    if not np.isin(truth, (L.MYOCARDIUM, L.SCAR)).any():
        scores["wall"] = float("nan")
    row = {"case": case.name, **scores}
    if merge_scar:
        del row["scar"]
        return row
    row["scar_burden_predicted"] = scar_percent(predicted)
    row["scar_burden_reference"] = scar_percent(truth)
    if not (truth == L.SCAR).any():
        voxel_ml = case.spacing[0] * case.spacing[1] * case.slice_mm / 1000.0
        row["false_positive_scar_ml"] = float((predicted == L.SCAR).sum() * voxel_ml)
    return row


def summarise_segmentation(rows: list[dict]) -> dict:
    """Means over the cases that have each value, each with its 95 % interval over cases; scar burden as mean
    absolute difference and Bland-Altman bias with 95 % limits of agreement (predicted - reference), over all cases
    and over the cases with reference scar (normal hearts, at 0 reference, pull the first towards agreement)."""
    from .compare import mean_interval
    keys = [k for k in dict.fromkeys(k for r in rows for k in r)
            if k not in ("case", "scar_burden_predicted", "scar_burden_reference")]
    summary = {"cases": len(rows)}
    for key in keys:
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        summary[key] = float(values.mean()) if values.size else float("nan")
        summary[f"{key}_cases"] = int(values.size)
        summary[f"{key}_ci95"] = list(mean_interval(values))
    pairs = np.array([(r["scar_burden_predicted"], r["scar_burden_reference"]) for r in rows
                      if "scar_burden_predicted" in r], dtype=float).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    summary.update(_burden_agreement(pairs, ""))
    summary.update(_burden_agreement(pairs[pairs[:, 1] > 0], "_scar_cases"))
    return summary


def _burden_agreement(pairs: np.ndarray, suffix: str) -> dict:
    """Mean absolute difference, bias and 95 % limits of agreement of (predicted, reference) burden pairs."""
    if not len(pairs):
        return {}
    difference = pairs[:, 0] - pairs[:, 1]
    return {f"scar_burden_mad{suffix}": float(np.abs(difference).mean()),
            f"scar_burden_bias{suffix}": float(difference.mean()),
            f"scar_burden_loa{suffix}": float(1.96 * difference.std(ddof=1)) if len(pairs) > 1 else float("nan")}


def evaluate_segmentation(cases: list[Case], model: LoadedModel, merge_scar: bool = False) -> dict:
    """Per case: Dice per class of the post-processed U-Net prediction on the whole frame, the heart-ROI Dice
    when the same model sees only a HEART_CROP_MM square around the heart (whole frames must not do worse),
    scar burden and false-positive scar. ``merge_scar`` for data without scar labels."""
    from .metrics import dice_per_class
    from .segmentation import segment_slices
    device = next(model.network.parameters()).device
    rows = []
    for case in cases:
        predicted = segment_slices(model.network, case.images, case.spacing, model.config, device, case.slice_mm)
        row = segmentation_row(case, predicted, merge_scar)
        crop = (slice(None), *_heart_crop(case))
        cropped = segment_slices(model.network, case.images[crop], case.spacing, model.config, device, case.slice_mm)
        row["roi_heart_crop"] = dice_per_class(cropped, case.labels[crop])["roi"]
        row["roi_whole_frame_in_crop"] = dice_per_class(predicted[crop], case.labels[crop])["roi"]
        rows.append(row)
    return {"rows": rows, "summary": summarise_segmentation(rows)}


def _interval(bounds) -> str:
    """'[low, high]' of a summary's interval; '' where it is not available (fewer than 2 cases, older files)."""
    if not bounds or not all(b is not None and np.isfinite(b) for b in bounds):
        return ""
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def number_cell(value, form: str = ".3f") -> str:
    """A value formatted for a table cell; "n/a" where it is missing or not a number."""
    return format(value, form) if value is not None and np.isfinite(value) else "n/a"


def summary_cell(summary: dict, key: str, form: str = ".3f") -> str:
    """A summary's value formatted for a table cell; "n/a" where it is missing or not a number."""
    return number_cell(summary.get(key), form)


def segmentation_table(results: dict[str, dict]) -> str:
    lines = ["| data | cases | Dice ROI | ROI in a heart crop: whole-frame / crop input | blood pool | "
             "myocardium: wall / healthy | scar [95 % CI] (cases) | false-positive scar, normal cases (mL) | "
             "scar burden MAD (points) | bias [95 % LoA] | cases with scar: burden MAD, bias [95 % LoA] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    for name, result in results.items():
        s = result["summary"]
        scar_parts = (summary_cell(s, "scar"), _interval(s.get("scar_ci95")), f"({s.get('scar_cases', 0)})")
        scar = " ".join(part for part in scar_parts if part) if "scar" in s else "n/a"
        false_positive = f"{summary_cell(s, 'false_positive_scar_ml', '.2f')} ({s['false_positive_scar_ml_cases']})" \
            if s.get("false_positive_scar_ml_cases") else "n/a"
        agreement = f"{summary_cell(s, 'scar_burden_bias', '.1f')} [±{summary_cell(s, 'scar_burden_loa', '.1f')}]" \
            if "scar_burden_bias" in s else "n/a"
        on_scar = (f"{summary_cell(s, 'scar_burden_mad_scar_cases', '.1f')}, "
                   f"{summary_cell(s, 'scar_burden_bias_scar_cases', '.1f')} "
                   f"[±{summary_cell(s, 'scar_burden_loa_scar_cases', '.1f')}]") \
            if "scar_burden_bias_scar_cases" in s else "n/a"
        lines.append(f"| {name} | {s['cases']} | {summary_cell(s, 'roi')} | "
                     f"{summary_cell(s, 'roi_whole_frame_in_crop')} / {summary_cell(s, 'roi_heart_crop')} | "
                     f"{summary_cell(s, 'blood_pool')} | {summary_cell(s, 'wall')} / {summary_cell(s, 'myocardium')} | "
                     f"{scar} | {false_positive} | "
                     f"{summary_cell(s, 'scar_burden_mad', '.1f')} | {agreement} | {on_scar} |")
    return "\n".join(lines) + "\n"


def markdown_table(results: dict[str, dict]) -> str:
    """One line per variant: the paper's columns, then what was brightened where, and the cases without scar."""
    lines = ["| variant | cases | SSIM (%) | PSNR (dB) | CNR scar/myo orig -> enh | CNR scar/blood orig -> enh | "
             "scar brightening: enh / target | brightened outside scar (%): cases' mean / pooled | "
             "myocardium mean abs change | "
             "normal cases: FWHM burden orig -> enh (%) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    for name, result in results.items():
        s = result["summary"]
        normal = s.get("normal")
        normal_text = f"{number_cell(normal['fwhm_burden_original'], '.1f')} -> " \
                      f"{number_cell(normal['fwhm_burden_enhanced'], '.1f')} ({normal['cases']})" if normal else "n/a"
        lines.append(f"| {name} | {s['cases']} | {number_cell(100 * s['ssim'], '.1f')} | "
                     f"{number_cell(s['psnr'], '.1f')} | "
                     f"{number_cell(s['cnr_scar_myo_original'], '.2f')} -> "
                     f"{number_cell(s['cnr_scar_myo_enhanced'], '.2f')} | "
                     f"{number_cell(s['cnr_scar_blood_original'], '.2f')} -> "
                     f"{number_cell(s['cnr_scar_blood_enhanced'], '.2f')} | "
                     f"{number_cell(s.get('scar_brightening'), '.1f')} / "
                     f"{number_cell(s.get('target_scar_brightening'), '.1f')} | "
                     f"{number_cell(s.get('brightened_outside_scar_percent'), '.1f')} / "
                     f"{number_cell(s.get('brightened_outside_scar_pooled_percent'), '.1f')} | "
                     f"{number_cell(s.get('myo_mean_abs_change'), '.1f')} | "
                     f"{normal_text} |")
    return "\n".join(lines) + "\n"
