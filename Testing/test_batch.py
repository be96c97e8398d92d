"""scarenhance batch: studies from folders, globs and CSVs, job-array parts, resumable outputs, one summary."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.batch import Study, find_studies, part_of
from ScarEnhanceLib.cli import main
from ScarEnhanceLib.parameters import InputError
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom

FAST = ["--steps", "3", "-k", "2", "--device", "cpu", "--no-report"]


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_a_folder_gives_its_images_with_labels_beside_them_and_its_dicom_series(tmp_path):
    for name in ("b.nii.gz", "b_labels.nii.gz", "a.nrrd", "notes.txt", "series1/IM0001.dcm"):
        _touch(tmp_path / name)
    studies = find_studies([str(tmp_path)])
    assert [s.id for s in studies] == ["a", "b", "series1"]
    assert studies[1].labels == tmp_path / "b_labels.nii.gz" and studies[0].labels is None
    assert studies[2].image == tmp_path / "series1"


def test_upper_case_suffixes_and_dicom_files_of_any_name_are_studies(tmp_path):
    """Scanners and PACS exports name DICOM files *.IMA or by their UID; some file systems upper-case suffixes."""
    preamble = b"\0" * 128 + b"DICM"
    for name in ("B.NII.GZ", "B_labels.NII.GZ", "ima/SLICE.0001.IMA", "uid/1.2.840.113619.2.5"):
        _touch(tmp_path / name)
    (tmp_path / "uid" / "1.2.840.113619.2.5").write_bytes(preamble + b"rest")
    (tmp_path / "notes" / "readme.md").parent.mkdir()
    (tmp_path / "notes" / "readme.md").write_text("not DICOM")
    studies = find_studies([str(tmp_path)])
    assert [s.id for s in studies] == ["B", "ima", "uid"]
    assert studies[0].labels == tmp_path / "B_labels.NII.GZ"


def test_globs_and_a_csv_with_relative_paths_and_ids(tmp_path):
    for name in ("x/one.nii.gz", "x/two.nii.gz", "y/three.nii.gz", "y/three_seg.nii.gz"):
        _touch(tmp_path / name)
    assert [s.id for s in find_studies([str(tmp_path / "x" / "*.nii.gz")])] == ["one", "two"]
    table = tmp_path / "y" / "studies.csv"
    table.write_text("image,labels,id\nthree.nii.gz,three_seg.nii.gz,patient 7\n")
    (study,) = find_studies([str(table)])
    assert study == Study("patient_7", tmp_path / "y" / "three.nii.gz", tmp_path / "y" / "three_seg.nii.gz")


def test_label_maps_beside_their_images_are_no_studies_in_globs_and_file_lists(tmp_path):
    for name in ("p1.nii.gz", "p1_labels.nii.gz", "p2.nrrd", "orphan_labels.nii.gz"):
        _touch(tmp_path / name)
    listed = [str(tmp_path / name) for name in ("p1.nii.gz", "p1_labels.nii.gz", "p2.nrrd")]  # as a shell expands
    for inputs in ([str(tmp_path / "*")], listed, [str(tmp_path)]):  # globs, file lists and folders alike
        studies = find_studies(inputs)
        assert [s.id for s in studies] == ["p1", "p2"]
        assert studies[0].labels == tmp_path / "p1_labels.nii.gz"
    with pytest.raises(InputError, match="no study found"):  # a label map is never a study
        find_studies([str(tmp_path / "orphan_labels.nii.gz")])


def test_clear_errors_for_no_study_duplicate_ids_and_bad_csv(tmp_path):
    with pytest.raises(InputError, match="no study found"):
        find_studies([str(tmp_path / "missing*.nii.gz")])
    _touch(tmp_path / "a" / "s.nii.gz"), _touch(tmp_path / "b" / "s.nii.gz")
    with pytest.raises(InputError, match="share the output folder 's'"):
        find_studies([str(tmp_path / "a"), str(tmp_path / "b")])
    (tmp_path / "bad.csv").write_text("path\nx.nii.gz\n")
    with pytest.raises(InputError, match="'image' column"):
        find_studies([str(tmp_path / "bad.csv")])


def test_parts_cover_every_study_once():
    studies = [Study(f"s{i:02d}", None) for i in range(11)]
    parts = [part_of(studies, 3, i) for i in range(3)]
    assert sorted(s.id for p in parts for s in p) == [s.id for s in studies]
    assert [len(p) for p in parts] == [4, 4, 3]
    with pytest.raises(InputError, match="part-id"):
        part_of(studies, 3, 3)


def _write_study(folder, name, seed, labels=True):
    image, label_image = make_phantom(PhantomSpec(matrix=96, slices=3, spacing_mm=1.6, seed=seed))
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    if labels:
        sitk.WriteImage(label_image, str(folder / f"{name}_labels.nii.gz"))


def _summary(path):
    with open(path, newline="") as stream:
        return {row["study"]: row for row in csv.DictReader(stream)}


def test_batch_enhances_logs_a_failing_study_and_resumes(tiny_models, tmp_path, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    _write_study(studies, "p1", seed=1)
    _write_study(studies, "p2", seed=2, labels=False)  # segmented first
    (studies / "broken.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    arguments = ["batch", str(studies), "-o", str(out), "--models", str(tiny_models), *FAST]
    assert main(arguments) == 2  # one study failed: the others are done all the same
    summary = _summary(out / "summary.csv")
    assert {k: v["status"] for k, v in summary.items()} == {"broken": "failed", "p1": "done", "p2": "done"}
    assert "cannot read" in summary["broken"]["message"] and float(summary["p1"]["seconds"]) > 0
    assert summary["p1"]["scar_segment_cnr_scar_myo_original"] != ""
    assert (out / "p2" / "enhanced.nii.gz").exists() and not list(out.glob("*.partial"))

    (studies / "broken.nii.gz").unlink()
    (out / "p3.partial").mkdir()  # left by an interrupted run
    _write_study(studies, "p3", seed=3)
    capsys.readouterr()
    assert main(arguments) == 0
    summary = _summary(out / "summary.csv")
    assert {k: v["status"] for k, v in summary.items()} == {"p1": "skipped", "p2": "skipped", "p3": "done"}
    assert summary["p1"]["scar_segment_cnr_scar_myo_original"] != ""  # read back from the earlier run
    assert "1 done, 2 skipped" in capsys.readouterr().out and not (out / "p3.partial").exists()


def test_batch_refuses_an_output_folder_holding_its_inputs_and_a_folder_in_the_way(tiny_models, tmp_path, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    _write_study(studies, "p1", seed=1)
    _write_study(studies, "p2", seed=2)
    before = {path.name: path.read_bytes() for path in studies.iterdir()}
    for out in (studies, tmp_path):
        assert main(["batch", str(studies), "-o", str(out), "--models", str(tiny_models), *FAST]) == 2
        assert f"the output folder {out} holds the input" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in studies.iterdir()} == before  # nothing written among them
    out = tmp_path / "out"
    (out / "p1" / "series").mkdir(parents=True)  # something else of that name, not a finished study
    assert main(["batch", str(studies), "-o", str(out), "--models", str(tiny_models), *FAST]) == 2
    summary = _summary(out / "summary.csv")
    assert summary["p1"]["status"] == "failed" and "in the way" in summary["p1"]["message"]
    assert summary["p2"]["status"] == "done" and (out / "p1" / "series").is_dir()  # left as it was


def test_readouts_that_are_not_available_are_empty_fields_in_every_csv(tiny_models, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    _write_study(studies, "p1", seed=1)
    labels = sitk.ReadImage(str(studies / "p1_labels.nii.gz"))
    array = sitk.GetArrayFromImage(labels)
    array[array == 3] = 2  # no scar: no CNR in the Scar segment
    no_scar = sitk.GetImageFromArray(array)
    no_scar.CopyInformation(labels)
    sitk.WriteImage(no_scar, str(studies / "p1_labels.nii.gz"))
    arguments = ["batch", str(studies), "-o", str(tmp_path / "out"), "--models", str(tiny_models), *FAST]
    for _ in range(2):  # run, then skipped: read back from cnr.json
        assert main(arguments) == 0
        row = _summary(tmp_path / "out" / "summary.csv")["p1"]
        assert row["scar_segment_cnr_scar_myo_original"] == "" and row["scar_segment_burden_percent_original"] == "0.0"
    with open(tmp_path / "out" / "p1" / "cnr.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    assert ["Scar segment", "volume", "cnr_scar_myo", "", ""] in rows
    assert not any("nan" in field.lower() for row in rows for field in row)


def test_a_batch_study_equals_a_single_enhance_call_and_parts_write_their_own_summary(tiny_models, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    for seed in (1, 2):
        _write_study(studies, f"p{seed}", seed=seed)
    common = ["--models", str(tiny_models), *FAST, "--seed", "4"]
    for part in (0, 1):
        assert main(["batch", str(studies), "-o", str(tmp_path / "b"), "--num-parts", "2", "--part-id", str(part),
                     *common]) == 0
    assert (tmp_path / "b" / "summary_part0_of_2.csv").exists() and (tmp_path / "b" / "summary_part1_of_2.csv").exists()
    assert main(["enhance", str(studies / "p2.nii.gz"), "--labels", str(studies / "p2_labels.nii.gz"), "-o",
                 str(tmp_path / "single"), *common]) == 0
    batch, single = (sitk.GetArrayFromImage(sitk.ReadImage(str(p / "enhanced.nii.gz")))
                     for p in (tmp_path / "b" / "p2", tmp_path / "single"))
    np.testing.assert_array_equal(batch, single)
