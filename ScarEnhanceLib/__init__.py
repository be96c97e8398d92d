"""ScarEnhance core: localized partial diffusion for scar enhancement in LGE cardiac MR.

Pure Python (numpy, torch, SimpleITK); never imports slicer or qt, so the same code runs in
3D Slicer, on the command line and in tests.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"
# Beside ScarEnhanceLib, in the source tree and in the built extension (torch-free: Slicer reads them at start-up)
README_FILE = Path(__file__).resolve().parent.parent / "README.md"
MODELS_DIR = Path(__file__).resolve().parent.parent / "Resources" / "models"
# the names of the bundled models in its manifest, and the kind of training run each takes
SEGMENTATION = "heart_segmentation"
ENHANCEMENT = "enhancement"
KINDS = {SEGMENTATION: "segmentation", ENHANCEMENT: "diffusion"}
