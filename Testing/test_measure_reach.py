"""The reach diagnostic (benchmarks/measure_reach_from_original.py) reads what a network's one-step x0 estimate
changes, on scar and on the tissue the target leaves unchanged, with stand-in networks of known behaviour."""
from types import SimpleNamespace

import pytest
import torch

from ScarEnhanceLib.diffusion import DiffusionConfig, training_scheduler

from conftest import load_benchmark


class _BrightensBy(torch.nn.Module):
    """Predicts the noise whose x0 estimate is the original plus ``on_bright`` where it is bright (> 0.5) and plus
    ``elsewhere`` elsewhere, whatever x_t it is given."""

    def __init__(self, config: DiffusionConfig, on_bright: float, elsewhere: float):
        super().__init__()
        self.abar = training_scheduler(config).alphas_cumprod
        self.on_bright, self.elsewhere = on_bright, elsewhere

    def forward(self, model_input, t):
        original, noisy = model_input[:, :1], model_input[:, -1:]
        abar = self.abar[t].view(-1, 1, 1, 1)
        estimate = original + torch.where(original > 0.5, self.on_bright, self.elsewhere)
        return SimpleNamespace(sample=(noisy - abar.sqrt() * estimate) / (1 - abar).sqrt())


def _crops():
    """Two 8x8 crops: a 3x3 bright scar patch the target raises by 0.3, dark healthy tissue it leaves alone, a
    one-pixel border outside the ROI."""
    original = torch.zeros(2, 1, 8, 8)
    scar = torch.zeros_like(original)
    scar[:, :, 2:5, 2:5] = 1.0
    original[scar > 0] = 0.6
    mask = torch.zeros_like(original)
    mask[:, :, 1:7, 1:7] = 1.0
    return original, original + 0.3 * scar, mask, scar


@pytest.mark.parametrize("invented", [0.0, 0.25])
def test_reach_reads_scar_and_invented_brightening(invented):
    script = load_benchmark("measure_reach_from_original")
    config = DiffusionConfig(image_size=8)
    model = SimpleNamespace(config=config, network=_BrightensBy(config, on_bright=1.0, elsewhere=invented))
    row = script.reach(model, _crops())
    assert row["slices"] == 2 and row["target"] == pytest.approx(0.3)
    for t in script.TIMESTEPS:
        for start in ("target", "original"):
            assert row[f"{start} {t}"] == pytest.approx(1.0, abs=1e-4), (start, t)
    assert row["unchanged"] == pytest.approx(invented, abs=1e-4)


def test_the_script_prints_a_row_per_data_set_and_split(phantom_folder, tiny_models, capsys):
    script = load_benchmark("measure_reach_from_original")
    assert script.main([str(tiny_models), str(phantom_folder), "--splits", "all", "--crops", "8"]) == 0
    header, rule, row = capsys.readouterr().out.strip().splitlines()
    assert header.count("|") == rule.count("|") == row.count("|") == 5 + 2 * len(script.TIMESTEPS) + 1
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == [phantom_folder.name, "all"] and int(cells[2]) > 0  # crops with scar were found
    assert float(cells[3]) > 0  # the gamma target brightens the phantoms' scar
    with pytest.raises(ValueError, match="do not cover the data set"):
        script.main([str(tiny_models), str(phantom_folder), "--splits", "val"])
