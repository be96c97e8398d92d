"""Readouts: CNR of scar against myocardium and blood pool, SSIM/PSNR against the gamma target,
scar burden by n-SD and FWHM thresholds, and Dice of a segmentation."""
from __future__ import annotations

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from scipy import ndimage

from . import labels as L


def cnr(image: np.ndarray, region_a: np.ndarray, region_b: np.ndarray) -> float:
    """|mean(a) - mean(b)| / std(b); NaN when a region is empty or b has no spread."""
    if not region_a.any() or region_b.sum() < 2:
        return float("nan")
    spread = float(image[region_b].std())
    if spread == 0.0:
        return float("nan")
    return abs(float(image[region_a].mean()) - float(image[region_b].mean())) / spread


def cnr_pair(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    scar = labels == L.SCAR
    return {"cnr_scar_myo": cnr(image, scar, labels == L.MYOCARDIUM),
            "cnr_scar_blood": cnr(image, scar, labels == L.BLOOD_POOL)}


def cnr_readouts(original: np.ndarray, enhanced: np.ndarray, labels: np.ndarray) -> dict:
    """CNR before/after per slice and for the volume (pixels pooled over slices with scar).

    All arrays are (n_slices, h, w) slice stacks.
    """
    with_scar = [i for i in range(len(labels)) if (labels[i] == L.SCAR).any()]
    per_slice = []
    for i in with_scar:
        row = {"slice": int(i)}
        for name, image in (("original", original), ("enhanced", enhanced)):
            row.update({f"{key}_{name}": value for key, value in cnr_pair(image[i], labels[i]).items()})
        per_slice.append(row)
    volume = {}
    for name, image in (("original", original), ("enhanced", enhanced)):
        values = cnr_pair(image[with_scar], labels[with_scar]) if with_scar else \
            {"cnr_scar_myo": float("nan"), "cnr_scar_blood": float("nan")}
        volume.update({f"{key}_{name}": value for key, value in values.items()})
    return {"volume": volume, "slices": per_slice, "slices_with_scar": len(with_scar)}


def _as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))[:, None]


def ssim_psnr(prediction255: np.ndarray, target255: np.ndarray) -> dict[str, float]:
    """Mean SSIM and PSNR over 2D crops (n, h, w) on the [0, 255] scale."""
    prediction, target = _as_batch(prediction255), _as_batch(target255)
    window = min(7, min(prediction.shape[-2:]) // 2 * 2 - 1)
    ssim = SSIMMetric(spatial_dims=2, data_range=255.0, win_size=window)(prediction, target)
    psnr = PSNRMetric(max_val=255.0)(prediction, target)
    return {"ssim": float(ssim.mean()), "psnr": float(psnr[torch.isfinite(psnr)].mean()) if torch.isfinite(psnr).any()
            else float("inf")}


def myocardium_error_by_boundary(prediction: np.ndarray, target: np.ndarray, labels: np.ndarray,
                                 near_px: float = 2.5) -> dict[str, float]:
    """RMS of prediction - target on healthy myocardium near blood pool or scar (within ``near_px`` pixels,
    in-plane) and farther in; (n, h, w) stacks. The target leaves myocardium unchanged, so error there widens
    its SD, the denominator of CNR(scar, myo); near the borders it shows changes spilling over from neighbours."""
    myocardium = labels == L.MYOCARDIUM
    changed_neighbours = (labels == L.BLOOD_POOL) | (labels == L.SCAR)
    distance = np.stack([ndimage.distance_transform_edt(~region) if region.any() else np.full(region.shape, np.inf)
                         for region in changed_neighbours])
    error = prediction.astype(np.float64) - target
    near = myocardium & (distance <= near_px)

    def rms(region):
        return float(np.sqrt(np.mean(error[region] ** 2))) if region.any() else float("nan")

    return {"myo_error_near_border": rms(near), "myo_error_inner": rms(myocardium & ~near)}


def scar_burden(image: np.ndarray, labels: np.ndarray, n_sd: float = 5.0) -> dict[str, float]:
    """Scar as % of myocardium (myocardium + scar) by two classic thresholds.

    n-SD: above mean + n SD of remote (healthy) myocardium. FWHM: above half the maximum in the
    myocardium.
    """
    myocardium = (labels == L.MYOCARDIUM) | (labels == L.SCAR)
    remote = labels == L.MYOCARDIUM
    if not myocardium.any() or not remote.any():
        return {f"scar_percent_{n_sd:g}sd": float("nan"), "scar_percent_fwhm": float("nan")}
    values = image[myocardium]
    sd_threshold = image[remote].mean() + n_sd * image[remote].std()
    fwhm_threshold = 0.5 * values.max()
    return {f"scar_percent_{n_sd:g}sd": 100.0 * float((values > sd_threshold).mean()),
            "scar_percent_fwhm": 100.0 * float((values > fwhm_threshold).mean())}


def dice_per_class(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of the heart ROI and of each class; NaN where both are empty."""
    def dice(a, b):
        total = a.sum() + b.sum()
        return float(2.0 * (a & b).sum() / total) if total else float("nan")

    scores = {"roi": dice(predicted > 0, truth > 0)}
    for label, name in L.NAMES.items():
        scores[name.replace(" ", "_")] = dice(predicted == label, truth == label)
    return scores
