"""The benchmark script runs end to end and reports what it promises (with tiny models: no timing asserted)."""
import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_reports_speed_memory_and_quality(tiny_models, tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_enhance.py"), "--device", "cpu",
                             "--models", str(tiny_models), "--slices", "3", "-k", "2", "--paper-evaluations", "3",
                             "--threads", "1", "--output", str(output)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    paper = report["paper_protocol"]
    assert paper["total_evaluations"] == 3 * 2 * 250 and paper["timed_evaluations"] == 3 and paper["extrapolated"]
    assert report["speedup_vs_paper_protocol"] == paper["seconds"] / report["fast"]["seconds"]
    assert report["fast"]["peak_rss_mb"] > 0 and 0 < report["fast"]["ssim"] <= 1
    assert set(report["quality_difference_vs_ddpm_250"]) == {"cnr_scar_myo", "cnr_scar_blood", "ssim_loss"}
    assert "speed-up:" in result.stdout
