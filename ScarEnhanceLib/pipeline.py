"""Volume in, enhanced volume out: heart segmentation and localized partial-diffusion enhancement.

The input image and labels are never modified; every result is a new SimpleITK image with the
input's origin, spacing, direction and size. Outside the ROI the enhanced image equals the input
voxel for voxel; slices without ROI pass through unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch

from . import diffusion, segmentation
from . import labels as L
from .parameters import EnhanceParameters, network_evaluations
from .volume import (CropBox, InputError, SliceScale, as_slices, check_label_map, check_roi, check_volume,
                     from_slices, like, mask_to_model, resize, slice_axis, to_array)
from .weights import LoadedModel

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("a CUDA GPU was asked for, but none is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cuda or cpu, got {name!r}")
    return torch.device(name)


@dataclass
class EnhancementResult:
    enhanced: sitk.Image  # input geometry, pixel type and intensity scale
    uncertainty: sitk.Image  # float32: std over the k samples, in the input's intensity units
    roi: sitk.Image  # uint8: the (dilated) ROI that was enhanced


def _checked_labels(image: sitk.Image, labels: sitk.Image) -> np.ndarray:
    check_label_map(image, labels)
    return sitk.GetArrayFromImage(labels)


def _output_like(values: np.ndarray, reference: sitk.Image, roi: np.ndarray) -> sitk.Image:
    """The reference's voxels, bit for bit in its own pixel type (int32 and float64 included), with ``values``
    inside ``roi`` (rounded and clipped for integer types)."""
    out = sitk.GetArrayFromImage(reference).copy()
    inside = values[roi]
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        inside = np.clip(np.round(inside), info.min, info.max)
    out[roi] = inside.astype(out.dtype)
    return like(out, reference)


def enhance(image: sitk.Image, labels: sitk.Image, model: LoadedModel, parameters: EnhanceParameters = EnhanceParameters(),
            progress: Optional[Progress] = None, roi: Optional[sitk.Image] = None) -> EnhancementResult:
    """Enhance ``image`` inside the heart ROI: ``roi`` > 0 if given, else ``labels`` > 0, dilated by
    ``dilation_mm`` in-plane. A tissue-conditioned model also reads the blood pool and the wall (myocardium and
    scar) of ``labels``, and a tissue-scar one their scar."""
    parameters = parameters.validate()
    resolve_device(parameters.device)
    check_lambda_trained(model, parameters.lam)
    original = to_array(image)
    label_array = _checked_labels(image, labels)
    roi_source = label_array if roi is None else _checked_labels(image, roi)
    roi_image = segmentation.dilate_roi(like(roi_source, image), parameters.dilation_mm)
    axis = slice_axis(image)
    slices = as_slices(original, axis)
    roi_slices = as_slices(sitk.GetArrayFromImage(roi_image).astype(bool), axis)
    check_roi(roi_slices)
    tissue = as_slices(label_array, axis)
    if diffusion.map_names(model.config):
        check_tissue_labels(tissue, roi_slices)
    with_roi = np.flatnonzero(roi_slices.any(axis=(1, 2)))
    scale = SliceScale.of(slices)
    slices255 = scale.forward(slices)
    change255, std255 = _enhance_slices(slices255[with_roi], roi_slices[with_roi], tissue[with_roi], model,
                                        parameters, progress)

    enhanced255 = slices255.copy()
    uncertainty255 = np.zeros_like(slices255)
    enhanced255[with_roi] += change255
    uncertainty255[with_roi] = std255
    enhanced = scale.inverse(enhanced255)
    uncertainty = np.where(roi_slices, scale.inverse(uncertainty255) - scale.low[:, None, None], 0.0)
    return EnhancementResult(enhanced=_output_like(from_slices(enhanced, axis), image, from_slices(roi_slices, axis)),
                             uncertainty=like(from_slices(uncertainty, axis).astype(np.float32), image),
                             roi=roi_image)


def check_tissue_labels(labels: np.ndarray, roi: np.ndarray) -> None:
    """A tissue-conditioned model needs class labels (1 blood pool, 2 myocardium, 3 scar), not a bare ROI."""
    inside = labels[roi]
    if not np.isin(inside, (L.MYOCARDIUM, L.SCAR)).any() or not (inside == L.BLOOD_POOL).any():
        raise InputError("the enhancement model reads the blood pool (label 1) and the myocardium (labels 2 and 3) "
                         "inside the ROI, but the labels given lack one of them: give class labels (or let "
                         "ScarEnhance segment the heart)")


def _enhance_slices(slices255: np.ndarray, roi: np.ndarray, labels: np.ndarray, model: LoadedModel,
                    parameters: EnhanceParameters, progress: Optional[Progress]) -> tuple[np.ndarray, np.ndarray]:
    """Change and uncertainty (both [0, 255] scale, zero outside the ROI) of slices that have ROI."""
    config: diffusion.DiffusionConfig = model.config
    size = config.image_size
    box = CropBox.around(roi, margin=parameters.crop_margin)
    crops = resize(box.extract(slices255), size)
    masks = mask_to_model(box.extract(roi), size)
    tissue = None  # an image-only model (the bundled one) needs no maps
    if diffusion.map_names(config):
        tissue = np.stack([resize(box.extract(m), size)
                           for m in diffusion.tissue_maps(labels, config).transpose(1, 0, 2, 3)], axis=1)
    condition, window = diffusion.build_condition(crops, tissue, config)
    device = next(model.network.parameters()).device
    condition = torch.from_numpy(condition).to(device)
    mask = torch.from_numpy(masks).float()[:, None].to(device)
    batch = parameters.batch_size or default_batch_size(device, config)
    total = -(-len(condition) * parameters.k // batch) * network_evaluations(parameters)
    done = [0]

    def on_step():
        done[0] += 1
        if progress is not None:
            progress(min(1.0, done[0] / total), f"denoising step {done[0]} of {total}")

    result = _sample_with_fallback(model, condition, mask, parameters, batch, on_step)
    mean255 = window.inverse(result.mean[:, 0].float().cpu().numpy())
    std255 = window.grey_levels(result.std[:, 0].float().cpu().numpy())
    canvas = np.zeros_like(slices255)
    change = box.add_into(canvas, resize(mean255 - crops, box.size)) * roi
    uncertainty = box.add_into(canvas, resize(std255, box.size)) * roi
    return change, np.clip(uncertainty, 0.0, None)


def _sample_with_fallback(model: LoadedModel, condition: torch.Tensor, mask: torch.Tensor,
                          parameters: EnhanceParameters, batch: int, on_step) -> diffusion.EnsembleResult:
    """Sample in batches of ``batch``; on GPU out-of-memory halve the batch, and below 1 fall back to the CPU for
    this volume. The network goes back to its device afterwards: a process keeps it for the next study (batch, the
    Slicer worker)."""
    home, moved = next(model.network.parameters()).device, False
    try:
        while True:
            try:
                with torch.inference_mode():
                    denoiser = diffusion.as_denoiser(model.network, parameters.compile_network)
                    return diffusion.sample_ensemble(denoiser, condition, mask, model.config,
                                                     parameters.sampler_settings(), batch_size=batch,
                                                     seed=parameters.seed, on_step=on_step)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if batch > 1:
                    batch //= 2
                else:
                    warnings.warn("GPU out of memory even with one sample per batch: continuing on the CPU")
                    model.network.to("cpu")
                    moved = True
                    condition, mask = condition.cpu(), mask.cpu()
                    batch = default_batch_size(condition.device, model.config)
    finally:
        if moved:
            _move_back(model.network, home)


def _move_back(network: torch.nn.Module, home: torch.device) -> None:
    """The network back on ``home`` after a CPU fallback, or wholly on the CPU where ``home`` has no room left: a
    finished result is never lost to the move."""
    try:
        network.to(home)
    except torch.cuda.OutOfMemoryError:
        network.to("cpu")
        torch.cuda.empty_cache()
        warnings.warn(f"no room on {home} to move the network back: it stays on the CPU")


def check_lambda_trained(model: LoadedModel, lam: int) -> None:
    """Refuse a lambda above the noise levels the model was trained on (its manifest says which)."""
    trained = model.info.get("training", {}).get("max_timestep")
    if trained is not None and lam > trained:
        raise InputError(f"lambda {lam} is above the noise levels this model was trained on (up to {trained})")


CPU_BATCH = 32  # larger batches gain nothing on a CPU and cost memory


def batch_for_free_memory(free_bytes: int, config: diffusion.DiffusionConfig) -> int:
    """Samples per network call that fit in half of ``free_bytes`` (activations of one sample: a rough
    upper bound of 16 float32 feature maps per level at full resolution)."""
    per_sample = 16 * 4 * config.image_size ** 2 * sum(config.block_out_channels)
    return int(min(1024, max(1, free_bytes // 2 // per_sample)))


def default_batch_size(device: torch.device, config: diffusion.DiffusionConfig) -> int:
    if device.type != "cuda":
        return CPU_BATCH
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return batch_for_free_memory(free_bytes, config)


def segment(image: sitk.Image, model: LoadedModel, progress: Optional[Progress] = None) -> sitk.Image:
    """Labelmap (0 background, 1 blood pool, 2 myocardium, 3 scar) with the image's geometry."""
    check_volume(image)  # clear errors for 2D/4D/NaN before any work
    device = next(model.network.parameters()).device
    total = image.GetSize()[2 - slice_axis(image)]
    done = [0]

    def on_slice():
        done[0] += 1
        if progress is not None:
            progress(done[0] / total, f"segmenting slice {done[0]} of {total}")

    return segmentation.segment_heart(image, model.network, model.config, device, on_slice)
