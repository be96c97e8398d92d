import pytest
import torch

from ScarEnhanceLib.diffusion import (DiffusionConfig, NoiseHintDenoiser, SamplerSettings, add_masked_noise,
                                      build_denoiser, masked_loss, sample, sample_ensemble, training_scheduler,
                                      warm_start)

CONFIG = DiffusionConfig(image_size=16, block_out_channels=(8, 16), attention_head_dim=8)


def _enhancement(original):
    """The known target the oracle steers to: a contrast change of the original."""
    return 0.6 * original + 0.25


def _problem(seed=0, batch=3, size=16):
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 1, size, size, generator=generator) * 2 - 1
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, 4:12, 3:11] = 1
    return source, mask * _enhancement(source) + (1 - mask) * source, mask


def _oracle(target=None):
    """Returns the exact noise that takes x_t to the enhancement of its conditioning original."""
    abar = training_scheduler(CONFIG).alphas_cumprod

    def denoiser(model_input, t):
        original, x_t = model_input[:, :1], model_input[:, 1:]
        a = abar[t].view(-1, 1, 1, 1).to(x_t)
        return (x_t - a.sqrt() * _enhancement(original)) / (1 - a).sqrt()
    return denoiser


@pytest.mark.parametrize("sampler, steps", [("ddpm", 250), ("fast", 20), ("fast", 7)])
def test_sampler_with_oracle_lands_on_target_inside_and_source_outside(sampler, steps):
    source, target, mask = _problem()
    out = sample(_oracle(target), source, mask, CONFIG, SamplerSettings(sampler=sampler, steps=steps, k=1))
    assert torch.allclose(out * mask, target * mask, atol=1e-4)
    assert torch.equal(out * (1 - mask), source * (1 - mask))


def test_ensemble_with_oracle_has_zero_spread_and_keeps_slices_apart():
    source, target, mask = _problem(batch=2)
    result = sample_ensemble(_oracle(target), source, mask, CONFIG, SamplerSettings(k=3, steps=10), batch_size=4)
    assert result.samples.shape == (2, 3, 16, 16)
    assert torch.allclose(result.mean, target, atol=1e-4)
    assert float(result.std.max()) < 1e-4


@pytest.mark.parametrize("settings", [SamplerSettings(sampler="ddpm", lam=100), SamplerSettings(steps=20),
                                      SamplerSettings(steps=250), SamplerSettings(steps=1)])
def test_the_sampler_evaluates_the_network_once_per_planned_timestep(settings):
    """The duration estimate and the progress bar count ``settings.timesteps()``: the sampler must run exactly those."""
    seen = []

    def recording_denoiser(model_input, t):
        seen.append(int(t[0]))
        return torch.zeros_like(model_input[:, 1:])
    source, _, mask = _problem(batch=1)
    sample(recording_denoiser, source, mask, CONFIG, settings)
    assert seen == settings.timesteps()


def test_masked_noise_is_zero_outside_the_roi():
    source, _, mask = _problem()
    scheduler = training_scheduler(CONFIG)
    t = torch.tensor([10, 500, 999])
    noisy = add_masked_noise(scheduler, source, torch.randn_like(source), t, mask)
    scale = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(noisy * (1 - mask), scale * source * (1 - mask))
    assert not torch.allclose(noisy * mask, scale * source * mask)


def test_masked_loss_ignores_pixels_outside_the_roi():
    _, _, mask = _problem()
    noise = torch.randn_like(mask)
    wrong_outside = noise + 5.0 * (1 - mask)
    assert float(masked_loss(wrong_outside, noise, mask)) == 0.0
    assert float(masked_loss(noise + 1.0, noise, mask)) == pytest.approx(1.0)


def test_masked_loss_weighs_pixels_by_the_mask():
    noise = torch.zeros(1, 1, 1, 4)
    predicted = torch.tensor([[[[1.0, 0.0, 0.0, 9.0]]]])  # squared errors 1, 0, 0 in the ROI; 81 outside
    weights = torch.tensor([[[[5.0, 1.0, 1.0, 0.0]]]])  # the first pixel weighs 5 (scar), the last is outside
    assert float(masked_loss(predicted, noise, weights)) == pytest.approx(5.0 / 7.0)


def test_real_network_samples_are_reproducible_with_a_seed_and_vary_across_k():
    torch.manual_seed(0)
    network = build_denoiser(CONFIG).eval()
    source, _, mask = _problem(batch=2)
    settings = SamplerSettings(k=3, steps=4)

    def run(seed):
        with torch.inference_mode():
            return sample_ensemble(lambda x, t: network(x, t).sample, source, mask, CONFIG, settings, seed=seed)
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first.mean, again.mean)
    assert not torch.equal(first.mean, other.mean)
    assert float(first.std[mask.bool()].mean()) > 0
    assert torch.allclose(first.mean * (1 - mask), source * (1 - mask), atol=1e-6)


@pytest.mark.parametrize("sampler", ["fast", "ddpm"])
def test_the_same_seed_gives_the_same_samples_whatever_the_batch_size(sampler):
    torch.manual_seed(0)
    network = build_denoiser(CONFIG).eval()
    source, _, mask = _problem(batch=3)
    settings = SamplerSettings(sampler=sampler, k=2, steps=3, lam=5)

    def run(batch_size):
        with torch.inference_mode():
            return sample_ensemble(lambda x, t: network(x, t).sample, source, mask, CONFIG, settings,
                                   batch_size=batch_size, seed=7).samples
    whole = run(64)
    for batch_size in (1, 4):
        torch.testing.assert_close(run(batch_size), whole, rtol=0, atol=1e-5)


def test_whole_image_noise_ablation_noises_outside_too():
    config = DiffusionConfig(image_size=16, block_out_channels=(8, 16), attention_head_dim=8, localized=False)
    source, target, mask = _problem()
    seen = []

    def spy(model_input, t):
        seen.append(model_input[:, 1:].clone())
        return torch.zeros_like(model_input[:, 1:])
    out = sample(spy, source, mask, config, SamplerSettings(k=1, steps=3))
    abar = training_scheduler(config).alphas_cumprod
    for x_t, t in zip(seen, (249, 124)):  # never reset to the clean source outside, unlike the localized form
        assert not torch.allclose(x_t * (1 - mask), abar[t].sqrt() * source * (1 - mask), atol=1e-3)
    assert torch.equal(out * (1 - mask), source * (1 - mask))


@pytest.mark.parametrize("settings, message", [(SamplerSettings(sampler="euler"), "sampler"),
                                               (SamplerSettings(lam=0), "lambda"),
                                               (SamplerSettings(steps=300), "steps"),
                                               (SamplerSettings(k=0), "k must")])
def test_invalid_sampler_settings_are_explained(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_attention_uses_torchs_fused_scaled_dot_product_kernel():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0
    processors = [m.processor for m in build_denoiser(CONFIG).modules() if isinstance(m, Attention)]
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)


class _ZeroUNet(torch.nn.Module):
    """Stands in for the U-Net: no residual, so the denoiser's prediction is its hint alone."""

    def forward(self, model_input, timestep):
        assert model_input.shape[1] == 3  # original, x_t and the hint
        return type("Output", (), {"sample": torch.zeros_like(model_input[:, :1])})()


def test_noise_hint_is_the_noise_where_the_target_equals_the_original():
    source, _, mask = _problem()
    noise = torch.randn_like(source)
    t = torch.tensor([0, 120, 299])
    unchanged_target = add_masked_noise(training_scheduler(CONFIG), source, noise, t, mask)
    hint = NoiseHintDenoiser(_ZeroUNet(), CONFIG)(torch.cat([source, unchanged_target], 1), t).sample
    inside = (mask > 0) & (noise.abs() < NoiseHintDenoiser.HINT_LIMIT)
    assert torch.allclose(hint[inside], noise[inside], atol=1e-3)
    assert torch.allclose(hint[mask == 0], torch.zeros(()), atol=1e-4)  # no noise outside the ROI
    at_zero = t[:1].repeat(3)
    brighter = add_masked_noise(training_scheduler(CONFIG), source + 1.0, noise, at_zero, mask)
    clipped = NoiseHintDenoiser(_ZeroUNet(), CONFIG)(torch.cat([source, brighter], 1), at_zero).sample
    assert float(clipped.max()) == NoiseHintDenoiser.HINT_LIMIT  # t = 0 amplifies a changed target 100-fold


def test_a_noise_hint_network_warm_started_from_plain_weights_starts_as_the_identity_enhancement():
    torch.manual_seed(0)
    plain = build_denoiser(CONFIG).eval()
    hinted_config = DiffusionConfig(**{**CONFIG.to_dict(), "noise_hint": True})
    hinted = build_denoiser(hinted_config).eval()
    warm_start(hinted, plain.state_dict(), hinted_config)
    assert torch.equal(hinted.unet.conv_in.weight[:, :2], plain.conv_in.weight)  # the plain network's features
    model_input, t = torch.randn(2, 2, 16, 16), torch.tensor([5, 250])
    with torch.no_grad():
        hint_only = NoiseHintDenoiser(_ZeroUNet(), CONFIG)(model_input, t).sample
        assert torch.equal(hinted(model_input, t).sample, hint_only)
        again = build_denoiser(hinted_config).eval()
        warm_start(again, hinted.state_dict(), hinted_config)  # hint weights load as they are
        assert torch.equal(again(model_input, t).sample, hint_only)


def test_dropout_acts_while_training_only():
    torch.manual_seed(0)
    network = build_denoiser(DiffusionConfig(**{**CONFIG.to_dict(), "dropout": 0.5}))
    model_input, t = torch.randn(2, 2, 16, 16), torch.tensor([5, 250])
    with torch.no_grad():
        network.train()
        assert not torch.equal(network(model_input, t).sample, network(model_input, t).sample)
        network.eval()  # as the weights are loaded for sampling
        assert torch.equal(network(model_input, t).sample, network(model_input, t).sample)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_a_dropout_outside_0_to_1_is_refused(dropout):
    with pytest.raises(ValueError, match="dropout"):
        DiffusionConfig(dropout=dropout)
