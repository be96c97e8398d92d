"""What the diffusion network sees of the heart under each intensity window (slice: the paper's [0, 255] of the
slice; heart: up to the maximum of the crop around the heart), per data set, on the train splits (``--split``).

Partial diffusion adds the same noise whatever the window, so the heart's contrast in the network's units is
the signal the noise competes with. Prints a markdown table; the recorded one is in
Resources/models/evaluation/intensity_window.md.

    python benchmarks/measure_intensity_window.py ../shared/data/emidec ../shared/data/myops2020_train25
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib.augment import CROP_MARGIN  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.splits import SPLIT_CHOICES, SPLITS_FILE, load_splits, names_in  # noqa: E402
from ScarEnhanceLib.volume import CropBox, IntensityWindow, SliceScale, resize  # noqa: E402

MODEL_SIZE = 64


def model_units(case, normalisation: str) -> dict[int, list[float]]:
    """Per slice, the median of each tissue in the network's units (after resizing the crop to model size)."""
    medians: dict[int, list[float]] = {L.BLOOD_POOL: [], L.MYOCARDIUM: [], L.SCAR: []}
    slices255 = SliceScale.of(case.images).forward(case.images)
    for image, labels in zip(slices255, case.labels):
        box = CropBox.around(L.heart_roi(labels)[None], margin=CROP_MARGIN)
        crop = resize(box.extract(image[None]), MODEL_SIZE)
        window = IntensityWindow.of(crop, normalisation)
        values = window.forward(box.extract(image[None]))[0]  # full resolution, the window of the model-sized crop
        tissue = box.extract(labels[None])[0]
        for label, found in medians.items():
            if (tissue == label).sum() >= 10:
                found.append(float(np.median(values[tissue == label])))
    return medians


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+", help="data sets with scar labels")
    parser.add_argument("--split", default="train", choices=SPLIT_CHOICES)
    args = parser.parse_args(argv)
    splits = load_splits(SPLITS_FILE)
    print("| data set | window | blood pool | myocardium | scar | scar - myocardium |")
    print("|---|---|---|---|---|---|")
    for folder in args.datasets:
        spec = DatasetSpec.load(folder)
        cases = load_cases(spec, names_in(splits, folder, args.split))
        for normalisation in ("slice", "heart"):
            pooled = {label: [] for label in (L.BLOOD_POOL, L.MYOCARDIUM, L.SCAR)}
            for case in cases:
                for label, values in model_units(case, normalisation).items():
                    pooled[label].extend(values)
            median = {label: float(np.median(values)) if values else float("nan") for label, values in pooled.items()}
            print(f"| {spec.root.name} ({len(cases)} cases) | {normalisation} | {median[L.BLOOD_POOL]:.2f} | "
                  f"{median[L.MYOCARDIUM]:.2f} | {median[L.SCAR]:.2f} | {median[L.SCAR] - median[L.MYOCARDIUM]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
