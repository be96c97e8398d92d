"""How much of the gap between the enhancement's user's path and its reference-map ceiling the segmentation's scar
map causes, split into its false scar and its missed scar: the rows of ``scarenhance evaluate --task enhancement
--roi-from segmentation`` with the segmentation's labels as they are, without its false scar (its scar that is not
reference scar called healthy myocardium: its recall, no false scar), and with the reference scar it missed added (its
false scar, all of the scar). ``--scar-scales S ...`` adds the segmentation's labels with its scar probability scaled
by S before the most probable class is taken (S < 1: a scar map that calls less, and less falsely). A tissue-scar model
reads the scar map; an image-only one only the ROI that holds it. Read on a validation split; ``-o`` writes the rows
as ``evaluate`` does, for ``scarenhance compare``.

    python benchmarks/measure_scar_map_on_user_path.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --models MODELS --split val [--scar-scales 0.5 0.25] -o OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_segmentation_decisions import labels_from  # noqa: E402

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.evaluate import diffusion_enhancer, evaluate, markdown_table  # noqa: E402
from ScarEnhanceLib.io import prepare_output_folder, strict_json, write_text  # noqa: E402
from ScarEnhanceLib.parameters import EnhanceParameters  # noqa: E402
from ScarEnhanceLib.segmentation import slice_probabilities  # noqa: E402
from ScarEnhanceLib.splits import SPLIT_CHOICES, SPLITS_FILE, load_splits, names_in  # noqa: E402


def without_false_scar(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The segmentation's labels with its scar outside reference scar called healthy myocardium."""
    labels = predicted.copy()
    labels[(predicted == L.SCAR) & (reference != L.SCAR)] = L.MYOCARDIUM
    return labels


def with_missed_scar(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The segmentation's labels with all of the reference scar called scar."""
    labels = predicted.copy()
    labels[reference == L.SCAR] = L.SCAR
    return labels


SCAR_MAPS = {"as segmented": lambda predicted, reference: predicted,
             "without its false scar": without_false_scar,
             "with its missed scar added": with_missed_scar}


def scaled_scar_labels(model: weights.LoadedModel, scale: float, cache: Optional[dict] = None):
    """Per case: the segmentation's post-processed labels with its scar probability scaled by ``scale``; ``cache``
    (shared by the scales) keeps each case's probabilities."""
    device = next(model.network.parameters()).device
    cache = {} if cache is None else cache

    def labels_of(case):
        if case.name not in cache:
            cache[case.name] = slice_probabilities(model.network, case.images, case.spacing, model.config, device,
                                                   slice_mm=case.slice_mm)
        return labels_from([cache[case.name]], scale)
    return labels_of


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+", help="data sets with scar labels")
    parser.add_argument("--models", type=Path, default=weights.MODELS_DIR, help="models folder (default: bundled)")
    parser.add_argument("--split", default="val", choices=SPLIT_CHOICES)
    parser.add_argument("--scar-scales", type=float, nargs="+", default=[], metavar="S",
                        help="also the scar map with the scar probability scaled by each S")
    parser.add_argument("-o", "--output", type=Path, default=None, help="folder for the table and its JSON")
    args = parser.parse_args(argv)
    if args.output is not None:
        prepare_output_folder(args.output)
    splits = load_splits(SPLITS_FILE)
    segmenter = weights.load(weights.SEGMENTATION, args.models)
    probabilities = {}  # the network runs once per case for every scar map
    segmentation = scaled_scar_labels(segmenter, 1.0, probabilities)  # as segmented (tested to be the same labels)
    scaled = {f"scar probability x{scale:g}": scaled_scar_labels(segmenter, scale, probabilities)
              for scale in args.scar_scales}
    enhancer = diffusion_enhancer(weights.load(weights.ENHANCEMENT, args.models), EnhanceParameters())
    results = {}
    for folder in args.datasets:
        data = folder.resolve().name
        cases = load_cases(DatasetSpec.load(folder), names_in(splits, folder, args.split))
        for name, change in SCAR_MAPS.items():
            torch.manual_seed(0)  # as `scarenhance evaluate` seeds each variant
            results[f"{data}: {name}"] = evaluate(cases, enhancer,
                                                  lambda case, change=change: change(segmentation(case), case.labels))
        for name, labels_of in scaled.items():
            torch.manual_seed(0)
            results[f"{data}: {name}"] = evaluate(cases, enhancer, labels_of)
    table = markdown_table(results)
    if args.output is not None:
        write_text(table, args.output / "scar_map_on_user_path.md")
        write_text(strict_json(results), args.output / "scar_map_on_user_path.json")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
