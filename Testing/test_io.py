"""Reading images: files of each format and DICOM series folders."""
import numpy as np
import pytest
import SimpleITK as sitk

from ScarEnhanceLib.cli import OUTPUT_FORMATS
from ScarEnhanceLib.io import check_output_file, check_outputs_apart, read_image, write_image
from ScarEnhanceLib.volume import InputError, same_geometry


@pytest.mark.parametrize("suffix", OUTPUT_FORMATS)
def test_each_output_format_round_trips_with_geometry(phantom, tmp_path, suffix):
    image, _ = phantom
    path = write_image(image, tmp_path / f"lge.{suffix}")
    back = read_image(path)
    assert same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def _write_dicom_series(image: sitk.Image, folder, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    for z in range(image.GetDepth()):
        slice2d = image[:, :, z]
        origin = image.TransformIndexToPhysicalPoint((0, 0, z))
        for key, value in (("0020|000e", series_uid), ("0020|0032", "\\".join(f"{v:f}" for v in origin)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1)),
                           ("0018|0050", f"{image.GetSpacing()[2]:f}"), ("0008|0060", "MR")):
            slice2d.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice2d)


def test_a_dicom_series_folder_reads_as_one_volume(phantom, tmp_path):
    image, _ = phantom
    _write_dicom_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.1.1")
    volume = read_image(tmp_path / "series")
    assert volume.GetSize() == image.GetSize()
    np.testing.assert_allclose(volume.GetSpacing(), image.GetSpacing(), atol=1e-3)


def test_two_series_in_one_folder_are_refused(phantom, tmp_path):
    image, _ = phantom
    _write_dicom_series(image, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.1.1")
    _write_dicom_series(image, tmp_path / "other", "1.2.826.0.1.3680043.2.1125.1.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_image(tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path / "empty")


def test_outputs_may_not_overwrite_inputs(tmp_path):
    with pytest.raises(InputError, match="refusing to overwrite"):
        check_outputs_apart([tmp_path / "a.nii.gz"], [tmp_path / "b.nii.gz", tmp_path / "a.nii.gz"])
    check_outputs_apart([tmp_path / "a.nii.gz", None], [tmp_path / "b.nii.gz"])


def test_a_series_whose_slices_differ_in_size_is_one_line(phantom, tmp_path):
    image, _ = phantom
    uid = "1.2.826.0.1.3680043.2.1125.1.3"
    _write_dicom_series(image, tmp_path / "mixed", uid)
    odd = sitk.Resample(image[:, :, 4:5], [64, 64, 1], sitk.Transform(), sitk.sitkLinear,
                        image.TransformIndexToPhysicalPoint((0, 0, 4)), image.GetSpacing(), image.GetDirection())
    _write_dicom_series(odd, tmp_path / "odd", uid)
    (tmp_path / "odd" / "slice000.dcm").rename(tmp_path / "mixed" / "slice004.dcm")
    with pytest.raises(InputError, match="do not form one volume"):
        read_image(tmp_path / "mixed")


def test_a_multi_frame_dicom_file_reads_as_its_stack_and_a_lone_slice_gets_its_thickness(phantom, tmp_path):
    image, _ = phantom
    stack = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkUInt16)
    (tmp_path / "multi").mkdir()
    sitk.WriteImage(stack, str(tmp_path / "multi" / "stack.dcm"))  # one file, every slice a frame of it
    volume = read_image(tmp_path / "multi")
    assert volume.GetDimension() == 3 and volume.GetSize() == image.GetSize()
    np.testing.assert_allclose(volume.GetSpacing(), image.GetSpacing(), atol=1e-3)  # its own depth kept
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), sitk.GetArrayFromImage(stack))
    assert same_geometry(read_image(tmp_path / "multi" / "stack.dcm"), volume)  # the file itself reads alike
    _write_dicom_series(image[:, :, 2:3], tmp_path / "lone", "1.2.826.0.1.3680043.2.1125.1.4")
    for lone in (read_image(tmp_path / "lone"), read_image(tmp_path / "lone" / "slice000.dcm")):
        assert lone.GetSize() == (*image.GetSize()[:2], 1)
        assert lone.GetSpacing()[2] == pytest.approx(image.GetSpacing()[2], abs=1e-3)  # Slice Thickness, not 1 mm


def test_an_image_itk_cannot_read_is_refused_with_its_reason(tmp_path):
    path = tmp_path / "sheared.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)), str(path))
    header = bytearray(path.read_bytes())
    header[252:256] = np.array([0, 1], "<i2").tobytes()  # no qform; an sform ...
    header[280:328] = np.array([1.5, 0.7, 0, 0, 0, 1.5, 0, 0, 0, 0, 8, 0], "<f4").tobytes()  # ... with a shear
    path.write_bytes(bytes(header))
    with pytest.raises(InputError, match="cannot read .* supported\\): ITK only supports orthonormal direction"):
        read_image(path)


def test_upper_case_suffixes_read_with_the_same_checks_and_outputs_ask_for_lower_case(phantom, tmp_path):
    image, _ = phantom
    sitk.WriteImage(image, str(tmp_path / "whole.nii.gz"))
    data = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "CUT.NII.GZ").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        read_image(tmp_path / "CUT.NII.GZ")
    (tmp_path / "WHOLE.NII.GZ").write_bytes(data)
    assert same_geometry(read_image(tmp_path / "WHOLE.NII.GZ"), image)
    with pytest.raises(InputError, match="in lower case"):  # ITK writes none of .NII.GZ, .NII, .MHA
        check_output_file(tmp_path / "LABELS.NII.GZ", (".nii.gz", ".nrrd"))
    assert check_output_file(tmp_path / "labels.nii.gz", (".nii.gz", ".nrrd")) == tmp_path / "labels.nii.gz"
