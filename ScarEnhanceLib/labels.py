"""The label values used everywhere inside ScarEnhance.

Datasets with other values are mapped onto these when read (see ``datasets.py``).
EMIDEC's no-reflow (microvascular obstruction) is dark, like healthy myocardium: read as MYOCARDIUM
everywhere (neither its gamma nor the CNR "scar" region should include it), except by the segmentation
training, which may keep it apart as MVO so that the network is not taught to call a core inside scar healthy.
"""
from __future__ import annotations

import numpy as np

BACKGROUND = 0
BLOOD_POOL = 1
MYOCARDIUM = 2
SCAR = 3
NUM_CLASSES = 4  # what every result holds
MVO = 4  # a class the segmentation network may learn (SegmentationConfig.mvo_class); folded into MYOCARDIUM
NAMES = {BLOOD_POOL: "blood pool", MYOCARDIUM: "myocardium", SCAR: "scar"}


def heart_roi(labels: np.ndarray) -> np.ndarray:
    """Heart ROI = blood pool + myocardium + scar."""
    return labels > BACKGROUND


def remap(raw: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map raw label values onto ours; values not in ``mapping`` become background."""
    out = np.zeros(raw.shape, dtype=np.uint8)
    for raw_value, label in mapping.items():
        out[raw == raw_value] = label
    return out
