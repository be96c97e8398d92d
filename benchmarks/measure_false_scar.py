"""Where the segmentation's scar lies in the reference labels: in reference scar (precision), in no-reflow (EMIDEC's
microvascular obstruction, a core inside scar that EMIDEC's infarct Dice counts apart), in healthy myocardium, in
the blood pool or outside the heart. Scar called anywhere but reference scar lowers the scar Dice.

Prints a markdown table per model, data set and split; a recorded one is in the model card.

    python benchmarks/measure_false_scar.py ../shared/data/emidec --models Resources/models --models CANDIDATE
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

COLUMNS = {L.SCAR: "scar", L.MVO: "no-reflow", L.MYOCARDIUM: "healthy myocardium", L.BLOOD_POOL: "blood pool",
           L.BACKGROUND: "background"}  # reference label (no-reflow kept apart) -> name, in the table's order


def scar_placement(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixel counts of the predicted scar per reference class (index = label value, no-reflow as L.MVO)."""
    return np.bincount(reference[predicted == L.SCAR].ravel(), minlength=L.MVO + 1)[:L.MVO + 1]


def markdown(rows: list[tuple[str, str, str, int, np.ndarray]]) -> str:
    lines = ["| model | data | split | cases with scar | predicted scar (pixels) | " +
             " | ".join(f"in reference {name} (%)" for name in COLUMNS.values()) + " |",
             "|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    for model, data, split, cases, counts in rows:
        shares = 100.0 * counts / max(int(counts.sum()), 1)
        lines.append(f"| {model} | {data} | {split} | {cases} | {int(counts.sum())} | " +
                     " | ".join(f"{shares[label]:.1f}" for label in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--models", type=Path, action="append", default=None,
                        help="a models folder (repeat to compare; default: the bundled models)")
    parser.add_argument("--splits", nargs="+", default=["val"])
    args = parser.parse_args(argv)
    splits = load_splits(SPLITS_FILE)
    rows = []
    for models in args.models or [weights.MODELS_DIR]:
        labels_of = predicted_labels(weights.load(weights.SEGMENTATION, models))
        for folder in args.datasets:
            spec = DatasetSpec.load(folder)
            for split in args.splits:
                cases = [c for c in load_cases(spec, splits[folder.resolve().name][split], keep_mvo=True)
                         if c.has_scar]
                counts = sum((scar_placement(labels_of(c), c.labels) for c in cases), np.zeros(L.MVO + 1, int))
                rows.append((str(models), folder.resolve().name, split, len(cases), counts))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
