"""Whether the scar Dice is lost in how the probabilities are turned into labels: Dice of the wall and of scar,
false-positive scar and scar-burden agreement when several segmentation models' probabilities are averaged
(an ensemble), and when one model's scar probability is scaled before the most probable class is taken (a scar
threshold other than the argmax's). With ``--spacing-mm`` each model runs at the pixel spacings given instead of
its own alone (averaging them is a multi-scale ensemble); with ``--test-time`` in each of the test-time
augmentations given (segmentation.TEST_TIME_AUGMENTATIONS) instead of its own alone. With ``--scar-floor-sd`` the
first model's scar is also kept only where the image is brighter than the remote myocardium's mean + n SD (the rest
becomes healthy myocardium): whether its false scar is less enhanced than its true scar, which the z-scores printed
per data set tell directly. Data without scar labels count scar as myocardium, as ``scarenhance evaluate`` does.

Each model's probabilities are computed once per case (whole frames, as ``scarenhance segment`` does) and the
labels are post-processed as the user gets them. Prints a markdown table per data set; a recorded one is in the
model card.

    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --models runs/other_candidate --split val
    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --spacing-mm 1.5 1.25 1.75 --split val
    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --test-time flips dihedral --split val
    python benchmarks/measure_segmentation_decisions.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models Resources/models --scar-floor-sd 1 2 3 --split val
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
from ScarEnhanceLib.io import prepare_output_folder, strict_json, write_text  # noqa: E402
from ScarEnhanceLib.evaluate import segmentation_row, summarise_segmentation, summary_cell  # noqa: E402
from ScarEnhanceLib.metrics import sd_above_remote  # noqa: E402
from ScarEnhanceLib.segmentation import (TEST_TIME_AUGMENTATIONS, members, postprocess,  # noqa: E402
                                          slice_probabilities)
from ScarEnhanceLib.splits import SPLIT_CHOICES, SPLITS_FILE, load_splits, names_in  # noqa: E402

SCAR_SCALES = (0.6, 0.8, 1.25, 1.5, 2.0)


def labels_from(probabilities: list[np.ndarray], scar_scale: float = 1.0) -> np.ndarray:
    """Post-processed labels of the mean of (n, classes, h, w) probabilities, scar's scaled by ``scar_scale``."""
    mean = np.mean(probabilities, axis=0)
    mean[:, L.SCAR] *= scar_scale
    return postprocess(mean.argmax(axis=1).astype(np.uint8))


def floored(labels: np.ndarray, image: np.ndarray, n_sd: float) -> np.ndarray:
    """``labels`` whose scar darker than the remote myocardium's mean + ``n_sd`` SD is called healthy myocardium;
    without a remote reference the scar is left as it is."""
    z = sd_above_remote(image, labels)
    dim_scar = (labels == L.SCAR) & ~np.isnan(z) & (z < n_sd)
    return np.where(dim_scar, L.MYOCARDIUM, labels).astype(labels.dtype)


def variants(names: list[str], floors: tuple[float, ...] = ()) -> dict[str, tuple[list[int], float, float | None]]:
    """Row name -> (indices of the models averaged, scar scale, scar floor in SD or None): each model, all together,
    the first rescaled, the first with its scar floored."""
    rows = {name: ([index], 1.0, None) for index, name in enumerate(names)}
    if len(names) > 1:
        rows["mean of all"] = (list(range(len(names))), 1.0, None)
    for scale in SCAR_SCALES:
        rows[f"{names[0]}, scar probability x{scale}"] = ([0], scale, None)
    for n_sd in floors:
        rows[f"{names[0]}, scar only above remote + {n_sd:g} SD"] = ([0], 1.0, n_sd)
    return rows


def at_settings(model: weights.LoadedModel, name: str, spacings: list[float],
                test_times: list[str]) -> dict[str, weights.LoadedModel]:
    """Row name -> the model working at each of ``spacings`` (mm) with each test-time augmentation of ``test_times``
    (the row with its own settings keeps its name)."""
    own = model.config
    if len(members(model.network, own)) > 1 and (set(spacings), set(test_times)) != ({own.spacing_mm}, {own.test_time}):
        raise SystemExit(f"{name} is an ensemble: each of its networks keeps its own spacing and test-time setting")
    named = {}
    for spacing in spacings:
        for test_time in test_times:
            suffix = "".join([f" at {spacing:g} mm" if spacing != own.spacing_mm else "",
                              f", {test_time} at test time" if test_time != own.test_time else ""])
            config = dataclasses.replace(own, spacing_mm=spacing, test_time=test_time)
            named[name + suffix] = dataclasses.replace(model, config=config)
    return named


def row_summary(cases, probabilities: dict[str, list[np.ndarray]], models: list[int], scale: float,
                floor: float | None = None, merge_scar: bool = False) -> dict:
    """Summary over ``cases`` as `scarenhance evaluate` makes it; ``merge_scar`` for data without scar labels (scar
    counted as myocardium)."""
    rows = []
    for case in cases:
        labels = labels_from([probabilities[case.name][m] for m in models], scale)
        labels = labels if floor is None else floored(labels, case.images, floor)
        rows.append(segmentation_row(case, labels, merge_scar))
    return summarise_segmentation(rows)


def z_quartiles(cases, probabilities: dict[str, list[np.ndarray]]) -> str:
    """Quartiles of the first model's scar pixels' z-scores, inside and outside the reference scar."""
    inside, outside = [], []
    for case in cases:
        labels = labels_from([probabilities[case.name][0]])
        z, scar, reference = sd_above_remote(case.images, labels), labels == L.SCAR, case.labels == L.SCAR
        scar &= ~np.isnan(z)  # a slice without a remote reference has no z-scores to count
        inside.append(z[scar & reference])
        outside.append(z[scar & ~reference])
    quartiles = [np.percentile(np.concatenate(part), (25, 50, 75)) if sum(map(len, part)) else [np.nan] * 3
                 for part in (inside, outside)]
    inside, outside = (" / ".join(f"{q:.2f}" for q in part) for part in quartiles)
    return ("scar of the first model, SD above the remote myocardium (quartiles 25/50/75): in reference scar "
            f"{inside}; outside it {outside}")


def markdown(data: str, summaries: dict[str, dict]) -> str:
    lines = [f"{data}:", "", "| decision | heart ROI | blood pool | wall | healthy myocardium | scar (cases) | "
             "false-positive scar (mL) | scar burden MAD, bias |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        scar = f"{summary_cell(s, 'scar', '.3f')} ({s['scar_cases']})" if "scar" in s else "n/a"
        burden = f"{summary_cell(s, 'scar_burden_mad', '.1f')}, {summary_cell(s, 'scar_burden_bias', '+.1f')}" \
            if "scar_burden_mad" in s else "n/a"
        dice = " | ".join(summary_cell(s, key, ".3f") for key in ("roi", "blood_pool", "wall", "myocardium"))
        lines.append(f"| {name} | {dice} | {scar} | {summary_cell(s, 'false_positive_scar_ml', '.2f')} | {burden} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+",
                        help="data sets (without scar labels: scar counted as myocardium, as evaluate does)")
    parser.add_argument("--models", type=Path, action="append", required=True,
                        help="folder with a heart_segmentation model (repeatable; the first is rescaled)")
    parser.add_argument("--spacing-mm", type=float, nargs="+", default=None,
                        help="run each model at these in-plane pixel spacings (default: its own)")
    parser.add_argument("--test-time", nargs="+", default=None, choices=TEST_TIME_AUGMENTATIONS,
                        help="run each model with these test-time augmentations (default: its own)")
    parser.add_argument("--scar-floor-sd", type=float, nargs="+", default=(),
                        help="also the first model's scar kept only above the remote mean + these SD")
    parser.add_argument("--split", default="val", choices=SPLIT_CHOICES)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for the tables and their JSON (every summary at full precision)")
    args = parser.parse_args(argv)
    if args.output is not None:
        prepare_output_folder(args.output)
    splits = load_splits(SPLITS_FILE)
    tables, results = [], {}
    named = {}
    for folder in args.models:
        model = weights.load(weights.SEGMENTATION, folder)
        named.update(at_settings(model, str(folder), args.spacing_mm or [model.config.spacing_mm],
                                 args.test_time or [model.config.test_time]))
    names, models = list(named), list(named.values())
    for folder in args.datasets:
        spec = DatasetSpec.load(folder)
        cases = load_cases(spec, names_in(splits, folder, args.split))
        probabilities = {case.name: [slice_probabilities(m.network, case.images, case.spacing, m.config,
                                                         torch.device("cpu"), slice_mm=case.slice_mm)
                                     for m in models] for case in cases}
        summaries = {name: row_summary(cases, probabilities, indices, scale, floor, not spec.labels_scar)
                     for name, (indices, scale, floor) in variants(names, tuple(args.scar_floor_sd)).items()}
        printed = [markdown(f"{folder.resolve().name} ({args.split} split)", summaries) + "\n"]
        if args.scar_floor_sd:
            printed.append(z_quartiles(cases, probabilities) + "\n")
        print("\n".join(printed))
        tables += printed
        results[folder.resolve().name] = summaries
    if args.output is not None:
        write_text("\n".join(tables), args.output / "segmentation_decisions.md")
        write_text(strict_json(results), args.output / "segmentation_decisions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
