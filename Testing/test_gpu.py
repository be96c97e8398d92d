"""CUDA paths: float16 autocast, enhancement, real out-of-memory fallback, training with data-loader workers.

Skipped without a CUDA GPU (CI has none); run on a GPU machine with ``make test-gpu``.
"""
import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ScarEnhanceLib import labels as L
from ScarEnhanceLib.diffusion import as_denoiser
from ScarEnhanceLib.evaluate import heart_crop_ssim_psnr
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom
from ScarEnhanceLib.pipeline import EnhanceParameters, enhance
from ScarEnhanceLib.sample import SAMPLE_IMAGE, SAMPLE_LABELS
from ScarEnhanceLib.train import TrainSettings, train_diffusion
from ScarEnhanceLib.volume import SliceScale
from ScarEnhanceLib.weights import ENHANCEMENT, LoadedModel, load

from conftest import TINY_DIFFUSION, phantom_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def sample():
    return sitk.ReadImage(str(SAMPLE_IMAGE)), sitk.ReadImage(str(SAMPLE_LABELS))


def test_float16_autocast_denoiser_matches_float32_on_the_cpu():
    cpu, gpu = load(ENHANCEMENT, device="cpu"), load(ENHANCEMENT, device="cuda")
    generator = torch.Generator().manual_seed(1)
    model_input = torch.rand(8, 2, 64, 64, generator=generator) * 2 - 1
    t = torch.randint(0, 250, (8,), generator=generator)
    with torch.inference_mode():
        reference = as_denoiser(cpu.network)(model_input, t)
        on_gpu = as_denoiser(gpu.network)(model_input.cuda(), t.cuda())
    assert on_gpu.dtype == torch.float32
    assert float((on_gpu.cpu() - reference).norm() / reference.norm()) < 1e-2


def test_enhancement_on_the_gpu_agrees_with_the_cpu(sample):
    """Noise streams differ between devices, so compare as two runs of different seeds differ (SSIM ~0.98)."""
    image, labels = sample
    cpu, gpu = (enhance(image, labels, load(ENHANCEMENT, device=device), EnhanceParameters(device=device)).enhanced
                for device in ("cpu", "cuda"))
    original = sitk.GetArrayFromImage(image).astype(np.float32)
    truth = sitk.GetArrayFromImage(labels)
    outside = ~L.heart_roi(truth)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(gpu)[outside], original[outside])
    scale = SliceScale.of(original)
    cpu255, gpu255 = (scale.forward(sitk.GetArrayFromImage(o).astype(np.float32)) for o in (cpu, gpu))
    with_roi = truth.reshape(len(truth), -1).any(axis=1)
    assert heart_crop_ssim_psnr(gpu255[with_roi], cpu255[with_roi], truth[with_roi])["ssim"] > 0.95


class _RecordingNetwork(torch.nn.Module):
    """The real network, recording the batch size of every call."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.batches = []

    def forward(self, model_input, t):
        self.batches.append(len(model_input))
        return self.network(model_input, t)


def test_real_out_of_memory_halves_the_batch():
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=128, spacing_mm=1.6, seed=2))
    loaded = load(ENHANCEMENT, device="cuda")
    recording = _RecordingNetwork(loaded.network)
    model = LoadedModel(loaded.name, recording, loaded.config, loaded.info)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(2 * 2**30 / total)  # 2 GiB: far too little for 128 slices x 64 samples at once
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = enhance(image, labels, model, EnhanceParameters(device="cuda", k=64, steps=2, batch_size=8192))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert not [w for w in caught if "on the CPU" in str(w.message)]  # it halved the batch, not gave up on the GPU
    assert recording.batches[0] == 8192 and recording.batches[-1] < 8192
    assert np.isfinite(sitk.GetArrayFromImage(result.enhanced)).all()


def test_training_on_the_gpu_with_workers_and_resuming(tmp_path):
    cases = [phantom_case(seed=s) for s in range(2)]
    settings = TrainSettings(run_dir=tmp_path / "run", iterations=4, batch_size=8, checkpoint_every=2,
                             device="cuda", workers=2, max_timestep=300)
    train_diffusion([cases], TINY_DIFFUSION, settings)
    settings.iterations = 6
    train_diffusion([cases], TINY_DIFFUSION, settings)  # the checkpoint's tensors load onto the GPU
    history = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["history"]
    assert [h["iteration"] for h in history] == [2, 4, 6] and all(np.isfinite(h["loss"]) for h in history)
