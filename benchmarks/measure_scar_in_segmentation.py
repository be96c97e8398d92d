"""Where the reference scar lands in the segmentation a user starts from, and where the segmentation's scar lies in
the reference: which share of the reference scar the segmentation calls scar, healthy myocardium, blood pool or
background (outside the heart ROI); and which share of its scar lies in reference scar (its precision), no-reflow
(EMIDEC's microvascular obstruction, a core inside scar that EMIDEC's infarct Dice counts apart), healthy
myocardium, blood pool or background. A third table tells how enhanced the reference scar is where the
segmentation calls it each class: its pixels' SD above the remote myocardium of the reference labels (the readouts'
reference, metrics.sd_above_remote), and the share of them under 2 SD, the lowest threshold of the n-SD rule: scar
that no n-SD threshold (2 to 6) would find.

On the user's path the enhancement model noises only the segmented heart ROI and reads its blood-pool and wall
maps: scar called background is never enhanced, and scar called blood pool is treated as blood (which the gamma
target darkens). Scar called anywhere but reference scar lowers the scar Dice. Prints three markdown tables, a row
per model, data set and split; recorded ones are in the model card. With ``--degraded-maps`` the second table also
places the scar of the degraded maps a tissue-scar enhancement model trains on, for each ``--scar-map-errors``
mode of ``scarenhance train-diffusion`` (one draw per slice with a heart ROI of the cases with scar, as training
draws them, seed 0), so that they can be set beside the segmentation's errors on held-out cases.

    python benchmarks/measure_scar_in_segmentation.py ../shared/data/emidec ../shared/data/myops2020_train25
    python benchmarks/measure_scar_in_segmentation.py ../shared/data/emidec ../shared/data/myops2020_train25 \
        --splits train val --degraded-maps
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.augment import degrade_labels  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.evaluate import predicted_labels  # noqa: E402
from ScarEnhanceLib.metrics import sd_above_remote  # noqa: E402
from ScarEnhanceLib.parameters import SCAR_MAP_ERRORS  # noqa: E402
from ScarEnhanceLib.splits import SPLIT_CHOICES, SPLITS_FILE, load_splits, names_in  # noqa: E402

# label -> name, in each table's order
LANDING = {L.SCAR: "scar", L.MYOCARDIUM: "healthy myocardium", L.BLOOD_POOL: "blood pool", L.BACKGROUND: "background"}
LOWEST_N_SD = 2.0  # the lowest n of the n-SD rule the guidelines name (2 to 6)
PLACEMENT = {L.SCAR: "scar", L.MVO: "no-reflow", L.MYOCARDIUM: "healthy myocardium", L.BLOOD_POOL: "blood pool",
             L.BACKGROUND: "background"}


def scar_landing(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixel counts of the reference scar per predicted class (index = label value)."""
    return np.bincount(predicted[reference == L.SCAR].ravel(), minlength=L.NUM_CLASSES)[:L.NUM_CLASSES]


def scar_placement(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixel counts of the predicted scar per reference class (index = label value, no-reflow as L.MVO)."""
    return np.bincount(reference[predicted == L.SCAR].ravel(), minlength=L.MVO + 1)[:L.MVO + 1]


def scar_enhancement(image: np.ndarray, predicted: np.ndarray, reference: np.ndarray) -> dict[int, np.ndarray]:
    """SD above the remote myocardium of ``reference`` (no-reflow read as myocardium, as the readouts read a user's
    labels) of the reference scar's pixels, by the class ``predicted`` gives them; none without a remote reference."""
    z = sd_above_remote(image, np.where(reference == L.MVO, L.MYOCARDIUM, reference))
    scar = (reference == L.SCAR) & ~np.isnan(z)  # NaN on a slice without a remote reference
    return {label: z[scar & (predicted == label)] for label in LANDING}


def enhancement_markdown(rows: list[tuple[list[str], dict[int, list[np.ndarray]]]], keys: list[str]) -> str:
    """A row per (key cells, z-scores per class): each class's quartiles (SD) and share under LOWEST_N_SD."""
    lines = ["| " + " | ".join(keys) + " | " + " | ".join(f"called {name}: SD (25/50/75 %), under {LOWEST_N_SD:g} SD"
                                                         for name in LANDING.values()) + " |",
             "|" + "---|" * (len(keys) + len(LANDING))]
    for cells, scores in rows:
        parts = []
        for label in LANDING:
            z = np.concatenate(scores[label]) if scores[label] else np.zeros(0)  # a split without scar cases
            parts.append("none" if z.size == 0 else " / ".join(f"{q:.1f}" for q in np.percentile(z, (25, 50, 75)))
                         + f", {100.0 * np.mean(z < LOWEST_N_SD):.0f} %")
        lines.append("| " + " | ".join(cells) + " | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def degraded_map_placement(cases, scar_errors: str, rng: np.random.Generator) -> np.ndarray:
    """``scar_placement`` of one degraded scar map per slice with a heart ROI, as tissue-scar training draws them."""
    counts = np.zeros(L.MVO + 1, int)
    for case in cases:
        for image, labels in zip(case.images, case.labels):
            if (labels > 0).any():
                degraded = degrade_labels(labels, case.spacing, rng, keep_scar=True, scar_errors=scar_errors,
                                          image=image)
                counts += scar_placement(degraded, labels)
    return counts


def markdown(rows: list[tuple[list[str], np.ndarray]], keys: list[str], columns: dict[int, str]) -> str:
    """A row per (key cells, pixel counts): the counts' total, then each column's share of it."""
    lines = ["| " + " | ".join(keys) + " | pixels | " + " | ".join(f"{name} (%)" for name in columns.values()) + " |",
             "|" + "---|" * (len(keys) + 1 + len(columns))]
    for cells, counts in rows:
        shares = 100.0 * counts / max(int(counts.sum()), 1)
        lines.append("| " + " | ".join(cells) + f" | {int(counts.sum())} | " +
                     " | ".join(f"{shares[label]:.1f}" for label in columns) + " |")
    return "\n".join(lines)


def models_and_case_sets_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of the scripts that read models over case sets: data sets, ``--models`` (repeatable) and
    ``--splits``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--models", type=Path, action="append", default=None,
                        help="a models folder (repeat to compare; default: the bundled models)")
    parser.add_argument("--splits", nargs="+", default=["val"], choices=SPLIT_CHOICES)
    return parser


def case_sets(datasets: list[Path], split_names: list[str], keep_mvo: bool = False,
              scar_only: bool = False) -> list[tuple]:
    """(data set, split, cases) for each data set and split, read once for every model."""
    splits = load_splits(SPLITS_FILE)
    sets = []
    for folder in datasets:
        for split in split_names:
            cases = load_cases(DatasetSpec.load(folder), names_in(splits, folder, split), keep_mvo=keep_mvo)
            sets.append((folder.resolve().name, split, [c for c in cases if c.has_scar or not scar_only]))
    return sets


def main(argv=None) -> int:
    parser = models_and_case_sets_parser(__doc__.splitlines()[0])
    parser.add_argument("--degraded-maps", action="store_true",
                        help="also place the scar of the degraded maps tissue-scar training draws (each mode)")
    args = parser.parse_args(argv)
    scar_cases = case_sets(args.datasets, args.splits, keep_mvo=True, scar_only=True)
    landing, placement, enhancement = [], [], []
    for models in args.models or [weights.MODELS_DIR]:
        labels_of = predicted_labels(weights.load(weights.SEGMENTATION, models))
        for data, split, cases in scar_cases:
            cells = [str(models), data, split, str(len(cases))]
            predicted = [labels_of(c) for c in cases]  # each case segmented once for the three tables
            landing.append((cells, sum((scar_landing(p, c.labels) for p, c in zip(predicted, cases)),
                                       np.zeros(L.NUM_CLASSES, int))))
            placement.append((cells, sum((scar_placement(p, c.labels) for p, c in zip(predicted, cases)),
                                         np.zeros(L.MVO + 1, int))))
            scores = [scar_enhancement(c.images, p, c.labels) for p, c in zip(predicted, cases)]
            enhancement.append((cells, {label: [s[label] for s in scores] for label in LANDING}))
    if args.degraded_maps:
        for errors in SCAR_MAP_ERRORS:
            rng = np.random.default_rng(0)
            for data, split, cases in scar_cases:
                placement.append(([f"degraded maps: {errors}", data, split, str(len(cases))],
                                  degraded_map_placement(cases, errors, rng)))
    keys = ["models", "data", "split", "cases with scar"]
    print("Reference scar, by the class the segmentation gives it\n")
    print(markdown(landing, keys, {k: f"called {v}" for k, v in LANDING.items()}))
    print("\nThe segmentation's scar, by the reference class under it\n")
    print(markdown(placement, keys, {k: f"in reference {v}" for k, v in PLACEMENT.items()}))
    print("\nHow enhanced the reference scar is, by the class the segmentation gives it (SD above the remote "
          "myocardium)\n")
    print(enhancement_markdown(enhancement, keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
