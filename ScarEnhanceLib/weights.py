"""Bundled model weights: safetensors files listed in a manifest with their SHA-256.

``Resources/models/manifest.json`` maps a model name to its file, checksum, network configuration,
training data, split and licence. Loading refuses a file whose checksum does not match.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .diffusion import DiffusionConfig, build_denoiser
from .segmentation import SegmentationConfig, build_segmenter

MODELS_DIR = Path(__file__).resolve().parent.parent / "Resources" / "models"
MANIFEST = "manifest.json"
SEGMENTATION = "heart_segmentation"
ENHANCEMENT = "enhancement"


class ModelError(RuntimeError):
    """A model is missing, damaged or does not fit its configuration."""


@dataclass
class LoadedModel:
    name: str
    network: torch.nn.Module
    config: object  # SegmentationConfig or DiffusionConfig
    info: dict  # the manifest entry


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(models_dir: Path = MODELS_DIR) -> dict:
    path = Path(models_dir) / MANIFEST
    if not path.exists():
        raise ModelError(f"no model manifest at {path}: train the models or pass --models")
    return json.loads(path.read_text())


def load(name: str, models_dir: Path = MODELS_DIR, device: torch.device | str = "cpu") -> LoadedModel:
    """The named model with verified weights, in eval mode on ``device``."""
    entry = read_manifest(models_dir).get(name)
    if entry is None:
        raise ModelError(f"model {name!r} is not in {Path(models_dir) / MANIFEST}")
    path = Path(models_dir) / entry["file"]
    if not path.exists():
        raise ModelError(f"model file missing: {path}")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ModelError(f"checksum mismatch for {path}: expected {entry['sha256']}, got {actual}; "
                         "the file is damaged or was replaced")
    if entry["kind"] == "segmentation":
        config = SegmentationConfig.from_dict(entry["config"])
        network = build_segmenter(config)
    else:
        config = DiffusionConfig.from_dict(entry["config"])
        network = build_denoiser(config)
    try:
        network.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise ModelError(f"weights in {path} do not fit the configuration in the manifest: {error}") from error
    return LoadedModel(name, network.to(device).eval(), config, entry)


def install(weights: Path, name: str, kind: str, config: dict, models_dir: Path = MODELS_DIR, **info) -> dict:
    """Copy a safetensors file into ``models_dir`` and record it (with its checksum) in the manifest."""
    if kind not in ("segmentation", "diffusion"):
        raise ValueError(f"kind must be segmentation or diffusion, got {kind!r}")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{name}.safetensors"
    if Path(weights).resolve() != target.resolve():
        shutil.copyfile(weights, target)
    manifest_path = models_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = {"file": target.name, "sha256": sha256(target), "kind": kind, "config": config, **info}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest[name]
