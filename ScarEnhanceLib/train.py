"""Training loops for the two bundled models, resumable and checkpointed.

Runs unchanged on CPU, one GPU, or several GPUs with ``torchrun`` (DDP: every rank draws its own
random samples; rank 0 validates and writes). A run folder holds ``checkpoint.pt`` (our own
resumable state), and the EMA weights as ``model.safetensors`` with ``config.json``.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.losses import DiceCELoss
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import labels as L
from .augment import DiffusionSamples, PatchOptions, SegmentationSamples
from .datasets import Case
from .io import atomic_path
from .parameters import LR_SCHEDULES, WARMUP_ITERATIONS
from .pipeline import resolve_device
from .weights import sha256
from .diffusion import (DiffusionConfig, add_masked_noise, build_denoiser, masked_loss, training_scheduler,
                        warm_start)
from .segmentation import SegmentationConfig, build_segmenter, warm_start_segmenter


CHECKPOINT = "checkpoint.pt"  # resumable state in the run folder


@dataclass
class TrainSettings:
    run_dir: Path
    iterations: int = 20000
    batch_size: int = 16
    learning_rate: float = 2e-4
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"
    max_timestep: int = 1000  # diffusion: draw t below this (inference never goes above lambda)
    scar_weight: float = 1.0  # loss weight of scar (diffusion: its pixels; segmentation: its class); others 1
    init_weights: Optional[Path] = None  # start a new run from these weights (see _warm_start)
    augmentation: str = "standard"  # diffusion: standard | strong (adds noise, blur, intensity curves, elastic)
    scar_map_errors: str = "within-wall"  # diffusion, tissue-scar: how degraded scar maps err (SCAR_MAP_ERRORS)
    # segmentation: tissue contrast, drawn scars and heart crops in shares of the patches (validated there)
    patches: PatchOptions = field(default_factory=PatchOptions)
    min_snr_gamma: float = 0.0  # diffusion: > 0 weighs each timestep by min(SNR, gamma) / SNR (Min-SNR); 0: plain
    # diffusion: this fraction of the samples in the upper half of the timesteps starts from the noised original,
    # as partial diffusion does at inference, and learns the noise that leads from there to the target
    original_starts: float = 0.0
    # diffusion: > 0 weighs an original start whose target changes its scar by less than this (network units) by
    # this / that change (at most MAX_BALANCE): a site whose scar the gamma changes little still counts
    original_start_balance: float = 0.0
    snapshot_every: int = 1000  # keep the EMA weights of every this many iterations (equal-budget comparisons)
    workers: int = 0  # data-loader processes drawing augmented batches; a GPU starves without them
    time_limit_minutes: Optional[float] = None  # stop (checkpointed) after this much training time
    # constant: learning_rate throughout; cosine: a linear warm-up over the first WARMUP_ITERATIONS, then down to
    # 0 at ``iterations`` (a function of the iteration, so a resumed run stays on it)
    lr_schedule: str = "constant"
    trained_on: dict = field(default_factory=dict)  # the data-set folders and splits file, for the run's record

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"the learning-rate schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not self.scar_weight > 0:
            raise ValueError(f"the scar weight must be positive, got {self.scar_weight}")
        if self.min_snr_gamma < 0:
            raise ValueError(f"the Min-SNR gamma must be positive (or 0: off), got {self.min_snr_gamma}")
        if not 0.0 <= self.original_starts <= 1.0:
            raise ValueError(f"the fraction of original starts must be 0 to 1, got {self.original_starts}")
        if self.original_start_balance < 0 or (self.original_start_balance and not self.original_starts):
            raise ValueError("the original-start balance must be positive (or 0: off) and needs original starts, "
                             f"got {self.original_start_balance} with {self.original_starts} original starts")


def learning_rate_at(settings: TrainSettings, iteration: int) -> float:
    """The learning rate of step ``iteration`` (0-based) of the run."""
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    warmup = min(1.0, (iteration + 1) / WARMUP_ITERATIONS)
    progress = min(1.0, iteration / max(settings.iterations, 1))
    # a float, not numpy's: checkpoints hold no numpy objects
    return float(settings.learning_rate * warmup * 0.5 * (1.0 + np.cos(np.pi * progress)))


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless batches from ``samples`` (a callable with ``reseed``), each worker with its own random stream."""

    def __init__(self, samples, batch_size: int, seed: int):
        self.samples, self.batch_size, self.seed = samples, batch_size, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()  # only used in data-loader workers
        self.samples.reseed(np.random.default_rng([self.seed, worker.id]))
        while True:
            yield self.samples(self.batch_size)


def _batches(samples, settings: TrainSettings, rank: int, start: int, pin_memory: bool) -> Iterator[tuple]:
    """Training batches: drawn in this process, or with ``settings.workers`` data-loader processes, seeded
    by (seed, rank, start iteration) so that ranks differ and a resumed run does not replay its start."""
    seed = int(np.random.SeedSequence([settings.seed, rank, start]).generate_state(1)[0])
    if settings.workers == 0:
        samples.reseed(np.random.default_rng([seed, 0]))
        return (samples(settings.batch_size) for _ in itertools.count())
    loader = torch.utils.data.DataLoader(_BatchStream(samples, settings.batch_size, seed), batch_size=None,
                                         num_workers=settings.workers, pin_memory=pin_memory, prefetch_factor=4)
    return iter(loader)


class _Distributed:
    """torchrun/DDP when launched by it, a no-op otherwise."""

    def __init__(self, device: torch.device):
        self.enabled = "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = 0
        self.device = device
        if self.enabled:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
                torch.cuda.set_device(self.device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one, so that all ranks stop together."""
        if not self.enabled:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _train(model: torch.nn.Module, config: dict, settings: TrainSettings, samples,
           loss_of_batch: Callable[[torch.nn.Module, tuple], torch.Tensor],
           validate: Optional[Callable[[torch.nn.Module], dict]] = None) -> dict:
    """Generic loop: AdamW, EMA, checkpoints every ``checkpoint_every`` iterations, resume.

    ``samples(batch_size)`` draws a batch of tensors for ``loss_of_batch(model, batch)``."""
    distributed = _Distributed(resolve_device(settings.device))
    device = distributed.device
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    start, history = 0, []
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = _load_checkpoint(checkpoint_path, device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["iteration"], state["history"]
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location moved it to the GPU
    if start >= settings.iterations and distributed.main:
        print(f"note: {run_dir} has already reached {start} iterations; raise --iterations to train it on",
              file=sys.stderr)
    trained = distributed.wrap(model)
    batches = _batches(samples, settings, distributed.rank, start, pin_memory=device.type == "cuda")
    losses = []
    started = time.monotonic()
    progress = tqdm(range(start, settings.iterations), initial=start, total=settings.iterations,
                    disable=not distributed.main, desc=run_dir.name, mininterval=5)
    for iteration in progress:
        trained.train()
        batch = tuple(part.to(device, non_blocking=True) for part in next(batches))
        loss = loss_of_batch(trained, batch)
        learning_rate = learning_rate_at(settings, iteration)
        for group in optimizer.param_groups:  # a resumed run takes the learning rate it is given now
            group["lr"] = learning_rate
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(model)
        losses.append(float(loss.detach()))
        progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        done = iteration + 1
        out_of_time = settings.time_limit_minutes is not None and distributed.any(
            time.monotonic() - started > 60 * settings.time_limit_minutes)  # no collective per step without a limit
        if distributed.main and (done % settings.checkpoint_every == 0 or done == settings.iterations or out_of_time):
            record = {"iteration": done, "loss": float(np.mean(losses[-settings.checkpoint_every:])),
                      "learning_rate": learning_rate, "lr_schedule": settings.lr_schedule}
            if validate is not None:
                record.update(validate(ema.module))
            history.append(record)
            _save(run_dir, model, ema, optimizer, done, history, config)
            if done % settings.snapshot_every == 0:
                snapshots = run_dir / "snapshots"
                snapshots.mkdir(exist_ok=True)
                shutil.copyfile(run_dir / "model.safetensors", snapshots / f"model_{done:06d}.safetensors")
        if out_of_time:
            break
    if distributed.enabled:
        dist.destroy_process_group()
    return {"history": history}


def _save(run_dir: Path, model, ema, optimizer, iteration: int, history: list, config: dict) -> None:
    state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
             "iteration": iteration, "history": history, "torch_rng": torch.get_rng_state()}
    weights = {k: v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()}
    saved = {"model.safetensors": lambda path: save_file(weights, str(path)),
             "config.json": lambda path: path.write_text(
                 json.dumps({**config, "iteration": iteration, "history": history}, indent=1), encoding="utf-8"),
             CHECKPOINT: lambda path: torch.save(state, path)}
    for name, write in saved.items():  # each whole or not at all; the checkpoint last, so a cut save is redone
        with atomic_path(run_dir / name) as partial:
            write(partial)


def train_diffusion(datasets: list[list[Case]], config: DiffusionConfig, settings: TrainSettings,
                    validation_datasets: Optional[list[list[Case]]] = None,
                    predicted_labels: Optional[dict[str, np.ndarray]] = None) -> dict:
    """``datasets``: the training cases of each data set (each drawn equally often); ``predicted_labels``: the
    segmentation model's labels of training cases by name, one source of a tissue-conditioned model's maps."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)  # reseeded per rank and worker by _batches
    samples = DiffusionSamples(datasets, config, rng, settings.augmentation, predicted_labels,
                               settings.scar_map_errors)
    scheduler = training_scheduler(config)
    max_t = min(settings.max_timestep, config.num_train_timesteps)

    def loss_of_batch(model, batch):
        condition, target, mask, scar = batch
        device = condition.device
        noise_mask = mask if config.localized else torch.ones_like(mask)
        noise = torch.randn_like(target)
        t = torch.randint(0, max_t, (len(target),), device=device)
        start, aim, from_original = target, noise, torch.zeros(len(t), dtype=torch.bool, device=device)
        if settings.original_starts > 0:
            start, aim, from_original = _original_starts(scheduler, condition[:, :1], target, noise * noise_mask, t,
                                                         max_t, settings.original_starts)
        noisy = add_masked_noise(scheduler, start, noise, t, noise_mask)
        predicted = model(torch.cat([condition, noisy], dim=1), t).sample
        # scar is a few percent of the ROI, yet the one place where the target brightens the image
        weights = noise_mask * (1.0 + (settings.scar_weight - 1.0) * scar)
        if settings.original_start_balance > 0:
            balance = change_balance(condition[:, :1], target, scar, settings.original_start_balance)
            weights = weights * torch.where(from_original, balance, torch.ones_like(balance)).view(-1, 1, 1, 1)
        if settings.min_snr_gamma > 0:  # the plain noise loss is dominated by t near 0, where eps is tiny in x0
            # imported here: diffusers.training_utils loads transformers, peft and torchvision where installed
            from diffusers.training_utils import compute_snr
            snr = compute_snr(scheduler, t)
            weights = weights * (snr.clamp(max=settings.min_snr_gamma) / snr).view(-1, 1, 1, 1)
        return masked_loss(predicted, aim, weights)

    validate = None
    if validation_datasets and any(validation_datasets):
        # the same maps whatever --scar-map-errors a run trains with, so that runs' validation losses compare
        validation = DiffusionSamples(validation_datasets, config, np.random.default_rng(1234))(64)

        @torch.no_grad()
        def validate(model):
            """Unweighted ROI loss (comparable across scar weights) and the loss on scar pixels alone."""
            device = next(model.parameters()).device
            condition, target, mask, scar = (part.to(device) for part in validation)
            generator = torch.Generator(device=device).manual_seed(0)
            noise = torch.randn(target.shape, generator=generator, device=device)
            t = torch.linspace(0, max_t - 1, len(target), device=device).long()
            noisy = add_masked_noise(scheduler, target, noise, t, mask)
            model.eval()
            predicted = model(torch.cat([condition, noisy], 1), t).sample
            return {"val_loss": float(masked_loss(predicted, noise, mask)),
                    "val_scar_loss": float(masked_loss(predicted, noise, scar))}

    network = build_denoiser(config)
    run_config = {"kind": "diffusion", "model": config.to_dict(), "max_timestep": max_t,
                  "scar_weight": settings.scar_weight, "min_snr_gamma": settings.min_snr_gamma,
                  "original_starts": settings.original_starts,
                  "original_start_balance": settings.original_start_balance,
                  "augmentation": settings.augmentation, "scar_map_errors": settings.scar_map_errors,
                  "trained_on": settings.trained_on}
    _refuse_changed_resume(settings.run_dir, run_config, {
        "scar_map_errors": "within-wall", "max_timestep": None, "augmentation": None, "original_starts": None},
        DiffusionConfig)
    source = _run_model_config(settings.init_weights)
    _warm_start(settings, run_config, lambda weights: warm_start(network, weights, config, source))
    return _train(network, run_config, settings, samples, loss_of_batch, validate)


def _load_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint read without running code from it (a run folder may come from another machine): tensors, plain
    values, and the numpy floats that learning rates were recorded as before they were stored as floats."""
    scalar = getattr(getattr(np, "_core", np.core), "multiarray").scalar
    allowed = [scalar, np.dtype, type(np.dtype(np.float64))]
    if hasattr(torch.serialization, "safe_globals"):  # torch 2.5 on; 2.4 has only the process-wide list
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=device, weights_only=True)
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(allowed)
    return torch.load(path, map_location=device, weights_only=True)


def _refuse_changed_resume(run_dir: Path, run_config: dict, kept: dict, model_config) -> None:
    """A resumed run keeps its network (``model_config``: its config class, which fills in what older runs did not
    record) and the settings that shape its samples (``kept``: each one's value in runs saved before it was
    recorded, None where unknown) and its data (the data sets and the splits file): refuse a resume that would change
    one, which the saved config could not show. The learning rate and the loss weights may change on resume."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists() or not (run_dir / "config.json").exists():
        return
    stored = _stored_config(run_dir)
    changes = []
    if "model" in stored:
        trained = model_config.from_dict(stored["model"]).to_dict()
        changes += [(f"model {key}", trained.get(key), value) for key, value in run_config["model"].items()
                    if trained.get(key) != value and key != "test_time"]  # inference only: older runs saved flips
    for key, default in kept.items():
        trained = stored.get(key, default)
        if trained is not None and trained != run_config[key]:
            changes.append((key, trained, run_config[key]))
    trained_on, resumed_on = _data_of(stored.get("trained_on")), _data_of(run_config.get("trained_on"))
    if trained_on is not None and resumed_on is not None and trained_on != resumed_on:
        changes.append(("data sets and splits", trained_on, resumed_on))
    if changes:
        listed = "; ".join(f"{key} {trained!r}, not {value!r}" for key, trained, value in changes)
        raise ValueError(f"{run_dir} was trained with {listed}: resume it with the same settings, or start a new "
                         "run folder (--init-weights its model.safetensors to start from its weights)")


def _data_of(trained_on) -> Optional[tuple]:
    """The data a run trains on, as the folders' names and the splits file (one folder may be named by another
    path); None where the run did not record it."""
    if not isinstance(trained_on, dict):
        return None
    return tuple(Path(d).resolve().name for d in trained_on.get("datasets", [])), trained_on.get("splits")


def _stored_config(run_dir: Path) -> dict:
    """The config.json a run folder saved last (empty if none)."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _run_model_config(weights: Optional[Path]) -> Optional[DiffusionConfig]:
    """The diffusion configuration a run folder saves beside its weights (config.json), which names their inputs;
    None for weights without one (a bundled file)."""
    run_file = Path(weights).with_name("config.json") if weights else None
    if run_file is None or not run_file.is_file():
        return None
    run = json.loads(run_file.read_text(encoding="utf-8"))
    return DiffusionConfig.from_dict(run["model"]) if run.get("kind") == "diffusion" else None


def _original_starts(scheduler, original: torch.Tensor, target: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     max_t: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0 to noise, noise to predict, which start from the original) per sample: for ``fraction`` of those with
    t >= max_t / 2 the original, and the noise that x_t then holds towards the target,
    (x_t - sqrt(abar) target) / sqrt(1 - abar); else the target and its noise. Trained on targets only, the
    network takes the original's dim scar for a dim-scar target's."""
    chosen = (torch.rand(len(t), device=t.device) < fraction) & (t >= max_t // 2)
    abar = scheduler.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)
    towards_target = noise + (abar / (1 - abar)).sqrt() * (original - target)
    pixels = chosen.view(-1, 1, 1, 1)
    return torch.where(pixels, original, target), torch.where(pixels, towards_target, noise), chosen


MAX_BALANCE = 10.0
MIN_BALANCED_SCAR = 6.0  # scar pixels a crop needs before its change is measured (fewer: weight 1)


def change_balance(original: torch.Tensor, target: torch.Tensor, scar: torch.Tensor, reference: float) -> torch.Tensor:
    """(n,) loss weight per sample: ``reference`` over the target's mean absolute change on its scar, 1 to
    MAX_BALANCE; 1 without scar. The pull towards the target in the noise to predict is proportional to that
    change, so a site whose scar the gamma changes by a fifth as much in network units (EMIDEC's bright scar
    against MyoPS's dim hearts) would otherwise add a fifth as much to the gradient."""
    area = scar.flatten(1).sum(1)
    change = ((target - original).abs() * scar).flatten(1).sum(1) / area.clamp(min=1e-6)
    weight = (reference / change.clamp(min=1e-6)).clamp(1.0, MAX_BALANCE)
    return torch.where(area >= MIN_BALANCED_SCAR, weight, torch.ones_like(weight))


def _warm_start(settings: TrainSettings, run_config: dict, load: Callable[[dict], None]) -> None:
    """A new run from ``settings.init_weights`` (named in the run's config), or from random weights of its seed; the
    config records its ``start`` (those weights' checksum, or the seed): a mean of runs' weights is one model only
    for runs from one start. A resumed run continues from its checkpoint and keeps the start and init weights it
    recorded, whatever the resume is given."""
    if (Path(settings.run_dir) / CHECKPOINT).exists():
        stored = _stored_config(settings.run_dir)
        for key in ("start", "init_weights"):  # runs saved before starts were recorded have no start
            if key in stored:
                run_config[key] = stored[key]
        start = stored.get("start")  # unknown for runs saved before starts were recorded
        if settings.init_weights and start and os.environ.get("RANK", "0") == "0" and \
                Path(settings.init_weights).is_file() and start.get("sha256") != sha256(settings.init_weights):
            print(f"note: {settings.run_dir} resumes from its checkpoint; {settings.init_weights}, which is not its "
                  "start, is not loaded (a new run folder starts from it)", file=sys.stderr)
        return
    if not settings.init_weights:
        run_config["start"] = {"seed": settings.seed}
        return
    run_config["start"] = {"weights": Path(settings.init_weights).name, "sha256": sha256(settings.init_weights)}
    run_config["init_weights"] = Path(settings.init_weights).name
    try:
        load(load_file(str(settings.init_weights)))
    except RuntimeError as error:
        raise ValueError(f"{settings.init_weights} does not fit this network: {error}") from error


def _merged_logits(logits: torch.Tensor, labelled_classes: int) -> torch.Tensor:
    """Logits of the first ``labelled_classes`` classes, the others (scar, MVO: those a data set does not label)
    counted as myocardium."""
    if labelled_classes >= logits.shape[1]:
        return logits
    merged = torch.logsumexp(logits[:, [L.MYOCARDIUM, *range(labelled_classes, logits.shape[1])]], dim=1, keepdim=True)
    return torch.cat([logits[:, :L.MYOCARDIUM], merged, logits[:, L.MYOCARDIUM + 1:labelled_classes]], dim=1)


def validation_dice(model: torch.nn.Module, validation: list[tuple[list[Case], int]],
                    config: SegmentationConfig) -> dict:
    """Mean Dice per class over the validation cases that have the class, as ``scarenhance evaluate`` reads it (scar
    merged into myocardium where a data set does not label it); None where no case has the class."""
    from .evaluate import segmentation_row, summarise_segmentation
    from .segmentation import segment_slices
    device = next(model.parameters()).device
    rows = [segmentation_row(case, segment_slices(model, case.images, case.spacing, config, device, case.slice_mm),
                             merge_scar=classes <= L.SCAR) for cases, classes in validation for case in cases]
    summary = summarise_segmentation(rows)
    return {f"val_dice_{key}": summary[key] if summary.get(f"{key}_cases") else None
            for key in ("roi", "blood_pool", "myocardium", "scar", "wall")}


def train_segmentation(datasets: list[tuple[list[Case], int]], config: SegmentationConfig, settings: TrainSettings,
                       validation_cases: Optional[list[tuple[list[Case], int]]] = None,
                       shares: Optional[Sequence[float]] = None) -> dict:
    """``datasets``: (cases, how many classes they label: ``DatasetSpec.labelled_classes``) per data set; the loss
    counts the classes a data set does not label (scar in MS-CMRSeg, MVO outside EMIDEC) as myocardium. Each data
    set gives the same share of the batches, so a small one from another site (MyoPS) weighs as much as EMIDEC's
    600 slices; ``shares`` (one per data set) weighs them otherwise. ``validation_cases``: (cases, classes labelled)
    per data set, read by ``validation_dice``."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)  # reseeded per rank and worker by _batches
    if settings.patches.heart_crops and config.normalisation != "window":
        raise ValueError("heart crops need the window normalisation: a slice normalised over its whole frame before "
                         "the crop is not what a cropped volume shows the network")
    samples = _MixedSegmentationSamples(datasets, config, rng, shares, settings.patches)
    losses = {}

    def loss_over(classes: int) -> DiceCELoss:
        """Batch Dice + CE over ``classes``: scar is absent from most patches; the scar weight weighs that class
        in Dice and CE alike."""
        if classes not in losses:
            weights = torch.ones(classes)
            if classes > L.SCAR:
                weights[L.SCAR] = settings.scar_weight
            losses[classes] = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=weights)
        return losses[classes]

    def loss_of_batch(model, batch):
        image, label, labelled = batch
        logits = model(image)
        classes = min(int(labelled.item()), logits.shape[1])
        label = torch.where(label >= classes, L.MYOCARDIUM, label)  # MVO kept by a model without its class
        return loss_over(classes).to(logits.device)(_merged_logits(logits, classes), label)

    validate = None
    if validation_cases:
        def validate(model):
            return validation_dice(model, validation_cases, config)

    run_config = {"kind": "segmentation", "model": config.to_dict(), "scar_weight": settings.scar_weight,
                  "dataset_shares": samples.shares.tolist(), **settings.patches.to_config(),
                  "trained_on": settings.trained_on}
    _refuse_changed_resume(settings.run_dir, run_config, {**PatchOptions().to_config(), "dataset_shares": None},
                           SegmentationConfig)
    network = build_segmenter(config)
    _warm_start(settings, run_config, lambda weights: warm_start_segmenter(network, weights))
    return _train(network, run_config, settings, samples, loss_of_batch, validate)


class _MixedSegmentationSamples:
    """Batches from one data set at a time, each data set equally often (or by ``shares``); each batch carries how
    many classes its data set labels."""

    def __init__(self, datasets: list[tuple[list[Case], int]], config: SegmentationConfig, rng: np.random.Generator,
                 shares: Optional[Sequence[float]] = None, options: PatchOptions = PatchOptions()):
        if shares is not None and (len(shares) != len(datasets) or min(shares) < 0 or sum(shares) <= 0):
            raise ValueError(f"give one non-negative share per data set ({len(datasets)}), not all zero: {shares}")
        each = options.per_data_set(len(datasets))
        shares = np.ones(len(datasets)) if shares is None else np.asarray(shares, dtype=float)
        used = [index for index, (cases, _) in enumerate(datasets) if cases and shares[index] > 0]
        if not used:
            raise ValueError("no training cases")
        self.sources = [(SegmentationSamples(datasets[i][0], config, rng, each[i]), datasets[i][1]) for i in used]
        self.shares = shares[used] / shares[used].sum()
        self.rng = rng

    def reseed(self, rng: np.random.Generator) -> None:
        self.rng = rng
        for source, _ in self.sources:
            source.reseed(rng)

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source, labelled_classes = self.sources[self.rng.choice(len(self.sources), p=self.shares)]
        return (*source(batch_size), torch.tensor(labelled_classes))
