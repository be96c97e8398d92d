"""The command line end to end, with tiny untrained models (what is checked is the plumbing)."""
import csv
import json
import shutil
from dataclasses import fields
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.cli import _enhance_parameters, build_parser, main
from ScarEnhanceLib.parameters import EnhanceParameters
from ScarEnhanceLib.volume import same_geometry

from conftest import ROOT

FAST = ["-k", "2", "--steps", "3"]


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", "-o", str(folder), "--matrix", "96", "--slices", "4", "--seed", "2"]) == 0
    return folder / "phantom.nii.gz", folder / "phantom_labels.nii.gz"


def test_uncompressed_nifti_is_an_output_format_as_it_is_an_output_suffix(phantom_files, tiny_models, tmp_path):
    image_path, labels_path = phantom_files
    assert main(["enhance", str(image_path), "--labels", str(labels_path), "-o", str(tmp_path), "--models",
                 str(tiny_models), "--format", "nii", "--no-report", *FAST]) == 0
    image = sitk.ReadImage(str(image_path))
    for name in ("enhanced", "uncertainty", "roi", "labels"):
        assert same_geometry(sitk.ReadImage(str(tmp_path / f"{name}.nii")), image)
        assert not (tmp_path / f"{name}.nii").read_bytes().startswith(b"\x1f\x8b")  # not gzip: uncompressed


def test_enhance_writes_every_output_with_the_inputs_geometry(phantom_files, tiny_models, tmp_path):
    image_path, labels_path = phantom_files
    before = image_path.read_bytes()
    code = main(["enhance", str(image_path), "--labels", str(labels_path), "-o", str(tmp_path), "--models",
                 str(tiny_models), "--format", "nrrd", *FAST])
    assert code == 0
    image = sitk.ReadImage(str(image_path))
    for name in ("enhanced", "uncertainty", "roi", "labels"):
        assert same_geometry(sitk.ReadImage(str(tmp_path / f"{name}.nrrd")), image)
    readouts = json.loads((tmp_path / "cnr.json").read_text(encoding="utf-8"))
    assert set(readouts["regions"]) == {"scar_segment", "nsd", "fwhm"}
    for region in readouts["regions"].values():  # the phantom's scar is bright: every region finds it
        assert region["slices_with_scar"] > 0 and region["volume"]["cnr_scar_myo_original"] > 1
        assert region["burden_percent"]["original"] > 0 and region["description"]
    rows = list(csv.reader((tmp_path / "cnr.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["region", "slices", "metric", "original", "enhanced"]
    assert {row[0] for row in rows[1:]} == {"Scar segment", "5-SD region", "FWHM region"}
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert image_path.read_bytes() == before


def test_a_readout_that_is_not_a_finite_number_is_an_empty_csv_field_as_null_in_json():
    from ScarEnhanceLib.cli import _csv_value
    from ScarEnhanceLib.io import strict_json
    values = [float("nan"), float("inf"), -float("inf"), None]
    assert [_csv_value(v) for v in values] == [""] * 4 and json.loads(strict_json(values)) == [None] * 4
    assert _csv_value(2.5) == 2.5 and _csv_value(0) == 0


def test_seed_makes_results_reproducible(phantom_files, tiny_models, tmp_path):
    image_path, labels_path = phantom_files
    outputs = []
    for run, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        main(["enhance", str(image_path), "--labels", str(labels_path), "-o", str(tmp_path / run), "--models",
              str(tiny_models), "--seed", seed, *FAST])
        outputs.append(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / run / "enhanced.nii.gz"))))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_segment_then_enhance_without_labels(phantom_files, tiny_models, tmp_path):
    image_path, _ = phantom_files
    assert main(["segment", str(image_path), "-o", str(tmp_path / "labels.nii.gz"), "--models",
                 str(tiny_models)]) == 0
    assert same_geometry(sitk.ReadImage(str(tmp_path / "labels.nii.gz")), sitk.ReadImage(str(image_path)))


def test_segment_takes_no_seed_it_would_ignore(phantom_files, tmp_path, capsys):
    """Segmentation draws no noise: a --seed would promise a choice the user does not have."""
    image_path, _ = phantom_files
    with pytest.raises(SystemExit):
        main(["segment", str(image_path), "-o", str(tmp_path / "labels.nii.gz"), "--seed", "3"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err


def _error_of(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err


def test_bad_input_gets_an_error_and_exit_code_not_a_traceback(phantom_files, tiny_models, tmp_path, capsys):
    image_path, labels_path = phantom_files
    models = ["--models", str(tiny_models)]
    code, err = _error_of(capsys, ["enhance", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path), *models])
    assert code == 2 and "no such file" in err
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    code, err = _error_of(capsys, ["segment", str(tmp_path / "junk.nii.gz"), "-o", str(tmp_path / "l.nii.gz"), *models])
    assert code == 2 and "cannot read" in err
    flat = sitk.Image([32, 32], sitk.sitkFloat32)
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    code, err = _error_of(capsys, ["segment", str(tmp_path / "flat.nii.gz"), "-o", str(tmp_path / "l.nii.gz"), *models])
    assert code == 2 and "3D" in err
    with_nan = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path)))
    with_nan[1, 5, 5] = np.nan
    nan = sitk.GetImageFromArray(with_nan)
    nan.CopyInformation(sitk.ReadImage(str(image_path)))
    sitk.WriteImage(nan, str(tmp_path / "nan.mha"))
    code, err = _error_of(capsys, ["enhance", str(tmp_path / "nan.mha"), "--labels", str(labels_path), "-o",
                                   str(tmp_path / "o"), *models])
    assert code == 2 and "NaN" in err
    (tmp_path / "labels.nii.gz").write_bytes(labels_path.read_bytes())
    code, err = _error_of(capsys, ["enhance", str(image_path), "--labels", str(tmp_path / "labels.nii.gz"), "-o",
                                   str(tmp_path), *models])
    assert code == 2 and "refusing to overwrite" in err
    code, err = _error_of(capsys, ["enhance", str(image_path), "--labels", str(labels_path), "-o",
                                   str(tmp_path / "o"), "--models", str(tmp_path / "nomodels")])
    assert code == 2 and "manifest" in err
    code, err = _error_of(capsys, ["enhance", str(image_path), "--labels", str(labels_path), "-o",
                                   str(tmp_path / "o"), *models, "--steps", "0"])
    assert code == 2 and "steps" in err
    assert not (tmp_path / "o" / "enhanced.nii.gz").exists()


def test_evaluate_writes_the_papers_table(tiny_models, tmp_path):
    data = tmp_path / "data"
    for seed in (0, 1):
        assert main(["phantom", "-o", str(tmp_path / "p"), "--matrix", "96", "--slices", "3", "--seed", str(seed)]) == 0
        (tmp_path / "p" / "phantom.nii.gz").rename(data / f"case{seed}.nii.gz") if data.exists() else (
            data.mkdir(), (tmp_path / "p" / "phantom.nii.gz").rename(data / f"case{seed}.nii.gz"))
        (tmp_path / "p" / "phantom_labels.nii.gz").rename(data / f"case{seed}_manual.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(data), "--split", "all", "-o", str(out), "--models", str(tiny_models), "--ablation",
                 "--compare-models", f"other={tiny_models}", *FAST]) == 0
    results = json.loads((out / "evaluation_enhancement.json").read_text(encoding="utf-8"))
    assert set(results) == {"fast, k=2", "fast, k=1", "ddpm-250, k=2", "ddpm-250, k=2, seed 1", "other, fast, k=2"}
    assert results["ddpm-250, k=2"]["summary"]["psnr"] != results["ddpm-250, k=2, seed 1"]["summary"]["psnr"]
    assert all(r["summary"]["cases"] == 2 and 0 < r["summary"]["ssim"] <= 1 for r in results.values())
    assert all(r["summary"]["myo_error_near_border"] >= 0 for r in results.values())
    assert "| fast, k=2 | 2 |" in (out / "evaluation_enhancement.md").read_text(encoding="utf-8")
    made_with = json.loads((out / "evaluation_enhancement_made_with.json").read_text(encoding="utf-8"))
    manifest = json.loads((tiny_models / "manifest.json").read_text(encoding="utf-8"))
    assert made_with["sha256"] == {"enhancement": [manifest["enhancement"]["sha256"]]}  # the ROI: the reference's
    assert made_with["compare_models"] == {"other": [manifest["enhancement"]["sha256"]]}
    assert (made_with["task"], made_with["split"], made_with["splits"], made_with["splits_sha256"]) == (
        "enhancement", "all", None, None)
    assert made_with["parameters"]["k"] == 2 and made_with["roi_from"] == "reference"
    (tmp_path / "data2").mkdir()
    for path in data.glob("case0*"):
        (tmp_path / "data2" / path.name).write_bytes(path.read_bytes())
    assert main(["evaluate", str(data), str(tmp_path / "data2"), "--split", "all", "-o", str(out), "--models",
                 str(tiny_models), "--task", "segmentation"]) == 0
    dice = json.loads((out / "evaluation_segmentation.json").read_text(encoding="utf-8"))  # strict JSON: null, never NaN
    assert dice["data"]["summary"]["cases"] == 2 and dice["data2"]["summary"]["cases"] == 1
    assert all(0 <= r["roi"] <= 1 and 0 <= r["roi_heart_crop"] <= 1 for r in dice["data"]["rows"])
    assert "scar_burden_mad" in dice["data"]["summary"]
    assert "| data2 | 1 |" in (out / "evaluation_segmentation.md").read_text(encoding="utf-8")
    made_with = json.loads((out / "evaluation_segmentation_made_with.json").read_text(encoding="utf-8"))
    assert made_with["sha256"] == {"heart_segmentation": [manifest["heart_segmentation"]["sha256"]]}
    assert made_with["datasets"] == [data.as_posix(), (tmp_path / "data2").as_posix()] and "parameters" not in made_with


def test_evaluate_refuses_splits_that_do_not_cover_the_data_and_data_without_scar_before_any_work(
        phantom_folder, tiny_models, tmp_path, capsys):
    for extra in ([], ["--splits", str(tmp_path / "typo.json")]):  # the default split: test
        code, err = _error_of(capsys, ["evaluate", str(phantom_folder), "-o", str(tmp_path / "e"), "--models",
                                       str(tiny_models), "--task", "segmentation", *extra])
        assert code == 2 and ("do not cover the data set" in err if not extra else "no splits file at" in err)
    no_scar = tmp_path / "no_scar"
    no_scar.mkdir()
    for path in phantom_folder.glob("normal1*"):
        (no_scar / path.name).write_bytes(path.read_bytes())
    (no_scar / "dataset.json").write_text(json.dumps({"label_map": "mscmrseg"}), encoding="utf-8")  # no scar label
    code = main(["evaluate", str(phantom_folder), str(no_scar), "--split", "all", "-o", str(tmp_path / "e2"),
                 "--models", str(tiny_models), *FAST])
    printed = capsys.readouterr()
    assert code == 2 and "has no scar labels" in printed.err
    assert "evaluating" not in printed.out and not (tmp_path / "e2").exists()  # nothing evaluated
    splits = tmp_path / "splits.json"  # covers the first data set only: the second fails before the first runs
    splits.write_text(json.dumps({phantom_folder.name: {"train": [], "val": [], "test": ["scar1"]}}), encoding="utf-8")
    code, err = _error_of(capsys, ["evaluate", str(phantom_folder), str(no_scar), "--splits", str(splits), "-o",
                                   str(tmp_path / "e4"), "--models", str(tiny_models), "--task", "segmentation"])
    assert code == 2 and f"do not cover the data set {no_scar.name!r}" in err and not (tmp_path / "e4").exists()
    for split, message in (("val", "the val split of"), ("train", "have no 'train' part")):
        splits.write_text(json.dumps({phantom_folder.name: {"val": [], "test": ["scar1"]}}), encoding="utf-8")
        code, err = _error_of(capsys, ["evaluate", str(phantom_folder), "--splits", str(splits), "--split", split,
                                       "-o", str(tmp_path / "e5"), "--task", "segmentation"])
        assert code == 2 and message in err and not (tmp_path / "e5").exists()
    code, err = _error_of(capsys, ["evaluate", str(phantom_folder), "--splits", str(splits), "--split", "all",
                                   "-o", str(tmp_path / "e6"), "--task", "segmentation"])
    assert code == 2 and "nothing to choose" in err
    with pytest.raises(SystemExit):
        main(["evaluate", str(phantom_folder), "--split", "all", "--max-cases", "-1", "-o", str(tmp_path / "e3")])
    assert "must be 0 or more" in capsys.readouterr().err


def test_evaluate_records_the_splits_file_and_its_checksum(phantom_folder, tiny_models, tmp_path):
    from ScarEnhanceLib.weights import sha256
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({phantom_folder.name: {"train": [], "val": [], "test": ["scar1", "normal1"]}}),
                      encoding="utf-8")
    assert main(["evaluate", str(phantom_folder), "--splits", str(splits), "--split", "test", "-o", str(tmp_path / "e"),
                 "--models", str(tiny_models), "--task", "segmentation"]) == 0
    made_with = json.loads((tmp_path / "e" / "evaluation_segmentation_made_with.json").read_text(encoding="utf-8"))
    assert made_with["split"] == "test" and made_with["splits"] == splits.resolve().as_posix()
    assert made_with["splits_sha256"] == sha256(splits)  # the same path may hold regenerated splits


def test_evaluate_refuses_a_split_without_scar_cases_an_empty_folder_and_two_folders_of_one_name_before_any_work(
        phantom_folder, tiny_models, tmp_path, capsys):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({phantom_folder.name: {"train": [], "val": [], "test": ["normal1"]}}),
                      encoding="utf-8")
    code = main(["evaluate", str(phantom_folder), "--splits", str(splits), "-o", str(tmp_path / "e1"), "--models",
                 str(tiny_models), *FAST])
    printed = capsys.readouterr()
    assert code == 2 and f"no case of {phantom_folder.name} in the test split has scar" in printed.err
    assert "evaluating" not in printed.out and not (tmp_path / "e1").exists()
    (tmp_path / "empty").mkdir()
    code, err = _error_of(capsys, ["evaluate", str(tmp_path / "empty"), "--split", "all", "-o", str(tmp_path / "e2"),
                                   "--models", str(tiny_models), "--task", "segmentation"])
    assert code == 2 and "no cases found in" in err and not (tmp_path / "e2").exists()
    twin = tmp_path / "other" / phantom_folder.name
    shutil.copytree(phantom_folder, twin)
    code, err = _error_of(capsys, ["evaluate", str(phantom_folder), str(twin), "--split", "all", "-o",
                                   str(tmp_path / "e3"), "--models", str(tiny_models), "--task", "segmentation"])
    assert code == 2 and f"two data sets are named {phantom_folder.name!r}" in err and not (tmp_path / "e3").exists()


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "ScarEnhanceLib", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "enhance" in result.stdout


def test_enhance_inside_a_separate_roi_and_report_progress_lines(phantom_files, tiny_models, tmp_path, capsys):
    image_path, labels_path = phantom_files
    labels = sitk.ReadImage(str(labels_path))
    roi_array = np.zeros(sitk.GetArrayFromImage(labels).shape, np.uint8)
    roi_array[:, 40:56, 40:56] = 1  # a hand-drawn square, unlike the labels
    roi = sitk.GetImageFromArray(roi_array)
    roi.CopyInformation(labels)
    sitk.WriteImage(roi, str(tmp_path / "roi.nii.gz"))
    code = main(["enhance", str(image_path), "--labels", str(labels_path), "--roi", str(tmp_path / "roi.nii.gz"),
                 "-o", str(tmp_path / "out"), "--models", str(tiny_models), "--progress", "lines", *FAST])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROGRESS ")]
    fractions = [float(line.split()[1]) for line in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    used = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "roi.nii.gz")))
    np.testing.assert_array_equal(used, roi_array)
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path)))
    enhanced = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "enhanced.nii.gz")))
    np.testing.assert_array_equal(enhanced[roi_array == 0], original[roi_array == 0])


def test_labels_or_roi_off_the_images_grid_are_refused_by_name_before_anything_runs(phantom_files, tiny_models,
                                                                                      tmp_path, capsys, monkeypatch):
    image_path, labels_path = phantom_files
    shifted = sitk.ReadImage(str(labels_path))
    shifted.SetOrigin([value + 5.0 for value in shifted.GetOrigin()])
    sitk.WriteImage(shifted, str(tmp_path / "other_case.nii.gz"))
    monkeypatch.setattr("ScarEnhanceLib.pipeline.segment", lambda *a: pytest.fail("segmented before the check"))
    for option in ("--labels", "--roi"):  # --roi alone: the labels would come from a segmentation first
        out = tmp_path / option.strip("-")
        assert main(["enhance", str(image_path), option, str(tmp_path / "other_case.nii.gz"), "-o", str(out),
                     "--models", str(tiny_models), *FAST]) == 2
        error = capsys.readouterr().err
        origins = [tuple(round(v, 4) for v in i.GetOrigin()) for i in (sitk.ReadImage(str(image_path)), shifted)]
        assert "other_case.nii.gz" in error and f"differ in origin {origins[0]} against {origins[1]}" in error
        assert "size (" not in error  # only what differs
        assert not out.exists()


def test_every_enhancement_parameter_survives_the_command_line():
    """The Slicer module passes its parameters to the CLI with ``command_line()``: nothing may get lost."""
    chosen = EnhanceParameters(sampler="ddpm", lam=200, steps=40, k=3, dilation_mm=2.5, crop_margin=1.6, seed=7,
                               batch_size=8, device="cpu", compile_network=True)
    assert {f.name for f in fields(chosen)} == {name for name, value in vars(chosen).items()
                                                if value != getattr(EnhanceParameters(), name)}
    for parameters in (chosen, EnhanceParameters()):
        args = build_parser().parse_args(["enhance", "in.nii.gz", "-o", "out", *parameters.command_line()])
        assert _enhance_parameters(args) == parameters


HEAVY_PACKAGES = ("torch", "monai", "diffusers", "matplotlib")


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["enhance", "--help"], ["enhance"]])
def test_help_version_and_argument_errors_import_no_heavy_package(arguments):
    probe = ("import sys\nfrom ScarEnhanceLib.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             f"print('HEAVY', [m for m in {HEAVY_PACKAGES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_no_report_skips_the_figure_and_a_missing_matplotlib_is_a_clear_error(phantom_files, tiny_models, tmp_path,
                                                                              capsys, monkeypatch):
    image_path, labels_path = phantom_files
    arguments = ["enhance", str(image_path), "--labels", str(labels_path), "--models", str(tiny_models), *FAST]
    assert main(arguments + ["-o", str(tmp_path / "a"), "--no-report"]) == 0
    assert (tmp_path / "a" / "cnr.json").exists() and not (tmp_path / "a" / "report.png").exists()
    monkeypatch.setitem(sys.modules, "ScarEnhanceLib.report", None)  # as if matplotlib were not installed
    capsys.readouterr()
    assert main(arguments + ["-o", str(tmp_path / "b")]) == 2
    assert "--no-report" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_serve_runs_requests_in_one_process_and_ends_with_its_input(phantom_files, tiny_models, tmp_path):
    image, labels = phantom_files
    serve = subprocess.Popen([sys.executable, "-m", "ScarEnhanceLib", "serve"], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def request(arguments) -> tuple[int, list]:
        serve.stdin.write(json.dumps(arguments) + "\n")
        serve.stdin.flush()
        lines = []
        while not lines or not lines[-1].startswith("DONE "):
            lines.append(serve.stdout.readline().rstrip("\n"))
        return int(lines[-1].split()[1]), lines[:-1]

    try:
        assert serve.stdout.readline().strip() == "READY"
        enhance = ["enhance", str(image), "--labels", str(labels), "--no-report", "-k", "1", "--steps", "2",
                   "--models", str(tiny_models)]
        for run in ("first", "second"):
            code, said = request(enhance + ["-o", str(tmp_path / run), "--progress", "lines"])
            assert code == 0 and any(line.startswith("PROGRESS ") for line in said)
        np.testing.assert_array_equal(*(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / run / "enhanced.nii.gz")))
                                        for run in ("first", "second")))
        assert request(["enhance", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "x")])[0] == 2
        code, said = request({"not": "a list"})
        assert code == 2 and "one JSON list of arguments" in said[-1]
        assert request(["serve"])[0] == 2  # no server inside the server
        serve.stdin.close()  # how the Slicer module cancels, and what its exit does
        assert serve.wait(timeout=10) == 130
    finally:
        serve.kill()
