"""Training/evaluation datasets: 2D slices with labels, grouped by case.

Three layouts are read:
- ``png``: EMIDEC-style ``<images>/Case_X_sliceNNN.png`` with ``<labels>/`` of the same names
  (folders ``train``/``trainannot`` and ``val``/``valannot``). PNG stores no spacing: ``spacing_mm`` says it.
- ``nifti``: ``NAME.nii.gz`` (or .nrrd/.mha) with ``NAME_manual.nii.gz`` (or ``labels_suffix``) beside it.
- ``packed``: ``cases.npz.xz``, cases already in our label values, written by ``write_packed``; reading it needs no
  SimpleITK (training data in this form travels to a lent GPU machine, see tools/gpu).
Raw label values are mapped onto ``labels.py`` by ``label_map``.
"""
from __future__ import annotations

import io
import json
import lzma
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import labels as L
from .parameters import VOLUME_SUFFIXES
from .volume import as_slices, inplane_spacing, slice_axis, to_array

EMIDEC_LABELS = {1: L.BLOOD_POOL, 2: L.MYOCARDIUM, 3: L.SCAR, 4: L.MVO}  # MVO read as myocardium (load_cases)
MSCMRSEG_LABELS = {500: L.BLOOD_POOL, 200: L.MYOCARDIUM}  # 600 (right ventricle) is not in the heart ROI
MYOPS_SCAR = 2221
MYOPS_LABELS = {500: L.BLOOD_POOL, 200: L.MYOCARDIUM, 1220: L.MYOCARDIUM, MYOPS_SCAR: L.SCAR}  # 1220: edema (wall)
OUR_LABELS = {v: v for v in (L.BLOOD_POOL, L.MYOCARDIUM, L.SCAR)}
OUR_LABELS_WITHOUT_SCAR = {v: v for v in (L.BLOOD_POOL, L.MYOCARDIUM)}  # a data set that labels no scar
LABEL_PRESETS = {"emidec": EMIDEC_LABELS, "mscmrseg": MSCMRSEG_LABELS, "myops": MYOPS_LABELS,
                 "scarenhance": OUR_LABELS, "scarenhance-no-scar": OUR_LABELS_WITHOUT_SCAR}
RIGHT_VENTRICLE = 600  # MS-CMRSeg's and MyoPS's: labelled, but not part of the heart ROI
# the presets a folder's label values are recognised by, the narrowest first, and the values each reads
GUESSED_PRESETS = {"scarenhance-no-scar": set(OUR_LABELS_WITHOUT_SCAR), "scarenhance": set(OUR_LABELS),
                   "emidec": set(EMIDEC_LABELS), "mscmrseg": {*MSCMRSEG_LABELS, RIGHT_VENTRICLE},
                   "myops": {*MYOPS_LABELS, RIGHT_VENTRICLE}}
PACKED_FILE = "cases.npz.xz"


@dataclass
class Case:
    name: str
    images: np.ndarray  # (n, h, w) float32 slices
    labels: np.ndarray  # (n, h, w) uint8, values of labels.py
    spacing: tuple  # in-plane (row, col) mm
    slice_mm: float = 10.0  # between slices; PNG slices store none (EMIDEC's are about 10 mm apart)

    @property
    def has_scar(self) -> bool:
        return bool((self.labels == L.SCAR).any())


@dataclass
class DatasetSpec:
    root: Path
    layout: str = "png"  # png | nifti | packed
    label_map: dict = field(default_factory=lambda: dict(EMIDEC_LABELS))
    spacing_mm: float = 1.5  # png only
    image_dirs: tuple = ("train", "val")
    labels_suffix: str = "_manual"

    @staticmethod
    def load(path: Path) -> "DatasetSpec":
        """A dataset folder, optionally with ``dataset.json`` giving the fields above."""
        path = Path(path)
        described = path / "dataset.json"
        values = json.loads(described.read_text(encoding="utf-8")) if described.exists() else {}
        if not path.is_dir():
            raise ValueError(f"dataset folder not found: {path}")
        if "image_dirs" in values:
            values["image_dirs"] = tuple(values["image_dirs"])
        values.setdefault("layout", "packed" if (path / PACKED_FILE).exists() else
                          "nifti" if any(p.name.endswith(VOLUME_SUFFIXES) for p in path.iterdir()) else "png")
        label_map = values.get("label_map")
        if label_map is None:
            label_map = _guess_preset(DatasetSpec(path, **values))
        values["label_map"] = dict(LABEL_PRESETS[label_map]) if isinstance(label_map, str) else \
            {int(k): int(v) for k, v in label_map.items()}
        return DatasetSpec(root=path, **values)

    @property
    def labels_scar(self) -> bool:
        return L.SCAR in self.label_map.values()

    @property
    def labelled_classes(self) -> int:
        """How many of our classes the data set labels (they come in order; myocardium at least, as a heart label
        is read): 3 without scar, 4 with scar, 5 with scar and no-reflow (MVO)."""
        return 1 + max(L.MYOCARDIUM, *self.label_map.values())


def _guess_preset(spec: "DatasetSpec") -> str:
    """The narrowest preset that reads every value of every label file: ours without scar (1, 2) unless a file
    holds scar (3), so that hearts whose scar was never labelled are not read as scar-free; EMIDEC's with
    no-reflow (4); MS-CMRSeg's (200, 500, 600); MyoPS's (also 1220 edema, 2221 scar). Values no preset reads
    are refused, not dropped: a label read as background would silently change the heart. PNG slices (EMIDEC's
    layout) are read the same way: EMIDEC's own labels are 1-4."""
    found: dict[int, str] = {}  # value -> the first label file that holds it (every file is read in full)
    for label_path in _label_files(spec):
        for value in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))).tolist():
            if not (math.isfinite(value) and float(value).is_integer()):
                raise ValueError(f"{label_path} holds {value}, not a label: label files hold whole numbers")
            found.setdefault(int(value), label_path.name)
    values = set(found) - {L.BACKGROUND}
    name = next((name for name, known in GUESSED_PRESETS.items() if values <= known), None)
    if name == "myops" and MYOPS_SCAR not in values:
        raise ValueError(f"the label files in {spec.root} hold MyoPS's edema (1220, in {found[1220]}) but no scar "
                         f"(2221): whether scar was labelled cannot be told. {_dataset_json_advice(spec)}")
    if name is not None:
        return name
    unknown = sorted(values - set().union(*GUESSED_PRESETS.values()))
    if unknown:
        shown = ", ".join(f"{value} (in {found[value]})" for value in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise ValueError(f"the label files in {spec.root} hold values no preset reads: {shown}{more}. "
                         f"{_dataset_json_advice(spec)}")
    shown = ", ".join(f"{value} (in {found[value]})" for value in sorted(values))
    raise ValueError(f"the label files in {spec.root} mix the values of two presets ({shown}; "
                     f"{', '.join(f'{name}: {sorted(known)}' for name, known in GUESSED_PRESETS.items())}). "
                     f"{_dataset_json_advice(spec)}")


def _label_files(spec: "DatasetSpec") -> list[Path]:
    """Every label file of a png or nifti data set; none at all, or an image without its label, is refused."""
    if spec.layout == "png":
        files = [label for items in _png_cases(spec).values() for _, _, label in items]
        layout = " and ".join(f"{d}/ with labels of the same names in {d}annot/" for d in spec.image_dirs)
        none = (f"no cases found in {spec.root}: neither volumes with label files (NAME.nii.gz beside "
                f"NAME{spec.labels_suffix}.nii.gz) nor PNG slices (EMIDEC's layout: {layout})")
    else:
        files = [label for _, label in _volume_cases(spec).values()]
        none = f"no cases found in {spec.root}: no image has a label file (NAME{spec.labels_suffix}.nii.gz)"
    if not files:
        raise ValueError(none)
    missing = [path for path in files if not path.exists()]
    if missing:
        raise ValueError(f"{len(missing)} PNG slice(s) in {spec.root} have no label file, e.g. {missing[0]} is missing")
    return files


def _dataset_json_advice(spec: "DatasetSpec") -> str:
    return (f"Say what each value is in {spec.root / 'dataset.json'}, e.g. "
            f'{{"label_map": {{"200": {L.MYOCARDIUM}, "500": {L.BLOOD_POOL}, "2221": {L.SCAR}}}}} '
            f"({L.BLOOD_POOL} blood pool, {L.MYOCARDIUM} myocardium, {L.SCAR} scar, {L.MVO} no-reflow; values left "
            f"out are background), or a preset ({', '.join(LABEL_PRESETS)})")


def _png_cases(spec: DatasetSpec) -> dict[str, list[tuple[int, Path, Path]]]:
    cases: dict[str, list[tuple[int, Path, Path]]] = {}
    for image_dir in spec.image_dirs:
        folder = spec.root / image_dir
        for image_path in sorted(folder.glob("*.png")):
            match = re.match(r"(.+)_slice(\d+)\.png$", image_path.name)
            name, index = (match.group(1), int(match.group(2))) if match else (image_path.stem, 0)
            cases.setdefault(name, []).append((index, image_path, spec.root / f"{image_dir}annot" / image_path.name))
    return cases


def _read_png_case(spec: DatasetSpec, name: str, items) -> Case:
    items = sorted(items)
    images = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32) for _, p, _ in items])
    raw = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for _, _, p in items])
    return Case(name, images, L.remap(raw, spec.label_map), (spec.spacing_mm, spec.spacing_mm))


def _volume_cases(spec: DatasetSpec) -> dict[str, tuple[Path, Path]]:
    cases = {}
    for path in sorted(spec.root.iterdir()):
        suffix = next((s for s in VOLUME_SUFFIXES if path.name.endswith(s)), None)
        if suffix is None or path.name[: -len(suffix)].endswith(spec.labels_suffix):
            continue
        stem = path.name[: -len(suffix)]
        label_path = spec.root / f"{stem}{spec.labels_suffix}{suffix}"
        if label_path.exists():
            cases[stem] = (path, label_path)
    return cases


def _read_volume_case(spec: DatasetSpec, name: str, paths) -> Case:
    image = sitk.ReadImage(str(paths[0]))
    axis = slice_axis(image)
    raw = as_slices(sitk.GetArrayFromImage(sitk.ReadImage(str(paths[1]))), axis)
    return Case(name, as_slices(to_array(image), axis).copy(), L.remap(raw, spec.label_map),
                inplane_spacing(image, axis), float(image.GetSpacing()[2 - axis]))


def _packed_cases(spec: DatasetSpec) -> dict[str, Case]:
    with lzma.open(spec.root / PACKED_FILE) as stream, np.load(io.BytesIO(stream.read()), allow_pickle=False) as arrays:
        names = sorted({key.rsplit("/", 1)[0] for key in arrays.files})
        return {name: Case(name, arrays[f"{name}/images"].astype(np.float32), arrays[f"{name}/labels"],
                           tuple(float(v) for v in arrays[f"{name}/spacing"]), float(arrays[f"{name}/slice_mm"]))
                for name in names}


def _stored_exactly(images: np.ndarray) -> np.ndarray:
    """int16 where that holds the values exactly (PNG and most scanners' volumes), else float32."""
    if np.array_equal(images, np.round(images)) and images.min() >= -2**15 and images.max() < 2**15:
        return images.astype(np.int16)
    return images.astype(np.float32)


def write_packed(cases: list[Case], label_values: list[int], folder: Path) -> Path:
    """Write ``cases`` as a ``packed`` data set in ``folder`` (created; no pickles): one xz-compressed .npz and a
    dataset.json naming ``label_values``, the labels the source data set has (scar or not)."""
    arrays = {}
    for case in cases:
        arrays.update({f"{case.name}/images": _stored_exactly(case.images), f"{case.name}/labels": case.labels,
                       f"{case.name}/spacing": np.asarray(case.spacing, float),
                       f"{case.name}/slice_mm": np.asarray(case.slice_mm, float)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PACKED_FILE).write_bytes(lzma.compress(buffer.getvalue(), preset=9))
    described = {"layout": "packed", "label_map": {str(v): int(v) for v in sorted(label_values)}}
    (folder / "dataset.json").write_text(json.dumps(described), encoding="utf-8")
    return folder


# layout -> (what its cases are found as: name -> items, how a case is read from its items)
LAYOUTS = {"png": (_png_cases, _read_png_case), "nifti": (_volume_cases, _read_volume_case),
           "packed": (_packed_cases, lambda _spec, _name, case: case)}


def case_names(spec: DatasetSpec) -> list[str]:
    return sorted(LAYOUTS[spec.layout][0](spec))


def load_cases(spec: DatasetSpec, names: list[str] | None = None, keep_mvo: bool = False) -> list[Case]:
    """Cases of the dataset (all, or those named), slices without any heart label dropped; no-reflow (MVO) read
    as myocardium unless ``keep_mvo`` (for training a segmentation network that learns it apart)."""
    if names is not None and not names:
        return []  # an empty split: nothing to read (a packed data set would be decompressed for nothing)
    finder, reader = LAYOUTS[spec.layout]
    found = finder(spec)
    if not found:  # a folder one level too deep or too high: no data set, not an empty one
        raise ValueError(f"no cases found in {spec.root} (read as the {spec.layout} layout)")
    missing = sorted(set(names or []) - set(found))
    if missing:
        raise ValueError(f"cases not found in {spec.root}: {', '.join(missing[:5])}")
    cases = []
    for name in names if names is not None else sorted(found):
        case = reader(spec, name, found[name])
        labels = case.labels if keep_mvo else np.where(case.labels == L.MVO, L.MYOCARDIUM, case.labels).astype(np.uint8)
        keep = labels.reshape(len(labels), -1).any(axis=1)
        if keep.any():
            cases.append(Case(case.name, case.images[keep], labels[keep], case.spacing, case.slice_mm))
    return cases
