"""Time the Slicer module's first and second click: Segment and Enhance run by the module's background worker
(``scarenhance serve``, ScarEnhance/ScarEnhanceModuleLib/Process.py), once in a fresh worker and again in the
same one, which keeps its imports and models. The same commands the Logic sends, on the bundled sample volume
(EMIDEC P050, 8 slices) with the default settings (fast sampler, k = 5); no Slicer needed.

    python benchmarks/benchmark_clicks.py [--device auto|cpu|cuda] [--output results_clicks_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ScarEnhance"))

from ScarEnhanceLib.parameters import EnhanceParameters  # noqa: E402
from ScarEnhanceLib.sample import SAMPLE_IMAGE, SAMPLE_LABELS  # noqa: E402
from ScarEnhanceModuleLib.Process import Worker  # noqa: E402


def timed(worker: Worker, arguments: list) -> float:
    started = time.perf_counter()
    worker.submit(arguments, lambda: None).wait()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    worker = Worker(sys.executable)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        segment = ["segment", str(SAMPLE_IMAGE), "-o", str(Path(folder) / "labels.nrrd"), "--device", args.device]
        enhance = ["enhance", str(SAMPLE_IMAGE), "--labels", str(SAMPLE_LABELS), "-o", str(Path(folder) / "out"),
                   "--format", "nrrd", "--no-report", *EnhanceParameters(device=args.device).command_line()]
        try:
            for name, arguments in (("segment", segment), ("enhance", enhance)):
                worker.stop()  # a fresh worker: the first click of a Slicer session
                first = timed(worker, arguments)
                second = timed(worker, arguments)
                results[name] = {"first_click_seconds": round(first, 2), "second_click_seconds": round(second, 2)}
                print(f"{name}: first click {first:.1f} s, second click {second:.1f} s", flush=True)
        finally:
            worker.stop()
    record = {"machine": platform.processor() or platform.machine(), "device": args.device,
              "volume": SAMPLE_IMAGE.name, "results": results}
    if args.output:
        args.output.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
