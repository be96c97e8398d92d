"""Enhancement parameters and their validation.

Torch-free on purpose: the Slicer module validates a user's settings with this before it starts
the background process, in a Python that may not have torch yet.
"""
from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("ddpm", "fast")
MAX_CROP_MARGIN = 4.0  # the crop is this many times the ROI's extent at most (beyond: the heart is a speck)
DEVICES = ("auto", "cuda", "cpu")
AUGMENTATIONS = ("standard", "strong")  # of the diffusion training samples (augment.py)
# what the diffusion network sees beside x_t (diffusion.condition_channels)
CONDITIONINGS = ("image", "tissue", "tissue-scar")
# how training degrades a tissue-scar model's scar map (augment.degrade_labels): inside the wall only, or with the
# errors the segmentation makes on cases it has not seen (over the endocardial border, on bright healthy wall)
SCAR_MAP_ERRORS = ("within-wall", "like-segmentation")
# which segmentation patches may get a drawn scar (augment.SegmentationSamples): any, or only those whose reference
# labels already hold scar (a heart without scar is never given one)
SYNTHETIC_SCAR_PATCHES = ("any", "scarred")
NORMALISATIONS = ("slice", "heart")  # the diffusion network's intensity window (volume.IntensityWindow)
LR_SCHEDULES = ("constant", "cosine")  # of both trainings (train.learning_rate_at)
WARMUP_ITERATIONS = 250  # cosine: a fresh optimiser's first steps at full rate would jolt warm-started weights
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")  # read as volumes
# what a volume is written as: one file each (.nhdr and .mhd keep their voxels in a second file, which an atomic
# write by a temporary name would leave pointing at that name); the commands' --format choices
WRITTEN_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


class InputError(ValueError):
    """Input the user can fix: the message says what is wrong."""


@dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "fast"  # fast (SDE DPM-Solver++, ``steps`` steps) | ddpm (the paper's ``lam`` ancestral steps)
    lam: int = 250  # partial diffusion: start of the reverse chain
    steps: int = 30  # fast sampler only
    k: int = 5  # samples averaged

    def validate(self, num_train_timesteps: int = 1000) -> "SamplerSettings":
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not 1 <= self.lam <= num_train_timesteps:
            raise InputError(f"lambda must be between 1 and {num_train_timesteps}, got {self.lam}")
        if self.sampler == "fast" and not 1 <= self.steps <= self.lam:  # ddpm takes lam steps, whatever steps says
            raise InputError(f"steps must be between 1 and lambda ({self.lam}), got {self.steps}")
        if not 1 <= self.k <= 64:
            raise InputError(f"k must be between 1 and 64, got {self.k}")
        return self

    def timesteps(self) -> list[int]:
        """The reverse chain, from lam - 1 down to 0: one network evaluation per timestep. The fast sampler's
        are evenly spaced (distinct, as steps <= lam)."""
        if self.sampler == "ddpm":
            return list(range(self.lam - 1, -1, -1))
        if self.steps == 1:
            return [self.lam - 1]
        return [round((self.lam - 1) * (1.0 - i / (self.steps - 1))) for i in range(self.steps)]


@dataclass(frozen=True)
class EnhanceParameters:
    sampler: str = "fast"
    lam: int = 250
    steps: int = 30
    k: int = 5
    dilation_mm: float = 0.0  # in-plane ROI dilation
    crop_margin: float = 1.3
    seed: int = 0
    batch_size: int = 0  # 0: chosen for the device
    device: str = "auto"
    compile_network: bool = False  # torch.compile: slow to start, pays off only over many slices or volumes

    def validate(self) -> "EnhanceParameters":
        self.sampler_settings().validate()
        if not 0 <= self.dilation_mm <= 30:
            raise InputError(f"the ROI dilation must be between 0 and 30 mm, got {self.dilation_mm}")
        if not 1.0 <= self.crop_margin <= MAX_CROP_MARGIN:  # also refuses NaN
            raise InputError(f"the crop margin must be between 1 and {MAX_CROP_MARGIN:g}, got {self.crop_margin}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"the seed must be between 0 and 2**63 - 1, got {self.seed}")
        if self.batch_size < 0:
            raise InputError(f"the batch size must be >= 0, got {self.batch_size}")
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {self.device!r}")
        return self

    def command_line(self) -> list[str]:
        """The ``scarenhance enhance`` options that give these parameters (the Slicer module runs the CLI)."""
        options = ["--sampler", self.sampler, "--steps", str(self.steps), "--lambda", str(self.lam), "-k", str(self.k),
                   "--dilation-mm", str(self.dilation_mm), "--crop-margin", str(self.crop_margin),
                   "--seed", str(self.seed), "--batch-size", str(self.batch_size), "--device", self.device]
        return options + (["--compile"] if self.compile_network else [])

    def sampler_settings(self) -> SamplerSettings:
        return SamplerSettings(sampler=self.sampler, lam=self.lam, steps=self.steps, k=self.k)


# Seconds per network evaluation of one slice-sample with the bundled model (batched), and the fixed cost of
# a run in a fresh process (imports, model loading). Per evaluation: measured by benchmarks/benchmark_enhance.py
# on 2 CPU cores and on an H200 (benchmarks/RESULTS.md); the GPU's fixed cost is a guess. Only used to warn
# before a long run.
SECONDS_PER_EVALUATION = {"cpu": 0.0112, "gpu": 0.0002}
SECONDS_OVERHEAD = {"cpu": 6.0, "gpu": 8.0}


def network_evaluations(parameters: EnhanceParameters) -> int:
    """Denoiser evaluations per slice-sample: the reverse chain's length."""
    return len(parameters.sampler_settings().timesteps())


def estimated_seconds(slices: int, parameters: EnhanceParameters, on_gpu: bool) -> float:
    """Rough duration of an enhancement of ``slices`` slices, for a warning before slow runs."""
    device = "gpu" if on_gpu else "cpu"
    work = slices * parameters.k * network_evaluations(parameters) * SECONDS_PER_EVALUATION[device]
    return SECONDS_OVERHEAD[device] + work
