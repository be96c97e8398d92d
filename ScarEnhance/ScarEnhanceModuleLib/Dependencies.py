"""The Python packages ScarEnhanceLib needs in Slicer's Python, installed on first use after asking.

torch comes through the PyTorch extension's PyTorchUtils when it is there (it picks the build for the
machine's GPU); the rest from PyPI with lower bounds. SimpleITK is never installed: Slicer ships its own.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
from importlib import metadata, util
from pathlib import Path
from typing import Callable, List, Optional

try:
    from packaging.requirements import Requirement
except ImportError:  # a Python without packaging still has pip's copy
    from pip._vendor.packaging.requirements import Requirement

TORCH_REQUIREMENT = "torch>=2.1"
REQUIREMENTS = ("monai>=1.4", "diffusers>=0.30", "safetensors>=0.4", "scipy>=1.9", "tqdm>=4.64")


def torchBuildHasCuda(findSpec: Callable[[str], object] = util.find_spec) -> bool:
    """Whether the installed torch was built for CUDA, read from its ``version.py`` without importing torch
    (seconds, and half a gigabyte, in Slicer's own process). A CPU-only build has ``cuda = None`` there."""
    spec = findSpec("torch")
    if spec is None or not getattr(spec, "submodule_search_locations", None):
        return False
    versionFile = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = versionFile.read_text(encoding="utf-8")
    except OSError:
        return False
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return found is not None


def gpuAvailable(findSpec: Callable[[str], object] = util.find_spec,
                 which: Callable[[str], object] = shutil.which) -> bool:
    """An NVIDIA driver is installed and torch was built for CUDA (a CPU-only torch runs on the CPU whatever the
    machine has)."""
    return which("nvidia-smi") is not None and torchBuildHasCuda(findSpec)


def deviceChoices(platform: str = sys.platform) -> List[str]:
    """The devices to offer: no CUDA on macOS, where no NVIDIA GPU runs it."""
    return [device for device in ("auto", "cuda", "cpu") if not (platform == "darwin" and device == "cuda")]


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
                        installTorch: Optional[Callable[[str], bool]] = None,
                        installedVersion: Callable[[str], str] = metadata.version) -> None:
    """Install ``missing``; torch through ``installTorch`` (PyTorchUtils) when given, else with pip. The rest is
    installed with the installed torch pinned by a constraints file: MONAI's own torch floor (2.8 for MONAI
    1.6) would otherwise let pip replace the build PyTorchUtils chose for the GPU with a PyPI one (CPU-only on
    Windows); pip picks a MONAI that fits the torch there is instead."""
    rest = [r for r in missing if Requirement(r).name != "torch"]
    if len(rest) < len(missing):
        if installTorch is None or not installTorch(TORCH_REQUIREMENT):
            pipInstall([TORCH_REQUIREMENT])
    if rest:
        constraints = Path(tempfile.mkdtemp(prefix="ScarEnhance-pip-")) / "constraints.txt"
        constraints.write_text(f"torch=={installedVersion('torch')}\n")
        try:
            pipInstall([*rest, "-c", str(constraints)])
        finally:
            shutil.rmtree(constraints.parent, ignore_errors=True)
