"""Training samples with augmentation (MONAI transforms): heart crops for the diffusion model,
patches at the model's spacing for the segmentation model."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Optional, Union

import numpy as np
import torch
from scipy import ndimage
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (Compose, Rand2DElasticd, RandAdjustContrastd, RandAffined, RandBiasFieldd, RandFlipd,
                              RandGaussianNoised, RandGaussianSmoothd, RandHistogramShiftd, RandRotated,
                              RandCropByPosNegLabeld, SpatialPadd)

from . import labels as L
from .datasets import Case
from .diffusion import DiffusionConfig, build_condition, map_names, tissue_maps
from .gamma import gamma_target
from .parameters import AUGMENTATIONS, SCAR_MAP_ERRORS, SYNTHETIC_SCAR_PATCHES
from .segmentation import (SegmentationConfig, context_indices, normalise_for_segmentation, normalise_windows,
                           resample_slice)
from .volume import CropBox, IntensityWindow, mask_to_model, resize

SCALE_RANGE = (0.7, 1.4)
# segmentation, --tissue-contrast: each tissue's own brightness gain (healthy myocardium's also for no-reflow, and for
# scar where a data set does not label it)
TISSUE_GAINS = {L.BLOOD_POOL: (0.7, 1.3), L.MYOCARDIUM: (0.7, 1.4), L.SCAR: (0.8, 1.2)}
# segmentation, --synthetic-scar: the sector of the wall (degrees), how far from the blood pool into the wall (share of
# its thickness) and how bright (share of the way from healthy myocardium to blood pool) a drawn scar is
SYNTHETIC_SCAR = {"sector_degrees": (40.0, 150.0), "transmurality": (0.25, 1.0), "brightness": (0.5, 1.1)}
MIN_SYNTHETIC_SCAR_PIXELS = 10
# segmentation, --heart-crops: the side of the square a user crops around the heart (evaluate's crop is 144 mm), and
# how far its centre may lie from the heart's
HEART_CROP_SIDE_MM = (110.0, 200.0)
HEART_CROP_SHIFT_MM = 15.0
CROP_MARGIN = 1.3  # also the default at inference


@dataclasses.dataclass(frozen=True)
class PatchOptions:
    """What segmentation patches get beyond the standard augmentation, each off by default: a run without an option
    draws as runs did before it existed. Shares are of the patches; ``synthetic_scar`` is one share for all data sets
    or one per data set (``per_data_set``; a sequence of one is one for all)."""
    tissue_contrast: float = 0.0  # with a brightness gain of each tissue's own (``tissue_contrast``)
    synthetic_scar: Union[float, tuple[float, ...]] = 0.0  # with a scar drawn into healthy wall (``synthetic_scar``)
    synthetic_scar_patches: str = "any"  # which patches may get one (SYNTHETIC_SCAR_PATCHES)
    heart_crops: float = 0.0  # cut to a square around the heart, as a volume a user cropped (``heart_crop``)
    first_third: float = 0.0  # drawn from the first third of a case's slices (``first_third_end``), else from any

    def __post_init__(self):
        if np.ndim(self.synthetic_scar):  # a list from the command line or a run's config.json
            shares = tuple(float(share) for share in self.synthetic_scar)
            object.__setattr__(self, "synthetic_scar", shares[0] if len(shares) == 1 else shares)
        if np.size(self.synthetic_scar) == 0:
            raise ValueError("give one synthetic-scar share for all data sets or one per data set, not none")
        if not 0.0 <= self.tissue_contrast <= 1.0:
            raise ValueError(f"the share of patches with tissue contrast must be 0 to 1, got {self.tissue_contrast}")
        if not 0.0 <= self.heart_crops <= 1.0:
            raise ValueError(f"the share of patches cut around the heart must be 0 to 1, got {self.heart_crops}")
        if not 0.0 <= self.first_third <= 1.0:
            raise ValueError(f"the share of patches drawn from the first third of the slices must be 0 to 1, got "
                             f"{self.first_third}")
        if not all(0.0 <= share <= 1.0 for share in np.atleast_1d(self.synthetic_scar)):
            raise ValueError(f"the share of patches with a synthetic scar must be 0 to 1, got {self.synthetic_scar}")
        if self.synthetic_scar_patches not in SYNTHETIC_SCAR_PATCHES:
            raise ValueError(f"the patches with a synthetic scar must be one of {SYNTHETIC_SCAR_PATCHES}, got "
                             f"{self.synthetic_scar_patches!r}")

    def per_data_set(self, count: int) -> list["PatchOptions"]:
        """The options of each of ``count`` data sets, each with its own synthetic-scar share."""
        shares = np.broadcast_to(self.synthetic_scar, count) if np.ndim(self.synthetic_scar) == 0 else \
            np.asarray(self.synthetic_scar)
        if len(shares) != count:
            raise ValueError(f"give one synthetic-scar share for all data sets or one per data set ({count}), "
                             f"not {len(shares)}")
        return [dataclasses.replace(self, synthetic_scar=float(share)) for share in shares]

    def to_config(self) -> dict:
        """The options as a run's config.json records them (and an older run without them reads as the defaults)."""
        share = self.synthetic_scar
        return {"tissue_contrast": self.tissue_contrast,
                "synthetic_scar": float(share) if np.ndim(share) == 0 else list(share),
                "synthetic_scar_patches": self.synthetic_scar_patches, "heart_crops": self.heart_crops,
                "first_third": self.first_third}


@contextlib.contextmanager
def _plain_tensors() -> Iterator[None]:
    """MONAI's transforms on plain tensors: its metadata bookkeeping (affines, the operations applied) took 25-43 %
    of the time of drawing a batch (benchmarks/RESULTS.md), and nothing here reads it; the values drawn are the same."""
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(tracking)


def _strong_intensity():
    """Beyond contrast and bias field: noise, blur and a non-linear intensity curve, each before the target is
    computed, so the target stays the gamma correction of the image the network sees."""
    return [RandGaussianNoised(["image"], prob=0.3, std=0.02),
            RandGaussianSmoothd(["image"], prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandHistogramShiftd(["image"], prob=0.3, num_control_points=(5, 10))]


def _strong_spatial(keys):
    """Beyond rotation and flips: shear, anisotropic scale and elastic deformation (hearts differ in shape)."""
    return [RandAffined(keys, prob=0.5, shear_range=(0.1, 0.1), scale_range=(0.1, 0.1), mode="bilinear",
                        padding_mode="zeros"),
            Rand2DElasticd(keys, spacing=(16, 16), magnitude_range=(1.0, 2.0), prob=0.3, mode="bilinear",
                           padding_mode="zeros")]


def _spatial(keys, modes):
    return [RandRotated(keys, range_x=np.pi / 12, prob=0.5, mode=modes, padding_mode="zeros"),
            RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]


def degrade_labels(labels: np.ndarray, spacing: tuple, rng: np.random.Generator, keep_scar: bool = False,
                   scar_errors: str = "within-wall", image: Optional[np.ndarray] = None) -> np.ndarray:
    """Reference labels of one slice as a segmentation or a quick correction might give them: the blood pool's
    and the heart's borders each moved by up to 3 mm, now and then a hole of up to 6 mm, all shifted by up to
    3 mm. Scar is merged into myocardium, or with ``keep_scar`` degraded as ``_degraded_scar`` does
    (``scar_errors`` "within-wall") or as ``_segmentation_like_scar`` does ("like-segmentation", which needs the
    slice's ``image``)."""
    if scar_errors not in SCAR_MAP_ERRORS:
        raise ValueError(f"scar map errors must be one of {SCAR_MAP_ERRORS}, got {scar_errors!r}")
    pixel_mm = float(np.mean(spacing))
    blood, heart = _moved_border(labels == L.BLOOD_POOL, pixel_mm, rng), _moved_border(labels > 0, pixel_mm, rng)
    degraded = np.where(heart, L.MYOCARDIUM, L.BACKGROUND).astype(np.uint8)
    degraded[blood & heart] = L.BLOOD_POOL
    if keep_scar and scar_errors == "like-segmentation":
        if image is None:
            raise ValueError("segmentation-like scar maps need the slice's image (false scar lies on bright wall)")
        degraded[_segmentation_like_scar(labels, degraded, image, pixel_mm, rng)] = L.SCAR
    elif keep_scar:
        degraded[_degraded_scar(labels == L.SCAR, degraded == L.MYOCARDIUM, pixel_mm, rng)] = L.SCAR
    if rng.random() < 0.3 and heart.any():
        degraded[_random_disc(heart, (1.0, 6.0), pixel_mm, rng)] = L.BACKGROUND
    shift = np.round(rng.uniform(-3.0, 3.0, 2) / pixel_mm).astype(int)
    return np.roll(degraded, tuple(shift), axis=(0, 1))


MISSED_SCAR = 0.2  # share of degraded slices whose scar map loses all scar
INVENTED_SCAR = 0.3  # share that gains a false scar patch in the wall


def _degraded_scar(scar: np.ndarray, wall: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A scar map with a segmentation's errors, inside ``wall``: its border moved by up to 2 mm, now and then all of
    it missed, now and then a false patch of 2-6 mm radius. The target still brightens only the reference scar, so
    the network learns to check the map against the image rather than to brighten whatever the map calls scar."""
    scar = _moved_or_missed(scar, pixel_mm, rng)
    if rng.random() < INVENTED_SCAR and wall.any():
        scar = scar | _random_disc(wall, (2.0, 6.0), pixel_mm, rng)
    return scar & wall


def _moved_or_missed(scar: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """All of the scar missed (``MISSED_SCAR`` of the draws), or its border moved by up to 2 mm."""
    return np.zeros_like(scar) if rng.random() < MISSED_SCAR else _moved_border(scar, pixel_mm, rng, limit_mm=2.0)


SPILLED_SCAR = 0.5  # share of segmentation-like maps whose scar grows into the blood pool beside it
OVERCALLED_SCAR = 0.5  # share of segmentation-like maps with false scar on the brightest healthy myocardium
BRIGHT_WALL_QUANTILE = 0.75  # false scar is centred on healthy myocardium at least this bright (among it)


def _segmentation_like_scar(labels: np.ndarray, degraded: np.ndarray, image: np.ndarray, pixel_mm: float,
                            rng: np.random.Generator) -> np.ndarray:
    """A scar map with the errors the bundled segmentation makes on validation cases: a quarter (EMIDEC) to a half
    (MyoPS) of its scar lies in healthy myocardium and in the blood pool beside the scar (model card, "No-reflow as a
    class of its own"), where ``_degraded_scar``'s false patches fall anywhere in the wall and its scar stays in the
    wall. So the border moves by up to 2 mm inside the degraded wall or all of the scar is missed, as there; then in
    half the maps the scar grows 1-4 mm into the degraded blood pool beside it, and half the maps gain one or two false
    patches of 2-6 mm radius centred on the brightest quarter of the healthy myocardium (reference healthy myocardium
    inside the degraded wall; ``labels``: the reference, ``degraded``: the degraded blood pool and wall, which the
    patches stay in)."""
    heart, wall, blood = (degraded > L.BACKGROUND), (degraded == L.MYOCARDIUM), (degraded == L.BLOOD_POOL)
    scar = _moved_or_missed(labels == L.SCAR, pixel_mm, rng) & wall
    if rng.random() < SPILLED_SCAR and scar.any():
        steps = max(1, int(round(rng.uniform(1.0, 4.0) / pixel_mm)))
        scar = scar | (ndimage.binary_dilation(scar, iterations=steps) & blood)
    healthy = wall & (labels == L.MYOCARDIUM) & ~scar
    if rng.random() < OVERCALLED_SCAR and healthy.any():
        bright = healthy & (image >= np.quantile(image[healthy], BRIGHT_WALL_QUANTILE))
        for _ in range(rng.integers(1, 3)):
            scar = scar | _random_disc(bright, (2.0, 6.0), pixel_mm, rng)
    return scar & heart


def _random_disc(within: np.ndarray, radius_mm: tuple, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A disc of a random radius in ``radius_mm`` centred on a random pixel of ``within`` (a hole, a false patch)."""
    rows, cols = np.nonzero(within)
    centre = rng.integers(len(rows))
    radius = rng.uniform(*radius_mm) / pixel_mm
    grid_rows, grid_cols = np.ogrid[:within.shape[0], :within.shape[1]]
    return (grid_rows - rows[centre]) ** 2 + (grid_cols - cols[centre]) ** 2 <= radius ** 2


def _moved_border(mask: np.ndarray, pixel_mm: float, rng: np.random.Generator, limit_mm: float = 3.0) -> np.ndarray:
    steps = int(round(rng.uniform(-limit_mm, limit_mm) / pixel_mm))
    if steps == 0 or not mask.any():
        return mask
    operation = ndimage.binary_dilation if steps > 0 else ndimage.binary_erosion
    return operation(mask, iterations=abs(steps))


class DiffusionSamples:
    """(condition, target, roi, scar) at model size, from slices with a heart ROI: the condition's channels are
    ``diffusion.condition_channels(config)`` (the original in [-1, 1] of its intensity window first), the target
    in the same window, the ROI 0/1 (every pixel that touches it), scar as the fraction of each pixel that is scar.

    ``datasets``: lists of cases, each list drawn equally often (a small site weighs as much as a large one).
    Tissue maps come, a third each, from the reference labels, the reference degraded (``degrade_labels``) and,
    where ``predicted_labels`` has the case, the segmentation model's labels (else degraded again): the maps met
    at inference are a segmentation's or a clinician's, not the reference. The target always uses the reference."""

    def __init__(self, datasets: list[list[Case]], config: DiffusionConfig, rng: np.random.Generator,
                 augmentation: str = "standard", predicted_labels: Optional[dict[str, np.ndarray]] = None,
                 scar_map_errors: str = "within-wall"):
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
        if scar_map_errors not in SCAR_MAP_ERRORS:
            raise ValueError(f"scar map errors must be one of {SCAR_MAP_ERRORS}, got {scar_map_errors!r}")
        self.scar_map_errors = scar_map_errors
        strong = augmentation == "strong"
        predicted_labels = predicted_labels or {}
        self.sources = [[(c.images[i], c.labels[i], c.spacing,
                          predicted_labels[c.name][i] if c.name in predicted_labels else None)
                         for c in cases for i in range(len(c.images)) if (c.labels[i] > 0).any()]
                        for cases in datasets]
        self.sources = [source for source in self.sources if source]
        if not self.sources:
            raise ValueError("no slice with a heart ROI in the training cases")
        self.config = config
        self.size = config.image_size
        self.intensity = Compose([RandAdjustContrastd(["image"], prob=0.5, gamma=(0.7, 1.5)),
                                  RandBiasFieldd(["image"], prob=0.3, coeff_range=(0.0, 0.2))] +
                                 (_strong_intensity() if strong else []))
        self.spatial = Compose(_spatial(["stack"], "bilinear") + (_strong_spatial(["stack"]) if strong else []))
        self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        """Draw from ``rng`` from now on (each data-loader worker gets its own)."""
        self.rng = rng
        for transform in (self.intensity, self.spatial):
            transform.set_random_state(seed=int(rng.integers(2**31)))

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        items = []
        with _plain_tensors():
            for _ in range(batch_size):
                source = self.sources[self.rng.integers(len(self.sources))]
                items.append(self._one(*source[self.rng.integers(len(source))]))
        return tuple(torch.stack(parts) for parts in zip(*items))

    def _map_labels(self, image: np.ndarray, labels: np.ndarray, spacing: tuple,
                    predicted: Optional[np.ndarray]) -> np.ndarray:
        draw = self.rng.random()
        if draw < 1 / 3:
            return labels
        if draw < 2 / 3 or predicted is None:
            return degrade_labels(labels, spacing, self.rng, keep_scar="scar" in map_names(self.config),
                                  scar_errors=self.scar_map_errors, image=image)
        return predicted

    def _one(self, image: np.ndarray, labels: np.ndarray, spacing: tuple, predicted: Optional[np.ndarray]):
        span = max(float(np.ptp(image)), 1e-6)
        image01 = (image - image.min()) / span
        image01 = np.asarray(self.intensity({"image": image01[None]})["image"])[0]
        image255 = 255.0 * (image01 - image01.min()) / max(float(np.ptp(image01)), 1e-6)
        target = gamma_target(image255, labels)
        reads_maps = bool(map_names(self.config))  # an image-only model needs no maps
        tissue_labels = self._map_labels(image, labels, spacing, predicted) if reads_maps else labels
        roi = L.heart_roi(labels) | L.heart_roi(tissue_labels)  # the ROI of the maps, and all the target changes
        box = CropBox.around(L.heart_roi(labels)[None], margin=CROP_MARGIN / self.rng.uniform(*SCALE_RANGE))
        jitter = (self.rng.uniform(-0.1, 0.1, 2) * box.size).astype(int)
        box = CropBox(box.row0 + jitter[0], box.col0 + jitter[1], box.size)
        crops = [resize(box.extract(a[None]), self.size)[0] for a in (image255, target)]
        window = IntensityWindow.of(crops[0][None], self.config.normalisation)  # of the crop as inference sees it
        mask = mask_to_model(box.extract(roi[None]), self.size)[0].astype(np.float32)
        scar = resize(box.extract((labels == L.SCAR)[None]).astype(np.float32), self.size)[0]  # area fraction
        tissue = [resize(box.extract(m[None]), self.size)[0]
                  for m in tissue_maps(tissue_labels[None], self.config)[0]]
        stack = torch.as_tensor(np.stack(crops + [mask, scar] + tissue))
        stack = np.asarray(self.spatial({"stack": stack})["stack"])
        original255, target255 = stack[:2]
        mask = (stack[2] > 0.5).astype(np.float32)
        scar = np.clip(stack[3], 0.0, 1.0) * mask
        maps = np.clip(stack[None, 4:], 0.0, 1.0) if tissue else None
        condition, _ = build_condition(original255[None], maps, self.config, window)
        original, target = window.forward(np.stack([original255, target255]))
        target = mask * target + (1 - mask) * original
        return (torch.as_tensor(condition[0]), torch.as_tensor(target[None]), torch.as_tensor(mask[None]),
                torch.as_tensor(scar[None]))


def heart_crop(image: torch.Tensor, labels: np.ndarray, pixel_mm, rng: np.random.Generator) -> torch.Tensor:
    """``image`` (c, h, w) as a volume cropped to a square around the heart shows it: zero outside a square of
    ``HEART_CROP_SIDE_MM`` (at least the heart of ``labels`` (h, w)), its centre up to ``HEART_CROP_SHIFT_MM`` from
    the heart's, every channel alike (a crop cuts the neighbour slices too). Users crop LGE volumes to the heart
    before segmenting; the network trained on whole frames saw the heart only with the chest around it. ``pixel_mm``:
    the (row, column) pixel size. Without a heart in ``labels`` the image is returned as it is."""
    heart = np.argwhere(np.asarray(labels) > 0)
    if len(heart) == 0:
        return image
    pixel_mm = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    side_mm = rng.uniform(*HEART_CROP_SIDE_MM)
    centre = heart.mean(axis=0) + rng.uniform(-HEART_CROP_SHIFT_MM, HEART_CROP_SHIFT_MM, size=2) / pixel_mm
    half = side_mm / 2 / pixel_mm
    low = np.maximum(np.minimum(np.floor(centre - half), heart.min(axis=0)), 0).astype(int)
    high = np.maximum(np.ceil(centre + half), heart.max(axis=0) + 1).astype(int)
    cropped = torch.zeros_like(image)
    cropped[:, low[0]:high[0], low[1]:high[1]] = image[:, low[0]:high[0], low[1]:high[1]]
    return cropped


def tissue_contrast(image: torch.Tensor, labels: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """``image`` (c, h, w) with its first channel's blood pool, myocardium and scar (``labels`` (h, w)) each made
    brighter or darker on its own (``TISSUE_GAINS``), the gains blended over about a pixel at the borders. Sites
    differ in how bright blood pool and remote myocardium are beside scar (inversion time, contrast dose and timing),
    which a curve over all intensities does not vary. The neighbour slices (2.5D) have no labels and stay as they
    are."""
    labels = np.asarray(labels)
    gains = np.ones(max(int(labels.max()), L.SCAR) + 1, dtype=np.float32)
    for tissue, (low, high) in TISSUE_GAINS.items():
        gains[tissue] = rng.uniform(low, high)
    gains[L.SCAR + 1:] = gains[L.MYOCARDIUM]  # no-reflow: dark like healthy myocardium
    gain = ndimage.gaussian_filter(gains[labels], sigma=1.0)
    changed = image.clone()
    changed[0] = image[0] * torch.from_numpy(gain)
    return changed


def synthetic_scar(image: torch.Tensor, labels: np.ndarray, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, np.ndarray]:
    """``image`` (c, h, w) and ``labels`` (h, w) with a scar drawn into the healthy myocardium of the first channel:
    an infarct grows from the endocardium outwards, so the scar is a sector of the wall (``SYNTHETIC_SCAR``) from the
    blood pool to a drawn depth, brightened towards the blood pool's level (bright subendocardial scar is what the
    network tends to call blood pool), keeping the tissue's texture, and labelled scar. 75 training patients hold
    few scars; drawn ones vary where, how deep and how bright. Unchanged where the slice has too little blood pool or
    healthy myocardium, where its blood pool is not brighter than its myocardium, or where the drawn sector holds too
    little healthy myocardium. The neighbour slices (2.5D) have no labels and stay as they are."""
    labels = np.asarray(labels)
    blood, healthy = labels == L.BLOOD_POOL, labels == L.MYOCARDIUM
    if blood.sum() < MIN_SYNTHETIC_SCAR_PIXELS or healthy.sum() < MIN_SYNTHETIC_SCAR_PIXELS:
        return image, labels
    centre = image[0].numpy()
    myocardium_level, blood_level = np.median(centre[healthy]), np.median(centre[blood])
    if blood_level <= myocardium_level:
        return image, labels
    wall = labels >= L.MYOCARDIUM  # healthy, scar and no-reflow
    from_blood = ndimage.distance_transform_edt(~blood)
    from_outside = ndimage.distance_transform_edt(wall | blood)
    depth = from_blood / np.maximum(from_blood + from_outside, 1e-6)  # 0 at the endocardium, 1 at the epicardium
    rows, cols = np.indices(labels.shape)
    centre_row, centre_col = ndimage.center_of_mass(blood)
    angle = np.arctan2(rows - centre_row, cols - centre_col)
    settings = {name: rng.uniform(*bounds) for name, bounds in SYNTHETIC_SCAR.items()}
    start = rng.uniform(-np.pi, np.pi)
    in_sector = np.mod(angle - start, 2 * np.pi) < np.radians(settings["sector_degrees"])
    scar = healthy & in_sector & (depth <= settings["transmurality"])
    if scar.sum() < MIN_SYNTHETIC_SCAR_PIXELS:
        return image, labels
    lift = settings["brightness"] * (blood_level - myocardium_level)
    blended = ndimage.gaussian_filter(scar.astype(np.float32), sigma=1.0) * wall  # soft borders inside the wall
    changed = image.clone()
    changed[0] = image[0] + torch.from_numpy((lift * np.maximum(blended, scar)).astype(np.float32))
    return changed, np.where(scar, L.SCAR, labels).astype(labels.dtype)


def first_third_end(count: int) -> int:
    """How many slices the first third of a stack of ``count`` holds: a third rounded up, at least one slice."""
    return -(-count // 3)


class SegmentationSamples:
    """(image, labels) patches at the model's spacing. Scanners differ in pixel shape (EMIDEC's PNGs are
    stretched along one axis by up to 1.7), orientation and intensity curves: each axis is scaled on its own,
    rotations span the full circle, and the intensities get contrast curves, bias field, noise and blur. A 2.5D
    model's neighbour slices come in either order (stacks run base to apex or apex to base). ``options`` (one
    synthetic-scar share) add tissue contrast, drawn scars and crops around the heart to their shares of the
    patches: drawn scars in any patch, or with ``synthetic_scar_patches`` "scarred" only in those whose labels
    already hold scar."""

    def __init__(self, cases: list[Case], config: SegmentationConfig, rng: np.random.Generator,
                 options: PatchOptions = PatchOptions()):
        if np.ndim(options.synthetic_scar):
            raise ValueError(f"one data set's patches take one synthetic-scar share, not {options.synthetic_scar}")
        self.cases = cases
        self.config = config
        self.options = options
        size = (config.patch_size,) * 2
        keys = ["image", "label"]
        self.spatial = Compose([
            RandRotated(keys, range_x=np.pi, prob=0.8, mode=("bilinear", "nearest"), padding_mode="zeros"),
            RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
            SpatialPadd(keys, size),
            RandCropByPosNegLabeld(keys, "label", size, pos=2, neg=1, num_samples=1),
        ])
        self.intensity = Compose([
            RandAdjustContrastd(["image"], prob=0.5, gamma=(0.6, 1.6)),
            RandBiasFieldd(["image"], prob=0.3, coeff_range=(0.0, 0.3)),
            RandGaussianNoised(["image"], prob=0.3, std=0.03),
            RandGaussianSmoothd(["image"], prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
            RandHistogramShiftd(["image"], prob=0.2, num_control_points=(5, 10)),
        ])
        self.index = [(c, i) for c in cases for i in range(len(c.images))]
        self.first_third_index = [(c, i) for c in cases for i in range(first_third_end(len(c.images)))]
        self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        """Draw from ``rng`` from now on (each data-loader worker gets its own)."""
        self.rng = rng
        for transform in (self.spatial, self.intensity):
            transform.set_random_state(seed=int(rng.integers(2**31)))

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        with _plain_tensors():
            items = [self._one(*self._slice()) for _ in range(batch_size)]
        return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])

    def _slice(self) -> tuple[Case, int]:
        """A case and one of its slices: any slice, or for ``first_third`` of the patches one of the first third,
        which every site's stacks segment worst (benchmarks/measure_dice_by_slice_position.py)."""
        index = self.first_third_index if self._chosen(self.options.first_third) else self.index
        return index[self.rng.integers(len(index))]

    def _one(self, case: Case, index: int):
        scale = self.rng.uniform(*SCALE_RANGE, size=2)  # anisotropic: rows and columns on their own
        channels = context_indices(len(case.images), self.config.context_slices, case.slice_mm)[index]
        if self.rng.random() < 0.5:  # the neighbours the other way round: (before, after) -> (after, before)
            channels = np.concatenate([channels[:1], channels[1:].reshape(-1, 2)[:, ::-1].ravel()])
        images = case.images[channels]
        if self.config.normalisation == "slice":
            images = np.stack([normalise_for_segmentation(i) for i in images])
        image = torch.cat([resample_slice(i, case.spacing, self.config.spacing_mm / scale)[0] for i in images])
        label = torch.nn.functional.interpolate(torch.as_tensor(case.labels[index], dtype=torch.float32)[None, None],
                                                size=image.shape[-2:], mode="nearest")[0]
        options = self.options
        if self._chosen(options.heart_crops):
            image = heart_crop(image, label[0].numpy(), self.config.spacing_mm / scale, self.rng)
        sample = self.spatial({"image": image, "label": label})[0]
        patch = torch.as_tensor(np.asarray(sample["image"]))
        if self.config.normalisation == "window":  # as the network sees each window at inference
            patch = normalise_windows(patch[None])[0]
        label = torch.as_tensor(np.asarray(sample["label"])).long()
        if self._chosen(options.synthetic_scar) and (options.synthetic_scar_patches == "any" or
                                                      (label == L.SCAR).any()):
            patch, drawn = synthetic_scar(patch, label[0].numpy(), self.rng)
            label = torch.as_tensor(drawn)[None].long()
        if self._chosen(options.tissue_contrast):
            patch = tissue_contrast(patch, label[0].numpy(), self.rng)
        patch = torch.as_tensor(np.asarray(self.intensity({"image": patch})["image"]), dtype=torch.float32)
        return patch, label

    def _chosen(self, share: float) -> bool:
        """Whether this patch gets an option drawn for ``share`` of the patches; an option that is off draws no
        number, so that runs without it draw as before it existed."""
        return bool(share) and self.rng.random() < share
