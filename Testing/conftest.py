"""Shared fixtures: tiny random models (fast, untrained), phantoms, and the real-data location."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ScarEnhanceLib.datasets import Case  # noqa: E402
from ScarEnhanceLib.diffusion import DiffusionConfig, build_denoiser  # noqa: E402
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom  # noqa: E402
from ScarEnhanceLib.segmentation import SegmentationConfig, build_segmenter  # noqa: E402
from ScarEnhanceLib.weights import ENHANCEMENT, SEGMENTATION, install  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_SEGMENTATION = SegmentationConfig(channels=(8, 16, 32), strides=(2, 2), patch_size=64)
TINY_DIFFUSION = DiffusionConfig(image_size=32, block_out_channels=(8, 16), attention_head_dim=8)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def load_script(path: str):
    """A script of the project (not in a package; ``path`` from the repository root) as a module, to test its
    functions."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_benchmark(name: str):
    """A script of benchmarks/ as a module."""
    return load_script(f"benchmarks/{name}.py")


def _save(network: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with untrained tiny networks and a valid manifest."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    install(_save(build_segmenter(TINY_SEGMENTATION), folder / "s.safetensors"), SEGMENTATION, "segmentation",
            TINY_SEGMENTATION.to_dict(), folder, license="test")
    install(_save(build_denoiser(TINY_DIFFUSION), folder / "d.safetensors"), ENHANCEMENT, "diffusion",
            TINY_DIFFUSION.to_dict(), folder, license="test")
    return folder


@pytest.fixture(scope="session")
def tiny_tissue_models(tmp_path_factory) -> Path:
    """Like ``tiny_models``, with a tissue-conditioned enhancement model in the heart intensity window."""
    folder = tmp_path_factory.mktemp("tissue_models")
    torch.manual_seed(0)
    config = DiffusionConfig(**{**TINY_DIFFUSION.to_dict(), "conditioning": "tissue", "normalisation": "heart"})
    install(_save(build_segmenter(TINY_SEGMENTATION), folder / "s.safetensors"), SEGMENTATION, "segmentation",
            TINY_SEGMENTATION.to_dict(), folder, license="test")
    install(_save(build_denoiser(config), folder / "d.safetensors"), ENHANCEMENT, "diffusion", config.to_dict(), folder,
            license="test")
    return folder


@pytest.fixture(scope="session")
def phantom() -> tuple[sitk.Image, sitk.Image]:
    return make_phantom(PhantomSpec(matrix=96, slices=5, spacing_mm=1.6, seed=3))


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory) -> Path:
    """A data-set folder of three phantom volumes with their labels (two with scar, one normal), as NIfTI pairs."""
    folder = tmp_path_factory.mktemp("phantom_data")
    for name, scar, seed in (("scar1", "patchy", 1), ("scar2", "subendocardial", 2), ("normal1", "none", 3)):
        image, labels = make_phantom(PhantomSpec(matrix=96, slices=3, spacing_mm=1.6, scar=scar, seed=seed))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
        sitk.WriteImage(labels, str(folder / f"{name}_manual.nii.gz"))
    return folder


def phantom_case(seed: int = 0, slices: int = 4) -> Case:
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=slices, spacing_mm=1.6, seed=seed))
    return Case(f"phantom{seed}", sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), (1.6, 1.6))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def needs_shared_data(*parts: str):
    return pytest.mark.skipif(not SHARED_DATA.joinpath(*parts).exists(),
                              reason=f"real data not present at {SHARED_DATA.joinpath(*parts)}")
