"""Where the enhancement brightens outside scar on the user's path, and whether a rule on its change keeps it from
inventing scar.

Of the pixels brightened by more than 10 grey levels (of 255) outside the reference scar, on the cases with scar: the
share lying in reference blood pool, healthy myocardium and background; within 2 pixels of reference scar; inside the
segmentation's scar; and brighter than the remote myocardium + 2 SD (remote as ``metrics.remote_myocardium`` finds it
in the segmentation's wall): the tissue a rule would have to tell apart. Then the rows of ``scarenhance evaluate``
for the model (user's path: ROI and maps from the bundled segmentation) and for its change with brightening
forbidden where the original is not brighter than remote + 2 SD (LGE scar is hyperenhanced: dark tissue is not
scar), or inside the segmentation's blood pool (the gamma target never brightens blood). Read on a validation split.

    python benchmarks/measure_invented_brightening.py ../shared/data/emidec ../shared/data/myops2020_train25 \\
        --split val
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import labels as L  # noqa: E402
from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.evaluate import (BRIGHTENED, Enhancer, case_volume, diffusion_enhancer, evaluate,  # noqa: E402
                                     markdown_table, predicted_labels)
from ScarEnhanceLib.metrics import remote_myocardium  # noqa: E402
from ScarEnhanceLib.parameters import EnhanceParameters  # noqa: E402
from ScarEnhanceLib.splits import SPLIT_CHOICES, SPLITS_FILE, load_splits, names_in  # noqa: E402
from ScarEnhanceLib.volume import SliceScale, as_slices, from_slices, like, slice_axis  # noqa: E402

N_SD = 2.0
NEAR_SCAR_PX = 2
PLACES = ("reference blood pool", "reference healthy myocardium", "reference background",
          f"within {NEAR_SCAR_PX} px of reference scar", "inside the segmentation's scar",
          f"brighter than remote + {N_SD:g} SD")


def above_remote(slices: np.ndarray, labels: np.ndarray, n_sd: float = N_SD) -> np.ndarray:
    """Pixels brighter than the remote myocardium's mean + ``n_sd`` SD of their slice; all of a slice without a
    remote reference (no rule there)."""
    remote = remote_myocardium(slices, labels)
    above = np.ones(slices.shape, bool)
    for index, plane in enumerate(slices):
        if remote[index].sum() >= 2:
            values = plane[remote[index]]
            above[index] = plane > values.mean() + n_sd * values.std()
    return above


def limit_brightening(original: np.ndarray, enhanced: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The enhanced slices with every brightening outside ``allowed`` undone (darkening is kept)."""
    return np.where((enhanced > original) & ~allowed, original, enhanced)


RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    f"no brightening below remote + {N_SD:g} SD": above_remote,
    "no brightening in the segmentation's blood pool": lambda slices, labels: labels != L.BLOOD_POOL,
}


def with_rule(enhancer: Enhancer, rule: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Enhancer:
    def enhance(image: sitk.Image, labels: sitk.Image) -> sitk.Image:
        axis = slice_axis(image)
        original = as_slices(sitk.GetArrayFromImage(image).astype(np.float32), axis)
        enhanced = as_slices(sitk.GetArrayFromImage(enhancer(image, labels)).astype(np.float32), axis)
        allowed = rule(original, as_slices(sitk.GetArrayFromImage(labels), axis))
        return like(from_slices(limit_brightening(original, enhanced, allowed), axis), image)
    return enhance


def cached(enhancer: Enhancer) -> Enhancer:
    """The same enhancement for the same image (each rule reuses the model's samples)."""
    results: dict[str, sitk.Image] = {}

    def enhance(image: sitk.Image, labels: sitk.Image) -> sitk.Image:
        key = hashlib.sha1(sitk.GetArrayViewFromImage(image).tobytes() +
                           sitk.GetArrayViewFromImage(labels).tobytes()).hexdigest()
        if key not in results:
            results[key] = enhancer(image, labels)
        return results[key]
    return enhance


def invented_places(original: np.ndarray, enhanced: np.ndarray, reference: np.ndarray,
                    predicted: np.ndarray) -> np.ndarray:
    """Counts of the pixels brightened outside reference scar (first) and of those in each of PLACES; (n, h, w)
    slices on one scale."""
    scar = reference == L.SCAR
    invented = (enhanced.astype(np.float64) - original > BRIGHTENED) & ~scar
    near = np.stack([ndimage.binary_dilation(s, iterations=NEAR_SCAR_PX) if s.any() else s for s in scar])
    places = (reference == L.BLOOD_POOL, reference == L.MYOCARDIUM, reference == L.BACKGROUND, near,
              predicted == L.SCAR, above_remote(original, predicted))
    return np.array([invented.sum()] + [(invented & place).sum() for place in places])


def places_table(rows: dict[str, np.ndarray]) -> str:
    lines = ["| data | brightened outside scar (pixels) | " + " | ".join(f"{p} (%)" for p in PLACES) + " |",
             "|---|---|" + "---|" * len(PLACES)]
    for data, counts in rows.items():
        shares = 100.0 * counts[1:] / max(int(counts[0]), 1)
        lines.append(f"| {data} | {int(counts[0])} | " + " | ".join(f"{s:.1f}" for s in shares) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, nargs="+", help="data sets with scar labels")
    parser.add_argument("--models", type=Path, default=weights.MODELS_DIR, help="models folder (default: bundled)")
    parser.add_argument("--split", default="val", choices=SPLIT_CHOICES)
    args = parser.parse_args(argv)
    splits = load_splits(SPLITS_FILE)
    segmentation = predicted_labels(weights.load(weights.SEGMENTATION, args.models))
    model = cached(diffusion_enhancer(weights.load(weights.ENHANCEMENT, args.models), EnhanceParameters()))
    places, results = {}, {}
    for folder in args.datasets:
        data = folder.resolve().name
        cases = load_cases(DatasetSpec.load(folder), names_in(splits, folder, args.split))
        counts = np.zeros(1 + len(PLACES), int)
        for case in (c for c in cases if c.has_scar):
            image, reference = case_volume(case)
            predicted = segmentation(case)
            enhanced = sitk.GetArrayFromImage(model(image, like(predicted.astype(np.uint8), reference)))
            scale = SliceScale.of(case.images)  # case volumes are stacks of slices already
            counts += invented_places(scale.forward(case.images), scale.forward(enhanced), case.labels, predicted)
        places[data] = counts
        results[f"{data}: model"] = evaluate(cases, model, segmentation)
        for name, rule in RULES.items():
            results[f"{data}: {name}"] = evaluate(cases, with_rule(model, rule), segmentation)
    print(f"Brightened outside reference scar, {args.split} split, user's path:\n\n{places_table(places)}\n")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
