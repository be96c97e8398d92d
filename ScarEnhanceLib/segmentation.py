"""Heart segmentation (blood pool, myocardium, scar) with a MONAI 2D U-Net, and the heart ROI.

Each slice is resampled to the model's pixel spacing and segmented by sliding windows, so any
matrix size and field of view works. Post-processing keeps the largest 3D connected heart
component and fills holes slice by slice (filled pixels take the nearest label).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from scipy import ndimage

from . import labels as L
from .volume import as_slices, from_slices, inplane_spacing, like, slice_axis, to_array


@dataclass(frozen=True)
class SegmentationConfig:
    spacing_mm: float = 1.5  # in-plane pixel spacing the network works at
    patch_size: int = 128
    channels: tuple = (16, 32, 64, 128)
    strides: tuple = (2, 2, 2)
    num_res_units: int = 1

    @staticmethod
    def from_dict(values: dict) -> "SegmentationConfig":
        values = dict(values)
        for key in ("channels", "strides"):
            if key in values:
                values[key] = tuple(values[key])
        return SegmentationConfig(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def build_segmenter(config: SegmentationConfig) -> UNet:
    return UNet(spatial_dims=2, in_channels=1, out_channels=L.NUM_CLASSES, channels=config.channels,
                strides=config.strides, num_res_units=config.num_res_units)


def normalise_for_segmentation(slice2d: np.ndarray) -> np.ndarray:
    """Robust per-slice scaling to about [0, 1] (1st and 99th percentiles)."""
    low, high = np.percentile(slice2d, (1, 99))
    return ((slice2d - low) / max(high - low, 1e-6)).astype(np.float32)


def resample_slice(slice2d: np.ndarray, spacing: tuple[float, float], target_mm: float) -> torch.Tensor:
    """(1, 1, h', w') tensor of a slice resampled to ``target_mm`` pixels."""
    tensor = torch.from_numpy(np.ascontiguousarray(slice2d, dtype=np.float32))[None, None]
    size = [max(8, int(round(n * s / target_mm))) for n, s in zip(slice2d.shape, spacing)]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < slice2d.shape[0])


@torch.inference_mode()
def predict_slices(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                   config: SegmentationConfig, device: torch.device,
                   on_slice: Optional[Callable[[], None]] = None) -> np.ndarray:
    """Label (n, h, w) of (n, h, w) slices with in-plane ``spacing`` (mm)."""
    model.eval()
    out = np.zeros(slices.shape, dtype=np.uint8)
    for index, slice2d in enumerate(slices):
        resampled = resample_slice(normalise_for_segmentation(slice2d), spacing, config.spacing_mm).to(device)
        logits = sliding_window_inference(resampled, (config.patch_size,) * 2, sw_batch_size=4, predictor=model,
                                          overlap=0.25, mode="gaussian", padding_mode="constant")
        probabilities = F.interpolate(torch.softmax(logits.float(), dim=1), size=slice2d.shape, mode="bilinear",
                                      align_corners=False)
        out[index] = probabilities.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
        if on_slice is not None:
            on_slice()
    return out


def postprocess(labels: np.ndarray, slice_axis_index: int = 0) -> np.ndarray:
    """Largest 3D heart component; holes filled slice by slice with the nearest label."""
    components, count = ndimage.label(labels > 0)
    if count == 0:
        return labels.copy()
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
    kept = np.where(components == 1 + int(np.argmax(sizes)), labels, 0).astype(np.uint8)
    slices = as_slices(kept, slice_axis_index).copy()
    for index, slice_labels in enumerate(slices):
        roi = slice_labels > 0
        holes = ndimage.binary_fill_holes(roi) & ~roi
        if holes.any():
            nearest = ndimage.distance_transform_edt(~roi, return_distances=False, return_indices=True)
            slice_labels[holes] = slice_labels[tuple(nearest)][holes]
            slices[index] = slice_labels
    return from_slices(slices, slice_axis_index)


def segment_heart(image: sitk.Image, model: torch.nn.Module, config: SegmentationConfig,
                  device: torch.device, on_slice: Optional[Callable[[], None]] = None) -> sitk.Image:
    """Labelmap (0 background, 1 blood pool, 2 myocardium, 3 scar) with the image's geometry."""
    array = to_array(image)
    axis = slice_axis(image)
    predicted = predict_slices(model, as_slices(array, axis), inplane_spacing(image, axis), config, device, on_slice)
    labels = postprocess(from_slices(predicted, axis), axis)
    return like(labels, image, sitk.sitkUInt8)


def dilate_roi(roi: sitk.Image, radius_mm: float, inplane_only: bool = True) -> sitk.Image:
    """Binary ROI dilated by ``radius_mm`` with a per-axis kernel (in-plane only by default: LGE slices are thick)."""
    if radius_mm < 0:
        raise ValueError(f"the dilation must be >= 0 mm, got {radius_mm}")
    binary = sitk.Cast(roi > 0, sitk.sitkUInt8)
    if radius_mm == 0:
        return binary
    thick = 2 - slice_axis(roi)  # numpy axis -> SimpleITK (x, y, z) index
    radius = [int(round(radius_mm / s)) for s in roi.GetSpacing()]
    if inplane_only:
        radius[thick] = 0
    if not any(radius):
        return binary
    return sitk.BinaryDilate(binary, radius, sitk.sitkBall)
