"""Damaged, shared or half-written files never give silent wrong results or lose data (the command-line review's
cases): each ends in one line and exit code 2, before any computation where it can, and leaves inputs alone."""
import gzip
import hashlib
import os

import numpy as np
import pytest
import SimpleITK as sitk

import ScarEnhanceLib.io as io
import ScarEnhanceLib.pipeline as pipeline
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.io import output_lock, read_image, write_dicom_series, write_image
from ScarEnhanceLib.parameters import InputError
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom
from ScarEnhanceLib.volume import slice_axis

FAST = ["--steps", "2", "-k", "1", "--device", "cpu", "--no-report"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=3, spacing_mm=1.6, seed=1))
    sitk.WriteImage(image, str(folder / "img.nii.gz"))
    sitk.WriteImage(labels, str(folder / "lab.nii.gz"))
    return folder


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _run(capsys, arguments):
    capsys.readouterr()
    code = main(arguments)
    return code, capsys.readouterr().err


def _error_lines(err: str) -> int:
    """Lines of stderr besides the progress bar's."""
    return len([line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line])


def _never_enhance(monkeypatch):
    def fail(*_, **__):
        raise AssertionError("computed before the error")
    monkeypatch.setattr(pipeline, "enhance", fail)
    monkeypatch.setattr(pipeline, "segment", fail)


def _damaged_copies(study, tmp_path):
    data = (study / "img.nii.gz").read_bytes()
    raw = gzip.decompress(data)
    (tmp_path / "half.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "no_trailer.nii.gz").write_bytes(data[:-10])
    (tmp_path / "short.nii").write_bytes(raw[:-5000])
    (tmp_path / "header_only.nii").write_bytes(raw[:352])
    return ["half.nii.gz", "no_trailer.nii.gz", "short.nii", "header_only.nii"]


def test_truncated_nifti_files_are_refused(study, tiny_models, tmp_path, capsys, monkeypatch):
    _never_enhance(monkeypatch)
    for name in _damaged_copies(study, tmp_path):
        code, err = _run(capsys, ["enhance", str(tmp_path / name), "--labels", str(study / "lab.nii.gz"), "-o",
                                  str(tmp_path / f"out_{name}"), "--models", str(tiny_models), *FAST])
        assert code == 2 and ("truncated" in err or "damaged" in err) and _error_lines(err) == 1, name
        assert not (tmp_path / f"out_{name}").exists(), name
    code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(tmp_path / "half.nii.gz"), "-o",
                              str(tmp_path / "o"), "--models", str(tiny_models), *FAST])
    assert code == 2 and "truncated" in err  # a truncated label file is named as such


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_in_nifti_are_refused(study, tmp_path, bad):
    image = sitk.ReadImage(str(study / "img.nii.gz"))
    array = sitk.GetArrayFromImage(image)
    array[1, 40, 40] = bad
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(tmp_path / "bad.nii.gz"))
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(tmp_path / "bad.nii.gz")


def test_a_hard_link_at_an_output_path_is_refused(study, tiny_models, tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    image = source / "img.nii.gz"
    image.write_bytes((study / "img.nii.gz").read_bytes())
    before = _digest(image)
    os.link(image, source / "labels_out.nii.gz")
    code, err = _run(capsys, ["segment", str(image), "-o", str(source / "labels_out.nii.gz"), "--models",
                              str(tiny_models)])
    assert code == 2 and "refusing to overwrite an input" in err
    (tmp_path / "out").mkdir()
    os.link(image, tmp_path / "out" / "enhanced.nii.gz")
    code, err = _run(capsys, ["enhance", str(image), "--labels", str(study / "lab.nii.gz"), "-o", str(tmp_path / "out"),
                              "--models", str(tiny_models), *FAST])
    assert code == 2 and "refusing to overwrite an input" in err and _digest(image) == before


def test_an_interrupted_write_leaves_the_previous_file_whole(study, tmp_path, monkeypatch):
    target = write_image(sitk.ReadImage(str(study / "img.nii.gz")), tmp_path / "enhanced.nii.gz")
    before = _digest(target)

    def interrupted(image, path, useCompression=True):
        open(path, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(io.sitk, "WriteImage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(sitk.ReadImage(str(study / "lab.nii.gz")), target)
    assert _digest(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["enhanced.nii.gz"]


def test_a_second_run_into_a_locked_folder_stops_at_once(study, tiny_models, tmp_path, capsys, monkeypatch):
    _never_enhance(monkeypatch)
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out"):
        code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(study / "lab.nii.gz"), "-o",
                                  str(tmp_path / "out"), "--models", str(tiny_models), *FAST])
    assert code == 2 and "another scarenhance run is writing into" in err


def test_a_2d_or_4d_image_is_refused_before_the_model_loads_or_an_output_folder_is_made(
        study, tiny_models, tmp_path, capsys, monkeypatch):
    import ScarEnhanceLib.cli as cli

    def no_model(*_):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(cli, "_load", no_model)
    volume = sitk.ReadImage(str(study / "img.nii.gz"))
    sitk.WriteImage(volume[:, :, 1], str(tmp_path / "flat.nrrd"))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tmp_path / "4d.nrrd"))
    for name, dimensions in (("flat.nrrd", 2), ("4d.nrrd", 4)):
        image = str(tmp_path / name)
        for arguments in (["segment", image, "-o", str(tmp_path / "seg" / "labels.nii.gz")],
                          ["enhance", image, "-o", str(tmp_path / "enh"), *FAST]):
            code, err = _run(capsys, [*arguments, "--models", str(tiny_models)])
            assert code == 2 and f"expected a 3D volume, got a {dimensions}D image" in err
        assert not (tmp_path / "enh").exists()


def test_segment_warns_when_it_finds_no_heart(study, tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "segment", lambda image, *_: sitk.Image(image.GetSize(), sitk.sitkUInt8))
    code, err = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(tmp_path / "labels.nii.gz"),
                              "--models", str(tiny_models)])
    assert code == 0 and "no heart found" in err and (tmp_path / "labels.nii.gz").exists()


def test_segment_writes_beside_other_runs_and_leaves_no_lock_file(study, tiny_models, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    with output_lock(tmp_path / "data"):  # a run writing into the folder, e.g. another case being segmented
        code, _ = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(tmp_path / "data" / "a_labels.nii.gz"),
                                "--models", str(tiny_models)])
    assert code == 0 and sorted(p.name for p in (tmp_path / "data").iterdir()) == [".scarenhance.lock",
                                                                                  "a_labels.nii.gz"]
    code, _ = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(tmp_path / "b_labels.nii.gz"),
                            "--models", str(tiny_models)])
    assert code == 0 and not (tmp_path / ".scarenhance.lock").exists()


def test_a_one_slice_dicom_series_keeps_its_thickness_as_slice_axis(study, tmp_path):
    image = sitk.Cast(sitk.ReadImage(str(study / "img.nii.gz"))[:, :, 1:2], sitk.sitkInt16)
    write_dicom_series(image, tmp_path / "one", {"0008|0060": "MR"}, "one slice")
    back = read_image(tmp_path / "one")
    assert back.GetSpacing()[2] == pytest.approx(8.0) and slice_axis(back) == 0


@pytest.mark.parametrize("dtype, offset", [(np.int32, 100_000_000), (np.float64, 1e-9)])
def test_voxels_outside_the_roi_stay_bit_exact_for_int32_and_float64(study, tiny_models, dtype, offset):
    from ScarEnhanceLib.parameters import EnhanceParameters
    from ScarEnhanceLib.weights import ENHANCEMENT, load
    source = sitk.ReadImage(str(study / "img.nii.gz"))
    array = (sitk.GetArrayFromImage(source).astype(np.float64) * 1000 + offset).astype(dtype)
    array += (np.arange(array.size).reshape(array.shape) % 7).astype(dtype)  # values float32 cannot hold
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(source)
    labels = sitk.ReadImage(str(study / "lab.nii.gz"))
    result = pipeline.enhance(image, labels, load(ENHANCEMENT, tiny_models), EnhanceParameters(steps=2, k=1))
    enhanced = sitk.GetArrayFromImage(result.enhanced)
    outside = sitk.GetArrayFromImage(labels) == 0
    assert enhanced.dtype == array.dtype and np.array_equal(enhanced[outside], array[outside])


def test_output_location_errors_come_before_any_computation(study, tiny_models, tmp_path, capsys, monkeypatch):
    _never_enhance(monkeypatch)
    (tmp_path / "a_file").write_text("x")
    common = ["--labels", str(study / "lab.nii.gz"), "--models", str(tiny_models), *FAST]
    for output, message in ((tmp_path / "a_file", "is an existing file"), (tmp_path / "a_file" / "sub", "cannot write")):
        code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "-o", str(output), *common])
        assert code == 2 and message in err and _error_lines(err) == 1, output
    code, err = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(tmp_path), "--models", str(tiny_models)])
    assert code == 2 and "is a folder" in err
    for name in ("labels.png", "labels.txt", "labels.mhd", "labels.nhdr"):  # not a volume, or a two-file one
        code, err = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(tmp_path / name), "--models",
                                  str(tiny_models)])
        assert code == 2 and "must end in .nii.gz, .nii, .nrrd, .mha" in err and not (tmp_path / name).exists()
    code, err = _run(capsys, ["phantom", "-o", str(tmp_path / "a_file")])
    assert code == 2 and "is an existing file" in err


def test_every_error_is_one_line_unless_debug_is_asked_for(study, tiny_models, capsys, monkeypatch):
    def broken(*_, **__):
        raise ZeroDivisionError("division by zero\nsecond line")
    monkeypatch.setattr(pipeline, "segment", broken)
    arguments = ["segment", str(study / "img.nii.gz"), "-o", str(study / "l.nii.gz"), "--models", str(tiny_models)]
    code, err = _run(capsys, arguments)
    assert code == 2 and err.strip().splitlines()[-1] == "scarenhance: error: division by zero" and _error_lines(err) == 1
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *arguments])


@pytest.mark.parametrize("option, message", [
    (["--crop-margin", "inf"], "crop margin must be between 1 and 4"),
    (["--crop-margin", "nan"], "crop margin must be between 1 and 4"),
    (["--crop-margin", "1000"], "crop margin must be between 1 and 4"),
    (["--seed", str(2**70)], "seed must be between 0 and 2**63 - 1"),
])
def test_settings_out_of_range_are_one_line_errors(study, tiny_models, tmp_path, capsys, option, message):
    code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(study / "lab.nii.gz"), "-o",
                              str(tmp_path / "o"), "--models", str(tiny_models), *FAST, *option])
    assert code == 2 and message in err and not (tmp_path / "o").exists()


def test_ddpm_ignores_steps_and_runs(study, tiny_models, tmp_path):
    assert main(["enhance", str(study / "img.nii.gz"), "--labels", str(study / "lab.nii.gz"), "-o", str(tmp_path),
                 "--models", str(tiny_models), "--sampler", "ddpm", "--lambda", "3", "--steps", "1000", "-k", "1",
                 "--device", "cpu", "--no-report"]) == 0


def test_blank_images_vector_labels_and_unexpected_label_values(study, tiny_models, tmp_path, capsys):
    source = sitk.ReadImage(str(study / "img.nii.gz"))
    blank = sitk.Image(source.GetSize(), sitk.sitkFloat32)
    blank.CopyInformation(source)
    sitk.WriteImage(blank, str(tmp_path / "blank.nii.gz"))
    common = ["--models", str(tiny_models), *FAST]
    code, err = _run(capsys, ["enhance", str(tmp_path / "blank.nii.gz"), "--labels", str(study / "lab.nii.gz"), "-o",
                              str(tmp_path / "o1"), *common])
    assert code == 2 and "one value everywhere" in err
    labels = sitk.ReadImage(str(study / "lab.nii.gz"))
    rgb = sitk.Compose([labels] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(tmp_path / "rgb.nrrd"), "-o",
                              str(tmp_path / "o2"), *common])
    assert code == 2 and "scalar label map" in err and _error_lines(err) == 1
    raw = sitk.Cast(labels, sitk.sitkUInt16) * 200
    sitk.WriteImage(raw, str(tmp_path / "raw.nii.gz"))
    code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(tmp_path / "raw.nii.gz"), "-o",
                              str(tmp_path / "o3"), *common])
    assert code == 0 and "warning: the labels hold values other than" in err and "200, 400, 600" in err


def test_float64_beyond_float32_is_named_as_such(study, tmp_path):
    source = sitk.ReadImage(str(study / "img.nii.gz"))
    huge = sitk.GetImageFromArray(sitk.GetArrayFromImage(source).astype(np.float64) * 1e300)
    huge.CopyInformation(source)
    sitk.WriteImage(huge, str(tmp_path / "huge.nrrd"))
    from ScarEnhanceLib.volume import to_array
    with pytest.raises(InputError, match="exceed the float32 range"):
        to_array(read_image(tmp_path / "huge.nrrd"))


def test_a_dicom_input_folder_is_not_an_output_folder(study, tiny_models, tmp_path, capsys):
    image = sitk.Cast(sitk.ReadImage(str(study / "img.nii.gz")), sitk.sitkInt16)
    write_dicom_series(image, tmp_path / "dicom", {"0008|0060": "MR"}, "lge")
    code, err = _run(capsys, ["enhance", str(tmp_path / "dicom"), "--labels", str(study / "lab.nii.gz"), "-o",
                              str(tmp_path / "dicom"), "--models", str(tiny_models), *FAST])
    assert code == 2 and "input DICOM folder" in err and len(list((tmp_path / "dicom").iterdir())) == 3


def test_a_folder_without_dicom_is_one_line_without_itk_warnings(tiny_models, tmp_path, capfd):
    (tmp_path / "README").write_text("not DICOM")
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "out" / "l.nii.gz"), "--models", str(tiny_models)]) == 2
    err = capfd.readouterr().err
    assert err.strip() == f"scarenhance: error: no DICOM series in {tmp_path}"


def test_readouts_of_huge_float64_values_equal_those_of_the_same_image_unscaled(study, tiny_models, tmp_path):
    import json
    source = sitk.ReadImage(str(study / "img.nii.gz"))
    huge = sitk.GetImageFromArray(sitk.GetArrayFromImage(source).astype(np.float64) * 1e30)
    huge.CopyInformation(source)
    sitk.WriteImage(huge, str(tmp_path / "huge.nrrd"))
    readouts = []
    for name, image in (("plain", study / "img.nii.gz"), ("huge", tmp_path / "huge.nrrd")):
        assert main(["enhance", str(image), "--labels", str(study / "lab.nii.gz"), "-o", str(tmp_path / name),
                     "--models", str(tiny_models), *FAST]) == 0
        readouts.append(json.loads((tmp_path / name / "cnr.json").read_text(encoding="utf-8"))["regions"]["scar_segment"]["volume"])
    assert readouts[1]["cnr_scar_myo_original"] == pytest.approx(readouts[0]["cnr_scar_myo_original"], rel=1e-5)
    assert readouts[1]["cnr_scar_myo_original"] > 1


def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_work(study, tiny_models, capsys, monkeypatch):
    _never_enhance(monkeypatch)
    code, err = _run(capsys, ["enhance", str(study / "img.nii.gz"), "--labels", str(study / "lab.nii.gz"), "-o",
                              "/proc/scarenhance-output", "--models", str(tiny_models), *FAST])
    assert code == 2 and "cannot write into the output folder /proc/scarenhance-output" in err and _error_lines(err) == 1


def test_an_interrupt_is_one_line_with_exit_code_130(study, tiny_models, capsys, monkeypatch):
    def interrupted(*_, **__):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "segment", interrupted)
    code, err = _run(capsys, ["segment", str(study / "img.nii.gz"), "-o", str(study / "l.nii.gz"), "--models",
                              str(tiny_models)])
    assert code == 130 and err.strip().splitlines()[-1].startswith("scarenhance: interrupted") and _error_lines(err) == 1


def test_a_phantom_without_slices_is_a_clear_error(tmp_path, capsys):
    code, err = _run(capsys, ["phantom", "-o", str(tmp_path), "--slices", "0"])
    assert code == 2 and "at least 1 slice" in err
