"""Readouts: CNR of scar against myocardium and blood pool, SSIM/PSNR against the gamma target,
scar regions by n-SD and FWHM thresholds (and the CNR read in each), and Dice of a segmentation."""
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
    values = image[region_b].astype(np.float64)  # float32's SD of equal values is 1e-7 of them, not 0
    level, spread = float(values.mean()), float(values.std())
    if not has_spread(spread, level):
        return float("nan")
    return abs(float(image[region_a].mean()) - level) / spread


def has_spread(spread, level) -> np.ndarray:
    """Whether an SD is more than floating-point rounding of values around ``level``: the SD of equal float64
    values comes out near 1e-16, not 0, and would make a ratio of 1e16 or a threshold at the values themselves."""
    return np.asarray(spread) > 1e-9 * np.maximum(1.0, np.abs(level))


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


N_SD = 5.0  # n-SD threshold above the remote myocardium
REMOTE_SECTORS = 6  # angular sectors of each slice's myocardium; the darkest one is the remote reference
MIN_ENHANCED_PIXELS = 10  # connected enhancement smaller than this is noise, not enhancement
MIN_REMOTE_PIXELS = 10  # a sector smaller than this is no remote reference: its mean and SD would be guesses
REMOTE_TRIM_SD = 3.0  # remote pixels this many robust SDs above the rest's median are enhancement, left out

# Where a readout is read: each region is drawn on the original image, so CNRs before and after compare the same
# pixels; a threshold region's scar burden after enhancement is drawn again on the enhanced image.
REGIONS = {
    "scar_segment": "Scar segment",
    "nsd": f"{N_SD:g}-SD region",
    "fwhm": "FWHM region",
}
REGION_DESCRIPTIONS = {
    "scar_segment": "the Scar segment (labels)",
    "nsd": f"myocardium brighter than the remote mean + {N_SD:g} SD, slice by slice (remote: the darkest of "
           f"{REMOTE_SECTORS} sectors of the slice, without its pixels {REMOTE_TRIM_SD:g} robust SD above its "
           f"median; no reference on a slice without a sector of {MIN_REMOTE_PIXELS} pixels), in connected parts "
           f"(touching at corners counts) of at least {MIN_ENHANCED_PIXELS} pixels; its burden after enhancement "
           "drawn again on the enhanced image",
    "fwhm": f"myocardium at or above half-way from the remote mean to the maximum of the {N_SD:g}-SD region, slice "
            f"by slice, in connected parts of at least {MIN_ENHANCED_PIXELS} pixels; empty on a slice without a "
            f"{N_SD:g}-SD region; its burden after enhancement drawn again on the enhanced image",
}


def remote_myocardium(image: np.ndarray, labels: np.ndarray, sectors: int = REMOTE_SECTORS) -> np.ndarray:
    """The darkest of ``sectors`` angular sectors (around the myocardium's centre) of each slice's myocardium,
    healthy and scar together: a remote reference that does not rest on anybody's scar label. Sectors under
    MIN_REMOTE_PIXELS pixels are not candidates (the darkest of a few pixels is chance); a slice with none has no
    remote myocardium."""
    myocardium = np.isin(labels, (L.MYOCARDIUM, L.SCAR))
    remote = np.zeros_like(myocardium)
    for index, wall in enumerate(myocardium):
        if not wall.any():
            continue
        rows, cols = np.nonzero(wall)
        angles = np.arctan2(rows - rows.mean(), cols - cols.mean())
        sector = np.minimum((angles + np.pi) / (2 * np.pi) * sectors, sectors - 1).astype(int)
        values = image[index][rows, cols]
        means = [values[sector == s].mean() if (sector == s).sum() >= MIN_REMOTE_PIXELS else np.inf
                 for s in range(sectors)]
        if not np.isfinite(means).any():
            continue  # a wall too small to hold a remote sector: this slice has no reference
        darkest = sector == int(np.argmin(means))
        remote[index, rows[darkest], cols[darkest]] = True
    return remote


def remote_reference(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Each slice's mean and SD (n,) of its remote myocardium (``remote_myocardium``), NaN on a slice with under two
    remote pixels; None where no slice has them. Per slice, as a reader places a remote ROI on each slice: slices
    differ in brightness (EMIDEC's PNGs are rescaled slice by slice; coil sensitivity and nulling vary), and one SD
    pooled over the volume would add those differences to every slice's threshold."""
    remote = remote_myocardium(image, labels)
    means, spreads = np.full(len(image), np.nan), np.full(len(image), np.nan)
    for index, (plane, mask) in enumerate(zip(image, remote)):
        if mask.sum() >= 2:
            values = _without_enhanced_tail(plane[mask].astype(float))
            means[index], spreads[index] = values.mean(), values.std()
    return (means, spreads) if np.isfinite(means).any() else None


def _without_enhanced_tail(values: np.ndarray) -> np.ndarray:
    """The remote pixels without those more than REMOTE_TRIM_SD robust SDs (1.4826 x the median absolute deviation)
    above the median, repeated until none is: where scar reaches every sector of a slice (subendocardial all round)
    the darkest sector holds some, and its mean and SD would put the threshold above all the scar. A healthy
    sector loses little (about 0.15 % of a large normally distributed one, up to 2 % of one of 10 pixels)."""
    kept = values
    while len(kept) > 2:
        median = np.median(kept)
        spread = 1.4826 * np.median(np.abs(kept - median))
        inside = kept[kept <= median + REMOTE_TRIM_SD * spread]
        if not spread > 0 or len(inside) == len(kept) or len(inside) < 2:
            break
        kept = inside
    return kept


def sd_above_remote(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each pixel's brightness in SD above the mean of its slice's remote myocardium (``remote_reference``); NaN on
    a slice without a remote reference (under two pixels, or no spread)."""
    reference = remote_reference(image, labels)
    if reference is None:
        return np.full(image.shape, np.nan)
    mean, spread = (values[:, None, None] for values in reference)
    measurable = has_spread(spread, mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(measurable, (image - mean) / np.where(measurable, spread, 1.0), np.nan)


def _large_parts(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """In-plane connected parts of at least ``min_pixels`` pixels, slice by slice; pixels touching at a corner are
    one part (a thin subendocardial rim runs diagonally across the pixel grid)."""
    kept = np.zeros_like(mask)
    for index, plane in enumerate(mask):
        parts, count = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
        if count:
            sizes = ndimage.sum_labels(plane, parts, index=np.arange(1, count + 1))
            kept[index] = np.isin(parts, 1 + np.flatnonzero(sizes >= min_pixels))
    return kept


def enhanced_regions(image: np.ndarray, labels: np.ndarray, n_sd: float = N_SD) -> dict[str, np.ndarray]:
    """Reproducible scar regions inside the myocardium (healthy + scar labels) that rest on no scar label, slice by
    slice against that slice's remote myocardium (``remote_reference``): ``nsd``, brighter than the remote mean +
    n SD; ``fwhm``, at or above half-way from the remote mean to the maximum of the slice's ``nsd`` region (full
    width at half maximum, read only where there is enhancement: empty on a slice without an ``nsd`` region, so on
    a heart without enhancement). Half-way from the remote mean is the classic half of the maximum where healthy
    myocardium is nulled to about 0; with an intensity offset (EMIDEC's PNGs put healthy myocardium near 150 of
    255) half of the maximum lies below all the myocardium and would call the whole wall scar. No region on a slice
    whose remote myocardium has no spread (clipped or nulled). Parts smaller than MIN_ENHANCED_PIXELS are noise."""
    myocardium = np.isin(labels, (L.MYOCARDIUM, L.SCAR))
    regions = {"nsd": np.zeros_like(myocardium), "fwhm": np.zeros_like(myocardium)}
    reference = remote_reference(image, labels)
    if reference is None:
        return regions
    for index, (baseline, spread) in enumerate(zip(*reference)):
        if not has_spread(spread, baseline):  # no remote wall on this slice, or no spread to measure against
            continue
        wall, plane = myocardium[index:index + 1], image[index:index + 1]
        enhanced = _large_parts(wall & (plane > baseline + n_sd * spread), MIN_ENHANCED_PIXELS)
        if enhanced.any():
            half_maximum = baseline + 0.5 * (plane[enhanced].max() - baseline)
            regions["nsd"][index] = enhanced[0]
            regions["fwhm"][index] = _large_parts(wall & (plane >= half_maximum), MIN_ENHANCED_PIXELS)[0]
    return regions


def percent_of_myocardium(region: np.ndarray, labels: np.ndarray) -> float:
    myocardium = np.isin(labels, (L.MYOCARDIUM, L.SCAR))
    return 100.0 * float((region & myocardium).sum()) / float(myocardium.sum()) if myocardium.any() else float("nan")


def _with_region_as_scar(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Labels whose scar is ``region`` and whose healthy myocardium is the rest of the myocardium."""
    relabelled = np.select([labels == L.BLOOD_POOL, np.isin(labels, (L.MYOCARDIUM, L.SCAR))],
                           [L.BLOOD_POOL, L.MYOCARDIUM], L.BACKGROUND).astype(np.uint8)  # other values: no tissue
    relabelled[region & (relabelled == L.MYOCARDIUM)] = L.SCAR
    return relabelled


def region_readouts(original: np.ndarray, enhanced: np.ndarray, labels: np.ndarray) -> dict:
    """CNR before and after, and scar burden, in each of REGIONS; (n, h, w) stacks. Each region is drawn on the
    original and read in both images; the burden of a threshold region is also recomputed on the enhanced image
    (does enhancement make more of the wall look like scar?)."""
    on_original = {"scar_segment": labels == L.SCAR, **enhanced_regions(original, labels)}
    on_enhanced = {"scar_segment": labels == L.SCAR, **enhanced_regions(enhanced, labels)}
    regions = {}
    for key, name in REGIONS.items():
        entry = {"name": name, "description": REGION_DESCRIPTIONS[key],
                 "burden_percent": {"original": percent_of_myocardium(on_original[key], labels),
                                    "enhanced": percent_of_myocardium(on_enhanced[key], labels)}}
        entry.update(cnr_readouts(original, enhanced, _with_region_as_scar(labels, on_original[key])))
        regions[key] = entry
    return {"regions": regions}


def dice_per_class(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of the heart ROI, of each class, and of the wall (healthy myocardium and scar: EMIDEC's and MYOSAIQ's
    "myocardium", the region challenges report); NaN where both are empty."""
    def dice(a, b):
        total = a.sum() + b.sum()
        return float(2.0 * (a & b).sum() / total) if total else float("nan")

    scores = {"roi": dice(predicted > 0, truth > 0)}
    for label, name in L.NAMES.items():
        scores[name.replace(" ", "_")] = dice(predicted == label, truth == label)
    wall = (L.MYOCARDIUM, L.SCAR)
    scores["wall"] = dice(np.isin(predicted, wall), np.isin(truth, wall))
    return scores
