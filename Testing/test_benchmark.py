"""The benchmark script runs end to end and reports what it promises (with tiny models: no timing asserted)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


def _run_benchmark(models, output, *options):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_enhance.py"), "--device", "cpu",
                             "--models", str(models), "--slices", "3", "-k", "2", "--paper-evaluations", "3",
                             "--threads", "1", "--output", str(output), *options],
                            capture_output=True, text=True, cwd=output.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(output.read_text(encoding="utf-8")), result.stdout


def test_benchmark_reports_speed_memory_and_quality(tiny_models, tmp_path):
    report, stdout = _run_benchmark(tiny_models, tmp_path / "bench.json", "--repeats", "3")
    assert len(report["fast"]["seconds_each"]) == 3
    assert report["fast"]["seconds"] == sorted(report["fast"]["seconds_each"])[1]  # the median
    paper = report["paper_protocol"]
    assert paper["total_evaluations"] == 3 * 2 * 250 and paper["timed_evaluations"] == 3 and paper["extrapolated"]
    assert report["speedup_vs_paper_protocol"] == paper["seconds"] / report["fast"]["seconds"]
    assert report["fast"]["peak_rss_mb"] > 0 and 0 < report["fast"]["ssim"] <= 1
    assert set(report["quality_difference_vs_ddpm_250"]) == {"cnr_scar_myo", "cnr_scar_blood", "ssim_loss"}
    between_seeds = report["quality_difference_between_ddpm_250_seeds"]
    assert set(between_seeds) == {"cnr_scar_myo", "cnr_scar_blood", "ssim_loss"} and between_seeds["ssim_loss"] > 0
    assert "speed-up:" in stdout and "between two ddpm-250 runs" in stdout


@pytest.mark.slow
def test_benchmark_times_the_compiled_fast_path(tiny_models, tmp_path):
    report, stdout = _run_benchmark(tiny_models, tmp_path / "bench.json", "--compile")
    compiled = report["fast_compiled"]
    assert compiled["first_run_seconds"] > 0 and compiled["seconds"] > 0
    assert compiled["max_abs_difference_vs_eager"] <= 1.0  # float noise may round to one step of the integer type
    assert "fast path compiled" in stdout


def test_segmentation_benchmark_times_both_frame_sizes(tiny_models, tmp_path):
    output = tmp_path / "seg.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_segment.py"), "--device", "cpu",
                             "--models", str(tiny_models), "--slices", "2", "--repeats", "2", "--threads", "1",
                             "--output", str(output)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text(encoding="utf-8"))
    for key, size in (("sample_256", 256), ("whole_frame_480", 480)):
        assert report[key]["size"] == [size, size, 2] and len(report[key]["seconds_each"]) == 2
        assert report[key]["seconds"] == float(np.median(report[key]["seconds_each"]))
    assert "whole_frame_480: 2 slices" in result.stdout


def test_batch_benchmark_runs_both_ways(tiny_models, tmp_path):
    output = tmp_path / "batch.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_batch.py"), "--studies", "2",
                             "--slices", "2", "--models", str(tiny_models), "--output", str(output),
                             "--enhance-options", "--steps", "2", "-k", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text(encoding="utf-8"))
    for key in ("one_call_per_study", "batch"):
        assert report[key]["seconds"] > 0
        assert report[key]["studies_per_minute"] == pytest.approx(60 * 2 / report[key]["seconds"])
    assert "--steps" in report["options"] and "studies per minute" in result.stdout


def test_training_batch_benchmark_times_each_kind_with_metadata_off_and_on(tmp_path):
    output = tmp_path / "batches.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_training_batches.py"), "--batches",
                             "1", "--batch-size", "2", "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text(encoding="utf-8"))
    assert set(report["seconds_per_batch"]) == {"segmentation", "segmentation_drawn_scar_tissue_contrast",
                                                "enhancement_strong"}
    for timings in report["seconds_per_batch"].values():
        assert timings["metadata_off"] > 0 and timings["metadata_on"] > 0
    assert report["batch"] == 2 and "segmentation: " in result.stdout
