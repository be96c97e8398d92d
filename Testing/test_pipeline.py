from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ScarEnhanceLib import diffusion
from ScarEnhanceLib import labels as L
from ScarEnhanceLib.diffusion import training_scheduler
from ScarEnhanceLib.pipeline import EnhanceParameters, enhance, segment
from ScarEnhanceLib.volume import InputError, same_geometry
from ScarEnhanceLib.weights import ENHANCEMENT, SEGMENTATION, LoadedModel, load

from conftest import TINY_DIFFUSION

FAST = EnhanceParameters(k=2, steps=4)


class _Output:
    def __init__(self, sample):
        self.sample = sample


class OracleNetwork(torch.nn.Module):
    """Predicts the exact noise toward a known contrast change of the original: 0.5 * x + 0.3."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.abar = training_scheduler(TINY_DIFFUSION).alphas_cumprod

    def forward(self, model_input, t):
        original, x_t = model_input[:, :1], model_input[:, 1:]
        a = self.abar[t].view(-1, 1, 1, 1)
        return _Output((x_t - a.sqrt() * (0.5 * original + 0.3)) / (1 - a).sqrt())


@pytest.fixture
def tiny(tiny_models):
    return load(ENHANCEMENT, tiny_models)


def _arrays(*images):
    return [sitk.GetArrayFromImage(i) for i in images]


def test_enhance_keeps_geometry_and_leaves_outside_the_roi_bit_exact(phantom, tiny):
    image, labels = phantom
    before = _arrays(image, labels)
    result = enhance(image, labels, tiny, FAST)
    for output in (result.enhanced, result.uncertainty, result.roi):
        assert same_geometry(output, image)
    original, enhanced, roi = _arrays(image, result.enhanced, result.roi)
    assert result.enhanced.GetPixelID() == image.GetPixelID()
    np.testing.assert_array_equal(enhanced[roi == 0], original[roi == 0])
    assert not np.array_equal(enhanced[roi > 0], original[roi > 0])
    assert (sitk.GetArrayFromImage(result.uncertainty)[roi == 0] == 0).all()
    for kept, now in zip(before, _arrays(image, labels)):
        np.testing.assert_array_equal(kept, now)


def test_slices_without_roi_pass_through(phantom, tiny):
    image, labels = phantom
    label_array = sitk.GetArrayFromImage(labels).copy()
    label_array[[0, 4]] = 0
    cut = sitk.GetImageFromArray(label_array)
    cut.CopyInformation(labels)
    result = enhance(image, cut, tiny, FAST)
    original, enhanced = _arrays(image, result.enhanced)
    np.testing.assert_array_equal(enhanced[[0, 4]], original[[0, 4]])


def test_the_models_change_lands_at_the_right_voxels_and_scale(phantom):
    image, labels = phantom
    oracle = LoadedModel("oracle", OracleNetwork(), TINY_DIFFUSION, {})
    result = enhance(image, labels, oracle, EnhanceParameters(k=1, steps=5))
    original, enhanced, roi = _arrays(image, result.enhanced, labels)
    inside = roi > 0
    for z in range(original.shape[0]):
        low, high = original[z].min(), original[z].max()
        scaled = (original[z] - low) / (high - low) * 2 - 1  # the model's [-1, 1] scale
        expected = ((0.5 * scaled + 0.3) + 1) / 2 * (high - low) + low
        error = np.abs(enhanced[z] - expected)[inside[z]]
        # Resampled to the model's size and back, so exact only on average, not per voxel.
        assert np.median(error) < 0.05 * (high - low)
        assert abs(float(np.mean(enhanced[z][inside[z]] - expected[inside[z]]))) < 0.02 * (high - low)


def test_integer_volumes_stay_integer(phantom, tiny):
    image, labels = phantom
    as_int = sitk.Cast(image, sitk.sitkInt16)
    result = enhance(as_int, labels, tiny, FAST)
    assert result.enhanced.GetPixelID() == sitk.sitkInt16


def test_bad_input_is_explained_and_changes_nothing(phantom, tiny):
    image, labels = phantom
    empty = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(labels)
    with pytest.raises(InputError, match="empty"):
        enhance(image, empty, tiny, FAST)
    shifted = sitk.Image(labels)
    shifted.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(InputError, match="differ in origin"):
        enhance(image, shifted, tiny, FAST)
    border = sitk.GetArrayFromImage(labels).copy()
    border[2, 0, :] = L.MYOCARDIUM
    touching = sitk.GetImageFromArray(border)
    touching.CopyInformation(labels)
    with pytest.raises(InputError, match="border"):
        enhance(image, touching, tiny, FAST)
    with pytest.raises(InputError, match="dilation"):
        enhance(image, labels, tiny, EnhanceParameters(dilation_mm=-1))


def test_segment_returns_labels_on_the_image_grid(phantom, tiny_models):
    image, _ = phantom
    seen = []
    labels = segment(image, load(SEGMENTATION, tiny_models), lambda f, m: seen.append(f))
    assert same_geometry(labels, image)
    assert seen[-1] == pytest.approx(1.0)


class OutOfMemoryAboveTwo(torch.nn.Module):
    """Behaves like a GPU that runs out of memory for batches of more than two samples."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def forward(self, model_input, t):
        self.batches.append(len(model_input))
        if len(model_input) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return _Output(torch.zeros_like(model_input[:, :1]))


def test_out_of_memory_halves_the_batch_and_still_finishes(phantom):
    image, labels = phantom
    network = OutOfMemoryAboveTwo()
    model = LoadedModel("oom", network, TINY_DIFFUSION, {})
    result = enhance(image, labels, model, EnhanceParameters(k=2, steps=2, batch_size=8))
    assert network.batches[0] == 8 and max(network.batches[-4:]) <= 2
    assert same_geometry(result.enhanced, image)


class OutOfMemoryOffTheCpu(OutOfMemoryAboveTwo):
    """A network on a GPU (its parameter on the meta device stands for one) that runs out of memory at any batch
    until it is moved to the CPU; records its moves instead of making them."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1, device="meta"))
        self.moves = []

    def to(self, *device, **layout):  # a layout alone (memory_format) is no move
        self.moves += [str(d) for d in device]
        return self

    def forward(self, model_input, t):
        if self.moves[-1:] != ["cpu"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return _Output(torch.zeros_like(model_input[:, :1]))


def test_out_of_memory_at_one_sample_finishes_on_the_cpu_and_gives_the_network_back_to_its_device():
    from ScarEnhanceLib.pipeline import _sample_with_fallback
    network = OutOfMemoryOffTheCpu()
    model = LoadedModel("oom", network, TINY_DIFFUSION, {})
    size = TINY_DIFFUSION.image_size
    condition, _ = diffusion.build_condition(np.full((2, size, size), 100.0, np.float32), None, TINY_DIFFUSION)
    mask = torch.ones(2, 1, size, size)
    with pytest.warns(UserWarning, match="continuing on the CPU"):
        result = _sample_with_fallback(model, torch.from_numpy(condition), mask, EnhanceParameters(k=2, steps=2),
                                       batch=4, on_step=lambda: None)
    assert result.mean.shape[0] == 2
    assert network.moves == ["cpu", "meta"]  # the next study finds it where it was loaded

    class NoRoomToGoBack(OutOfMemoryOffTheCpu):
        def to(self, *device, **layout):
            super().to(*device, **layout)
            if self.moves[-1:] == ["meta"]:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self
    network = NoRoomToGoBack()
    model = LoadedModel("oom", network, TINY_DIFFUSION, {})
    with pytest.warns(UserWarning, match="stays on the CPU"):
        result = _sample_with_fallback(model, torch.from_numpy(condition), mask, EnhanceParameters(k=2, steps=2),
                                       batch=4, on_step=lambda: None)
    assert result.mean.shape[0] == 2 and network.moves == ["cpu", "meta", "cpu"]  # the result kept, whole on the CPU


def test_lambda_above_the_trained_noise_levels_is_refused(phantom, tiny):
    image, labels = phantom
    limited = LoadedModel(tiny.name, tiny.network, tiny.config, {"training": {"max_timestep": 300}})
    with pytest.raises(InputError, match="trained on"):
        enhance(image, labels, limited, EnhanceParameters(lam=400, steps=4, k=1))
    enhance(image, labels, limited, EnhanceParameters(lam=300, steps=2, k=1))


def test_gpu_batch_follows_free_memory():
    from ScarEnhanceLib.diffusion import DiffusionConfig
    from ScarEnhanceLib.pipeline import batch_for_free_memory
    config = DiffusionConfig()
    small, large = batch_for_free_memory(2 * 2**30, config), batch_for_free_memory(40 * 2**30, config)
    assert 1 <= small < large <= 1024
    assert batch_for_free_memory(0, config) == 1


def test_compile_option_runs_the_traced_network_with_the_same_result(phantom, tiny, monkeypatch):
    traced = []

    def recording_backend(graph_module, example_inputs):  # stands in for inductor: no C++ build in the unit suite
        traced.append(graph_module)
        return graph_module.forward
    monkeypatch.setattr(diffusion, "COMPILE_BACKEND", recording_backend)
    torch._dynamo.reset()
    image, labels = phantom
    eager = enhance(image, labels, tiny, FAST)
    compiled = enhance(image, labels, tiny, replace(FAST, compile_network=True))
    assert traced, "the network did not go through torch.compile"
    np.testing.assert_allclose(*_arrays(compiled.enhanced, eager.enhanced), atol=1e-3)


@pytest.mark.slow
def test_inductor_compiled_network_matches_eager(phantom, tiny):
    torch._dynamo.reset()
    image, labels = phantom
    eager = enhance(image, labels, tiny, FAST)
    compiled = enhance(image, labels, tiny, replace(FAST, compile_network=True))
    np.testing.assert_allclose(*_arrays(compiled.enhanced, eager.enhanced), atol=1e-2)
