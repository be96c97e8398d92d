"""Synthetic short-axis LGE phantoms with exact labels, for tests and the demo.

A stack of 2D slices: LV blood pool inside a myocardial ring (normal or thick, HCM-like), scar
(patchy transmural or subendocardial) of a chosen contrast, the RV, chest tissue, fat and lungs;
imperfect myocardial nulling, a smooth bias field and Rician noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from . import labels as L

WALLS = {"normal": 8.0, "thin": 5.0, "thick": 17.0}  # wall thickness, mm
SCARS = ("patchy", "subendocardial", "none")


@dataclass(frozen=True)
class PhantomSpec:
    matrix: int = 128
    slices: int = 8
    spacing_mm: float = 1.5
    slice_mm: float = 8.0
    wall: str = "normal"
    scar: str = "patchy"
    scar_contrast: float = 6.0  # scar / nulled-myocardium intensity
    myocardium_level: float = 60.0  # imperfect nulling: healthy myocardium intensity
    noise: float = 12.0  # Rician noise sigma
    bias: float = 0.25  # bias-field amplitude (fraction)
    seed: int = 0

    def validate(self) -> "PhantomSpec":
        if self.wall not in WALLS:
            raise ValueError(f"wall must be one of {sorted(WALLS)}, got {self.wall!r}")
        if self.scar not in SCARS:
            raise ValueError(f"scar must be one of {SCARS}, got {self.scar!r}")
        if self.slices < 1 or self.matrix < 16 or not self.spacing_mm > 0:
            raise ValueError(f"the phantom needs at least 1 slice, a matrix of at least 16 and a positive spacing, "
                             f"got {self.slices} slices, matrix {self.matrix}, spacing {self.spacing_mm} mm")
        if self.matrix * self.spacing_mm < 120:
            raise ValueError("the field of view (matrix x spacing) must be at least 120 mm to hold the heart")
        return self


def _slice(spec: PhantomSpec, position: float, rng: np.random.Generator, center: tuple[float, float],
           scar_angles: tuple[float, float]):
    """Intensity and labels of one slice; ``position`` runs from 0 (base) to 1 (apex)."""
    n = spec.matrix
    coords = (np.arange(n) - n / 2 + 0.5) * spec.spacing_mm
    y, x = np.meshgrid(coords, coords, indexing="ij")
    cy, cx = center
    radius = np.hypot(y - cy, x - cx)
    angle = np.arctan2(y - cy, x - cx)
    blood_r = 22.0 * (1.0 - 0.55 * position)
    wall = WALLS[spec.wall] * (1.0 + 0.05 * np.cos(3 * angle + position))
    outer_r = blood_r + wall

    image = np.full((n, n), 5.0)  # air
    body = ((y / 110.0) ** 2 + (x / 150.0) ** 2) < 1.0
    image[body] = 110.0
    image[body & (((y / 100.0) ** 2 + (x / 140.0) ** 2) > 1.0)] = 320.0  # subcutaneous fat
    for side in (-1.0, 1.0):  # lungs
        image[((y + 10) / 65.0) ** 2 + ((x - side * 75.0) / 45.0) ** 2 < 1.0] = 15.0
    pericardium = radius < outer_r + 3.0
    image[pericardium] = 280.0  # epicardial fat
    rv = (np.hypot(y - cy + 4.0, x - cx + outer_r + 10.0) < outer_r * 0.9) & (radius > outer_r + 2.0)
    image[rv] = 230.0

    labels = np.zeros((n, n), dtype=np.uint8)
    myocardium = (radius >= blood_r) & (radius < outer_r)
    labels[radius < blood_r] = L.BLOOD_POOL
    labels[myocardium] = L.MYOCARDIUM
    if spec.scar != "none":
        start, width = scar_angles
        in_sector = np.mod(angle - start, 2 * np.pi) < width * (1.0 - 0.4 * position)
        depth = (radius - blood_r) / np.maximum(wall, 1e-6)
        if spec.scar == "subendocardial":
            scar = myocardium & in_sector & (depth < 0.45)
        else:
            patches = np.sin(3.0 * angle + rng.uniform(0, 6)) + 0.6 * np.sin(0.15 * radius) > -0.2
            scar = myocardium & in_sector & patches & (depth < 0.95)
        labels[scar] = L.SCAR

    image[labels == L.BLOOD_POOL] = 250.0
    image[labels == L.MYOCARDIUM] = spec.myocardium_level
    image[labels == L.SCAR] = spec.myocardium_level * spec.scar_contrast
    return image, labels


def make_phantom(spec: PhantomSpec = PhantomSpec()) -> tuple[sitk.Image, sitk.Image]:
    """(LGE image float32, labels uint8) with spacing (spacing, spacing, slice) and identity direction."""
    spec = spec.validate()
    rng = np.random.default_rng(spec.seed)
    center = tuple(rng.uniform(-10, 10, 2))
    scar_angles = (rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.8))
    images, labels = zip(*(_slice(spec, i / max(spec.slices - 1, 1), rng, center, scar_angles)
                           for i in range(spec.slices)))
    clean = np.stack(images)
    n = spec.matrix
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    phase = rng.uniform(0, np.pi, 2)
    bias = 1.0 + spec.bias * np.sin(1.3 * yy + phase[0]) * np.cos(1.1 * xx + phase[1])
    real = clean * bias[None] + rng.normal(0, spec.noise, clean.shape)
    imaginary = rng.normal(0, spec.noise, clean.shape)
    noisy = np.hypot(real, imaginary).astype(np.float32)  # Rician magnitude

    image = sitk.GetImageFromArray(noisy)
    image.SetSpacing((spec.spacing_mm, spec.spacing_mm, spec.slice_mm))
    image.SetOrigin((-n * spec.spacing_mm / 2, -n * spec.spacing_mm / 2, 0.0))
    label_image = sitk.GetImageFromArray(np.stack(labels))
    label_image.CopyInformation(image)
    return image, label_image
