"""Whether the scar Dice is lost in how the probabilities are turned into labels: Dice of the wall and of scar,
false-positive scar and scar-burden agreement when several segmentation models' probabilities are averaged
(an ensemble), and when one model's scar probability is scaled before the most probable class is taken (a scar
threshold other than the argmax's). With ``--spacing-mm`` each model runs at the pixel spacings given instead of
its own alone (averaging them is a multi-scale ensemble).

Each model's probabilities are computed once per case (whole frames, as ``scarenhance segment`` does) and the
labels are post-processed as the user gets them. Prints a markdown table per data set; a recorded one is in the
model card.

    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --models runs/other_candidate --split val
    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --spacing-mm 1.5 1.25 1.75 --split val
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.evaluate import segmentation_row, summarise_segmentation  # noqa: E402
from ScarEnhanceLib.segmentation import postprocess, slice_probabilities  # noqa: E402
from ScarEnhanceLib.splits import SPLITS_FILE, load_splits  # noqa: E402

SCAR_SCALES = (0.6, 0.8, 1.25, 1.5, 2.0)


def labels_from(probabilities: list[np.ndarray], scar_scale: float = 1.0) -> np.ndarray:
    """Post-processed labels of the mean of (n, classes, h, w) probabilities, scar's scaled by ``scar_scale``."""
    mean = np.mean(probabilities, axis=0)
    mean[:, L.SCAR] *= scar_scale
    return postprocess(mean.argmax(axis=1).astype(np.uint8))


def variants(names: list[str]) -> dict[str, tuple[list[int], float]]:
    """Row name -> (indices of the models averaged, scar scale): each model, all together, the first rescaled."""
    rows = {name: ([index], 1.0) for index, name in enumerate(names)}
    if len(names) > 1:
        rows["mean of all"] = (list(range(len(names))), 1.0)
    for scale in SCAR_SCALES:
        rows[f"{names[0]}, scar probability x{scale}"] = ([0], scale)
    return rows


def at_spacings(model: weights.LoadedModel, name: str, spacings: list[float]) -> dict[str, weights.LoadedModel]:
    """Row name -> the model working at each of ``spacings`` (mm; its own spacing's row keeps its name)."""
    own = model.config.spacing_mm
    return {name if s == own else f"{name} at {s:g} mm":
            dataclasses.replace(model, config=dataclasses.replace(model.config, spacing_mm=s)) for s in spacings}


def row_summary(cases, probabilities: dict[str, list[np.ndarray]], models: list[int], scale: float) -> dict:
    rows = [segmentation_row(case, labels_from([probabilities[case.name][m] for m in models], scale), False)
            for case in cases]
    return summarise_segmentation(rows)


def markdown(data: str, summaries: dict[str, dict]) -> str:
    lines = [f"{data}:", "", "| decision | wall | healthy myocardium | scar (cases) | false-positive scar (mL) | "
             "scar burden MAD, bias |", "|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        false_positive = s.get("false_positive_scar_ml", float("nan"))  # only data with normal cases have it
        false_positive = f"{false_positive:.2f}" if np.isfinite(false_positive) else "n/a"
        lines.append(f"| {name} | {s['wall']:.3f} | {s['myocardium']:.3f} | {s['scar']:.3f} ({s['scar_cases']}) | "
                     f"{false_positive} | {s['scar_burden_mad']:.1f}, {s['scar_burden_bias']:+.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+", help="data sets with scar labels")
    parser.add_argument("--models", type=Path, action="append", required=True,
                        help="folder with a heart_segmentation model (repeatable; the first is rescaled)")
    parser.add_argument("--spacing-mm", type=float, nargs="+", default=None,
                        help="run each model at these in-plane pixel spacings (default: its own)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    args = parser.parse_args(argv)
    splits = load_splits(SPLITS_FILE)
    named = {}
    for folder in args.models:
        model = weights.load(weights.SEGMENTATION, folder)
        named.update(at_spacings(model, str(folder), args.spacing_mm or [model.config.spacing_mm]))
    names, models = list(named), list(named.values())
    for folder in args.datasets:
        cases = load_cases(DatasetSpec.load(folder), splits[folder.resolve().name][args.split])
        probabilities = {case.name: [slice_probabilities(m.network, case.images, case.spacing, m.config,
                                                         torch.device("cpu"), slice_mm=case.slice_mm)
                                     for m in models] for case in cases}
        summaries = {name: row_summary(cases, probabilities, indices, scale)
                     for name, (indices, scale) in variants(names).items()}
        print(markdown(f"{folder.resolve().name} ({args.split} split)", summaries) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
