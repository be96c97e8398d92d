"""Validated enhancement parameters and the duration estimate shown before slow runs."""
from dataclasses import replace

import pytest

from ScarEnhanceLib.parameters import (EnhanceParameters, InputError, SamplerSettings, estimated_seconds,
                                       network_evaluations)


@pytest.mark.parametrize("change, message", [(dict(sampler="euler"), "sampler"), (dict(lam=0), "lambda"),
                                             (dict(steps=300), "steps"), (dict(k=0), "k must"),
                                             (dict(dilation_mm=31), "dilation"), (dict(crop_margin=0.5), "margin"),
                                             (dict(batch_size=-1), "batch"), (dict(device="tpu"), "device")])
def test_bad_settings_are_explained(change, message):
    with pytest.raises(InputError, match=message):
        replace(EnhanceParameters(), **change).validate()


def test_defaults_are_the_papers_partial_diffusion_with_the_fast_sampler():
    defaults = EnhanceParameters().validate()
    assert (defaults.lam, defaults.k, defaults.sampler) == (250, 5, "fast")
    assert network_evaluations(defaults) == defaults.steps
    assert network_evaluations(replace(defaults, sampler="ddpm")) == 250


@pytest.mark.parametrize("sampler, lam, steps", [("fast", 250, 20), ("fast", 250, 250), ("fast", 100, 7),
                                                 ("fast", 250, 1), ("ddpm", 100, 20)])
def test_reverse_chain_runs_from_lambda_down_to_zero_without_repeats(sampler, lam, steps):
    timesteps = SamplerSettings(sampler=sampler, lam=lam, steps=steps).timesteps()
    assert timesteps[0] == lam - 1 and (timesteps[-1] == 0 or steps == 1)
    assert all(a > b for a, b in zip(timesteps, timesteps[1:]))
    assert len(timesteps) == (lam if sampler == "ddpm" else steps)


def test_estimate_grows_with_the_work_and_is_shorter_on_a_gpu():
    fast = EnhanceParameters()
    base = estimated_seconds(12, fast, on_gpu=False)
    assert estimated_seconds(24, fast, False) > base and estimated_seconds(12, replace(fast, k=10), False) > base
    assert estimated_seconds(12, replace(fast, sampler="ddpm"), False) > 5 * base
    assert estimated_seconds(12, fast, on_gpu=True) < base
