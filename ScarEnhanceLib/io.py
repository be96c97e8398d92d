"""Reading and writing images: NIfTI, NRRD, MHA (anything SimpleITK reads) and DICOM series."""
from __future__ import annotations

import json
import math
from pathlib import Path

import SimpleITK as sitk

from .volume import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def read_image(path: Path) -> sitk.Image:
    """An image file, or a folder holding one DICOM series."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        return _read_dicom_series(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read {path} as an image (NIfTI, NRRD, MHA or DICOM are supported)") from error


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"no DICOM series in {folder}")
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; put the LGE series in a folder of its own")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


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
