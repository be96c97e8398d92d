"""Training data packed for a lent GPU machine: packed data sets read back exactly and without SimpleITK, the
pack holds the train split only, and tools/gpu/train.sh trains all three models from it (a CPU dry run)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ScarEnhanceLib import labels as L
from ScarEnhanceLib import weights
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.datasets import Case, DatasetSpec, case_names, load_cases, write_packed

from conftest import ROOT, load_script, phantom_case
from test_train import _png_dataset

STUB = ROOT / "tools" / "gpu" / "stub"


def _without_scar(case: Case) -> Case:
    return Case(case.name, case.images, np.where(case.labels == L.SCAR, L.MYOCARDIUM, case.labels).astype(np.uint8),
                case.spacing, case.slice_mm)


def test_packed_data_set_reads_back_every_case_exactly(tmp_path):
    source = DatasetSpec.load(_png_dataset(tmp_path / "emidec"))
    cases = load_cases(source)
    fractional = Case("volume", cases[0].images / 7.0, cases[0].labels, (0.73, 0.75), 5.0)  # not integral: float32
    write_packed([*cases, fractional], sorted(set(source.label_map.values())), tmp_path / "packed")
    packed = DatasetSpec.load(tmp_path / "packed")
    assert packed.layout == "packed" and packed.labels_scar
    assert case_names(packed) == ["Case_P000", "Case_P001", "volume"]
    for original, loaded in zip([*cases, fractional], load_cases(packed)):
        assert loaded.name == original.name and loaded.images.dtype == np.float32
        np.testing.assert_array_equal(loaded.images, original.images.astype(np.float32))
        np.testing.assert_array_equal(loaded.labels, original.labels)
        assert loaded.spacing == original.spacing and loaded.slice_mm == original.slice_mm
    assert [c.name for c in load_cases(packed, ["volume"])] == ["volume"]
    with pytest.raises(ValueError, match="not found"):
        load_cases(packed, ["Case_X"])


def test_a_packed_data_set_without_scar_labels_stays_one_without(tmp_path):
    write_packed([_without_scar(phantom_case(seed=1))], [L.BLOOD_POOL, L.MYOCARDIUM], tmp_path / "ms")
    assert not DatasetSpec.load(tmp_path / "ms").labels_scar


def test_pack_holds_the_train_split_only_and_a_splits_file_naming_it(tmp_path):
    data = tmp_path / "data"
    _png_dataset(data / "emidec", cases=3, slices=2)
    splits = {"emidec": {"train": ["Case_P000", "Case_P002"], "val": ["Case_P001"], "test": []}}
    sizes = load_script("tools/gpu/pack.py").pack(data, tmp_path / "pack", splits, datasets=("emidec",))
    assert sizes["emidec"] > 0
    packed = DatasetSpec.load(tmp_path / "pack" / "data" / "emidec")
    assert case_names(packed) == ["Case_P000", "Case_P002"]
    assert packed.labelled_classes == L.MVO + 1  # no-reflow stays apart for --mvo-class training
    assert any((c.labels == L.MVO).any() for c in load_cases(packed, keep_mvo=True))
    written = json.loads((tmp_path / "pack" / "splits.json").read_text(encoding="utf-8"))
    assert written["emidec"] == {"train": ["Case_P000", "Case_P002"], "val": [], "test": []}


def _python_env(**extra) -> dict:
    """This interpreter first on PATH (train.sh calls python3), the SimpleITK stand-in first on PYTHONPATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{STUB}", **extra}


def _train_on_cpu(pack: Path, out: Path, iterations: int, **extra: str) -> subprocess.CompletedProcess:
    """tools/gpu/train.sh as a dry run on the CPU: ``iterations`` of batch 2 for each model, runs beside ``out``;
    ``extra``: more of the script's settings."""
    settings = {"PACK": str(pack), "OUT": str(out), "RUNS": str(out.parent / "runs"), "DEVICE": "cpu", "WORKERS": "0",
                "BATCH": "2", "SEG_ITERATIONS": str(iterations), "ENH_ITERATIONS": str(iterations), **extra}
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu" / "train.sh")], cwd=ROOT, env=_python_env(**settings),
                          capture_output=True, encoding="utf-8", errors="replace")


def test_the_simpleitk_stand_in_fails_with_its_reason_where_simpleitk_is_used(tmp_path):
    dataset = _png_dataset(tmp_path / "emidec", cases=1, slices=1)
    code = ("from ScarEnhanceLib.datasets import DatasetSpec, load_cases; "
            f"load_cases(DatasetSpec.load({str(dataset)!r}))")
    result = subprocess.run([sys.executable, "-c", code], env=_python_env(), capture_output=True, encoding="utf-8",
                            errors="replace")
    assert result.returncode != 0 and "SimpleITK is not installed here" in result.stderr


def _three_packed_data_sets(pack: Path) -> None:
    """Phantom cases packed as EMIDEC, MyoPS (with scar) and MS-CMRSeg (without), all in the train split."""
    scar_cases = [phantom_case(seed=s, slices=3) for s in range(2)]
    with_scar = [L.BLOOD_POOL, L.MYOCARDIUM, L.SCAR]
    write_packed(scar_cases, with_scar, pack / "data" / "emidec")
    write_packed(scar_cases, with_scar, pack / "data" / "myops2020_train25")
    write_packed([_without_scar(c) for c in scar_cases], with_scar[:2], pack / "data" / "mscmrseg19_lge")
    names = {"train": [c.name for c in scar_cases], "val": [], "test": []}
    (pack / "splits.json").write_text(json.dumps({d: names for d in ("emidec", "myops2020_train25",
                                                                      "mscmrseg19_lge")}), encoding="utf-8")


def test_gpu_training_script_trains_all_three_models_from_packed_data_without_simpleitk(tmp_path):
    """A CPU dry run of tools/gpu/train.sh: two iterations each, SimpleITK replaced by its stand-in."""
    pack = tmp_path / "gpu_pack"
    _three_packed_data_sets(pack)
    out = tmp_path / "out"
    result = _train_on_cpu(pack, out, iterations=2)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name, conditioning in (("enhancement_image", "image"), ("enhancement_tissue_scar", "tissue-scar")):
        config = json.loads((out / name / "config.json").read_text(encoding="utf-8"))
        assert config["model"]["conditioning"] == conditioning and config["iteration"] == 2
    segmentation = json.loads((out / "segmentation" / "config.json").read_text(encoding="utf-8"))
    assert segmentation["model"]["context_slices"] == 1 and segmentation["dataset_shares"] == [0.6, 0.2, 0.2]
    assert segmentation["iteration"] == 2
    models = tmp_path / "models"  # what comes back is a run folder each, as `scarenhance bundle` takes them
    shutil.copytree(ROOT / "Resources" / "models", models, ignore=shutil.ignore_patterns("evaluation", "*.md"))
    for run, name in (("segmentation", "heart_segmentation"), ("enhancement_tissue_scar", "enhancement")):
        assert main(["bundle", str(out / run), "--name", name, "--data", "test", "--license", "test",
                     "--models", str(models)]) == 0
    assert weights.load(weights.ENHANCEMENT, models).config.conditioning == "tissue-scar"
    assert weights.load(weights.SEGMENTATION, models).config.context_slices == 1


def test_gpu_training_script_skips_a_run_given_no_minutes_and_passes_a_lever_to_the_segmentation(tmp_path):
    pack = tmp_path / "gpu_pack"
    _three_packed_data_sets(pack)
    out = tmp_path / "out"
    result = _train_on_cpu(pack, out, iterations=2, ENH_IMAGE_MINUTES="0", ENH_SCAR_MINUTES="0",
                           SEG_ARGS="--synthetic-scar 0.5 --tissue-contrast 0.25")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    segmentation = json.loads((out / "segmentation" / "config.json").read_text(encoding="utf-8"))
    assert segmentation["synthetic_scar"] == 0.5 and segmentation["tissue_contrast"] == 0.25
    assert segmentation["iteration"] == 2
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "== enhancement_image skipped" in log and "== enhancement_tissue_scar skipped" in log
    assert not (out / "enhancement_image").exists() and not (out / "enhancement_tissue_scar").exists()


def test_segmentation_levers_train_side_by_side_and_a_failed_one_spares_the_other(tmp_path):
    pack = tmp_path / "gpu_pack"
    _three_packed_data_sets(pack)
    out = tmp_path / "out"
    settings = {"PACK": str(pack), "OUT": str(out), "DEVICE": "cpu", "WORKERS": "0", "BATCH": "2",
                "SEG_ITERATIONS": "2"}
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu" / "side_by_side.sh"), "control=",
                             "drawn_scars=--synthetic-scar 0.5", "out_of_range=--synthetic-scar 2"], cwd=ROOT,
                            env=_python_env(**settings), capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode != 0  # one run failed
    control = json.loads((out / "control" / "segmentation" / "config.json").read_text(encoding="utf-8"))
    drawn = json.loads((out / "drawn_scars" / "segmentation" / "config.json").read_text(encoding="utf-8"))
    assert control["iteration"] == drawn["iteration"] == 2
    assert control["synthetic_scar"] == 0.0 and drawn["synthetic_scar"] == 0.5
    assert not (out / "out_of_range" / "segmentation").exists()
    assert "== segmentation failed" in (out / "out_of_range" / "train.log").read_text(encoding="utf-8")
    assert not (out / "control" / "enhancement_image").exists()


@pytest.mark.parametrize("runs", [["control"], ["=--synthetic-scar 0.3"], ["a=", "a=--synthetic-scar 0.3"],
                                  ["../up="]])
def test_side_by_side_refuses_runs_without_a_name_of_their_own(tmp_path, runs):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu" / "side_by_side.sh"), *runs], cwd=ROOT,
                            env=_python_env(OUT=str(tmp_path / "out"), PACK=str(tmp_path / "absent")),
                            capture_output=True, encoding="utf-8", errors="replace")
    assert result.returncode == 2 and "a name of its own" in result.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_training_script_trains_the_others_when_one_fails_and_says_so(tmp_path):
    pack = tmp_path / "gpu_pack"
    for name in ("emidec", "myops2020_train25"):  # no MS-CMRSeg: the segmentation fails, the enhancement trains
        write_packed([phantom_case(seed=0, slices=2)], [L.BLOOD_POOL, L.MYOCARDIUM, L.SCAR], pack / "data" / name)
    (pack / "splits.json").write_text(json.dumps({name: {"train": ["phantom0"], "val": [], "test": []}
                                                  for name in ("emidec", "myops2020_train25")}), encoding="utf-8")
    out = tmp_path / "out"
    result = _train_on_cpu(pack, out, iterations=1)
    assert result.returncode != 0
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "== segmentation failed" in log and not (out / "segmentation").exists()
    assert (out / "enhancement_image" / "model.safetensors").exists()
    assert (out / "enhancement_tissue_scar" / "model.safetensors").exists()
