"""DICOM in and out: a derived series of the same study, read back equal to the NIfTI output."""
import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.cli import main
from ScarEnhanceLib.io import read_dicom_tags, read_image, write_dicom_series
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
    assert "not a DICOM series folder" in capsys.readouterr().err
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
