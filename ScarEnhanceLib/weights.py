"""Bundled model weights: safetensors files listed in a manifest with their SHA-256.

``Resources/models/manifest.json`` maps a model name to its file, checksum, network configuration,
training data, split and licence. A segmentation model may list further ``members`` (each with its own file,
checksum and configuration): an ensemble whose probabilities are averaged. Loading refuses a file whose checksum
does not match, a configuration whose checksum (``config_sha256``) does not match or whose values are out of
range, a file outside the models folder, and a malformed manifest, each with a one-line message.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import ENHANCEMENT, KINDS, MODELS_DIR, SEGMENTATION  # noqa: F401  (re-exported: the bundled models)
from .diffusion import DiffusionConfig, build_denoiser
from .segmentation import SegmentationConfig, SegmentationEnsemble, build_segmenter

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("file", "sha256", "kind", "config", "config_sha256")
MEMBER_KEYS = ("file", "sha256", "config", "config_sha256")


class ModelError(RuntimeError):
    """A model is missing, damaged or does not fit its configuration."""


def config_sha256(config: dict) -> str:
    """Checksum of a network configuration (canonical JSON), kept beside the weights' checksum."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    if not path.is_file():
        raise ModelError(f"no model manifest at {path}: train the models or pass --models")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise ModelError(f"{path} must hold an object of models")
    return manifest


def _checked_entry(name: str, models_dir: Path) -> dict:
    """The manifest entry with every required key (its members' too)."""
    where = Path(models_dir) / MANIFEST
    entry = read_manifest(models_dir).get(name)
    if entry is None:
        raise ModelError(f"model {name!r} is not in {where}")
    missing = [key for key in REQUIRED_KEYS if not isinstance(entry, dict) or key not in entry]
    if missing:
        raise ModelError(f"{where}: model {name!r} lacks {', '.join(missing)} (re-install it with scarenhance bundle)")
    if entry["kind"] != KINDS.get(name, entry["kind"]) or entry["kind"] not in KINDS.values():
        raise ModelError(f"{where}: model {name!r} has kind {entry['kind']!r}, expected {KINDS.get(name, 'segmentation or diffusion')!r}")
    members = entry.get("members", [])
    if "members" in entry and (entry["kind"] != "segmentation" or not isinstance(members, list) or
                               any(not isinstance(m, dict) or any(key not in m for key in MEMBER_KEYS)
                                   for m in members)):
        raise ModelError(f"{where}: model {name!r} has malformed members: a segmentation ensemble lists for each "
                         f"member {', '.join(MEMBER_KEYS)}")
    return entry


def _weights_file(name: str, part: dict, models_dir: Path) -> Path:
    """The file of ``part`` (an entry or a member), inside ``models_dir`` and with the recorded checksum."""
    where = Path(models_dir) / MANIFEST
    folder = Path(models_dir).resolve()
    path = (folder / str(part["file"])).resolve()
    if folder not in path.parents:
        raise ModelError(f"{where}: model {name!r} names a file outside the models folder: {part['file']}")
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    actual = sha256(path)
    if actual != part["sha256"]:
        raise ModelError(f"checksum mismatch for {path}: expected {part['sha256']}, got {actual}; "
                         "the file is damaged or was replaced")
    return path


def _config_of(name: str, kind: str, part: dict, where: Path):
    which = f"{name!r} ({part['file']})"
    if config_sha256(part["config"]) != part["config_sha256"]:
        raise ModelError(f"{where}: the configuration of {which} does not match its checksum; the manifest was "
                         "edited or damaged")
    try:
        if kind == "segmentation":
            return SegmentationConfig.from_dict(part["config"])
        return DiffusionConfig.from_dict(part["config"])
    except (TypeError, ValueError) as error:
        raise ModelError(f"{where}: the configuration of {which} is not valid: {error}") from error


def _network(name: str, kind: str, part: dict, models_dir: Path):
    """(network with verified weights, its configuration) of an entry or of one of its members."""
    path = _weights_file(name, part, models_dir)
    config = _config_of(name, kind, part, Path(models_dir) / MANIFEST)
    network = build_segmenter(config) if kind == "segmentation" else build_denoiser(config)
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a file that is not safetensors
        raise ModelError(f"{path} is not a safetensors weights file ({str(error).splitlines()[0]})") from error
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = next((line for line in lines[1:] if line.startswith(("size mismatch", "Missing", "Unexpected"))),
                     lines[0] if lines else type(error).__name__)  # the tensor and shapes, not just the header
        raise ModelError(f"weights in {path} do not fit the configuration in the manifest: {first}") from error
    return network, config


def load(name: str, models_dir: Path = MODELS_DIR, device: torch.device | str = "cpu") -> LoadedModel:
    """The named model with verified weights, in eval mode on ``device``; a segmentation entry with members
    loads as a ``SegmentationEnsemble`` (its ``config`` is the first network's)."""
    entry = _checked_entry(name, models_dir)
    parts = [entry, *entry.get("members", [])]
    networks = [_network(name, entry["kind"], part, models_dir) for part in parts]
    network, config = networks[0] if len(networks) == 1 else (SegmentationEnsemble(networks), networks[0][1])
    return LoadedModel(name, network.to(device).eval(), config, entry)


def average_weights(paths: list[Path], target: Path) -> None:
    """Write the mean of weight files of one network, each tensor averaged element-wise (a "model soup").

    Averaging is meaningful only for runs fine-tuned from one start; the caller checks that their configurations match.
    """
    if len(paths) < 2:
        raise ValueError("averaging needs at least two weight files")
    tensors = [load_file(str(path)) for path in paths]
    names = set(tensors[0])
    if not all(tensors[0][key].is_floating_point() for key in names):
        raise ValueError(f"{paths[0]} holds tensors that are not floating point: they cannot be averaged")
    for path, weights in zip(paths[1:], tensors[1:]):
        if set(weights) != names or any((weights[key].shape, weights[key].dtype) !=
                                        (tensors[0][key].shape, tensors[0][key].dtype) for key in names):
            raise ValueError(f"{path} holds other tensors than {paths[0]}: only weights of one network can be averaged")
    mean = {key: (sum(weights[key].double() for weights in tensors) / len(tensors)).to(tensors[0][key].dtype)
            for key in sorted(names)}
    save_file(mean, str(target))


def install(weights: Path, name: str, kind: str, config: dict, models_dir: Path = MODELS_DIR, **info) -> dict:
    """Copy a safetensors file into ``models_dir`` and record it (with its checksum) in the manifest. The copy is
    loaded with its configuration first (weights that do not fit are refused with the folder as it was), then the
    weights and the manifest are each renamed into place, and only then a replaced ensemble's member files go."""
    if kind not in KINDS.values():
        raise ValueError(f"kind must be segmentation or diffusion, got {kind!r}")
    if KINDS.get(name) != kind:  # a name the commands do not load, or the other model's: refused before any copy
        expected = next(key for key, value in KINDS.items() if value == kind)
        raise ValueError(f"a {kind} model is installed as {expected!r}, not {name!r}")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{name}.safetensors"
    manifest = read_manifest(models_dir) if (models_dir / MANIFEST).exists() else {}
    replaced = manifest.get(name)
    entry = _copied_if_it_loads(weights, target, name, kind, {"kind": kind, "config": config,
                                                             "config_sha256": config_sha256(config), **info})
    manifest[name] = entry
    _write_manifest(models_dir, manifest)
    _remove_member_files(replaced, models_dir, manifest)
    return entry


def _copied_if_it_loads(weights: Path, target: Path, name: str, kind: str, record: dict) -> dict:
    """``weights`` copied to ``target`` in its models folder, and ``record`` with the copy's file and checksum; the
    copy is under its own name only once it loads with the record's configuration (else nothing is left)."""
    from .io import atomic_path
    with atomic_path(target) as staged:
        shutil.copyfile(weights, staged)
        part = {"file": target.name, "sha256": sha256(staged), **record}
        _network(name, kind, {**part, "file": staged.name}, target.parent)
    return part


def _write_manifest(models_dir: Path, manifest: dict) -> None:
    from .io import atomic_path
    with atomic_path(Path(models_dir) / MANIFEST) as staged:
        staged.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def _listed_files(manifest: dict) -> set[str]:
    """The file names every entry of ``manifest`` and its members name."""
    entries = [e for e in manifest.values() if isinstance(e, dict)]
    parts = entries + [m for e in entries if isinstance(e.get("members"), list) for m in e["members"]
                       if isinstance(m, dict)]
    return {str(part.get("file")) for part in parts}


def _remove_member_files(entry, models_dir: Path, manifest: dict) -> None:
    """Delete the weights of a replaced ensemble's members, so that no unlisted weights stay in the folder the
    extension ships: plain files directly in ``models_dir`` that no entry of the new ``manifest`` names (never a
    link, nor a file another model uses)."""
    members = entry.get("members") if isinstance(entry, dict) else None
    listed = _listed_files(manifest)
    for member in members if isinstance(members, list) else []:
        name = str(member.get("file", "")) if isinstance(member, dict) else ""
        path = Path(models_dir) / name
        if name and name not in listed and Path(name).name == name and path.is_file() and not path.is_symlink():
            path.unlink()


def add_member(weights: Path, name: str, config: dict, models_dir: Path = MODELS_DIR, **info) -> dict:
    """Copy a segmentation network's weights into ``models_dir`` as one more member of the segmentation model
    ``name`` installed there (an ensemble: the members' probabilities are averaged); returns the member's record.
    The member is loaded once before the manifest lists it, so a member that does not fit its configuration is
    refused and the installed model stays as it was."""
    if not (Path(models_dir) / MANIFEST).is_file() or name not in read_manifest(models_dir):
        raise ModelError(f"no model {name!r} in {models_dir} to add an ensemble member to: install it first")
    entry = _checked_entry(name, models_dir)
    if entry["kind"] != "segmentation":
        raise ValueError(f"only a segmentation model can take ensemble members; {name!r} is {entry['kind']}")
    models_dir = Path(models_dir)
    members = entry.get("members", [])
    number = len(members) + 1
    while (models_dir / f"{name}_member{number}.safetensors").exists():  # never overwrite another file
        number += 1
    target = models_dir / f"{name}_member{number}.safetensors"
    member = _copied_if_it_loads(weights, target, name, "segmentation",
                                 {"config": config, "config_sha256": config_sha256(config), **info})
    manifest = read_manifest(models_dir)
    manifest[name]["members"] = [*members, member]
    _write_manifest(models_dir, manifest)
    return member
