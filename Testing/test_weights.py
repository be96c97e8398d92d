"""Bundled weights: safetensors with SHA-256 in a manifest; damage or mismatch is refused clearly."""
import json
import shutil

import pytest
import torch

from ScarEnhanceLib.segmentation import SegmentationConfig, SegmentationEnsemble
from ScarEnhanceLib.weights import (ENHANCEMENT, MODELS_DIR, SEGMENTATION, ModelError, add_member, config_sha256,
                                   install, load, read_manifest, sha256)


@pytest.fixture
def models_copy(tiny_models, tmp_path):
    return shutil.copytree(tiny_models, tmp_path / "models")


def _write_with_config_checksum(models, manifest):
    for entry in manifest.values():
        entry["config_sha256"] = config_sha256(entry["config"])
    (models / "manifest.json").write_text(json.dumps(manifest))


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


def test_a_segmentation_with_members_loads_as_an_ensemble_and_each_member_is_checked(models_copy):
    entry = read_manifest(models_copy)[SEGMENTATION]
    finer = {**entry["config"], "spacing_mm": 1.25}
    member = add_member(models_copy / entry["file"], SEGMENTATION, finer, models_copy, training={"data": "test"})
    assert member["file"] == "heart_segmentation_member1.safetensors" and member["training"] == {"data": "test"}
    model = load(SEGMENTATION, models_copy)
    assert isinstance(model.network, SegmentationEnsemble) and not model.network.training
    assert [c.spacing_mm for c in model.network.configs] == [entry["config"]["spacing_mm"], 1.25]
    assert model.config == SegmentationConfig.from_dict(entry["config"])
    with pytest.raises(ValueError, match="only a segmentation model"):
        add_member(models_copy / entry["file"], ENHANCEMENT, finer, models_copy)
    with open(models_copy / member["file"], "r+b") as stream:
        stream.seek(200)
        stream.write(b"\0\1\2\3")
    with pytest.raises(ModelError, match="checksum mismatch"):
        load(SEGMENTATION, models_copy)
    manifest = read_manifest(models_copy)
    damaged = {key: value for key, value in manifest[SEGMENTATION]["members"][0].items() if key != "config_sha256"}
    for members, name in (([damaged], SEGMENTATION), (None, SEGMENTATION), (0, SEGMENTATION), ([], ENHANCEMENT)):
        broken = json.loads(json.dumps(manifest))
        broken[name]["members"] = members
        (models_copy / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ModelError, match="malformed members"):
            load(name, models_copy)


def test_an_ensemble_member_that_does_not_fit_its_configuration_is_refused_and_nothing_changes(models_copy):
    entry = read_manifest(models_copy)[SEGMENTATION]
    before = {path.name: path.read_bytes() for path in models_copy.iterdir()}
    wider = {**entry["config"], "channels": [2 * c for c in entry["config"]["channels"]]}
    with pytest.raises(ModelError, match="do not fit the configuration"):
        add_member(models_copy / entry["file"], SEGMENTATION, wider, models_copy)
    assert {path.name: path.read_bytes() for path in models_copy.iterdir()} == before


def test_installing_over_an_ensemble_removes_its_members_weights(models_copy):
    entry = read_manifest(models_copy)[SEGMENTATION]
    add_member(models_copy / entry["file"], SEGMENTATION, entry["config"], models_copy)
    assert (models_copy / "heart_segmentation_member1.safetensors").is_file()
    (models_copy / "heart_segmentation_member2.safetensors").write_bytes(b"someone else's file")
    second = add_member(models_copy / entry["file"], SEGMENTATION, entry["config"], models_copy)
    assert second["file"] == "heart_segmentation_member3.safetensors", "an unlisted file is never overwritten"
    install(models_copy / entry["file"], SEGMENTATION, "segmentation", entry["config"], models_copy)
    assert not (models_copy / "heart_segmentation_member1.safetensors").exists()
    assert not (models_copy / "heart_segmentation_member3.safetensors").exists()
    assert (models_copy / "heart_segmentation_member2.safetensors").is_file(), "only the manifest's members go"
    assert "members" not in read_manifest(models_copy)[SEGMENTATION]


def test_installing_weights_that_do_not_fit_their_config_changes_nothing(models_copy):
    entry = read_manifest(models_copy)[SEGMENTATION]
    add_member(models_copy / entry["file"], SEGMENTATION, entry["config"], models_copy)  # an ensemble to replace
    before = {path.name: path.read_bytes() for path in models_copy.iterdir()}
    wider = {**entry["config"], "channels": [2 * c for c in entry["config"]["channels"]]}
    with pytest.raises(ModelError, match="do not fit the configuration in the manifest: size mismatch for "):
        install(models_copy / entry["file"], SEGMENTATION, "segmentation", wider, models_copy)
    assert {path.name: path.read_bytes() for path in models_copy.iterdir()} == before  # was installed unloaded
    load(SEGMENTATION, models_copy)


def test_installing_over_an_ensemble_keeps_files_other_models_use_and_follows_no_link(models_copy):
    manifest = read_manifest(models_copy)
    entry = manifest[SEGMENTATION]
    (models_copy / "elsewhere.safetensors").symlink_to(models_copy / manifest[ENHANCEMENT]["file"])
    manifest[SEGMENTATION]["members"] = [{**entry, "file": manifest[ENHANCEMENT]["file"]},
                                         {**entry, "file": "elsewhere.safetensors"}]  # an edited manifest
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    install(models_copy / entry["file"], SEGMENTATION, "segmentation", entry["config"], models_copy)
    assert (models_copy / "elsewhere.safetensors").is_symlink()  # its target was deleted through it
    load(ENHANCEMENT, models_copy)  # its weights, which the ensemble's member also named, are still there


def test_weights_that_do_not_fit_the_config_are_refused(models_copy):
    manifest = read_manifest(models_copy)
    manifest[ENHANCEMENT]["config"]["block_out_channels"] = [16, 32]
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="does not match its checksum"):
        load(ENHANCEMENT, models_copy)
    _write_with_config_checksum(models_copy, manifest)
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
        for part in (entry, *entry.get("members", [])):
            assert sha256(MODELS_DIR / part["file"]) == part["sha256"]
            assert part["license"] and part["training"]["data"] and part["split"]
        model = load(name, MODELS_DIR, torch.device("cpu"))
        assert sum(p.numel() for p in model.network.parameters()) > 0


def test_an_absurd_noise_schedule_is_refused_even_with_a_matching_checksum(models_copy):
    manifest = read_manifest(models_copy)
    manifest[ENHANCEMENT]["config"].update(beta_start=0.5, beta_end=5.0)
    _write_with_config_checksum(models_copy, manifest)
    with pytest.raises(ModelError, match="beta_start < beta_end < 1"):
        load(ENHANCEMENT, models_copy)


@pytest.mark.parametrize("change, message", [
    ({"file": "../outside.safetensors"}, "outside the models folder"),
    ({"file": "/etc/hostname"}, "outside the models folder"),
    ({"file": "."}, "outside the models folder"),
    ({"kind": "bogus"}, "has kind 'bogus'"),
    ({"kind": "segmentation"}, "expected 'diffusion'"),
])
def test_manifest_entries_that_leave_the_folder_or_lie_about_their_kind(models_copy, tmp_path, change, message):
    shutil.copyfile(models_copy / read_manifest(models_copy)[ENHANCEMENT]["file"], tmp_path / "outside.safetensors")
    manifest = read_manifest(models_copy)
    manifest[ENHANCEMENT].update(change)
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load(ENHANCEMENT, models_copy)


def test_malformed_manifests_get_one_line_errors(models_copy):
    manifest = read_manifest(models_copy)
    del manifest[ENHANCEMENT]["sha256"]
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="lacks sha256"):
        load(ENHANCEMENT, models_copy)
    manifest = read_manifest(models_copy)
    manifest[ENHANCEMENT]["sha256"] = "x"
    manifest[ENHANCEMENT]["config"]["colour"] = "blue"
    _write_with_config_checksum(models_copy, manifest)
    (models_copy / read_manifest(models_copy)[ENHANCEMENT]["file"]).write_bytes(b"not safetensors")
    manifest[ENHANCEMENT]["sha256"] = sha256(models_copy / manifest[ENHANCEMENT]["file"])
    _write_with_config_checksum(models_copy, manifest)
    with pytest.raises(ModelError, match=r"configuration of 'enhancement' \(.*\) is not valid"):
        load(ENHANCEMENT, models_copy)
    del manifest[ENHANCEMENT]["config"]["colour"]
    _write_with_config_checksum(models_copy, manifest)
    with pytest.raises(ModelError, match="not a safetensors weights file"):
        load(ENHANCEMENT, models_copy)
    (models_copy / "manifest.json").write_text('{"enhancement": {"file": ')
    with pytest.raises(ModelError, match="manifest.json is not valid JSON"):
        load(ENHANCEMENT, models_copy)


def test_segmentation_config_out_of_range_is_refused(models_copy):
    manifest = read_manifest(models_copy)
    manifest[SEGMENTATION]["config"]["spacing_mm"] = 0
    _write_with_config_checksum(models_copy, manifest)
    with pytest.raises(ModelError, match="spacing_mm must be"):
        load(SEGMENTATION, models_copy)
