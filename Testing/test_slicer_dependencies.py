"""First-use installation of the module's Python packages: what is missing, and how it is installed."""
import sys
from importlib import metadata
from types import SimpleNamespace

from conftest import ROOT

sys.path.insert(0, str(ROOT / "ScarEnhance"))

from ScarEnhanceModuleLib.Dependencies import (REQUIREMENTS, TORCH_REQUIREMENT, deviceChoices, gpuAvailable,  # noqa: E402
                                                installRequirements, missingRequirements, torchBuildHasCuda)


def _versions(**installed):
    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]
    return version


def test_missing_and_too_old_packages_are_found():
    everything = {r.split(">=")[0]: "99.0" for r in (TORCH_REQUIREMENT, *REQUIREMENTS)}
    assert missingRequirements(_versions(**everything)) == []
    too_old = dict(everything, monai="1.2.0", torch="2.13.0+cu128")
    del too_old["tqdm"]
    assert missingRequirements(_versions(**too_old)) == ["monai>=1.4", "tqdm>=4.64"]


def test_this_environment_has_everything():
    assert missingRequirements() == []


def test_torch_goes_through_pytorchutils_and_simpleitk_is_never_installed():
    pip_calls, torch_calls = [], []
    installRequirements([TORCH_REQUIREMENT, "monai>=1.4"], pip_calls.append,
                        lambda requirement: torch_calls.append(requirement) or True)
    assert torch_calls == [TORCH_REQUIREMENT] and [call[0] for call in pip_calls] == ["monai>=1.4"]
    pip_calls.clear()
    installRequirements([TORCH_REQUIREMENT], pip_calls.append, None)
    assert pip_calls == [[TORCH_REQUIREMENT]]
    assert not any("simpleitk" in r.lower() for r in (TORCH_REQUIREMENT, *REQUIREMENTS))


def test_the_rest_is_installed_with_the_installed_torch_pinned():
    """MONAI's torch floor must not let pip replace the torch PyTorchUtils chose for the GPU."""
    seen = []

    def pip(arguments):
        constraints = arguments[arguments.index("-c") + 1]
        seen.append((arguments[:arguments.index("-c")], open(constraints).read()))

    installRequirements(["monai>=1.4", "diffusers>=0.30"], pip, None, _versions(torch="2.3.1+cu118"))
    assert seen == [(["monai>=1.4", "diffusers>=0.30"], "torch==2.3.1+cu118\n")]


def _torch_with_version_file(tmp_path, text):
    package = tmp_path / "torch"
    package.mkdir(parents=True)
    (package / "version.py").write_text(text, encoding="utf-8")
    return lambda name: SimpleNamespace(submodule_search_locations=[str(package)]) if name == "torch" else None


def test_the_gpu_counts_only_with_a_cuda_build_of_torch_and_a_driver(tmp_path):
    cpu_build = _torch_with_version_file(tmp_path / "cpu", "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n")
    cuda_build = _torch_with_version_file(tmp_path / "cuda", "__version__ = '2.13.0'\ncuda: Optional[str] = '12.8'\n")
    driver, no_driver = (lambda name: "/usr/bin/nvidia-smi"), (lambda name: None)
    assert not torchBuildHasCuda(cpu_build) and torchBuildHasCuda(cuda_build)
    assert not torchBuildHasCuda(lambda name: None)  # no torch yet
    assert gpuAvailable(cuda_build, driver)
    assert not gpuAvailable(cpu_build, driver)  # the machine has a GPU, this torch cannot use it
    assert not gpuAvailable(cuda_build, no_driver)


def test_macos_is_not_offered_cuda():
    assert deviceChoices("darwin") == ["auto", "cpu"]
    assert deviceChoices("linux") == deviceChoices("win32") == ["auto", "cuda", "cpu"]


def test_the_readmes_manual_install_names_every_requirement():
    """Where the first-use installation fails (no network), the README's command must install what it would."""
    import re
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r'slicer\.util\.pip_install\(f?"([^"]+)"\)', readme)
    named = {requirement for command in commands for requirement in command.split()}
    assert set(REQUIREMENTS) | {TORCH_REQUIREMENT} <= named
    assert "torch=={torch.__version__}" in named  # the torch there is kept, as installRequirements keeps it
