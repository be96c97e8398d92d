"""Training targets: tissue-specific gamma correction (MICCAI 2024 localized diffusion paper).

On a slice scaled to [0, 255], I_e = 255 * (I / 255) ** (1 / gamma). Scar gets gamma > 1
(brighter, more so when the scar is dim), bright blood pools gamma < 1 (darker), myocardium and
background are unchanged. The tables are the paper's.
"""
from __future__ import annotations

import numpy as np

from . import labels as L

# (upper bound on the region's mean intensity, gamma); the first bound the mean is under wins.
SCAR_GAMMAS = ((60.46, 1.7), (150.0, 1.6), (np.inf, 1.5))
BLOOD_GAMMAS = ((86.03, 0.9), (115.59, 0.8), (130.95, 0.7), (np.inf, 0.6))
BLOOD_UNCHANGED_AT_OR_BELOW = 56.47


def scar_gamma(mean_scar: float) -> float:
    return next(gamma for bound, gamma in SCAR_GAMMAS if mean_scar < bound)


def blood_gamma(mean_blood: float) -> float:
    if mean_blood <= BLOOD_UNCHANGED_AT_OR_BELOW:
        return 1.0
    return next(gamma for bound, gamma in BLOOD_GAMMAS if mean_blood < bound)


def gamma_correct(image255: np.ndarray, gamma: float) -> np.ndarray:
    return 255.0 * np.power(np.clip(image255, 0.0, None) / 255.0, 1.0 / gamma)


def gamma_target(image255: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Target of one [0, 255]-scaled 2D slice given its labels (values of ``labels.py``)."""
    if image255.shape != labels.shape or image255.ndim != 2:
        raise ValueError(f"need one 2D slice and labels of the same shape, got {image255.shape} and {labels.shape}")
    image = image255.astype(np.float64)
    target = image.copy()
    for label, gamma_of in ((L.SCAR, scar_gamma), (L.BLOOD_POOL, blood_gamma)):
        region = labels == label
        if region.any():
            target[region] = gamma_correct(image[region], gamma_of(float(image[region].mean())))
    return target.astype(np.float32)
