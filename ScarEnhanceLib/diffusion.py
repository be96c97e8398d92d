"""Localized conditional diffusion (DDPM, T=1000, linear betas) and its partial-diffusion sampler.

Noise lives only inside the heart ROI m. Forward process, the same in training and sampling:

    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * m * eps

so outside the ROI x_t is the clean image scaled by sqrt(abar_t): a noise-free context whose scale
tells the network the noise level. The network sees concat(condition, x_t) and predicts eps; its
prediction outside the ROI is ignored (zeroed), as the training loss is masked by m. After each
reverse step the outside is reset to sqrt(abar_prev) * original, so the result equals the input
exactly outside the ROI. (The whole-image-noise ablation noises and denoises everything, as it was
trained, and only its final result is pasted into the ROI.)

Inference is partial: the *original* is noised to step ``lam`` (default 250) and the reverse
chain runs from there, k times with fresh noise; the mean is the enhanced image and the per-pixel
standard deviation the uncertainty. Two samplers, both from diffusers:
``ddpm`` (the paper's ``lam`` ancestral steps) and ``fast`` (DPM-Solver++ in its SDE form, ``steps`` steps):
stochastic like ddpm, its mean of k samples is as close to ddpm's (SSIM, PSNR) as a second ddpm run with
other noise (benchmarks/RESULTS.md); the deterministic ODE form gives a smoother, systematically different mean.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from . import labels as L
from .parameters import CONDITIONINGS, NORMALISATIONS, SamplerSettings
from .volume import IntensityWindow

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (concat(condition, x_t), t) -> eps


@dataclass(frozen=True)
class DiffusionConfig:
    """Network and noise schedule; saved beside the weights."""

    image_size: int = 64
    block_out_channels: tuple = (24, 48, 96)
    layers_per_block: int = 1
    attention_head_dim: int = 32
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    localized: bool = True  # False: whole-image noise (the ablation)
    noise_hint: bool = False  # True: predict eps as (the noise x_t holds if the target is the original) + a residual
    dropout: float = 0.0  # in the residual blocks, while training only: regularises a model trained on few cases
    conditioning: str = "image"  # image: the paper's | tissue: also blood-pool and wall maps | tissue-scar: and scar
    normalisation: str = "slice"  # slice: the paper's [0, 255] of the slice | heart: the window of the heart crop

    @staticmethod
    def from_dict(values: dict) -> "DiffusionConfig":
        values = dict(values)
        values["block_out_channels"] = tuple(values.get("block_out_channels", DiffusionConfig.block_out_channels))
        return DiffusionConfig(**values)

    def __post_init__(self):
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be at least 0 and below 1, got {self.dropout}")
        levels = len(self.block_out_channels)
        if not 1 <= levels <= 6 or not all(1 <= int(c) <= 2048 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels must be 1 to 6 levels of 1 to 2048, got {self.block_out_channels}")
        if not 8 <= self.image_size <= 1024 or self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be 8 to 1024 and divisible by {2 ** (levels - 1)}, got {self.image_size}")
        if not 1 <= self.num_train_timesteps <= 10000:
            raise ValueError(f"num_train_timesteps must be 1 to 10000, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"the noise schedule needs 0 < beta_start < beta_end < 1, got {self.beta_start}, "
                             f"{self.beta_end}")

    def to_dict(self) -> dict:
        return asdict(self)


# the label maps each conditioning shows the network (tissue_maps)
MAPS = {"image": (), "tissue": ("blood_pool", "wall"), "tissue-scar": ("blood_pool", "wall", "scar")}


def map_names(config: DiffusionConfig) -> tuple[str, ...]:
    """The label maps the network reads: none (the paper's), blood pool and wall, or those and scar."""
    return MAPS[config.conditioning]


def condition_channels(config: DiffusionConfig) -> tuple[str, ...]:
    """What the network sees beside x_t, in this order: the original; the label maps of ``map_names(config)``;
    for heart normalisation the crop's intensity window on the slice's [0, 255] scale as two constant maps (the
    gamma target depends on where the crop lies on that scale)."""
    names = ("original",) + map_names(config)
    if config.normalisation == "heart":
        names += ("window_low", "window_high")
    return names


def build_condition(original255: np.ndarray, tissue: Optional[np.ndarray], config: DiffusionConfig,
                    window: Optional[IntensityWindow] = None) -> tuple[np.ndarray, IntensityWindow]:
    """The condition channels (n, C, S, S) of ``condition_channels(config)`` from model-sized crops on the slice's
    [0, 255] scale, and the intensity window they were mapped with (``window``, else the crops' own).
    ``tissue``: (n, M, S, S) fractions in [0, 1] of the M maps of ``map_names(config)`` (none for the paper's)."""
    window = window or IntensityWindow.of(original255, config.normalisation)
    channels = [window.forward(original255)[:, None]]
    names = map_names(config)
    if names:
        if tissue is None or tissue.shape != (len(original255), len(names), *original255.shape[1:]):
            readable = [name.replace("_", "-") for name in names]
            raise ValueError(f"a tissue-conditioned model needs {', '.join(readable[:-1])} and {readable[-1]} maps "
                             "beside each crop")
        channels.append(tissue.astype(np.float32))
    if config.normalisation == "heart":
        channels.append(window.as_maps(original255.shape[-1]))
    return np.concatenate(channels, axis=1), window


def tissue_maps(labels: np.ndarray, config: DiffusionConfig) -> np.ndarray:
    """(n, M, h, w) float32: the maps of ``map_names(config)`` (blood pool, wall = myocardium with scar, scar) of
    (n, h, w) labels."""
    masks = {"blood_pool": labels == L.BLOOD_POOL, "wall": (labels == L.MYOCARDIUM) | (labels == L.SCAR),
             "scar": labels == L.SCAR}
    names = map_names(config)
    if not names:
        return np.zeros((len(labels), 0, *labels.shape[1:]), dtype=np.float32)
    return np.stack([masks[name] for name in names], axis=1).astype(np.float32)


def input_channels(config: DiffusionConfig) -> tuple[str, ...]:
    """The network's input channels: the condition, x_t, and the noise hint where there is one."""
    return condition_channels(config) + ("noisy",) + (("hint",) if config.noise_hint else ())


def build_denoiser(config: DiffusionConfig) -> torch.nn.Module:
    """diffusers U-Net: input concat(condition, x_t), 1 output (eps); attention at the coarsest level.
    With ``config.noise_hint`` it is wrapped in a :class:`NoiseHintDenoiser`."""
    levels = len(config.block_out_channels)
    unet = UNet2DModel(
        sample_size=config.image_size, in_channels=len(input_channels(config)), out_channels=1,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        norm_num_groups=8, attention_head_dim=config.attention_head_dim, dropout=config.dropout,
    )
    return NoiseHintDenoiser(unet, config) if config.noise_hint else unet


class NoiseHintDenoiser(torch.nn.Module):
    """Called like the U-Net with concat(condition, x_t) (the original first): predicts eps as
    hint + U-Net(condition, x_t, hint), where the hint is the noise x_t holds if the target equals the original,
    (x_t - sqrt(abar_t) original) / sqrt(1 - abar_t).

    Most of the ROI (myocardium) is unchanged by the target; there the hint *is* the noise, so the U-Net has only to
    output zero, and learns just the change (scar brighter, blood darker). A plain U-Net has to copy the original's
    texture through its normalised layers, and its small errors widen the enhanced myocardium's SD (lower CNR).
    The hint is clipped at +-HINT_LIMIT, which only changed tissue reaches (at small t), so the residual stays bounded.
    """

    HINT_LIMIT = 5.0

    def __init__(self, unet: UNet2DModel, config: DiffusionConfig):
        super().__init__()
        self.unet = unet
        abar = training_scheduler(config).alphas_cumprod.float()
        self.register_buffer("abar", abar, persistent=False)

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor):
        original, noisy = model_input[:, :1], model_input[:, -1:]
        abar = self.abar[timestep.long()].view(-1, 1, 1, 1)
        hint = ((noisy - abar.sqrt() * original) / (1.0 - abar).sqrt()).clamp(-self.HINT_LIMIT, self.HINT_LIMIT)
        hint = hint.to(model_input.dtype)
        output = self.unet(torch.cat([model_input, hint], dim=1), timestep)
        output.sample = hint + output.sample
        return output


# input channels of weights that do not match the network's, by their number: the image-only models
SOURCE_LAYOUTS = {2: ("original", "noisy"), 3: ("original", "noisy", "hint")}


def warm_start(network: torch.nn.Module, weights: dict, config: DiffusionConfig,
               source_config: Optional[DiffusionConfig] = None) -> None:
    """Load weights of the same U-Net, or of one with fewer inputs, into a network with more inputs (label maps,
    intensity window, hint): those of ``source_config`` where it is known (e.g. a tissue model into a tissue-scar
    one), else the image-only model's (with or without the noise hint). The inputs the source lacks start with zero
    weights, so the network begins as the source did; from weights without the hint the output layer starts at zero
    too: the network begins as the identity enhancement (eps = hint), on the source's features."""
    hinted = isinstance(network, NoiseHintDenoiser)
    source_hinted = any(k.startswith("unet.") for k in weights)
    weights = {k[len("unet."):] if k.startswith("unet.") else k: v for k, v in weights.items()}
    target = input_channels(config)
    conv_in = weights["conv_in.weight"]
    if conv_in.shape[1] != len(target):
        source = input_channels(source_config) if source_config else SOURCE_LAYOUTS.get(conv_in.shape[1])
        if source is None or len(source) != conv_in.shape[1] or not set(source) <= set(target):
            raise RuntimeError(f"weights with {conv_in.shape[1]} input channels do not fit inputs {target}")
        expanded = conv_in.new_zeros(conv_in.shape[0], len(target), *conv_in.shape[2:])
        for index, name in enumerate(source):
            expanded[:, target.index(name)] = conv_in[:, index]
        weights["conv_in.weight"] = expanded
    if hinted and not source_hinted:
        weights["conv_out.weight"] = torch.zeros_like(weights["conv_out.weight"])
        weights["conv_out.bias"] = torch.zeros_like(weights["conv_out.bias"])
    network.load_state_dict({f"unet.{k}": v for k, v in weights.items()} if hinted else weights)


# torch.compile backend; unit tests swap in a recording backend to check the traced path without a C++ build
COMPILE_BACKEND = "inductor"


def as_denoiser(model: torch.nn.Module, compile_network: bool = False) -> Denoiser:
    """The network as a denoiser for sampling: channels-last memory (about 25 % faster convolutions on CPU)
    and, on a GPU, float16 autocast; the result is always float32.

    ``compile_network``: torch.compile the network first (on CUDA in "reduce-overhead" mode, which replays CUDA
    graphs). Compiling costs tens of seconds up front, so it pays only for long runs.
    """
    model.to(memory_format=torch.channels_last)
    network = _compiled(model) if compile_network else model

    def denoise(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        on_gpu = model_input.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16, enabled=on_gpu):
            return network(model_input.contiguous(memory_format=torch.channels_last), t).sample.float()

    return denoise


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    on_gpu = next(model.parameters()).device.type == "cuda"
    mode = "reduce-overhead" if on_gpu and COMPILE_BACKEND == "inductor" else None
    return torch.compile(model, backend=COMPILE_BACKEND, mode=mode, dynamic=False)


def _schedule_kwargs(config: DiffusionConfig) -> dict:
    return dict(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                beta_end=config.beta_end, beta_schedule="linear")


def training_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(**_schedule_kwargs(config), clip_sample=False)


def add_masked_noise(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) m eps."""
    return scheduler.add_noise(x0, noise * mask, t)


def masked_loss(predicted: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the noise prediction over ROI pixels only; a non-binary ``mask`` weighs pixels."""
    return ((predicted - noise) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)


# ddpm clips its x0 estimate to +-this: the slice's [0, 255] is [-1, 1]; a heart window leaves bright scar above 1
CLIP_RANGE = {"slice": 1.0, "heart": 3.0}


def _reverse_scheduler(config: DiffusionConfig, settings: SamplerSettings, device):
    """A diffusers scheduler that runs ``settings.timesteps()``."""
    if settings.sampler == "ddpm":
        scheduler = DDPMScheduler(**_schedule_kwargs(config), clip_sample=True,
                                  clip_sample_range=CLIP_RANGE[config.normalisation])
    else:
        scheduler = DPMSolverMultistepScheduler(**_schedule_kwargs(config), algorithm_type="sde-dpmsolver++",
                                                solver_order=2, final_sigmas_type="zero")
    scheduler.set_timesteps(timesteps=settings.timesteps(), device=device)
    return scheduler


def sample(denoiser: Denoiser, condition: torch.Tensor, mask: torch.Tensor, config: DiffusionConfig,
           settings: SamplerSettings, generator=None, on_step: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """One partial-diffusion sample per item of the batch.

    condition: (B, C, S, S), the channels of ``condition_channels(config)``, the original first (in [-1, 1] of its
    intensity window); mask: (B, 1, S, S) in {0, 1}. Returns (B, 1, S, S);
    outside the mask it is exactly ``original``. ``generator``: one, or a list of one per item (each item's
    noise then depends on its own generator only, not on what else is in the batch).
    """
    settings = settings.validate(config.num_train_timesteps)
    original = condition[:, :1]
    scheduler = _reverse_scheduler(config, settings, original.device)
    abar = scheduler.alphas_cumprod.to(original.device, torch.float32)
    noise_mask = mask if config.localized else torch.ones_like(mask)
    outside = 1.0 - mask
    start = int(scheduler.timesteps[0])
    noise = randn_tensor(original.shape, generator=generator, device=original.device, dtype=original.dtype)
    x = abar[start].sqrt() * original + (1.0 - abar[start]).sqrt() * noise_mask * noise
    timesteps = list(scheduler.timesteps)
    for index, t in enumerate(timesteps):
        t_batch = torch.full((original.shape[0],), int(t), device=original.device, dtype=torch.long)
        eps = denoiser(torch.cat([condition, x], dim=1), t_batch) * noise_mask
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        previous = int(timesteps[index + 1]) if index + 1 < len(timesteps) else -1
        abar_previous = abar[previous] if previous >= 0 else torch.ones((), device=original.device)
        if config.localized:  # the whole-image ablation denoises the outside too, as it was trained
            x = mask * x + outside * abar_previous.sqrt() * original
        if on_step is not None:
            on_step()
    return mask * x + outside * original


def _sample_seed(seed: int, index: int) -> int:
    """A seed for slice-sample ``index`` of a run seeded with ``seed`` (independent streams per sample)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class EnsembleResult:
    mean: torch.Tensor  # (N, 1, S, S)
    std: torch.Tensor  # (N, 1, S, S), population std over the k samples
    samples: torch.Tensor = field(repr=False)  # (N, k, S, S)


def sample_ensemble(denoiser: Denoiser, condition: torch.Tensor, mask: torch.Tensor, config: DiffusionConfig,
                    settings: SamplerSettings, batch_size: int = 64, seed: int = 0,
                    on_step: Optional[Callable[[], None]] = None) -> EnsembleResult:
    """k samples of each of N slices, all slices and samples together in batches of ``batch_size``. Each
    slice-sample draws its noise from a generator of its own, seeded by (``seed``, its index): the same seed
    gives the same result whatever the batch size (which on a GPU follows the free memory)."""
    settings = settings.validate(config.num_train_timesteps)
    n = condition.shape[0]
    conditions = condition.repeat_interleave(settings.k, dim=0)
    masks = mask.repeat_interleave(settings.k, dim=0)
    generators = [torch.Generator(device=condition.device).manual_seed(_sample_seed(seed, index))
                  for index in range(len(conditions))]
    chunks = [sample(denoiser, conditions[i:i + batch_size], masks[i:i + batch_size], config, settings,
                     generators[i:i + batch_size], on_step) for i in range(0, len(conditions), batch_size)]
    samples = torch.cat(chunks).reshape(n, settings.k, *condition.shape[2:])
    return EnsembleResult(samples.mean(dim=1, keepdim=True), samples.std(dim=1, correction=0, keepdim=True),
                          samples)
