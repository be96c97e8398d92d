"""Training samples with augmentation (MONAI transforms): heart crops for the diffusion model,
patches at the model's spacing for the segmentation model."""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (Compose, Rand2DElasticd, RandAdjustContrastd, RandAffined, RandBiasFieldd, RandFlipd,
                              RandGaussianNoised, RandGaussianSmoothd, RandHistogramShiftd, RandRotated,
                              RandCropByPosNegLabeld, SpatialPadd)

from . import labels as L
from .datasets import Case
from .gamma import gamma_target
from .parameters import AUGMENTATIONS
from .segmentation import SegmentationConfig, normalise_for_segmentation, normalise_windows, resample_slice
from .volume import CropBox, mask_to_model, resize

SCALE_RANGE = (0.7, 1.4)
CROP_MARGIN = 1.3  # also the default at inference


def _strong_intensity():
    """Beyond contrast and bias field: noise, blur and a non-linear intensity curve, each before the target is
    computed, so the target stays the gamma correction of the image the network sees."""
    return [RandGaussianNoised(["image"], prob=0.3, std=0.02),
            RandGaussianSmoothd(["image"], prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandHistogramShiftd(["image"], prob=0.3, num_control_points=(5, 10))]


def _strong_spatial(keys):
    """Beyond rotation and flips: shear, anisotropic scale and elastic deformation (hearts differ in shape)."""
    return [RandAffined(keys, prob=0.5, shear_range=(0.1, 0.1), scale_range=(0.1, 0.1), mode="bilinear",
                        padding_mode="zeros"),
            Rand2DElasticd(keys, spacing=(16, 16), magnitude_range=(1.0, 2.0), prob=0.3, mode="bilinear",
                           padding_mode="zeros")]


def _spatial(keys, modes):
    return [RandRotated(keys, range_x=np.pi / 12, prob=0.5, mode=modes, padding_mode="zeros"),
            RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]


class DiffusionSamples:
    """(original, target, roi, scar) at model size, from slices with a heart ROI: images in [-1, 1], the ROI
    0/1 (every pixel that touches it), scar as the fraction of each pixel that is scar (inside the ROI)."""

    def __init__(self, cases: list[Case], image_size: int, rng: np.random.Generator, augmentation: str = "standard"):
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
        strong = augmentation == "strong"
        self.slices = [(c.images[i], c.labels[i]) for c in cases for i in range(len(c.images))
                       if (c.labels[i] > 0).any()]
        if not self.slices:
            raise ValueError("no slice with a heart ROI in the training cases")
        self.size = image_size
        self.intensity = Compose([RandAdjustContrastd(["image"], prob=0.5, gamma=(0.7, 1.5)),
                                  RandBiasFieldd(["image"], prob=0.3, coeff_range=(0.0, 0.2))] +
                                 (_strong_intensity() if strong else []))
        self.spatial = Compose(_spatial(["stack"], "bilinear") + (_strong_spatial(["stack"]) if strong else []))
        self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        """Draw from ``rng`` from now on (each data-loader worker gets its own)."""
        self.rng = rng
        for transform in (self.intensity, self.spatial):
            transform.set_random_state(seed=int(rng.integers(2**31)))

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self._one(*self.slices[self.rng.integers(len(self.slices))]) for _ in range(batch_size)]
        return tuple(torch.stack(parts) for parts in zip(*items))

    def _one(self, image: np.ndarray, labels: np.ndarray):
        span = max(float(np.ptp(image)), 1e-6)
        image01 = (image - image.min()) / span
        image01 = np.asarray(self.intensity({"image": image01[None]})["image"])[0]
        image255 = 255.0 * (image01 - image01.min()) / max(float(np.ptp(image01)), 1e-6)
        target = gamma_target(image255, labels)
        roi = L.heart_roi(labels)
        box = CropBox.around(roi[None], margin=CROP_MARGIN / self.rng.uniform(*SCALE_RANGE))
        jitter = (self.rng.uniform(-0.1, 0.1, 2) * box.size).astype(int)
        box = CropBox(box.row0 + jitter[0], box.col0 + jitter[1], box.size)
        crops = [resize(box.extract(a[None]), self.size)[0] for a in (image255, target)]
        mask = mask_to_model(box.extract(roi[None]), self.size)[0].astype(np.float32)
        scar = resize(box.extract((labels == L.SCAR)[None]).astype(np.float32), self.size)[0]  # area fraction
        stack = torch.as_tensor(np.stack(crops + [mask, scar]))
        stack = torch.as_tensor(np.asarray(self.spatial({"stack": stack})["stack"]))
        original, target_crop = stack[:2] / 127.5 - 1.0
        mask = (stack[2] > 0.5).float()
        scar = stack[3].clamp(0.0, 1.0) * mask
        target_crop = mask * target_crop + (1 - mask) * original
        return original[None], target_crop[None], mask[None], scar[None]


class SegmentationSamples:
    """(image, labels) patches at the model's spacing. Scanners differ in pixel shape (EMIDEC's PNGs are
    stretched along one axis by up to 1.7), orientation and intensity curves: each axis is scaled on its own,
    rotations span the full circle, and the intensities get contrast curves, bias field, noise and blur."""

    def __init__(self, cases: list[Case], config: SegmentationConfig, rng: np.random.Generator):
        self.cases = cases
        self.config = config
        size = (config.patch_size,) * 2
        keys = ["image", "label"]
        self.spatial = Compose([
            RandRotated(keys, range_x=np.pi, prob=0.8, mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
            SpatialPadd(keys, size),
            RandCropByPosNegLabeld(keys, "label", size, pos=2, neg=1, num_samples=1),
        ])
        self.intensity = Compose([
            RandAdjustContrastd(["image"], prob=0.5, gamma=(0.6, 1.6)),
            RandBiasFieldd(["image"], prob=0.3, coeff_range=(0.0, 0.3)),
            RandGaussianNoised(["image"], prob=0.3, std=0.03),
            RandGaussianSmoothd(["image"], prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandHistogramShiftd(["image"], prob=0.2, num_control_points=(5, 10)),
        ])
        self.index = [(c, i) for c in cases for i in range(len(c.images))]
        self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        """Draw from ``rng`` from now on (each data-loader worker gets its own)."""
        self.rng = rng
        for transform in (self.spatial, self.intensity):
            transform.set_random_state(seed=int(rng.integers(2**31)))

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self._one(*self.index[self.rng.integers(len(self.index))]) for _ in range(batch_size)]
        return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])

    def _one(self, case: Case, index: int):
        scale = self.rng.uniform(*SCALE_RANGE, size=2)  # anisotropic: rows and columns on their own
        image = case.images[index]
        if self.config.normalisation == "slice":
            image = normalise_for_segmentation(image)
        image = resample_slice(image, case.spacing, self.config.spacing_mm / scale)[0]
        label = torch.nn.functional.interpolate(torch.as_tensor(case.labels[index], dtype=torch.float32)[None, None],
                                                size=image.shape[-2:], mode="nearest")[0]
        sample = self.spatial({"image": image, "label": label})[0]
        patch = torch.as_tensor(np.asarray(sample["image"]))
        if self.config.normalisation == "window":  # as the network sees each window at inference
            patch = normalise_windows(patch[None])[0]
        patch = torch.as_tensor(np.asarray(self.intensity({"image": patch})["image"]), dtype=torch.float32)
        return patch, torch.as_tensor(np.asarray(sample["label"])).long()
