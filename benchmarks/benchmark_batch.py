"""Cohort throughput: `scarenhance batch` over N studies against one `scarenhance enhance` call per study.

    python benchmarks/benchmark_batch.py [--studies 4] [--device cpu] [--models FOLDER] [--output results.json]

Studies: the bundled sample tiled to 12 slices (with its labels), written N times. Both ways run as separate
processes, as a user would start them, with the same enhancement settings (defaults: fast sampler, k = 5):
one call per study pays the imports and model loading each time, the batch pays them once. Reports studies
per minute for each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_enhance import tiled_sample  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _run(arguments: list[str], threads: int | None) -> float:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ScarEnhanceLib", *arguments], cwd=ROOT, check=True, env=environment,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--enhance-options", nargs=argparse.REMAINDER, default=[],
                        help="passed to both (e.g. --steps 3 -k 2); must come last")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    options = ["--device", args.device, "--no-report", "--progress", "lines", *args.enhance_options]
    if args.models:
        options += ["--models", str(args.models)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        studies = folder / "studies"
        studies.mkdir()
        image, labels = tiled_sample(args.slices)
        for index in range(args.studies):
            sitk.WriteImage(image, str(studies / f"study{index:03d}.nii.gz"))
            sitk.WriteImage(labels, str(studies / f"study{index:03d}_labels.nii.gz"))
        one_by_one = sum(_run(["enhance", str(studies / f"study{i:03d}.nii.gz"), "--labels",
                               str(studies / f"study{i:03d}_labels.nii.gz"), "-o", str(folder / f"single{i}"),
                               *options], args.threads) for i in range(args.studies))
        batch = _run(["batch", str(studies), "-o", str(folder / "batch"), *options], args.threads)
    report = {"machine": platform.processor() or platform.machine(), "device": args.device, "studies": args.studies,
              "slices": args.slices, "options": options,
              "one_call_per_study": {"seconds": one_by_one, "studies_per_minute": 60 * args.studies / one_by_one},
              "batch": {"seconds": batch, "studies_per_minute": 60 * args.studies / batch}}
    for key in ("one_call_per_study", "batch"):
        print(f"{key}: {report[key]['seconds']:.1f} s for {args.studies} studies of {args.slices} slices, "
              f"{report[key]['studies_per_minute']:.2f} studies per minute")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
