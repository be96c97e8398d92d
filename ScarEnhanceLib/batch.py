"""Studies for ``scarenhance batch``: found in folders, globs or a CSV, split into parts for job arrays, and
written so that an interrupted run resumes where it stopped.

Each study's outputs go to ``OUT/<study>.partial/`` and are renamed to ``OUT/<study>/`` once complete: a
study whose folder exists is done, whatever happened to the process afterwards.
"""
from __future__ import annotations

import csv
import glob
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .parameters import VOLUME_SUFFIXES, InputError

LABEL_SUFFIX = "_labels"  # NAME_labels.nii.gz beside NAME.nii.gz: the study's labels
CSV_COLUMNS = ("image", "labels", "roi", "id", "series_uid")


@dataclass(frozen=True)
class Study:
    id: str
    image: Path
    labels: Optional[Path] = None
    roi: Optional[Path] = None
    series_uid: Optional[str] = None  # the series to read from a DICOM folder that holds several


def _stem(path: Path) -> str:
    name = path.name
    suffix = next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix else name


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def _is_label_map(path: Path) -> bool:
    """NAME_labels.*: the labels of study NAME, never a study of its own, in folders, globs and file lists alike
    (a shell's ``more/*.nii.gz`` lists both)."""
    return path.is_file() and _stem(path).endswith(LABEL_SUFFIX)


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(_is_dicom_file(p) for p in path.iterdir())


def _is_dicom_file(path: Path) -> bool:
    """A .dcm or .ima file, one without a suffix, or one of any name with DICOM's "DICM" after its preamble (files
    named by their UID)."""
    if not path.is_file():
        return False
    if path.suffix.lower() in (".dcm", ".ima") or path.suffix == "":
        return True
    with open(path, "rb") as stream:
        return stream.read(132)[128:] == b"DICM"


def _study_of(path: Path) -> Study:
    """An image file (labels beside it as NAME_labels.*) or a DICOM series folder."""
    labels = None
    if path.is_file():  # NAME_labels with the image's own suffix as written, or any other
        stem = _stem(path)
        beside = [path.with_name(stem + LABEL_SUFFIX + s) for s in (path.name[len(stem):], *VOLUME_SUFFIXES)]
        labels = next((p for p in beside if p.exists()), None)
    return Study(id=_safe_id(_stem(path)), image=path, labels=labels)


def _safe_id(text: str) -> str:
    """A folder name: letters, digits, '.', '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "study"


def _from_folder(folder: Path) -> list[Study]:
    if _is_dicom_folder(folder) and not any(_is_volume(p) for p in folder.iterdir()):
        return [_study_of(folder)]
    entries = sorted(folder.iterdir())
    images = [p for p in entries if _is_volume(p) and not _is_label_map(p)]
    series = [p for p in entries if _is_dicom_folder(p)]
    return [_study_of(p) for p in images + series]


def _from_csv(table: Path) -> list[Study]:
    """Columns ``image`` (required), ``labels``, ``roi``, ``id``, ``series_uid``; relative paths are read from the
    CSV's folder."""
    with open(table, newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "image" not in rows[0]:
        raise InputError(f"{table}: a CSV of studies needs an 'image' column (optional: labels, roi, id, "
                         "series_uid)")
    unknown = sorted(set(rows[0]) - set(CSV_COLUMNS))
    if unknown:
        raise InputError(f"{table}: unknown columns {', '.join(unknown)} (expected {', '.join(CSV_COLUMNS)})")

    def path(value: Optional[str]) -> Optional[Path]:
        if not value:
            return None
        candidate = Path(value)
        return candidate if candidate.is_absolute() else table.parent / candidate

    studies = []
    for line, row in enumerate(rows, start=2):
        if not row.get("image"):
            raise InputError(f"{table}, line {line}: no image")
        image = path(row["image"])
        studies.append(Study(_safe_id(row.get("id") or _stem(image)), image, path(row.get("labels")),
                             path(row.get("roi")), (row.get("series_uid") or "").strip() or None))
    return studies


def find_studies(inputs: list[str]) -> list[Study]:
    """Studies from folders, image files, DICOM folders, glob patterns and CSV files, sorted by id; ids must be
    unique (they name the output folders)."""
    studies = []
    for text in inputs:
        path = Path(text)
        if path.suffix.lower() == ".csv" and path.is_file():
            studies += _from_csv(path)
        elif path.is_dir():
            studies += _from_folder(path)
        elif path.is_file():
            studies += [] if _is_label_map(path) else [_study_of(path)]
        else:
            matches = sorted(Path(p) for p in glob.glob(text))
            if not matches:
                raise InputError(f"no study found at {text}")
            studies += [s for p in matches if not _is_label_map(p)
                        for s in ([_study_of(p)] if p.is_file() else _from_folder(p))]
    if not studies:
        raise InputError("no study found in " + ", ".join(inputs))
    studies.sort(key=lambda s: s.id)
    seen: dict[str, Study] = {}
    for study in studies:
        if study.id in seen:
            raise InputError(f"two studies would share the output folder {study.id!r}: {seen[study.id].image} and "
                             f"{study.image} (give them ids in a CSV)")
        seen[study.id] = study
    return studies


def part_of(studies: list[Study], num_parts: int, part_id: int) -> list[Study]:
    """Part ``part_id`` (0-based) of ``num_parts``: every num_parts-th study of the sorted list, as nnU-Net's
    --num_parts/--part_id split, so that a job array covers every study exactly once."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise InputError(f"--part-id must be between 0 and --num-parts - 1 ({num_parts - 1}), got {part_id}")
    return studies[part_id::num_parts]


def done_folder(output: Path, study: Study) -> Path:
    return output / study.id


def partial_folder(output: Path, study: Study) -> Path:
    """Where a study's outputs are written until complete; left over by an interrupted run, it is removed."""
    folder = output / f"{study.id}.partial"
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def summary_name(num_parts: int, part_id: int) -> str:
    return "summary.csv" if num_parts == 1 else f"summary_part{part_id}_of_{num_parts}.csv"
