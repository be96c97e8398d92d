"""Whether the segmentation fails towards the ends of a stack: the heart-ROI and wall Dice of each slice with a
reference heart, and the share of the reference scar it calls scar, for the first, middle and last third of each
case's labelled slices (the data sets' loaders keep only slices with a reference label). A case whose end slices are
segmented badly loses its scar there (on one EMIDEC validation case most of the scar called background lay in its
first slices). Prints a markdown table, a row per model, data set, split and third; a recorded one is in
Resources/models/evaluation/train_val_dice_by_slice_position.md.

    python benchmarks/measure_dice_by_slice_position.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        ../shared/data/mscmrseg19_lge --models Resources/models --splits train val
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_scar_in_segmentation import case_sets, models_and_case_sets_parser  # noqa: E402

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.augment import first_third_end  # noqa: E402
from ScarEnhanceLib.evaluate import predicted_labels  # noqa: E402
from ScarEnhanceLib.metrics import dice_per_class  # noqa: E402

POSITIONS = ("first third", "middle third", "last third")


def position_of(index: int, count: int) -> str:
    """The third of a stack of ``count`` slices that slice ``index`` lies in; the first and last thirds each hold a
    third of the stack rounded up, the middle one what is left."""
    end = first_third_end(count)
    return POSITIONS[0] if index < end else POSITIONS[2] if index >= count - end else POSITIONS[1]


def slice_rows(predicted: np.ndarray, reference: np.ndarray) -> list[dict]:
    """Per slice of (n, h, w) labels with a reference heart: its position, heart-ROI and wall Dice, and the reference
    scar's pixels and those of them the segmentation calls scar."""
    rows = []
    for index, (guess, truth) in enumerate(zip(predicted, reference)):
        if not (truth > 0).any():
            continue
        dice = dice_per_class(guess, truth)
        scar = truth == L.SCAR
        rows.append({"position": position_of(index, len(reference)), "roi": dice["roi"], "wall": dice["wall"],
                     "scar_pixels": int(scar.sum()), "scar_found": int((scar & (guess == L.SCAR)).sum())})
    return rows


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per position: slices, mean heart-ROI and wall Dice over them (NaN Dice, an empty wall in both, left out), the
    reference scar's pixels there and the share of them found (pooled)."""
    summary = {}
    for position in POSITIONS:
        part = [row for row in rows if row["position"] == position]
        scar = sum(row["scar_pixels"] for row in part)
        summary[position] = {"slices": len(part),
                             "roi": float(np.nanmean([row["roi"] for row in part])) if part else float("nan"),
                             "wall": float(np.nanmean([row["wall"] for row in part])) if part else float("nan"),
                             "scar_pixels": scar,
                             "scar_found": sum(row["scar_found"] for row in part) / scar if scar else float("nan")}
    return summary


def markdown(rows: list[tuple[list[str], dict[str, dict]]], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " | slice | slices | heart ROI Dice | wall Dice | reference scar pixels | "
             "found (%) |", "|" + "---|" * (len(keys) + 6)]
    for cells, summary in rows:
        for position, s in summary.items():
            found = "n/a" if np.isnan(s["scar_found"]) else f"{100.0 * s['scar_found']:.1f}"
            lines.append("| " + " | ".join(cells) + f" | {position} | {s['slices']} | {s['roi']:.3f} | "
                         f"{s['wall']:.3f} | {s['scar_pixels']} | {found} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = models_and_case_sets_parser(__doc__.splitlines()[0]).parse_args(argv)
    table = []
    all_cases = case_sets(args.datasets, args.splits)
    for models in args.models or [weights.MODELS_DIR]:
        labels_of = predicted_labels(weights.load(weights.SEGMENTATION, models))
        for data, split, cases in all_cases:
            rows = [row for case in cases for row in slice_rows(labels_of(case), case.labels)]
            table.append(([str(models), data, split, str(len(cases))], summarise(rows)))
    print(markdown(table, ["models", "data", "split", "cases"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
