"""Validated enhancement parameters and the duration estimate shown before slow runs."""
from dataclasses import replace

import pytest

from ScarEnhanceLib.parameters import EnhanceParameters, InputError, estimated_seconds, network_evaluations


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


def test_estimate_grows_with_the_work_and_is_shorter_on_a_gpu():
    fast = EnhanceParameters()
    base = estimated_seconds(12, fast, on_gpu=False)
    assert estimated_seconds(24, fast, False) > base and estimated_seconds(12, replace(fast, k=10), False) > base
    assert estimated_seconds(12, replace(fast, sampler="ddpm"), False) > 5 * base
    assert estimated_seconds(12, fast, on_gpu=True) < base
