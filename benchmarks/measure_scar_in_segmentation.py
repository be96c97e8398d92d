"""Where the reference scar lands in the segmentation a user starts from: which share of it the segmentation
calls scar, healthy myocardium, blood pool or background (outside the heart ROI).

On the user's path the enhancement model noises only the segmented heart ROI and reads its blood-pool and wall
maps: scar called background is never enhanced, and scar called blood pool is treated as blood (which the gamma
target darkens). Prints a markdown table per data set and split; a recorded one is in the model card.

    python benchmarks/measure_scar_in_segmentation.py ../shared/data/emidec ../shared/data/myops2020_train25
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.evaluate import predicted_labels  # noqa: E402
from ScarEnhanceLib.splits import SPLITS_FILE, load_splits  # noqa: E402

COLUMNS = {L.SCAR: "scar", L.MYOCARDIUM: "healthy myocardium", L.BLOOD_POOL: "blood pool",
           L.BACKGROUND: "background"}  # label -> name, in the table's order


def scar_landing(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixel counts of the reference scar per predicted class (index = label value)."""
    return np.bincount(predicted[reference == L.SCAR].ravel(), minlength=L.NUM_CLASSES)[:L.NUM_CLASSES]


def markdown(rows: list[tuple[str, str, int, np.ndarray]]) -> str:
    lines = ["| data | split | cases with scar | " +
             " | ".join(f"scar called {name} (%)" for name in COLUMNS.values()) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for data, split, cases, counts in rows:
        shares = 100.0 * counts / max(int(counts.sum()), 1)
        lines.append(f"| {data} | {split} | {cases} | " +
                     " | ".join(f"{shares[label]:.1f}" for label in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--models", type=Path, default=weights.MODELS_DIR)
    parser.add_argument("--splits", nargs="+", default=["val"])
    args = parser.parse_args(argv)
    splits = load_splits(SPLITS_FILE)
    labels_of = predicted_labels(weights.load(weights.SEGMENTATION, args.models))
    rows = []
    for folder in args.datasets:
        spec = DatasetSpec.load(folder)
        for split in args.splits:
            cases = [c for c in load_cases(spec, splits[folder.resolve().name][split]) if c.has_scar]
            counts = sum((scar_landing(labels_of(c), c.labels) for c in cases), np.zeros(L.NUM_CLASSES, int))
            rows.append((folder.resolve().name, split, len(cases), counts))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
