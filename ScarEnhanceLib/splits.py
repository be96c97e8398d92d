"""Patient-level splits (no patient in two splits), kept in Resources/splits.json.

MyoPS 2020's training cases are slices of the MS-CMRSeg 2019 patients (``same_patient_in_mscmrseg19.csv`` in
the MyoPS folder): both data sets are split by patient, so a patient's two cases land in the same split.
Regenerate with ``python -m ScarEnhanceLib.splits ../shared/data`` after the data change.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

SPLITS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "splits.json"
PARTS = ("train", "val", "test")
SPLIT_CHOICES = (*PARTS, "all")  # "all": every case of a folder, for data the splits do not cover
EMIDEC = "emidec"
MSCMRSEG = "mscmrseg19_lge"
MYOPS = "myops2020_train25"
MYOPS_PATIENTS_FILE = "same_patient_in_mscmrseg19.csv"
MSCMRSEG_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.12}  # 25 patients: 5 test, 3 validation


def make_split(names: list[str], seed: int = 0, test_fraction: float = 0.15, val_fraction: float = 0.1,
               strata=lambda name: "") -> dict[str, list[str]]:
    """Shuffle each stratum with ``seed`` and cut it into test, val and train."""
    split = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(seed)
    for stratum in sorted({strata(n) for n in names}):
        members = sorted(n for n in names if strata(n) == stratum)
        rng.shuffle(members)
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        split["test"] += members[:n_test]
        split["val"] += members[n_test:n_test + n_val]
        split["train"] += members[n_test + n_val:]
    return {key: sorted(value) for key, value in split.items()}


def make_patient_split(patients: list[str], seed: int = 0, test_fraction: float = 0.15, val_fraction: float = 0.1,
                       held_out: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Like ``make_split``, but patients in ``held_out["test"/"val"]`` (held out by an earlier split) stay in
    that part: a model trained on the earlier split's train part never sees the new test part."""
    held_out = {part: sorted(set(held_out.get(part, [])) & set(patients)) for part in ("val", "test")} \
        if held_out else {"val": [], "test": []}
    free = sorted(set(patients) - set(held_out["val"]) - set(held_out["test"]))
    np.random.default_rng(seed).shuffle(free)
    wanted = {"test": int(round(len(patients) * test_fraction)), "val": int(round(len(patients) * val_fraction))}
    split = {"train": [], **{part: list(held_out[part]) for part in ("val", "test")}}
    for part in ("test", "val"):
        missing = max(0, wanted[part] - len(split[part]))
        split[part] += free[:missing]
        free = free[missing:]
    split["train"] = free
    return {part: sorted(split[part], key=_natural) for part in PARTS}


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def mscmrseg_patient(case: str) -> str:
    """``patient12_LGE`` -> ``12``."""
    match = re.match(r"patient(\d+)_", case)
    if not match:
        raise ValueError(f"not an MS-CMRSeg case name: {case}")
    return match.group(1)


def myops_patients(myops_folder: Path) -> dict[str, str]:
    """MyoPS case -> MS-CMRSeg patient number, from the data set's own table."""
    with open(Path(myops_folder) / MYOPS_PATIENTS_FILE, newline="", encoding="utf-8-sig") as handle:
        return {row["myops_case"] + "_LGE": row["mscmrseg_patient"] for row in csv.DictReader(handle)}


def build_splits(data_root: Path, previous: dict | None = None, seed: int = 0) -> dict:
    """Splits of every data set under ``data_root``: EMIDEC by case (stratified normal/infarct), MS-CMRSeg and
    MyoPS together by patient. Patients the ``previous`` splits held out stay held out."""
    from .datasets import DatasetSpec, case_names
    data_root = Path(data_root)
    splits = {"seed": seed,
              "note": "Made by python -m ScarEnhanceLib.splits (ScarEnhanceLib.splits.build_splits): EMIDEC by case, "
                      "stratified by normal/infarct; MS-CMRSeg 2019 and MyoPS 2020 together by patient (the same "
                      "patients), keeping the patients the previous splits held out in validation/test."}
    splits[EMIDEC] = make_split(case_names(DatasetSpec.load(data_root / EMIDEC)), seed=seed, strata=emidec_stratum)
    mscmrseg_cases = case_names(DatasetSpec.load(data_root / MSCMRSEG))
    myops_cases = myops_patients(data_root / MYOPS)
    missing = sorted(set(case_names(DatasetSpec.load(data_root / MYOPS))) - set(myops_cases))
    if missing:
        raise ValueError(f"MyoPS cases without a patient in {MYOPS_PATIENTS_FILE}: {', '.join(missing)}")
    held_out = {}
    if previous and MSCMRSEG in previous:
        held_out = {part: [mscmrseg_patient(c) for c in previous[MSCMRSEG][part]] for part in ("val", "test")}
    patients = sorted({mscmrseg_patient(c) for c in mscmrseg_cases} | set(myops_cases.values()), key=_natural)
    by_patient = make_patient_split(patients, seed=seed, held_out=held_out, **MSCMRSEG_SPLIT)
    splits["patients"] = {part: [f"patient{p}" for p in by_patient[part]] for part in PARTS}
    splits[MSCMRSEG] = {part: sorted((c for c in mscmrseg_cases if mscmrseg_patient(c) in by_patient[part]),
                                     key=_natural) for part in PARTS}
    splits[MYOPS] = {part: sorted(c for c, p in myops_cases.items() if p in by_patient[part]) for part in PARTS}
    return splits


def load_splits(path: Path = SPLITS_FILE) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"no splits file at {path}")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def names_in(splits: dict, dataset: Path, split: str) -> list[str] | None:
    """The names of ``dataset``'s cases in ``split`` of ``splits``, or None (every case) for "all"."""
    if split == "all":
        return None
    name = Path(dataset).resolve().name
    if name not in splits:
        raise ValueError(f"the splits do not cover the data set {name!r}: name a split only for the data sets the "
                         "splits file holds, or use --split all")
    if split not in splits[name]:
        raise ValueError(f"the splits of {name!r} have no {split!r} part (they have {', '.join(splits[name])})")
    return splits[name][split]


def held_out_among(splits: dict, names: list[str]) -> list[str]:
    """Which of ``names`` the splits hold out (validation or test of any data set), each as 'NAME (DATA SET PART)':
    a data set the splits do not name by its folder may still be a copy of one they do."""
    held = {case: f"{dataset} {part}" for dataset, parts in splits.items() if isinstance(parts, dict)
            for part in ("val", "test") for case in parts.get(part, [])}
    return [f"{name} ({held[name]})" for name in sorted(set(names) & set(held))]


def emidec_stratum(name: str) -> str:
    """EMIDEC names are Case_N... (normal) or Case_P... (infarct)."""
    return name.split("_")[1][:1] if "_" in name else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="regenerate the patient-level splits from the data folders")
    parser.add_argument("data_root", type=Path, help="folder holding emidec/, mscmrseg19_lge/, myops2020_train25/")
    parser.add_argument("-o", "--output", type=Path, default=SPLITS_FILE)
    args = parser.parse_args(argv)
    previous = load_splits(args.output) if args.output.exists() else None
    args.output.write_text(json.dumps(build_splits(args.data_root, previous), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
