"""DICOM in and out: a derived series of the same study, read back equal to the NIfTI output."""
import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.cli import main
from ScarEnhanceLib.io import read_dicom_tags, read_image, stack_problem, write_dicom_series
from ScarEnhanceLib.parameters import InputError
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom

FAST = ["--steps", "3", "-k", "2", "--device", "cpu", "--no-report"]
SOURCE = {"0010|0010": "Doe^Jane", "0010|0020": "PID-1", "0020|000d": "2.25.1111", "0020|0052": "2.25.2222",
          "0008|0060": "MR", "0008|0020": "20260101"}


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom")
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=3, spacing_mm=1.6, seed=5))
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 1500), sitk.sitkInt16)
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))  # an oblique-free but rotated frame
    labels.CopyInformation(image)
    write_dicom_series(image, folder / "lge", SOURCE, "LGE PSIR")
    sitk.WriteImage(labels, str(folder / "labels.nii.gz"))
    return folder


def _tags(folder):
    return [read_dicom_tags(path) for path in sorted(folder.iterdir())]


def test_enhanced_dicom_is_a_derived_series_of_the_same_study(dicom_study, tiny_models, tmp_path):
    arguments = ["enhance", str(dicom_study / "lge"), "--labels", str(dicom_study / "labels.nii.gz"), "--models",
                 str(tiny_models), *FAST]
    assert main(arguments + ["-o", str(tmp_path / "nifti")]) == 0
    assert main(arguments + ["-o", str(tmp_path / "dicom"), "--format", "dicom", "--uncertainty-dicom"]) == 0
    for name in ("enhanced", "uncertainty"):
        dicom = read_image(tmp_path / "dicom" / name)
        nifti = sitk.ReadImage(str(tmp_path / "nifti" / f"{name}.nii.gz"))
        np.testing.assert_allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(dicom.GetSpacing(), nifti.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(dicom.GetDirection(), nifti.GetDirection(), atol=1e-6)
        tolerance = 0 if name == "enhanced" else float(np.ptp(sitk.GetArrayFromImage(nifti))) / 65535
        np.testing.assert_allclose(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(nifti), atol=tolerance)
    assert read_image(tmp_path / "dicom" / "enhanced").GetPixelID() == sitk.sitkInt16  # pixel type kept
    source, enhanced = _tags(dicom_study / "lge"), _tags(tmp_path / "dicom" / "enhanced")
    for key in ("0020|000d", "0020|0052", "0010|0010", "0010|0020", "0008|0020"):
        assert {t[key].strip() for t in enhanced} == {source[0][key].strip()}, key
    assert len({t["0020|000e"] for t in enhanced}) == 1 and enhanced[0]["0020|000e"] != source[0]["0020|000e"]
    assert len({t["0008|0018"] for t in enhanced + source}) == len(enhanced) + len(source)
    assert enhanced[0]["0008|0008"].strip() == "DERIVED\\SECONDARY"
    numbers = [int(t[0]["0020|0011"]) for t in (source, enhanced, _tags(tmp_path / "dicom" / "uncertainty"))]
    assert numbers[1:] == [100 * numbers[0] + 1, 100 * numbers[0] + 2]  # beside the source's, never equal to it
    assert "ScarEnhance enhanced (fast, 3 steps, lambda 250, k 2)" in enhanced[0]["0008|103e"]
    assert (tmp_path / "dicom" / "roi.nii.gz").exists()


def test_several_series_in_a_folder_need_a_series_uid(dicom_study, tiny_models, tmp_path, capsys):
    folder = tmp_path / "two"
    folder.mkdir()
    image = read_image(dicom_study / "lge")
    for name, series in (("first", image), ("second", image * 2)):
        for path in write_dicom_series(series, tmp_path / name, SOURCE, name).iterdir():
            path.rename(folder / f"{name}_{path.name}")
    uids = sorted({t["0020|000e"].strip() for t in _tags(folder)})
    capsys.readouterr()
    assert main(["segment", str(folder), "-o", str(tmp_path / "l.nii.gz"), "--models", str(tiny_models)]) == 2
    error = capsys.readouterr().err
    assert "--series-uid" in error and all(uid in error for uid in uids) and "first" in error
    chosen = [t for t in _tags(folder) if t["0008|103e"].strip() == "second"][0]["0020|000e"].strip()
    assert main(["segment", str(folder), "--series-uid", chosen, "-o", str(tmp_path / "l.nii.gz"), "--models",
                 str(tiny_models)]) == 0
    table = tmp_path / "cohort.csv"  # batch: a series per study, named in the CSV
    table.write_text(f"image,id,series_uid\ntwo,first,{uids[0]}\ntwo,second,{uids[1]}\n", encoding="utf-8")
    assert main(["batch", str(table), "-o", str(tmp_path / "cohort"), "--models", str(tiny_models), *FAST]) == 0
    read = {study: read_image(tmp_path / "cohort" / study / "enhanced.nii.gz") for study in ("first", "second")}
    originals = {uid: read_image(folder, uid) for uid in uids}
    for study, uid in (("first", uids[0]), ("second", uids[1])):  # each study enhanced its own series
        roi = sitk.GetArrayFromImage(read_image(tmp_path / "cohort" / study / "roi.nii.gz")) == 0
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read[study])[roi],
                                      sitk.GetArrayFromImage(originals[uid])[roi])


def test_dicom_output_needs_a_dicom_input(tiny_models, tmp_path, capsys):
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=3, spacing_mm=1.6))
    sitk.WriteImage(image, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "l.nii.gz"))
    assert main(["enhance", str(tmp_path / "i.nii.gz"), "--labels", str(tmp_path / "l.nii.gz"), "-o",
                 str(tmp_path / "o"), "--format", "dicom", "--models", str(tiny_models), *FAST]) == 2
    assert "not a DICOM series folder or DICOM file" in capsys.readouterr().err
    assert main(["enhance", str(tmp_path / "missing.dcm"), "-o", str(tmp_path / "o"), "--format", "dicom",
                 "--models", str(tiny_models), *FAST]) == 2
    volume = sitk.Cast(sitk.RescaleIntensity(image, 0, 1500), sitk.sitkUInt16)
    volume.SetMetaData("0010|0010", "Doe^Jane")
    sitk.WriteImage(volume, str(tmp_path / "multiframe.dcm"))  # the whole stack in one file
    assert main(["enhance", str(tmp_path / "multiframe.dcm"), "--labels", str(tmp_path / "l.nii.gz"), "-o",
                 str(tmp_path / "from_file"), "--format", "dicom", "--models", str(tiny_models), *FAST]) == 0
    written = _tags(tmp_path / "from_file" / "enhanced")  # was refused: not a folder
    assert len(written) == 3 and {t["0010|0010"].strip() for t in written} == {"Doe^Jane"}
    assert main(["enhance", str(tmp_path / "i.nii.gz"), "--labels", str(tmp_path / "l.nii.gz"), "-o",
                 str(tmp_path / "o"), "--uncertainty-dicom", "--models", str(tiny_models), *FAST]) == 2
    assert "needs --format dicom" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_input_inside_the_dicom_output_folder_is_refused_and_kept(dicom_study, tiny_models, tmp_path, capsys):
    """The enhanced series replaces OUT/enhanced whole: an input there would be deleted with it."""
    study = tmp_path / "out" / "enhanced" / "lge"
    study.parent.mkdir(parents=True)
    for path in (dicom_study / "lge").iterdir():
        (study / path.name).parent.mkdir(exist_ok=True)
        (study / path.name).write_bytes(path.read_bytes())
    before = sorted(p.name for p in study.iterdir())
    for labels in (dicom_study / "labels.nii.gz", None):
        arguments = ["enhance", str(study), "-o", str(tmp_path / "out"), "--format", "dicom", "--models",
                     str(tiny_models), *FAST]
        assert main(arguments + (["--labels", str(labels)] if labels else [])) == 2
        assert "refusing to write over an input" in capsys.readouterr().err
        assert sorted(p.name for p in study.iterdir()) == before


def _stack_tags(depths, orientation="1\\0\\0\\0\\1\\0"):
    return [{"0020|0032": f"0\\0\\{depth}", "0020|0037": orientation} for depth in depths]


def test_a_stack_is_parallel_evenly_spaced_slices_one_image_each():
    assert stack_problem(_stack_tags([0, 8, 16, 24.004])) is None  # positions rounded by the scanner
    assert "no slice position" in stack_problem(_stack_tags([0, 8]) + [{"0020|0037": "1\\0\\0\\0\\1\\0"}])
    tilted = _stack_tags([0, 8]) + _stack_tags([16], "1\\0\\0\\0\\0.8\\0.6")
    assert "not parallel" in stack_problem(tilted)
    assert "4 images lie at 2 slice positions" in stack_problem(_stack_tags([0, 0, 8, 8]))  # magnitude + PSIR
    assert "unevenly spaced (8.00 to 16.00 mm apart)" in stack_problem(_stack_tags([0, 8, 24]))  # a slice missing


def _copy_slice(path, target, scale):
    """A file of the same series and position with other pixels and its own SOP Instance UID."""
    image = sitk.ReadImage(str(path))
    other = sitk.Cast(image * scale, image.GetPixelID())
    for key in image.GetMetaDataKeys():
        other.SetMetaData(key, image.GetMetaData(key))
    other.SetMetaData("0008|0018", f"2.25.{abs(hash((str(path), scale)))}")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(target))
    writer.Execute(other)


def test_a_series_that_is_not_one_stack_is_refused_not_stacked(dicom_study, tmp_path):
    source = read_image(dicom_study / "lge")
    two_per_slice = write_dicom_series(source, tmp_path / "magnitude_and_psir", SOURCE, "LGE")
    for path in sorted(two_per_slice.iterdir()):
        _copy_slice(path, two_per_slice / f"psir_{path.name}", 2)
    with pytest.raises(InputError, match="6 images lie at 3 slice positions: .* several images per slice"):
        read_image(two_per_slice)  # was read as 6 slices 0.8 mm apart
    gap = write_dicom_series(sitk.JoinSeries([source[:, :, 0], source[:, :, 1], source[:, :, 2], source[:, :, 2]]),
                             tmp_path / "gap", SOURCE, "LGE")
    sorted(gap.iterdir())[2].unlink()
    with pytest.raises(InputError, match="unevenly spaced"):
        read_image(gap)  # was read as 3 slices evenly spaced, the last one moved


def _small_volume():
    image = sitk.GetImageFromArray(np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16))
    image.SetSpacing((1.5, 1.5, 10.0))
    return image


def test_patient_names_in_another_character_set_are_written_in_utf8(tmp_path):
    image = _small_volume()
    latin1 = {**SOURCE, "0010|0010": "M\udcfcller^J\udcfcrgen", "0008|0005": "ISO_IR 100",  # as ITK reads Latin-1
              "0018|0050": "8"}
    written = _tags(write_dicom_series(image, tmp_path / "out", latin1, "enhanced"))
    assert {t["0010|0010"].strip() for t in written} == {"Müller^Jürgen"}  # writing it failed
    assert {t["0008|0005"].strip() for t in written} == {"ISO_IR 192"}
    assert written[0]["0018|0050"].strip() == "8"  # the source's thickness, not the spacing between slices
    assert float(written[0]["0018|0088"]) == pytest.approx(image.GetSpacing()[2])


def test_a_failed_dicom_write_leaves_nothing_behind(tmp_path, monkeypatch):
    image = _small_volume()

    def fail_halfway(image, folder, *_):
        (folder / "IM0001.dcm").write_bytes(b"half")
        raise RuntimeError("disk full")
    monkeypatch.setattr("ScarEnhanceLib.io._write_slices", fail_halfway)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dicom_series(image, tmp_path / "out", SOURCE, "enhanced")
    assert list(tmp_path.iterdir()) == []
