"""Bundled weights: safetensors with SHA-256 in a manifest; damage or mismatch is refused clearly."""
import json
import shutil

import pytest
import torch

from ScarEnhanceLib.weights import ENHANCEMENT, MODELS_DIR, SEGMENTATION, ModelError, load, read_manifest, sha256


@pytest.fixture
def models_copy(tiny_models, tmp_path):
    return shutil.copytree(tiny_models, tmp_path / "models")


def test_loads_in_eval_mode_with_its_config(tiny_models):
    model = load(ENHANCEMENT, tiny_models)
    assert not model.network.training and model.config.image_size == 32


def test_a_damaged_file_is_refused(models_copy):
    entry = read_manifest(models_copy)[SEGMENTATION]
    with open(models_copy / entry["file"], "r+b") as stream:
        stream.seek(200)
        stream.write(b"\0\1\2\3")
    with pytest.raises(ModelError, match="checksum mismatch"):
        load(SEGMENTATION, models_copy)


def test_weights_that_do_not_fit_the_config_are_refused(models_copy):
    manifest = read_manifest(models_copy)
    manifest[ENHANCEMENT]["config"]["block_out_channels"] = [16, 32]
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="do not fit"):
        load(ENHANCEMENT, models_copy)


def test_missing_files_and_entries(models_copy, tmp_path):
    with pytest.raises(ModelError, match="no model manifest"):
        load(ENHANCEMENT, tmp_path / "nowhere")
    (models_copy / read_manifest(models_copy)[ENHANCEMENT]["file"]).unlink()
    with pytest.raises(ModelError, match="missing"):
        load(ENHANCEMENT, models_copy)


@pytest.mark.skipif(not (MODELS_DIR / "manifest.json").exists(), reason="no bundled models")
def test_bundled_models_match_their_manifest_and_carry_provenance():
    manifest = read_manifest()
    for name in (SEGMENTATION, ENHANCEMENT):
        entry = manifest[name]
        assert sha256(MODELS_DIR / entry["file"]) == entry["sha256"]
        assert entry["license"] and entry["training"]["data"] and entry["split"]
        model = load(name, MODELS_DIR, torch.device("cpu"))
        assert sum(p.numel() for p in model.network.parameters()) > 0
