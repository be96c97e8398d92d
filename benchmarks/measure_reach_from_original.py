"""How far the enhancement network moves scar towards the gamma target in one step, starting from the noised
target (as in training) or from the noised original (as partial diffusion starts at inference).

For heart crops with scar (the training pipeline's crops, without intensity augmentation), x_t is built with the
same noise from the target and from the original; the network's estimate of x0 is compared with the original on
scar pixels, in the network's units, beside the target's own difference; and, from the noised original at the
last timestep, the mean change of the ROI pixels the target leaves as they are (healthy myocardium and, where its
gamma is 1, blood pool), where a positive value is invented brightening. A model that moves scar from the
noised target but not from the noised original has learned to denoise, not to enhance: at lambda = 250 the
original's dim scar is a likely noisy version of a dim-scar target. Prints a markdown table; the recorded one is
in Resources/models/evaluation/reach_from_original.md.

    python benchmarks/measure_reach_from_original.py MODELS ../shared/data/emidec ../shared/data/myops2020_train25
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import weights  # noqa: E402
from ScarEnhanceLib.augment import DiffusionSamples  # noqa: E402
from ScarEnhanceLib.datasets import DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.diffusion import add_masked_noise, training_scheduler  # noqa: E402
from ScarEnhanceLib.splits import SPLIT_CHOICES, load_splits, names_in  # noqa: E402

TIMESTEPS = (50, 150, 250)


def scar_crops(cases, config, count: int):
    """(condition, target, mask, scar) of up to ``count`` crops with at least 6 scar pixels at model size."""
    samples = DiffusionSamples([cases], config, np.random.default_rng(0), "standard")
    samples.intensity = Compose([])  # the images as they are: only the crops and their flips/rotations vary
    condition, target, mask, scar = samples(count)
    keep = (scar > 0.5).flatten(1).sum(1) > 5
    return condition[keep], target[keep], mask[keep], (scar[keep] > 0.5).float()


@torch.no_grad()
def reach(model, crops) -> dict:
    """Mean (x - original) on scar: for the target, and for the x0 estimates from each start at each timestep."""
    condition, target, mask, scar = crops
    original = condition[:, :1]
    scheduler = training_scheduler(model.config)
    abar = scheduler.alphas_cumprod

    unchanged = mask * ((target - original).abs() < 1e-4).float() * (1 - scar)

    def mean_change(x, region=scar):
        return float(((x - original) * region).sum() / region.sum())

    row = {"slices": len(target), "target": mean_change(target)}
    for t in TIMESTEPS:
        steps = torch.full((len(target),), t, dtype=torch.long)
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(t))
        for start, x0 in (("target", target), ("original", original)):
            noisy = add_masked_noise(scheduler, x0, noise, steps, mask)
            eps = model.network(torch.cat([condition, noisy], 1), steps).sample * mask
            estimate = (noisy - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            row[f"{start} {t}"] = mean_change(estimate)
            if start == "original" and t == TIMESTEPS[-1]:
                row["unchanged"] = mean_change(estimate, unchanged)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="models folder with an 'enhancement' entry")
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=SPLIT_CHOICES)
    parser.add_argument("--crops", type=int, default=48)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = weights.load("enhancement", args.models)
    columns = [f"{start} {t}" for t in TIMESTEPS for start in ("target", "original")]
    print("| data | split | crops | target - original | " +
          " | ".join(f"x0 estimate from noised {c.split()[0]}, t = {c.split()[1]}" for c in columns) +
          f" | tissue the target leaves unchanged, from noised original, t = {TIMESTEPS[-1]} |")
    print("|---" * (5 + len(columns)) + "|")
    split_file = load_splits()
    for dataset in args.datasets:
        for split in args.splits:
            cases = load_cases(DatasetSpec.load(dataset), names_in(split_file, dataset, split))
            row = reach(model, scar_crops(cases, model.config, args.crops))
            print(f"| {dataset.name} | {split} | {row['slices']} | {row['target']:.2f} | " +
                  " | ".join(f"{row[c]:.2f}" for c in columns) + f" | {row['unchanged']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
