"""The Python packages ScarEnhanceLib needs in Slicer's Python, installed on first use after asking.

torch comes through the PyTorch extension's PyTorchUtils when it is there (it picks the build for the
machine's GPU); the rest from PyPI with lower bounds. SimpleITK is never installed: Slicer ships its own.
"""
from __future__ import annotations

from importlib import metadata
from typing import Callable, List, Optional

try:
    from packaging.requirements import Requirement
except ImportError:  # a Python without packaging still has pip's copy
    from pip._vendor.packaging.requirements import Requirement

TORCH_REQUIREMENT = "torch>=2.1"
REQUIREMENTS = ("monai>=1.4", "diffusers>=0.30", "safetensors>=0.4", "scipy>=1.9", "tqdm>=4.64")


def _satisfied(requirement: str, installedVersion: Callable[[str], str]) -> bool:
    parsed = Requirement(requirement)
    try:
        version = installedVersion(parsed.name)
    except metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(version.split("+")[0], prereleases=True)


def missingRequirements(installedVersion: Callable[[str], str] = metadata.version) -> List[str]:
    """Requirements (torch first) that are not installed or too old."""
    return [r for r in (TORCH_REQUIREMENT, *REQUIREMENTS) if not _satisfied(r, installedVersion)]


def installRequirements(missing: List[str], pipInstall: Callable[[List[str]], None],
                        installTorch: Optional[Callable[[str], bool]] = None) -> None:
    """Install ``missing``; torch through ``installTorch`` (PyTorchUtils) when given, else with pip."""
    rest = [r for r in missing if Requirement(r).name != "torch"]
    if len(rest) < len(missing):
        if installTorch is None or not installTorch(TORCH_REQUIREMENT):
            pipInstall([TORCH_REQUIREMENT])
    if rest:
        pipInstall(rest)
