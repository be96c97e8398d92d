"""Reading and writing images: NIfTI, NRRD, MHA (anything SimpleITK reads) and DICOM series.

Damaged files are refused, not read with zeros: a NIfTI file must hold every voxel its header promises (and
a .nii.gz must decompress whole), and its float voxels must be finite (SimpleITK hands NaN over as 0). Every
output is written to a temporary file in its folder, flushed and renamed into place, so an interrupted run
never leaves a half-written file under an output's name; ``output_lock`` keeps two runs out of one folder.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .parameters import VOLUME_SUFFIXES, InputError

# NIfTI datatype code -> numpy type (float types are checked for NaN/Inf)
NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
               1280: "u8", 128: "u1", 2304: "u1", 32: "c8", 1792: "c16"}
LOCK_FILE = ".scarenhance.lock"

IMAGE_SUFFIXES = VOLUME_SUFFIXES + (".dcm",)


def read_image(path: Path, series_uid: str | None = None) -> sitk.Image:
    """An image file, or a folder holding a DICOM series (``series_uid`` chooses one of several)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        return _read_dicom_series(path, series_uid)
    if path.name.lower().endswith(".dcm"):
        return _read_dicom_file(str(path))
    if path.name.lower().endswith((".nii", ".nii.gz")):  # ITK reads an upper-case name too
        check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read {path} as an image (NIfTI, NRRD, MHA or DICOM are supported): "
                         f"{_itk_reason(error)}") from error


def _nifti_bytes(path: Path) -> bytes:
    if not path.name.lower().endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path) as stream:
            return stream.read()  # to the end: a cut or corrupted stream fails its length or CRC check here
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"cannot read {path} as an image: it is damaged or truncated (its gzip stream does not "
                         f"decompress whole: {str(error).splitlines()[0] if str(error) else type(error).__name__})"
                         ) from error


def check_nifti(path: Path) -> None:
    """Refuse a NIfTI-1/-2 file that holds fewer voxel bytes than its header promises, or NaN/Inf voxels."""
    data = _nifti_bytes(path)
    header = None
    for order in "<>":
        if len(data) >= 4 and struct.unpack(order + "i", data[:4])[0] in (348, 540):
            header = order
            break
    if header is None or len(data) < 348:
        raise InputError(f"cannot read {path} as an image: it has no NIfTI header")
    if struct.unpack(header + "i", data[:4])[0] == 348:
        dims = struct.unpack(header + "8h", data[40:56])
        datatype, bitpix = struct.unpack(header + "2h", data[70:74])
        offset = int(struct.unpack(header + "f", data[108:112])[0])
    else:
        if len(data) < 540:
            raise InputError(f"cannot read {path} as an image: it is truncated (an incomplete NIfTI-2 header)")
        datatype, bitpix = struct.unpack(header + "2h", data[12:16])
        dims = struct.unpack(header + "8q", data[16:80])
        offset = int(struct.unpack(header + "q", data[168:176])[0])
    if not 1 <= dims[0] <= 7:
        raise InputError(f"cannot read {path} as an image: its NIfTI header gives {dims[0]} dimensions")
    voxels = int(np.prod([max(1, d) for d in dims[1:dims[0] + 1]], dtype=np.int64))
    expected = offset + voxels * bitpix // 8
    if len(data) < expected:
        raise InputError(f"cannot read {path} as an image: it is truncated (its header promises {expected} bytes, "
                         f"the file holds {len(data)})")
    if NIFTI_TYPES.get(datatype) in ("f4", "f8"):
        values = np.frombuffer(data, dtype=header + NIFTI_TYPES[datatype], count=voxels, offset=offset)
        if not np.isfinite(values).all():
            raise InputError(f"{path}: the volume contains NaN or infinite values")


def dicom_series_files(folder: Path, series_uid: str | None = None) -> list[str]:
    """Files of the DICOM series in ``folder``: the only one, or the one with ``series_uid``; otherwise a clear
    error that lists the series found."""
    series = _quietly(sitk.ImageSeriesReader.GetGDCMSeriesIDs, str(folder))
    if not series:
        raise InputError(f"no DICOM series in {folder}")
    if series_uid is not None and series_uid not in series:
        raise InputError(f"no series {series_uid} in {folder}; found: {_series_list(folder, series)}")
    if series_uid is None and len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; choose one with --series-uid: "
                         f"{_series_list(folder, series)}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or series[0]))


def _quietly(function, *arguments):
    """Call a SimpleITK function without ITK's multi-line warnings on stderr (our errors say what went wrong)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return function(*arguments)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


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
    files = dicom_series_files(folder, series_uid)
    if len(files) == 1:
        return _read_dicom_file(files[0])
    problem = stack_problem([read_dicom_tags(path) for path in files])
    if problem:
        raise InputError(f"cannot read the DICOM series in {folder} as one volume: {problem}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return _quietly(reader.Execute)
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {folder}: its slices do not form one volume "
                         "(different matrix sizes or pixel types?)") from error


def stack_problem(tags: list[dict[str, str]]) -> str | None:
    """Why the files of a series (their tags) are not one stack of parallel, evenly spaced slices, one image each;
    None if they are. ITK would stack them anyway, at invented positions: magnitude and phase-sensitive images or
    cine phases of one series one above the other, a missing slice closed up."""
    try:
        positions = np.array([[float(v) for v in t["0020|0032"].split("\\")] for t in tags])
        orientations = np.array([[float(v) for v in t["0020|0037"].split("\\")] for t in tags])
    except (KeyError, ValueError):
        return "some of its files give no slice position or orientation (Image Position / Orientation (Patient))"
    if positions.shape[1] != 3 or orientations.shape[1] != 6:
        return "some of its files give a malformed slice position or orientation"
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        return "its slices are not parallel (they give different orientations)"
    depth = np.sort(positions @ np.cross(orientations[0, :3], orientations[0, 3:]))
    gaps = np.diff(depth)
    shared = int((gaps < 1e-3).sum())
    if shared:
        return (f"{len(tags)} images lie at {len(tags) - shared} slice positions: the series holds several images per "
                "slice (magnitude and phase-sensitive images, cine phases or inversion times?); export the LGE "
                "stack as a series of its own")
    if gaps.max() - gaps.min() > 0.1 * float(np.median(gaps)):
        return (f"its slices are unevenly spaced ({gaps.min():.2f} to {gaps.max():.2f} mm apart): a slice is "
                "missing, or the series is not one stack")
    return None


def _read_dicom_file(path: str) -> sitk.Image:
    """A series of one file: one slice, or a multi-frame object holding the whole stack (read by the series reader
    as a 4D image). A lone slice gets its thickness from its tags: GDCM gives it 1 mm depth."""
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM file {path}: {_itk_reason(error)}") from error
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image.SetSpacing((*image.GetSpacing()[:2], _dicom_slice_mm(read_dicom_tags(path), image)))
    return image


def _itk_reason(error: Exception) -> str:
    """What an ITK error says went wrong: its last line, without the source file and object that threw it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = re.sub(r"^(ITK ERROR:\s*)?(\w+\(0x[0-9a-f]+\):\s*)?", "", lines[-1]) if lines else ""
    return reason or type(error).__name__


def _dicom_slice_mm(tags: dict[str, str], image: sitk.Image) -> float:
    """Slice Thickness, else Spacing Between Slices (which writers fill in inconsistently for one slice: GDCM
    writes 1 mm for a 2D image); without either, ten pixels (LGE slices are far thicker than their pixels)."""
    for key in ("0018|0050", "0018|0088"):
        try:
            value = float(tags.get(key, "").strip())
        except ValueError:
            continue
        if value > 0:
            return value
    return 10.0 * max(image.GetSpacing()[:2])


SERIES_DESCRIPTION = "0008|103e"
SPECIFIC_CHARACTER_SET = "0008|0005"
# DICOM's defined terms for single-byte and UTF-8 character sets -> Python codecs
CHARACTER_SETS = {"ISO_IR 100": "latin_1", "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3",
                  "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6",
                  "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9",
                  "ISO_IR 166": "tis_620", "ISO_IR 192": "utf_8", "GB18030": "gb18030", "GBK": "gbk"}
# Patient and study tags a derived series copies from its source, so that PACS files it with the study, and the
# slice thickness (the spacing between slices is the volume's).
COPIED_TAGS = ("0010|0010", "0010|0020", "0010|0030", "0010|0040", "0010|1010", "0020|000d", "0008|0020", "0008|0030",
               "0008|0050", "0008|0090", "0008|1030", "0020|0010", "0020|0052", "0008|0060", "0018|0015", "0008|0070",
               "0018|0050")


def copied_tags(source_tags: dict[str, str]) -> dict[str, str]:
    """The source's patient and study tags as text, in UTF-8 (declared as ISO_IR 192): ITK hands over the bytes
    of other character sets undecoded (Latin-1's "ü" as a lone surrogate), which it then cannot write."""
    charset = source_tags.get(SPECIFIC_CHARACTER_SET, "").strip().split("\\")[-1].strip()
    codecs = [c for c in (CHARACTER_SETS.get(charset), "utf_8", "latin_1") if c]
    tags = {}
    for key, value in source_tags.items():
        if key in COPIED_TAGS:
            raw = value.encode("utf-8", "surrogateescape")
            tags[key] = next(text for text in (_decoded(raw, codec) for codec in codecs) if text is not None)
    return {**tags, SPECIFIC_CHARACTER_SET: "ISO_IR 192"}


def _decoded(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def write_dicom_series(image: sitk.Image, folder: Path, source_tags: dict[str, str], description: str,
                       series_number: int = 1001) -> Path:
    """``image`` as a derived DICOM series of the source's study: new Series and SOP Instance UIDs, the source's
    Study Instance UID, Frame of Reference and patient tags, ImageType DERIVED\\SECONDARY, one file per slice
    along the image's third axis with its own position. Integer pixel types are written as they are (no
    rescale); float images are stored as 16-bit integers with a rescale slope and intercept that span them."""
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    try:
        _write_slices(image, temporary, copied_tags(source_tags), description, series_number)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if folder.exists():  # an earlier run's series: replaced whole, never mixed with this one
        previous = folder.with_name(f".{folder.name}.{os.getpid()}.previous")
        os.replace(folder, previous)
        os.replace(temporary, folder)
        shutil.rmtree(previous)
    else:
        os.replace(temporary, folder)
    return folder


def _write_slices(image: sitk.Image, temporary: Path, copied: dict[str, str], description: str,
                  series_number: int) -> None:
    series_uid = _new_uid()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                   direction[1], direction[4], direction[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    stored = _float_storage(image) if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else {}
    for index in range(image.GetDepth()):
        plane = image[:, :, index:index + 1]  # 3D: a 2D plane gets Spacing Between Slices 1 once GDCM has read a series
        tags = dict(copied)
        tags.update(stored)
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        tags.update({
            "0008|0008": "DERIVED\\SECONDARY", "0020|000e": series_uid, "0008|0018": _new_uid(),
            "0008|0016": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
            SERIES_DESCRIPTION: description[:64], "0020|0011": str(series_number), "0020|0013": str(index + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in position), "0020|0037": orientation,
            "0018|0088": f"{image.GetSpacing()[2]:.10g}", "0028|0030": f"{image.GetSpacing()[1]:.10g}\\"
                                                                      f"{image.GetSpacing()[0]:.10g}",
            "0020|4000": "ScarEnhance research output, not for diagnosis; read beside the original series",
        })
        tags.setdefault("0018|0050", f"{image.GetSpacing()[2]:.10g}")  # the source's thickness where it gives one
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(temporary / f"IM{index + 1:04d}.dcm"))
        writer.Execute(plane)


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


def _temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` with the same suffixes (SimpleITK picks the writer by them)."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.{os.getpid()}.partial{suffix}")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path to write; then flush it to disk and rename it to ``path`` (on error, remove it)."""
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        yield temporary
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_image(image: sitk.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=True)
        except RuntimeError as error:
            raise InputError(f"cannot write {path} (is the folder writable, and the name an image file name "
                             "such as .nii.gz, .nrrd or .mha?)") from error
    return path


def write_text(text: str, path: Path) -> Path:
    with atomic_path(Path(path)) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    return Path(path)


def prepare_output_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) or say in one line why it cannot be, before any computation."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".scarenhance-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError as error:
        raise InputError(f"the output folder {folder} is an existing file") from error
    except OSError as error:
        raise InputError(f"cannot write into the output folder {folder}: {error.strerror or error}") from error
    return folder


def check_output_file(path: Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """An output file name (ending in one of ``suffixes`` if given) whose folder can be written, checked before
    any computation."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"the output {path} is a folder: give a file name such as labels.nii.gz")
    if suffixes and not path.name.endswith(suffixes):
        case = " in lower case (ITK picks its writer by the suffix as written)" if \
            path.name.lower().endswith(suffixes) else ""
        raise InputError(f"the output {path} must end in {', '.join(suffixes)}{case}")
    prepare_output_folder(path.parent)
    return path


@contextmanager
def output_lock(folder: Path):
    """Hold the output folder for this run: a second run into it stops at once with a clear message."""
    handle = open(Path(folder) / LOCK_FILE, "a+")
    try:
        try:
            if os.name == "nt":
                import msvcrt
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise InputError(f"another scarenhance run is writing into {folder}: wait for it to finish or "
                             "choose another output folder") from error
        yield
    finally:
        handle.close()  # closing releases the lock


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and symbolic links included
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_outputs_apart(inputs: list[Path], outputs: list[Path]) -> None:
    """Refuse to write over an input file (by any name: hard or symbolic link), into an input DICOM folder, or
    over an output folder that holds an input (a DICOM output replaces its folder whole)."""
    inputs = [Path(p) for p in inputs if p is not None]
    clash = [str(o) for o in outputs if any(_same_file(o, i) for i in inputs)]
    if clash:
        raise InputError(f"refusing to overwrite an input: {', '.join(clash)}")
    holding = [(o, i) for o in outputs for i in inputs
               if any(_same_file(o, folder) for folder in Path(i).absolute().parents)]
    if holding:  # a cohort's output folder may hold all its studies: the first is named
        (output, held), more = holding[0], len(holding) - 1
        raise InputError(f"refusing to write over an input: the output folder {output} holds the input {held}"
                         + (f" and {more} more" if more else "") + "; choose another output folder")
    folders = [i for i in inputs if i.is_dir()]
    inside = [str(o) for o in outputs if any(_same_file(Path(o).parent, f) for f in folders)]
    if inside:
        raise InputError(f"refusing to write into an input DICOM folder: {', '.join(inside)}")


def not_a_number(value) -> bool:
    """Whether a readout is not available: a float that is NaN or infinite (null in JSON, an empty CSV field)."""
    return isinstance(value, float) and not math.isfinite(value)


def strict_json(value) -> str:
    """JSON text with null where a number is not available (NaN or infinite): strict JSON, which
    JavaScript, R and jq read, unlike the NaN that Python's json module writes by default."""
    def clean(item):
        if not_a_number(item):
            return None
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        return item
    return json.dumps(clean(value), indent=1, allow_nan=False) + "\n"
