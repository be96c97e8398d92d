"""Reading and writing images: NIfTI, NRRD, MHA (anything SimpleITK reads) and DICOM series."""
from __future__ import annotations

import json
import math
from pathlib import Path

import SimpleITK as sitk

from .volume import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def read_image(path: Path, series_uid: str | None = None) -> sitk.Image:
    """An image file, or a folder holding a DICOM series (``series_uid`` chooses one of several)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        return _read_dicom_series(path, series_uid)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read {path} as an image (NIfTI, NRRD, MHA or DICOM are supported)") from error


def dicom_series_files(folder: Path, series_uid: str | None = None) -> list[str]:
    """Files of the DICOM series in ``folder``: the only one, or the one with ``series_uid``; otherwise a clear
    error that lists the series found."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"no DICOM series in {folder}")
    if series_uid is not None and series_uid not in series:
        raise InputError(f"no series {series_uid} in {folder}; found: {_series_list(folder, series)}")
    if series_uid is None and len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; choose one with --series-uid: "
                         f"{_series_list(folder, series)}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or series[0]))


def _series_list(folder: Path, series: tuple) -> str:
    described = []
    for uid in series:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        description = read_dicom_tags(files[0]).get(SERIES_DESCRIPTION, "").strip()
        described.append(f"{uid} ({len(files)} files{', ' + description if description else ''})")
    return "; ".join(described)


def read_dicom_tags(path) -> dict[str, str]:
    """Every tag of one DICOM file (``gggg|eeee`` -> value), read without its pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


def _read_dicom_series(folder: Path, series_uid: str | None = None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(folder, series_uid))
    return reader.Execute()


SERIES_DESCRIPTION = "0008|103e"
# Patient and study tags a derived series copies from its source, so that PACS files it with the study.
COPIED_TAGS = ("0010|0010", "0010|0020", "0010|0030", "0010|0040", "0010|1010", "0020|000d", "0008|0020", "0008|0030",
               "0008|0050", "0008|0090", "0008|1030", "0020|0010", "0020|0052", "0008|0060", "0018|0015", "0008|0070")


def write_dicom_series(image: sitk.Image, folder: Path, source_tags: dict[str, str], description: str,
                       series_number: int = 1001) -> Path:
    """``image`` as a derived DICOM series of the source's study: new Series and SOP Instance UIDs, the source's
    Study Instance UID, Frame of Reference and patient tags, ImageType DERIVED\\SECONDARY, one file per slice
    along the image's third axis with its own position. Integer pixel types are written as they are (no
    rescale); float images are stored as 16-bit integers with a rescale slope and intercept that span them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = _new_uid()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                   direction[1], direction[4], direction[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    stored = _float_storage(image) if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else {}
    for index in range(image.GetDepth()):
        plane = image[:, :, index]
        tags = {key: value for key, value in source_tags.items() if key in COPIED_TAGS}
        tags.update(stored)
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        tags.update({
            "0008|0008": "DERIVED\\SECONDARY", "0020|000e": series_uid, "0008|0018": _new_uid(),
            "0008|0016": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
            SERIES_DESCRIPTION: description[:64], "0020|0011": str(series_number), "0020|0013": str(index + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in position), "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.10g}", "0028|0030": f"{image.GetSpacing()[1]:.10g}\\"
                                                                      f"{image.GetSpacing()[0]:.10g}",
        })
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{index + 1:04d}.dcm"))
        writer.Execute(plane)
    return folder


def _float_storage(image: sitk.Image) -> dict[str, str]:
    """Unsigned 16-bit storage with a rescale that spans the image's values (DICOM stores no floats)."""
    statistics = sitk.MinimumMaximumImageFilter()
    statistics.Execute(image)
    low, high = statistics.GetMinimum(), statistics.GetMaximum()
    slope = (high - low) / 65535.0 if high > low else 1.0
    return {"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "0",
            "0028|1052": f"{low:.10g}", "0028|1053": f"{slope:.10g}"}


def _new_uid() -> str:
    """A DICOM UID under the UUID-derived root 2.25 (no registered organisation root is needed)."""
    import uuid
    return f"2.25.{uuid.uuid4().int}"


def write_image(image: sitk.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def check_outputs_apart(inputs: list[Path], outputs: list[Path]) -> None:
    """Refuse to write over an input file."""
    resolved = {Path(p).resolve() for p in inputs if p is not None}
    clash = [str(p) for p in outputs if Path(p).resolve() in resolved]
    if clash:
        raise InputError(f"refusing to overwrite an input: {', '.join(clash)}")


def strict_json(value) -> str:
    """JSON text with null where a number is not available (NaN or infinite): strict JSON, which
    JavaScript, R and jq read, unlike the NaN that Python's json module writes by default."""
    def clean(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        return item
    return json.dumps(clean(value), indent=1, allow_nan=False) + "\n"
