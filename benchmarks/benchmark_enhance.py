"""Time the default fast path against the paper's protocol on the same machine, and check quality.

    python benchmarks/benchmark_enhance.py [--device auto|cpu|cuda] [--output results.json]

Runs of the same 12-slice volume (the bundled sample, tiled to 12 slices) with k=5:
- fast: the default path (SDE DPM-Solver++, 30 steps, all k samples and slices batched, heart crop);
- ddpm-250: the paper's sampler (250 ancestral steps from lambda=250) on the same crop, batched: the
  quality reference the fast path must stay within 3 % of;
- paper protocol: ddpm-250 on the full 256x256 frame, one sample of one slice at a time, as the paper
  runs it: 12 x 5 x 250 network evaluations of batch 1. On a CPU that takes hours, so only
  ``--paper-evaluations`` of them are timed and the total is extrapolated (the report says so).
It prints the speed ratio, peak memory and the quality differences, and writes them as JSON. The
differences are put beside those between two ddpm-250 runs with different seeds: each output is a mean
of k random samples, so that is the smallest difference any sampler can show.
``--large`` also enhances a 30-slice 512x512 phantom and reports its peak memory; ``--compile`` also
times the fast path with torch.compile (its first run, which compiles, and later ones); ``--repeats``
times the fast runs several times and reports the median (use it on a GPU, where one run is short).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ScarEnhanceLib.evaluate import heart_crop_ssim_psnr  # noqa: E402
from ScarEnhanceLib.metrics import cnr_pair  # noqa: E402
from ScarEnhanceLib.parameters import EnhanceParameters  # noqa: E402
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom  # noqa: E402
from ScarEnhanceLib.pipeline import enhance, resolve_device  # noqa: E402
from ScarEnhanceLib.sample import SAMPLE_IMAGE, SAMPLE_LABELS  # noqa: E402
from ScarEnhanceLib.volume import SliceScale  # noqa: E402
from ScarEnhanceLib.weights import ENHANCEMENT, MODELS_DIR, load  # noqa: E402

PAPER_FRAME = 256


def tiled_sample(slices: int) -> tuple[sitk.Image, sitk.Image]:
    """The bundled sample volume repeated along its slice axis to ``slices`` slices."""
    tiles = []
    for path in (SAMPLE_IMAGE, SAMPLE_LABELS):
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
        tiled = np.concatenate([array] * -(-slices // len(array)))[:slices]
        out = sitk.GetImageFromArray(tiled)
        out.SetSpacing(image.GetSpacing())
        out.SetOrigin(image.GetOrigin())
        out.SetDirection(image.GetDirection())
        tiles.append(out)
    return tiles[0], tiles[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_enhance(image, labels, model, parameters: EnhanceParameters, device: torch.device) -> tuple[sitk.Image, dict]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    start = time.perf_counter()
    result = enhance(image, labels, model, parameters)
    synchronize(device)
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        stats["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result.enhanced, stats


def repeated_enhance(image, labels, model, parameters: EnhanceParameters, device: torch.device,
                     repeats: int) -> tuple[sitk.Image, dict]:
    """``timed_enhance`` ``repeats`` times: the first run's output, the median time and every time."""
    runs = [timed_enhance(image, labels, model, parameters, device) for _ in range(repeats)]
    output, stats = runs[0]
    seconds = [run_stats["seconds"] for _, run_stats in runs]
    return output, {**stats, "seconds": float(np.median(seconds)), "seconds_each": seconds}


@torch.inference_mode()
def paper_protocol_seconds(model, device: torch.device, slices: int, k: int, lam: int, evaluations: int) -> dict:
    """Seconds for slices x k x lam unbatched evaluations at 256x256, from ``evaluations`` timed ones."""
    total = slices * k * lam
    evaluations = min(evaluations, total) if evaluations > 0 else total
    model_input = torch.randn(1, 2, PAPER_FRAME, PAPER_FRAME, device=device)
    timestep = torch.tensor([lam - 1], device=device)
    model.network(model_input, timestep)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(evaluations):
        model.network(model_input, timestep)
    synchronize(device)
    per_evaluation = (time.perf_counter() - start) / evaluations
    return {"seconds": per_evaluation * total, "timed_evaluations": evaluations, "total_evaluations": total,
            "extrapolated": evaluations < total, "seconds_per_evaluation": per_evaluation}


def quality(original: sitk.Image, output: sitk.Image, reference: sitk.Image, labels: sitk.Image) -> dict:
    """CNRs of ``output`` and its SSIM/PSNR against ``reference`` on a crop around the heart ([0, 255] scale)."""
    truth = sitk.GetArrayFromImage(labels)
    scale = SliceScale.of(sitk.GetArrayFromImage(original).astype(np.float32))
    out255, ref255 = (scale.forward(sitk.GetArrayFromImage(i).astype(np.float32)) for i in (output, reference))
    values = cnr_pair(sitk.GetArrayFromImage(output).astype(np.float32), truth)
    values.update(heart_crop_ssim_psnr(out255, ref255, truth))
    return values


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("inf")


def run(args, save=lambda report: None) -> dict:
    """The report; ``save`` gets it after each part, so that a run stopped during the optional parts
    (large volume, then compiling) still leaves the rest behind."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load(ENHANCEMENT, args.models, device)
    image, labels = tiled_sample(args.slices)
    fast = EnhanceParameters(k=args.k, device=args.device)
    ddpm = replace(fast, sampler="ddpm")

    timed_enhance(image, labels, model, replace(fast, steps=2), device)  # warm-up with the same batch shapes
    fast_output, fast_stats = repeated_enhance(image, labels, model, fast, device, args.repeats)
    ddpm_output, ddpm_stats = timed_enhance(image, labels, model, ddpm, device)
    paper = paper_protocol_seconds(model, device, args.slices, args.k, ddpm.lam, args.paper_evaluations)

    ddpm_other_seed_output, _ = timed_enhance(image, labels, model, replace(ddpm, seed=ddpm.seed + 1), device)

    fast_quality = quality(image, fast_output, ddpm_output, labels)
    ddpm_quality = {**cnr_pair(sitk.GetArrayFromImage(ddpm_output).astype(np.float32), sitk.GetArrayFromImage(labels)),
                    "ssim": 1.0, "psnr": float("inf")}
    other_seed_quality = quality(image, ddpm_other_seed_output, ddpm_output, labels)
    report = {
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "volume": {"slices": args.slices, "size": list(image.GetSize()), "k": args.k},
        "fast": {**fast_stats, **fast_quality, "steps": fast.steps},
        "ddpm_250_batched": {**ddpm_stats, **ddpm_quality},
        "paper_protocol": paper,
        "speedup_vs_paper_protocol": paper["seconds"] / fast_stats["seconds"],
        "speedup_vs_ddpm_250_batched": ddpm_stats["seconds"] / fast_stats["seconds"],
        "quality_difference_vs_ddpm_250": quality_difference(fast_quality, ddpm_quality),
        "ddpm_250_other_seed": other_seed_quality,
        "quality_difference_between_ddpm_250_seeds": quality_difference(other_seed_quality, ddpm_quality),
    }
    save(report)
    if args.large:
        report["large_volume"] = large_volume_memory(model, args)
        save(report)
    if args.compile:
        report["fast_compiled"] = compiled_timings(image, labels, model, fast, fast_output, device, args.repeats)
        save(report)
    return report


def quality_difference(output: dict, reference: dict) -> dict:
    return {"cnr_scar_myo": relative_difference(output["cnr_scar_myo"], reference["cnr_scar_myo"]),
            "cnr_scar_blood": relative_difference(output["cnr_scar_blood"], reference["cnr_scar_blood"]),
            "ssim_loss": 1.0 - output["ssim"]}


def compiled_timings(image, labels, model, fast: EnhanceParameters, eager_output: sitk.Image,
                     device: torch.device, repeats: int) -> dict:
    """The fast path with torch.compile: the first run includes compiling, later ones reuse it; the output is
    compared with the eager run's (same seed)."""
    compiled = replace(fast, compile_network=True)
    first_output, first = timed_enhance(image, labels, model, compiled, device)
    _, again = repeated_enhance(image, labels, model, compiled, device, repeats)
    difference = np.abs(sitk.GetArrayFromImage(first_output).astype(np.float32)
                        - sitk.GetArrayFromImage(eager_output).astype(np.float32)).max()
    return {"first_run_seconds": first["seconds"], "seconds": again["seconds"],
            "max_abs_difference_vs_eager": float(difference)}


def large_volume_memory(model, args) -> dict:
    """Peak memory of the default path on a 30-slice 512x512 phantom (0.7 mm pixels)."""
    image, labels = make_phantom(PhantomSpec(matrix=512, slices=30, spacing_mm=0.7, seed=1))
    device = resolve_device(args.device)
    _, stats = timed_enhance(image, labels, model, EnhanceParameters(k=args.k, device=args.device), device)
    return {"size": list(image.GetSize()), **stats}


def print_report(report: dict) -> None:
    fast, ddpm, paper = report["fast"], report["ddpm_250_batched"], report["paper_protocol"]
    quality_difference = report["quality_difference_vs_ddpm_250"]
    print(f"machine: {report['machine']}")
    print(f"volume: {report['volume']}")
    print(f"fast path (SDE DPM-Solver++ {fast['steps']} steps, batched): {fast['seconds']:.2f} s, "
          f"peak RSS {fast['peak_rss_mb']:.0f} MB" + (f", peak GPU {fast['peak_gpu_mb']:.0f} MB"
                                                       if "peak_gpu_mb" in fast else ""))
    print(f"ddpm-250 batched on the crop: {ddpm['seconds']:.2f} s")
    note = (f" (extrapolated from {paper['timed_evaluations']} of {paper['total_evaluations']} evaluations)"
            if paper["extrapolated"] else "")
    print(f"paper protocol (ddpm-250, 256x256, unbatched): {paper['seconds']:.0f} s{note}")
    print(f"speed-up: {report['speedup_vs_paper_protocol']:.0f}x over the paper protocol, "
          f"{report['speedup_vs_ddpm_250_batched']:.1f}x over batched ddpm-250")
    print(f"CNR scar/myo fast {fast['cnr_scar_myo']:.3f} vs ddpm {ddpm['cnr_scar_myo']:.3f}; "
          f"CNR scar/blood fast {fast['cnr_scar_blood']:.3f} vs ddpm {ddpm['cnr_scar_blood']:.3f}; "
          f"SSIM(fast, ddpm) {fast['ssim']:.4f}")
    print("relative differences: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in quality_difference.items()))
    print("between two ddpm-250 runs (seeds differ): " + ", ".join(
        f"{k} {100 * v:.2f} %" for k, v in report["quality_difference_between_ddpm_250_seeds"].items()))
    if "fast_compiled" in report:
        compiled = report["fast_compiled"]
        print(f"fast path compiled: first run {compiled['first_run_seconds']:.1f} s (compiling), then "
              f"{compiled['seconds']:.2f} s; max difference from eager {compiled['max_abs_difference_vs_eager']:.3g}")
    if "large_volume" in report:
        large = report["large_volume"]
        print(f"30x512x512 volume: {large['seconds']:.2f} s, peak RSS {large['peak_rss_mb']:.0f} MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", type=Path, default=MODELS_DIR)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--paper-evaluations", type=int, default=0,
                        help="unbatched evaluations to time for the paper protocol (0: all of them)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="time the fast path this many times (median)")
    parser.add_argument("--large", action="store_true", help="also the 30-slice 512x512 memory check")
    parser.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)

    def save(report: dict) -> None:
        if args.output:
            args.output.write_text(json.dumps(report, indent=1) + "\n")

    print_report(run(args, save))
    return 0


if __name__ == "__main__":
    sys.exit(main())
