"""Time heart segmentation of a 12-slice volume, first and later runs, on whole frames of two sizes.

    python benchmarks/benchmark_segment.py [--device auto|cpu|cuda] [--models FOLDER] [--output results.json]

Volumes: the bundled sample (EMIDEC P050, 256x256 of 1.5 mm assumed) tiled to 12 slices, and a 12-slice
480x480 phantom of 0.73 mm (a MyoPS-sized whole frame: the heart found on the whole frame, then segmented in a
window around it). Reports the median of ``--repeats`` runs after one warm-up run, and the warm-up itself.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_enhance import tiled_sample  # noqa: E402
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom  # noqa: E402
from ScarEnhanceLib.pipeline import resolve_device, segment  # noqa: E402
from ScarEnhanceLib.segmentation import members  # noqa: E402
from ScarEnhanceLib.weights import MODELS_DIR, SEGMENTATION, load  # noqa: E402


def time_segmentation(image, model, repeats: int) -> dict:
    started = time.perf_counter()
    segment(image, model)
    first = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        segment(image, model)
        seconds.append(time.perf_counter() - started)
    return {"first_run_seconds": first, "seconds": float(np.median(seconds)), "seconds_each": seconds,
            "size": list(image.GetSize())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", type=Path, default=MODELS_DIR)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load(SEGMENTATION, args.models, device)
    sample, _ = tiled_sample(args.slices)
    whole_frame, _ = make_phantom(PhantomSpec(matrix=480, slices=args.slices, spacing_mm=0.73, seed=0))
    report = {"machine": platform.processor() or platform.machine(), "device": str(device),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "model": [config.to_dict() for _, config in members(model.network, model.config)],
              "sample_256": time_segmentation(sample, model, args.repeats),
              "whole_frame_480": time_segmentation(whole_frame, model, args.repeats)}
    for key in ("sample_256", "whole_frame_480"):
        run = report[key]
        print(f"{key}: {args.slices} slices {run['size'][:2]}: {run['seconds']:.2f} s (median of {args.repeats}; "
              f"first run {run['first_run_seconds']:.2f} s)")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
