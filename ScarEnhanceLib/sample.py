"""The small LGE sample volume shipped for the demo and the Slicer self-test (provenance in its README)."""
from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "Resources" / "sample"
SAMPLE_IMAGE = SAMPLE_DIR / "emidec_Case_P050_lge.nii.gz"
SAMPLE_LABELS = SAMPLE_DIR / "emidec_Case_P050_labels.nii.gz"
