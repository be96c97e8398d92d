"""From a 3D LGE volume to model-sized 2D crops around the heart, and back.

Volumes are stacks of 2D short-axis slices. The slice axis is the one with the largest spacing
(LGE slices are thick). Each slice is scaled to [0, 255] by its own min and max (the paper's
scaling, and exactly invertible). The model sees one square crop per volume around the heart ROI,
resampled to its input size; its *change* is resampled back and added to the input, so the input's
full-resolution detail is kept, and only pixels inside the ROI are changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F


from .parameters import InputError  # noqa: F401  (re-exported: the error of every input check)


def check_volume(image: sitk.Image) -> None:
    """Clear errors for what no command can work on: not a 3D scalar volume, NaN or infinite values, values beyond
    float32, one value everywhere (as float32, what the commands work on). Reads the voxels without a float32 copy, so
    commands check cheaply before a model loads."""
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D volume, got a {image.GetDimension()}D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("expected a scalar (grey-level) volume, got a multi-component image")
    native = sitk.GetArrayViewFromImage(image)
    if native.dtype.kind == "f" and not np.isfinite(native).all():
        raise InputError("the volume contains NaN or infinite values")
    if not native.size:
        return
    low, high = native.min(), native.max()
    if max(abs(float(low)), abs(float(high))) > float(np.finfo(np.float32).max):
        raise InputError("the volume's values exceed the float32 range (about 3.4e38): rescale it first")
    if np.float32(low) == np.float32(high):  # rounding keeps order: float32's extremes are these rounded
        raise InputError(f"the volume holds one value everywhere ({native.flat[0]}): there is no image to work on")


def to_array(image: sitk.Image) -> np.ndarray:
    """(z, y, x) float32 array of a 3D scalar image, with ``check_volume``'s errors for anything else."""
    check_volume(image)
    return sitk.GetArrayFromImage(image).astype(np.float32)


def slice_axis(image: sitk.Image) -> int:
    """Numpy axis (of the z,y,x array) along which the 2D slices are stacked: the thickest one, or for a single
    slice the axis it is one voxel thick along (writers give a lone slice 1 mm or its pixel size as depth, which
    says nothing of how thick it is)."""
    spacing_zyx = np.array(image.GetSpacing()[::-1])
    size_zyx = np.array(image.GetSize()[::-1])
    # One voxel thick first; then the largest spacing; among equals, the axis with the fewest voxels.
    return int(sorted(range(3), key=lambda a: (size_zyx[a] != 1, -round(spacing_zyx[a], 4), size_zyx[a]))[0])


def as_slices(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, axis, 0)


def from_slices(slices: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(slices, 0, axis)


def inplane_spacing(image: sitk.Image, axis: int) -> tuple[float, float]:
    spacing_zyx = image.GetSpacing()[::-1]
    rows, cols = (a for a in range(3) if a != axis)
    return float(spacing_zyx[rows]), float(spacing_zyx[cols])


@dataclass(frozen=True)
class SliceScale:
    """Per-slice affine map to [0, 255]; ``inverse`` undoes ``forward`` exactly."""

    low: np.ndarray  # (n,)
    high: np.ndarray  # (n,)

    @staticmethod
    def of(slices: np.ndarray) -> "SliceScale":
        flat = slices.reshape(len(slices), -1)
        return SliceScale(flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64))

    def _range(self) -> np.ndarray:
        return np.where(self.high > self.low, self.high - self.low, 1.0)[:, None, None]

    def forward(self, slices: np.ndarray) -> np.ndarray:
        return ((slices - self.low[:, None, None]) * (255.0 / self._range())).astype(np.float32)

    def inverse(self, slices255: np.ndarray) -> np.ndarray:
        return (slices255 * (self._range() / 255.0) + self.low[:, None, None]).astype(np.float32)


@dataclass(frozen=True)
class IntensityWindow:
    """Per-crop affine map from the slice's [0, 255] scale to what the diffusion network sees, [-1, 1] across the
    window. ``slice``: the whole [0, 255] (the paper's). ``heart``: from the slice's minimum (0) to the maximum of
    the model-sized crop around the heart, so that a bright pixel far from the heart does not compress it (MyoPS
    hearts sit near 50 of 255 after the slice's min-max). The lower end stays at the slice's minimum: partial
    diffusion adds the same noise whatever the window, and a window narrowed from below too (EMIDEC's crops hold
    nothing darker than about 100 of 255) would change how much of the image the noise destroys; the crop is
    antialiased to model size, so a single bright pixel does not set its maximum."""

    low: np.ndarray  # (n,) on [0, 255]
    high: np.ndarray  # (n,)

    @staticmethod
    def of(crops255: np.ndarray, normalisation: str) -> "IntensityWindow":
        n = len(crops255)
        if normalisation == "slice":
            return IntensityWindow(np.zeros(n), np.full(n, 255.0))
        high = crops255.reshape(n, -1).max(axis=1).astype(np.float64)
        return IntensityWindow(np.zeros(n), np.where(high < 1.0, 255.0, high))  # a black crop: the slice's scale

    def _half_range(self) -> np.ndarray:
        return ((self.high - self.low) / 2.0)[:, None, None]

    def forward(self, crops255: np.ndarray) -> np.ndarray:
        return ((crops255 - self.low[:, None, None]) / self._half_range() - 1.0).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return ((values + 1.0) * self._half_range() + self.low[:, None, None]).astype(np.float32)

    def grey_levels(self, values: np.ndarray) -> np.ndarray:
        """A spread (standard deviation) in model units on the [0, 255] scale."""
        return (values * self._half_range()).astype(np.float32)

    def as_maps(self, size: int) -> np.ndarray:
        """(n, 2, size, size): low and high on the [0, 255] scale mapped to [-1, 1], as constant maps."""
        bounds = np.stack([self.low, self.high], axis=1) / 127.5 - 1.0
        return np.broadcast_to(bounds[:, :, None, None], (len(bounds), 2, size, size)).astype(np.float32)


@dataclass(frozen=True)
class CropBox:
    """A square in-plane box (may extend past the image; that part reads as zero)."""

    row0: int
    col0: int
    size: int

    @staticmethod
    def around(mask: np.ndarray, margin: float = 1.3, min_size: int = 16) -> "CropBox":
        """Square box around the in-plane bounding box of ``mask`` (n, h, w), enlarged by ``margin``."""
        rows = np.flatnonzero(mask.any(axis=(0, 2)))
        cols = np.flatnonzero(mask.any(axis=(0, 1)))
        if rows.size == 0:
            raise InputError("the heart ROI is empty")
        extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        size = max(int(np.ceil(extent * margin)), min_size)
        center_row = (rows[0] + rows[-1] + 1) / 2.0
        center_col = (cols[0] + cols[-1] + 1) / 2.0
        return CropBox(int(round(center_row - size / 2.0)), int(round(center_col - size / 2.0)), size)

    def extract(self, slices: np.ndarray) -> np.ndarray:
        n, h, w = slices.shape
        out = np.zeros((n, self.size, self.size), dtype=slices.dtype)
        r0, c0 = max(self.row0, 0), max(self.col0, 0)
        r1, c1 = min(self.row0 + self.size, h), min(self.col0 + self.size, w)
        out[:, r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0] = slices[:, r0:r1, c0:c1]
        return out

    def add_into(self, slices: np.ndarray, crop: np.ndarray) -> np.ndarray:
        """A copy of ``slices`` with ``crop`` added over the box (the part inside the image)."""
        out = slices.copy()
        n, h, w = slices.shape
        r0, c0 = max(self.row0, 0), max(self.col0, 0)
        r1, c1 = min(self.row0 + self.size, h), min(self.col0 + self.size, w)
        out[:, r0:r1, c0:c1] += crop[:, r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0]
        return out


def resize(slices: np.ndarray, size: int, mode: str = "bilinear") -> np.ndarray:
    """Resample (n, h, w) slices to (n, size, size); antialiased when shrinking."""
    tensor = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
    if mode == "nearest":
        out = F.interpolate(tensor, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=size < slices.shape[-1])
    return out[:, 0].numpy()


def mask_to_model(mask_crop: np.ndarray, size: int) -> np.ndarray:
    """ROI at model size, covering every model pixel that touches the full-resolution ROI."""
    tensor = torch.from_numpy(mask_crop.astype(np.float32))[:, None]
    coverage = F.adaptive_max_pool2d(tensor, (size, size)) if size < mask_crop.shape[-1] else \
        F.interpolate(tensor, size=(size, size), mode="nearest")
    return coverage[:, 0].numpy() > 0


def check_roi(roi: np.ndarray) -> None:
    """Reject ROIs the enhancement cannot use."""
    if not roi.any():
        raise InputError("the heart ROI is empty: segment the heart or draw the ROI first")
    border = np.zeros(roi.shape[1:], dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    if (roi & border).any():
        raise InputError("the heart ROI touches the image border: the heart must lie inside the field of view")


def geometry_differences(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> list[str]:
    """What of size, spacing, origin and direction differs between ``a`` and ``b``, each with both values."""
    differences = [] if a.GetSize() == b.GetSize() else [f"size {a.GetSize()} against {b.GetSize()}"]
    for name in ("spacing", "origin", "direction"):
        values = [getattr(image, f"Get{name.title()}")() for image in (a, b)]
        if len(values[0]) != len(values[1]) or not np.allclose(*values, atol=tolerance):
            differences.append(f"{name} {tuple(round(v, 4) for v in values[0])} against "
                               f"{tuple(round(v, 4) for v in values[1])}")
    return differences


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    return not geometry_differences(a, b, tolerance)


def check_label_map(image: sitk.Image, labels: sitk.Image, name: str = "the ROI/labels") -> None:
    """A scalar label map on ``image``'s voxel grid, or a clear error naming ``name`` and what differs."""
    if labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a scalar label map, got a multi-component (e.g. RGB) image")
    differences = geometry_differences(image, labels)
    if differences:
        raise InputError(f"{name} must lie on the image's voxel grid (the same size, spacing, origin and "
                         f"direction); the image and it differ in {'; '.join(differences)}")


def like(array_zyx: np.ndarray, reference: sitk.Image, pixel_type: int | None = None) -> sitk.Image:
    """An image with ``reference``'s geometry and the given voxels."""
    image = sitk.GetImageFromArray(array_zyx)
    image.CopyInformation(reference)
    return sitk.Cast(image, pixel_type) if pixel_type is not None else image
