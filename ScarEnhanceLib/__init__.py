"""ScarEnhance core: localized partial diffusion for scar enhancement in LGE cardiac MR.

Pure Python (numpy, torch, SimpleITK); never imports slicer or qt, so the same code runs in
3D Slicer, on the command line and in tests.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"
README_FILE = Path(__file__).resolve().parent.parent / "README.md"  # beside ScarEnhanceLib, in the source and built trees
