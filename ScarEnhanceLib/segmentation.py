"""Heart segmentation (blood pool, myocardium, scar) with a MONAI 2D U-Net, and the heart ROI.

Each slice is resampled to the model's pixel spacing. Whole frames arrive from scanners (a 480x480 MyoPS
frame at 0.73 mm takes 2 x 2 windows or more at 1.5 mm), and a heart cut by window borders gets straight seams. So inference has two
passes: sliding windows over the whole frame find the heart (the largest 3D component), then the network
sees one window per slice centred on the heart, as in training, in its three mirror images and in the
transposes of all four (the eight orientations of the square; ``test_time="flips"``: the four mirror images alone),
and the probabilities are averaged. Post-processing keeps the largest 3D connected heart component and fills holes
slice by slice (filled pixels take the nearest label).

A bundled model may be an ensemble of networks (``SegmentationEnsemble``), each segmenting at its own spacing and
settings as above; their probabilities are averaged at the slices' resolution.

A model may also see neighbour slices (2.5D, ``context_slices``): the slices above and below show where the
wall goes at the base and apex, where one slice alone is ambiguous. Only where slices are close (gaps up to
MAX_CONTEXT_GAP_MM); otherwise, and beyond the first and last slice, the slice stands in for its neighbours.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from scipy import ndimage

from . import labels as L
from .volume import as_slices, from_slices, inplane_spacing, like, slice_axis, to_array


NORMALISATIONS = ("slice", "window")
# the 4 mirror images; those and their transposes (8); those 8 with the neighbour slices also the other way round;
# the 8 at three contrasts
TEST_TIME_AUGMENTATIONS = ("flips", "dihedral", "dihedral-neighbours", "dihedral-contrast")
# the window's own contrast and two gamma curves inside the range training shows (RandAdjustContrast, gamma 0.6-1.6)
CONTRAST_GAMMAS = (1.0, 0.8, 1.25)
SEAM_BRIDGE_MM = 15.0  # heart parts of the first pass this close in-plane are one heart
MAX_CONTEXT_GAP_MM = 11.0  # neighbour slices further apart (MyoPS keeps every 2nd-4th slice) are not shown
MAX_CONTEXT_SLICES = 2


@dataclass(frozen=True)
class SegmentationConfig:
    spacing_mm: float = 1.5  # in-plane pixel spacing the network works at
    patch_size: int = 128
    channels: tuple = (16, 32, 64, 128)
    strides: tuple = (2, 2, 2)
    num_res_units: int = 1
    # percentiles for intensity scaling: "slice" over the whole slice (models before 2026-11-26), "window" over
    # each network input, so a bright pixel far from the heart does not change what the network sees
    normalisation: str = "slice"
    context_slices: int = 0  # neighbour slices on each side given as extra input channels (2.5D)
    dropout: float = 0.0  # in every convolution block, while training only: regularises a model trained on few cases
    # EMIDEC's no-reflow (MVO) as a class of its own, folded into myocardium in every result: labelled as healthy
    # myocardium, a core inside scar asks the network for a contradiction (tried: no gain, see the model card)
    mvo_class: bool = False
    # the orientations a window is segmented in, their probabilities averaged (see orientation_averaged_probabilities):
    # "dihedral" since 2026-11-29 (measured against "flips", the models' setting before: see the model card)
    test_time: str = "dihedral"

    @staticmethod
    def from_dict(values: dict) -> "SegmentationConfig":
        values = dict(values)
        for key in ("channels", "strides"):
            if key in values:
                values[key] = tuple(values[key])
        return SegmentationConfig(**values)

    def __post_init__(self):
        if not 0.2 <= self.spacing_mm <= 10.0:
            raise ValueError(f"spacing_mm must be 0.2 to 10 mm, got {self.spacing_mm}")
        if not 16 <= self.patch_size <= 1024:
            raise ValueError(f"patch_size must be 16 to 1024, got {self.patch_size}")
        if not self.channels or not all(1 <= int(c) <= 2048 for c in self.channels) or \
                len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"channels must be 1 to 2048 each, with one stride fewer: {self.channels}, {self.strides}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if not 0 <= self.context_slices <= MAX_CONTEXT_SLICES:
            raise ValueError(f"context_slices must be 0 to {MAX_CONTEXT_SLICES}, got {self.context_slices}")
        if self.context_slices and self.normalisation != "window":
            raise ValueError("neighbour slices need the window normalisation (all channels on the centre's scale)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be at least 0 and below 1, got {self.dropout}")
        if self.test_time not in TEST_TIME_AUGMENTATIONS:
            raise ValueError(f"test_time must be one of {TEST_TIME_AUGMENTATIONS}, got {self.test_time!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def input_channels(config: SegmentationConfig) -> int:
    """The slice, then its neighbours in pairs (one before, one after) outwards."""
    return 1 + 2 * config.context_slices


def output_classes(config: SegmentationConfig) -> int:
    return L.NUM_CLASSES + int(config.mvo_class)


def build_segmenter(config: SegmentationConfig) -> UNet:
    return UNet(spatial_dims=2, in_channels=input_channels(config), out_channels=output_classes(config),
                channels=config.channels, strides=config.strides, num_res_units=config.num_res_units,
                dropout=config.dropout)


class SegmentationEnsemble(torch.nn.Module):
    """Networks whose class probabilities are averaged at the slices' resolution, each working at its own
    spacing and settings (a multi-scale ensemble when their spacings differ)."""

    def __init__(self, members: list[tuple[torch.nn.Module, SegmentationConfig]]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two networks")
        self.networks = torch.nn.ModuleList([network for network, _ in members])
        self.configs = tuple(config for _, config in members)

    def forward(self, x):
        raise TypeError("an ensemble is segmented through slice_probabilities or predict_slices: its networks "
                        "see the slices at their own spacings")


def members(model: torch.nn.Module, config: SegmentationConfig) -> list[tuple[torch.nn.Module, SegmentationConfig]]:
    """The (network, settings) pairs whose probabilities are averaged: an ensemble's members (it carries their
    settings), or the one network with ``config``."""
    if isinstance(model, SegmentationEnsemble):
        return list(zip(model.networks, model.configs))
    return [(model, config)]


def fold_mvo(probabilities: torch.Tensor) -> torch.Tensor:
    """(n, NUM_CLASSES, ...) probabilities: a network's no-reflow (MVO) counted as myocardium, as every result
    reads it."""
    if probabilities.shape[1] == L.NUM_CLASSES:
        return probabilities
    folded = probabilities[:, :L.NUM_CLASSES].clone()
    folded[:, L.MYOCARDIUM] += probabilities[:, L.MVO]
    return folded


NEW_MVO_LOGIT_OFFSET = -6.0  # a new MVO output starts as myocardium's logit minus this: the network as it was


def warm_start_segmenter(network: UNet, weights: dict) -> None:
    """Load the weights of the same U-Net with fewer inputs (a 2D model into a 2.5D one): the inputs the source
    lacks start with zero weights, so the network begins as the source did. Weights without the MVO class load
    into a network with it: its output starts as a copy of myocardium's, far less likely (its probability is
    folded back into myocardium), so again the network begins as the source did."""
    target = network.state_dict()
    expanded = {}
    for key, value in _with_mvo_outputs(network, weights).items():
        wanted = target.get(key)
        if wanted is not None and value.ndim == 4 and value.shape[1] < wanted.shape[1] and \
                value.shape[0] == wanted.shape[0] and value.shape[2:] == wanted.shape[2:]:
            value = torch.cat([value, value.new_zeros(value.shape[0], wanted.shape[1] - value.shape[1],
                                                      *value.shape[2:])], dim=1)
        expanded[key] = value
    network.load_state_dict(expanded)


def _with_mvo_outputs(network: UNet, weights: dict) -> dict:
    """``weights`` with an MVO output added where the network has one more class than they do. In MONAI's UNet the
    classes run through the last transposed convolution and, with residual units, a convolution after it (classes
    to classes); the last of these gives the logits."""
    target = network.state_dict()
    grown_layers = []
    result = dict(weights)
    for name, module in network.named_modules():
        key = f"{name}.weight"
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) or key not in weights or \
                weights[key].shape == target[key].shape:
            continue
        old = weights[key]
        out_dim = 1 if isinstance(module, torch.nn.ConvTranspose2d) else 0
        if old.shape[out_dim] != L.NUM_CLASSES or target[key].shape[out_dim] != L.NUM_CLASSES + 1:
            continue  # not a class layer: load_state_dict reports the mismatch
        grown = torch.cat([old, old.narrow(out_dim, L.MYOCARDIUM, 1)], dim=out_dim)  # MVO computed as myocardium
        if out_dim == 0 and old.shape[1] == L.NUM_CLASSES:  # the MVO input of classes to classes: unused at first
            grown = torch.cat([grown, grown.new_zeros(grown.shape[0], 1, *grown.shape[2:])], dim=1)
        result[key] = grown
        if f"{name}.bias" in weights:
            bias = weights[f"{name}.bias"]
            result[f"{name}.bias"] = torch.cat([bias, bias[L.MYOCARDIUM:L.MYOCARDIUM + 1]])
            grown_layers.append(f"{name}.bias")
    if grown_layers:
        result[grown_layers[-1]][L.MVO] += NEW_MVO_LOGIT_OFFSET
    return result


def has_context(slice_mm: Optional[float]) -> bool:
    """Whether neighbour slices this far apart show the same heart a little further along."""
    return slice_mm is not None and 0 < slice_mm <= MAX_CONTEXT_GAP_MM


def context_indices(count: int, context_slices: int, slice_mm: Optional[float]) -> np.ndarray:
    """(count, 1 + 2 * context_slices) slice indices of each slice's input channels: itself, then its
    neighbours (before, after) outwards; beyond the stack's ends, or where slices are ``slice_mm`` apart
    without ``has_context``, itself."""
    contiguous = has_context(slice_mm)
    centre = np.arange(count)
    columns = [centre]
    for step in range(1, context_slices + 1):
        for neighbour in (centre - step, centre + step):
            columns.append(np.clip(neighbour, 0, count - 1) if contiguous else centre)
    return np.stack(columns, axis=1)


def normalise_for_segmentation(slice2d: np.ndarray) -> np.ndarray:
    """Robust per-slice scaling to about [0, 1] (1st and 99th percentiles)."""
    low, high = np.percentile(slice2d, (1, 99))
    return ((slice2d - low) / max(high - low, 1e-6)).astype(np.float32)


def normalise_windows(batch: torch.Tensor) -> torch.Tensor:
    """``normalise_for_segmentation`` of each (c, h, w) item of a batch, on its own percentiles: those of its
    first channel (the slice; neighbour slices take the same scale)."""
    flat = batch[:, :1].flatten(1).float()
    low, high = (torch.quantile(flat, q, dim=1).view(-1, 1, 1, 1) for q in (0.01, 0.99))
    return (batch - low) / (high - low).clamp(min=1e-6)


def resample_slice(slice2d: np.ndarray, spacing: tuple[float, float], target_mm) -> torch.Tensor:
    """(1, 1, h', w') tensor of a slice resampled to ``target_mm`` pixels (one value, or one per axis)."""
    tensor = torch.from_numpy(np.ascontiguousarray(slice2d, dtype=np.float32))[None, None]
    targets = np.broadcast_to(np.asarray(target_mm, dtype=float), (2,))
    size = [max(8, int(round(n * s / t))) for n, s, t in zip(slice2d.shape, spacing, targets)]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < slice2d.shape[0] or size[1] < slice2d.shape[1])


def _window_scaling(config: SegmentationConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """How a window is scaled for the network: on its own, or not at all (the slice was scaled as a whole)."""
    return normalise_windows if config.normalisation == "window" else (lambda batch: batch)


def _sliding_probabilities(frames: torch.Tensor, predictor, config: SegmentationConfig) -> torch.Tensor:
    logits = sliding_window_inference(frames, (config.patch_size,) * 2, sw_batch_size=8, predictor=predictor,
                                      overlap=0.25, mode="gaussian", padding_mode="constant")
    return torch.softmax(logits.float(), dim=1)


FLIPS = ((), (-1,), (-2,), (-2, -1))


def orientations(test_time: str) -> list[tuple[bool, tuple]]:
    """(transposed, flipped axes) of each orientation ``test_time`` segments a window in."""
    transposes = (False, True) if test_time.startswith("dihedral") else (False,)
    return [(transposed, dims) for transposed in transposes for dims in FLIPS]


def neighbour_orders(test_time: str, channels: int) -> list[bool]:
    """Whether the neighbour slices are also shown the other way round ((before, after) -> (after, before), as in
    training): with "dihedral-neighbours" and neighbour channels, both orders; else the stack's own."""
    return [False, True] if test_time == "dihedral-neighbours" and channels > 1 else [False]


def contrast_gammas(test_time: str) -> tuple:
    """The gamma curves each orientation is shown at: with "dihedral-contrast" three, else the window as it is."""
    return CONTRAST_GAMMAS if test_time == "dihedral-contrast" else (1.0,)


def _adjust_contrast(batch: torch.Tensor, gamma: float) -> torch.Tensor:
    """Each (c, h, w) item through a gamma curve between its own minimum and maximum, as training's
    RandAdjustContrast does to a scaled patch."""
    if gamma == 1.0:
        return batch
    low = batch.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    span = batch.flatten(1).amax(dim=1).view(-1, 1, 1, 1) - low
    return ((batch - low) / span.clamp(min=1e-6)) ** gamma * span + low


def _reverse_neighbours(batch: torch.Tensor) -> torch.Tensor:
    """Channels (slice, before, after, before 2, after 2, ...) -> (slice, after, before, after 2, before 2, ...)."""
    order = [0] + [index for pair in range(1, batch.shape[1], 2) for index in (pair + 1, pair)]
    return batch[:, order]


def _orient(batch: torch.Tensor, transposed: bool, dims: tuple) -> torch.Tensor:
    batch = batch.transpose(-2, -1) if transposed else batch
    return batch.flip(dims) if dims else batch


def _unorient(batch: torch.Tensor, transposed: bool, dims: tuple) -> torch.Tensor:
    batch = batch.flip(dims) if dims else batch
    return batch.transpose(-2, -1) if transposed else batch


def orientation_averaged_probabilities(predictor, batch: torch.Tensor, test_time: str) -> torch.Tensor:
    """Class probabilities of a batch of square windows averaged over its mirror images, with "dihedral" over
    their transposes too, with "dihedral-neighbours" over both orders of the neighbour slices as well, and with
    "dihedral-contrast" over three contrast curves (test-time augmentation): the network was trained on flipped and
    rotated slices with the neighbours either way round and their contrast changed, and its errors in one view are
    partly undone by the others."""
    total = torch.zeros(())
    views = [(reverse, gamma, transposed, dims) for reverse in neighbour_orders(test_time, batch.shape[1])
             for gamma in contrast_gammas(test_time) for transposed, dims in orientations(test_time)]
    for reverse, gamma, transposed, dims in views:
        shown = _adjust_contrast(_reverse_neighbours(batch) if reverse else batch, gamma)
        probabilities = torch.softmax(predictor(_orient(shown, transposed, dims)).float(), dim=1)
        total = total + _unorient(probabilities, transposed, dims)
    return total / len(views)


def heart_centres(heart: np.ndarray, bridge_px: int = 0) -> np.ndarray:
    """(n, 2) row/column centre of the largest 3D component of ``heart`` (n, h, w) in each slice; slices it
    misses take its mean centre, and no heart at all gives the frames' centre. Parts closer than
    ``2 * bridge_px`` in-plane count as one component (a seam in a first guess can split a heart)."""
    joined = heart
    if bridge_px > 0:
        inplane = np.zeros((3, 3, 3), dtype=bool)
        inplane[1] = ndimage.generate_binary_structure(2, 1)
        joined = ndimage.binary_dilation(heart, structure=inplane, iterations=bridge_px)
    components, count = ndimage.label(joined)
    centres = np.tile((np.array(heart.shape[1:], dtype=float) - 1) / 2, (len(heart), 1))
    if count == 0:
        return centres
    sizes = ndimage.sum_labels(heart, components, index=np.arange(1, count + 1))
    largest = heart & (components == 1 + int(np.argmax(sizes)))
    present = largest.reshape(len(heart), -1).any(axis=1)
    centres[:] = np.argwhere(largest)[:, 1:].mean(axis=0)
    for index in np.flatnonzero(present):
        centres[index] = np.argwhere(largest[index]).mean(axis=0)
    return centres


def _overlap(corner, size: int, shape) -> tuple:
    """(frame slices, window slices) of where a ``size`` window at ``corner`` overlaps a frame of ``shape``."""
    (row, col), (height, width) = corner, shape
    r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + size, height), min(col + size, width)
    return (slice(r0, max(r0, r1)), slice(c0, max(c0, c1))), \
        (slice(r0 - row, max(r0, r1) - row), slice(c0 - col, max(c0, c1) - col))


def _centred_windows(frames: torch.Tensor, centres: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """(n, c, size, size) windows of ``frames`` centred on ``centres`` (zero outside the frame), and their
    top-left corners."""
    corners = np.round(centres - (size - 1) / 2).astype(int)
    windows = frames.new_zeros((len(frames), frames.shape[1], size, size))
    for index, corner in enumerate(corners):
        in_frame, in_window = _overlap(corner, size, frames.shape[-2:])
        windows[index, :, in_window[0], in_window[1]] = frames[index, :, in_frame[0], in_frame[1]]
    return windows, corners


def _paste(probabilities: torch.Tensor, corners: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Window probabilities back into frames of ``shape``; outside the windows, background."""
    n, classes, size, _ = probabilities.shape
    frames = probabilities.new_zeros((n, classes, *shape))
    frames[:, 0] = 1.0
    for index, corner in enumerate(corners):
        in_frame, in_window = _overlap(corner, size, shape)
        frames[index, :, in_frame[0], in_frame[1]] = probabilities[index, :, in_window[0], in_window[1]]
    return frames


def _frame_probabilities(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                         config: SegmentationConfig, device: torch.device,
                         slice_mm: Optional[float]) -> torch.Tensor:
    """(n, classes, h', w') probabilities at the model's spacing: the heart is found on the whole frames, then
    segmented in one window per slice centred on it (no window border crosses the heart), in each of the
    orientations of ``config.test_time``."""
    model.eval()
    scaled_window = _window_scaling(config)
    scaled = [normalise_for_segmentation(s) if config.normalisation == "slice" else s for s in slices]
    frames = torch.cat([resample_slice(s, spacing, config.spacing_mm) for s in scaled]).to(device)
    frames = frames[:, 0][torch.from_numpy(context_indices(len(frames), config.context_slices, slice_mm))]
    coarse = torch.cat([_sliding_probabilities(frame[None], lambda batch: model(scaled_window(batch)), config)
                        for frame in frames])
    centres = heart_centres((coarse.argmax(dim=1) > 0).cpu().numpy(), int(np.ceil(SEAM_BRIDGE_MM / config.spacing_mm)))
    windows, corners = _centred_windows(frames, centres, config.patch_size)
    # scaled before the views: the contrast curves of "dihedral-contrast" act on the scaled window, as in training
    fine = torch.cat([orientation_averaged_probabilities(model, scaled_window(batch), config.test_time)
                      for batch in windows.split(8)])
    return _paste(fold_mvo(fine), corners, tuple(frames.shape[-2:]))


def _members_frame_probabilities(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                                 config: SegmentationConfig, device: torch.device,
                                 slice_mm: Optional[float]) -> list[torch.Tensor]:
    """Each network's (n, classes, h', w') probabilities at its own spacing (one network: a list of one)."""
    return [_frame_probabilities(network, slices, spacing, member_config, device, slice_mm)
            for network, member_config in members(model, config)]


def _per_slice(members: list[torch.Tensor], shape: tuple[int, int], on_slice: Optional[Callable[[], None]]):
    """Each slice's (classes, h, w) probabilities back at the slices' ``shape``, averaged over the members'
    frame probabilities (each at its own spacing), one slice at a time."""
    for index in range(len(members[0])):
        yield sum(F.interpolate(probabilities[index:index + 1], size=shape, mode="bilinear",
                                align_corners=False)[0] for probabilities in members).cpu().numpy() / len(members)
        if on_slice is not None:
            on_slice()


@torch.inference_mode()
def slice_probabilities(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                        config: SegmentationConfig, device: torch.device,
                        on_slice: Optional[Callable[[], None]] = None,
                        slice_mm: Optional[float] = None) -> np.ndarray:
    """Class probabilities (n, classes, h, w) of (n, h, w) slices with in-plane ``spacing`` (mm), the mean of an
    ensemble's members'. ``slice_mm``: the distance between slices (unknown: no neighbour slices shown to a 2.5D
    model)."""
    members = _members_frame_probabilities(model, slices, spacing, config, device, slice_mm)
    return np.stack(list(_per_slice(members, slices.shape[1:], on_slice))).astype(np.float32)


@torch.inference_mode()
def predict_slices(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                   config: SegmentationConfig, device: torch.device,
                   on_slice: Optional[Callable[[], None]] = None, slice_mm: Optional[float] = None) -> np.ndarray:
    """Label (n, h, w): the most probable class of each pixel, a slice at a time (a large volume's probabilities
    at full resolution need not all be in memory at once)."""
    members = _members_frame_probabilities(model, slices, spacing, config, device, slice_mm)
    return np.stack([p.argmax(axis=0).astype(np.uint8) for p in _per_slice(members, slices.shape[1:], on_slice)])


def postprocess(labels: np.ndarray, slice_axis_index: int = 0) -> np.ndarray:
    """Largest 3D heart component; holes filled slice by slice with the nearest label."""
    components, count = ndimage.label(labels > 0)
    if count == 0:
        return labels.copy()
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
    kept = np.where(components == 1 + int(np.argmax(sizes)), labels, 0).astype(np.uint8)
    slices = as_slices(kept, slice_axis_index).copy()
    for index, slice_labels in enumerate(slices):
        roi = slice_labels > 0
        holes = ndimage.binary_fill_holes(roi) & ~roi
        if holes.any():
            nearest = ndimage.distance_transform_edt(~roi, return_distances=False, return_indices=True)
            slice_labels[holes] = slice_labels[tuple(nearest)][holes]
            slices[index] = slice_labels
    return from_slices(slices, slice_axis_index)


def segment_slices(model: torch.nn.Module, slices: np.ndarray, spacing: tuple[float, float],
                   config: SegmentationConfig, device: torch.device, slice_mm: Optional[float] = None,
                   on_slice: Optional[Callable[[], None]] = None) -> np.ndarray:
    """Post-processed labels (n, h, w) of a stack of (n, h, w) slices: what the user gets, for volumes and cases alike."""
    return postprocess(predict_slices(model, slices, spacing, config, device, on_slice, slice_mm))


def segment_heart(image: sitk.Image, model: torch.nn.Module, config: SegmentationConfig,
                  device: torch.device, on_slice: Optional[Callable[[], None]] = None) -> sitk.Image:
    """Labelmap (0 background, 1 blood pool, 2 myocardium, 3 scar) with the image's geometry."""
    axis = slice_axis(image)
    labels = segment_slices(model, as_slices(to_array(image), axis), inplane_spacing(image, axis), config, device,
                            slice_mm=image.GetSpacing()[2 - axis], on_slice=on_slice)
    return like(from_slices(labels, axis), image, sitk.sitkUInt8)


def dilate_roi(roi: sitk.Image, radius_mm: float, inplane_only: bool = True) -> sitk.Image:
    """Binary ROI dilated by ``radius_mm`` with a per-axis kernel (in-plane only by default: LGE slices are thick)."""
    if radius_mm < 0:
        raise ValueError(f"the dilation must be >= 0 mm, got {radius_mm}")
    binary = sitk.Cast(roi > 0, sitk.sitkUInt8)
    if radius_mm == 0:
        return binary
    thick = 2 - slice_axis(roi)  # numpy axis -> SimpleITK (x, y, z) index
    radius = [int(round(radius_mm / s)) for s in roi.GetSpacing()]
    if inplane_only:
        radius[thick] = 0
    if not any(radius):
        return binary
    return sitk.BinaryDilate(binary, radius, sitk.sitkBall)
