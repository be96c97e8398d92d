"""Case-level splits (no case in two splits), kept in Resources/splits.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLITS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "splits.json"


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


def load_splits(path: Path = SPLITS_FILE) -> dict:
    return json.loads(Path(path).read_text())


def emidec_stratum(name: str) -> str:
    """EMIDEC names are Case_N... (normal) or Case_P... (infarct)."""
    return name.split("_")[1][:1] if "_" in name else ""
