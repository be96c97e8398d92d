"""Time the drawing of training batches (the augmentation a data-loader worker runs), one thread.

    python benchmarks/benchmark_training_batches.py [--dataset FOLDER ...] [--batches 5] [--batch-size 64]
        [--output results.json]

On a lent GPU the training went at the speed its workers' augmentation fed it (benchmarks/RESULTS.md). Reports seconds
per batch (64: as on the GPU) for the segmentation patches (2.5D, plain and with --synthetic-scar 0.3 --tissue-contrast
0.5) and the enhancement crops (strong augmentation), each with MONAI's metadata off (as training draws them) and on
(as before 2026-11-28). Cases: the data sets given (any layout `scarenhance` reads), else 8 phantom cases of 256x256.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib import augment  # noqa: E402
from ScarEnhanceLib.datasets import Case, DatasetSpec, load_cases  # noqa: E402
from ScarEnhanceLib.diffusion import DiffusionConfig  # noqa: E402
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom  # noqa: E402
from ScarEnhanceLib.segmentation import SegmentationConfig  # noqa: E402


def phantom_cases(count: int = 8) -> list[Case]:
    cases = []
    for seed in range(count):
        image, labels = make_phantom(PhantomSpec(matrix=256, slices=8, seed=seed))
        cases.append(Case(f"phantom{seed}", sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels),
                          image.GetSpacing()[:2], image.GetSpacing()[2]))
    return cases


def seconds_per_batch(make_samples, batches: int, batch_size: int, metadata: bool) -> float:
    """Median seconds of ``batches`` batches after one unmeasured batch."""
    with contextlib.ExitStack() as stack:
        if metadata:  # the bookkeeping as it was: MONAI's default
            stack.enter_context(mock.patch.object(augment, "_plain_tensors", contextlib.nullcontext))
        samples = make_samples(np.random.default_rng(0))
        samples(batch_size)
        seconds = []
        for _ in range(batches):
            started = time.perf_counter()
            samples(batch_size)
            seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, action="append", default=[])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one data-loader worker's share
    cases = [c for folder in args.dataset for c in load_cases(DatasetSpec.load(folder))] or phantom_cases()
    segmentation = SegmentationConfig(context_slices=1, normalisation="window")
    kinds = {
        "segmentation": lambda rng: augment.SegmentationSamples(cases, segmentation, rng),
        "segmentation_drawn_scar_tissue_contrast": lambda rng: augment.SegmentationSamples(
            cases, segmentation, rng, augment.PatchOptions(tissue_contrast=0.5, synthetic_scar=0.3)),
        "enhancement_strong": lambda rng: augment.DiffusionSamples([cases], DiffusionConfig(), rng,
                                                                   augmentation="strong"),
    }
    report = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1,
              "batch": args.batch_size, "batches_timed": args.batches,
              "datasets": [str(folder) for folder in args.dataset] or ["phantoms"],
              "cases": [c.name for c in cases][:3] + (["..."] if len(cases) > 3 else []),
              "seconds_per_batch": {}}
    for name, make_samples in kinds.items():
        without, with_metadata = (seconds_per_batch(make_samples, args.batches, args.batch_size, metadata)
                                  for metadata in (False, True))
        report["seconds_per_batch"][name] = {"metadata_off": without, "metadata_on": with_metadata}
        print(f"{name}: {without:.3f} s per batch of {args.batch_size} (MONAI metadata on: {with_metadata:.3f} s)")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
