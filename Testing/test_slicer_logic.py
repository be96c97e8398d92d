"""The Slicer module's Logic against real MRML nodes, with the Qt-free `slicer-core` wheel.

The fixture sets up what Slicer's application does at start-up and the Logic relies on: a scene in
``slicer.mrmlScene``, the colour and segmentation logics, and the segmentation converter rules.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from conftest import ROOT
from ScarEnhanceLib.parameters import EnhanceParameters, InputError
from ScarEnhanceLib.phantom import PhantomSpec, make_phantom

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (test extra) is not installed")
vtk = pytest.importorskip("vtk")
sys.path.insert(0, str(ROOT / "ScarEnhance"))

from ScarEnhanceModuleLib.Logic import (CLASS_SEGMENTS, ROI_SEGMENT_ID, ScarEnhanceLogic, _importArray,  # noqa: E402
                                         cnrSummary)
from ScarEnhanceModuleLib.Process import JobCancelled, JobFailed  # noqa: E402

FAST = EnhanceParameters(k=2, steps=3)


@pytest.fixture(scope="module")
def slicerApp():
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        factory.RegisterConverterRule(getattr(slicer, rule)())
    return factory


@pytest.fixture
def scene(slicerApp):
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logics = {"colors": slicer.vtkMRMLColorLogic(), "volumes": slicer.vtkSlicerVolumesLogic(),
              "segmentations": slicer.vtkSlicerSegmentationsModuleLogic()}
    for logic in logics.values():
        logic.SetMRMLScene(scene)
    slicer.modules = SimpleNamespace(**{name: SimpleNamespace(logic=lambda l=logic: l) for name, logic in logics.items()})
    yield scene
    scene.Clear(1)


@pytest.fixture
def logic(tiny_models):
    return ScarEnhanceLogic(pythonExecutable=sys.executable, modelsDir=tiny_models)


def _load_phantom(tmp_path: Path, seed: int = 4):
    """An oblique phantom volume and its labels, loaded as Slicer loads files."""
    image, labels = make_phantom(PhantomSpec(matrix=96, slices=4, spacing_mm=1.6, seed=seed))
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    for item in (image, labels):
        item.SetDirection(direction)
        item.SetOrigin((12.5, -40.0, 7.0))
    sitk.WriteImage(image, str(tmp_path / "lge.nrrd"))
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "lge")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "lge.nrrd"))
    assert storage.ReadData(volume)
    return volume, sitk.GetArrayFromImage(labels)


def _segmentation_from(volume, labels: np.ndarray):
    """A segmentation with the class segments and the heart ROI of ``labels`` (the volume's k, j, i grid)."""
    from ScarEnhanceModuleLib.Logic import _importArray
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for segmentId, name, _, color in CLASS_SEGMENTS + ((ROI_SEGMENT_ID, "Heart ROI", None, (0, 1, 0)),):
        node.GetSegmentation().AddEmptySegment(segmentId, name, list(color))
    _importArray(labels, volume, node, [s[0] for s in CLASS_SEGMENTS])
    _importArray((labels > 0).astype(np.uint8), volume, node, [ROI_SEGMENT_ID])
    return node


def _matrix(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _snapshot(volume, segmentation=None) -> dict:
    state = {"voxels": slicer.util.arrayFromVolume(volume).copy(), "geometry": _matrix(volume),
             "name": volume.GetName()}
    if segmentation is not None:
        ids = [segmentation.GetSegmentation().GetNthSegmentID(i)
               for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
        state["segments"] = {i: slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, i, volume).copy() for i in ids}
    return state


def _assert_unchanged(before: dict, after: dict) -> None:
    np.testing.assert_array_equal(before["voxels"], after["voxels"])
    np.testing.assert_array_equal(before["geometry"], after["geometry"])
    assert before["name"] == after["name"]
    for segmentId, mask in before.get("segments", {}).items():
        np.testing.assert_array_equal(mask, after["segments"][segmentId])


def test_segment_heart_makes_class_and_roi_segments_on_the_inputs_grid(scene, logic, tmp_path):
    volume, _ = _load_phantom(tmp_path)
    before = _snapshot(volume)
    segmentation = logic.segmentHeart(volume)
    ids = {segmentation.GetSegmentation().GetNthSegmentID(i)
           for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    assert ids == {"BloodPool", "Myocardium", "Scar", ROI_SEGMENT_ID}
    roi = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ROI_SEGMENT_ID, volume)
    classes = sum(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, s[0], volume) > 0 for s in CLASS_SEGMENTS)
    assert roi.shape == before["voxels"].shape
    np.testing.assert_array_equal(roi > 0, classes > 0)  # the ROI is the union of the classes
    _assert_unchanged(before, _snapshot(volume))
    codes = {}
    for segmentId in ids:
        segment = segmentation.GetSegmentation().GetSegment(segmentId)
        entry = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), entry)
        parts = str(entry).split("~")  # context, category, type, modifier, anatomic context, region, region modifier
        assert len(parts) == 7 and parts[0].endswith("DICOM master list") and parts[4].endswith("DICOM master list")
        codes[segmentId] = parts[2].split("^")[1]
    assert codes == {"BloodPool": "87878005", "Myocardium": "71616004", "Scar": "12402003", ROI_SEGMENT_ID: "80891009"}
    whole = np.ones(before["voxels"].shape, np.uint8)
    _importArray(whole, volume, segmentation, [ROI_SEGMENT_ID])  # the user's correction
    corrected = _snapshot(volume, segmentation)
    again = logic.segmentHeart(volume)
    assert again is not segmentation and again.GetName() != segmentation.GetName()
    _assert_unchanged(corrected, _snapshot(volume, segmentation))  # a second run does not overwrite the first
    assert not np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(again, ROI_SEGMENT_ID, volume) > 0, whole > 0)


def test_segment_heart_under_a_transform_keeps_the_volumes_grid_as_segment_editors_grid(scene, logic, tmp_path):
    volume, _ = _load_phantom(tmp_path)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 30.0)
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = logic.segmentHeart(volume)
    assert segmentation.GetTransformNodeID() == transform.GetID()
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)  # in the volume's own coordinates, which the segmentation shares
    expected = slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, volume.GetImageData())
    geometry = segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    assert geometry == expected  # was 30 mm off: Segment Editor painted on a grid beside the volume's
    roi = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ROI_SEGMENT_ID, volume)
    assert roi.shape == slicer.util.arrayFromVolume(volume).shape and roi.any()


def test_enhance_keeps_geometry_leaves_inputs_untouched_and_reports_cnr(scene, logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    before = _snapshot(volume, segmentation)
    outputs = logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    for node in (outputs.enhancedVolume, outputs.uncertaintyVolume):
        np.testing.assert_allclose(_matrix(node), before["geometry"], atol=1e-9)
        assert slicer.util.arrayFromVolume(node).shape == before["voxels"].shape
    enhanced = slicer.util.arrayFromVolume(outputs.enhancedVolume)
    np.testing.assert_array_equal(enhanced[labels == 0], before["voxels"][labels == 0])
    assert not np.array_equal(enhanced[labels > 0], before["voxels"][labels > 0])
    table = outputs.cnrTable.GetTable()
    assert table.GetValueByName(0, "Readout").ToString() == "CNR scar/myocardium"
    assert table.GetValueByName(0, "Region").ToString() == "Scar segment"
    original = table.GetValueByName(0, "Original").ToDouble()
    scar_segment = outputs.readouts["regions"]["scar_segment"]["volume"]
    assert np.isfinite(original) and original == pytest.approx(scar_segment["cnr_scar_myo_original"])
    regions = {table.GetValueByName(row, "Region").ToString() for row in range(table.GetNumberOfRows())}
    assert regions == {"Scar segment", "5-SD region", "FWHM region"}
    assert set(cnrSummary(outputs.readouts)) == {f"CNR scar/{tissue}, {region}" for tissue in ("myocardium", "blood pool")
                                                 for region in regions}
    assert outputs.enhancedVolume.GetName() == "lge enhanced"
    _assert_unchanged(before, _snapshot(volume, segmentation))


def test_enhance_writes_into_a_chosen_output_volume(scene, logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mine")
    outputs = logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST, outputVolumeNode=chosen)
    assert outputs.enhancedVolume is chosen and chosen.GetImageData() is not None
    with pytest.raises(InputError, match="must not be the input"):
        logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST, outputVolumeNode=volume)


def test_a_tissue_model_reads_the_corrected_blood_pool_and_myocardium_segments(scene, tiny_tissue_models, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    logic = ScarEnhanceLogic(pythonExecutable=sys.executable, modelsDir=tiny_tissue_models)
    first = slicer.util.arrayFromVolume(logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST).enhancedVolume).copy()
    corrected = labels.copy()
    corrected[1][labels[1] == 2] = 1  # the clinician calls one slice's wall blood pool: same ROI, other tissue maps
    edited = _segmentation_from(volume, corrected)
    second = slicer.util.arrayFromVolume(logic.enhance(volume, edited, ROI_SEGMENT_ID, FAST).enhancedVolume)
    np.testing.assert_array_equal(second[labels == 0], first[labels == 0])
    assert not np.allclose(second[labels > 0], first[labels > 0])
    roi_only = _segmentation_from(volume, np.zeros_like(labels))  # only the ROI segment is painted
    _importArray((labels > 0).astype(np.uint8), volume, roi_only, [ROI_SEGMENT_ID])
    with pytest.raises(JobFailed, match="blood pool .label 1. and the myocardium"):
        logic.enhance(volume, roi_only, ROI_SEGMENT_ID, FAST)


def _volume_count(scene) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") + scene.GetNumberOfNodesByClass("vtkMRMLTableNode")


def test_a_result_that_cannot_be_read_leaves_no_half_made_nodes(scene, logic, tmp_path, monkeypatch):
    volume, _ = _load_phantom(tmp_path)
    image = sitk.Image([8, 8, 2], sitk.sitkFloat32)
    for broken in ("enhanced.nrrd", "uncertainty.nrrd"):
        folder = tmp_path / broken
        folder.mkdir()
        for name in ("enhanced.nrrd", "uncertainty.nrrd"):
            sitk.WriteImage(image, str(folder / name))
        (folder / broken).write_bytes(b"not an image")
        (folder / "cnr.json").write_text("{}")
        before = scene.GetNumberOfNodes()
        with pytest.raises(RuntimeError, match=f"could not read the result .*{broken}"):
            logic._loadOutputs(folder, volume, None)
        assert scene.GetNumberOfNodes() == before
    (folder / "uncertainty.nrrd").write_bytes((folder / "enhanced.nrrd").read_bytes())
    (folder / "cnr.json").write_text("{")  # cut short
    with pytest.raises(ValueError):
        logic._loadOutputs(folder, volume, None)
    assert scene.GetNumberOfNodes() == before
    labels = sitk.GetImageFromArray(np.ones((2, 8, 8), np.uint8))
    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    before = scene.GetNumberOfNodes()

    def failing(*arguments):
        raise RuntimeError("the import failed half-way")
    monkeypatch.setattr("ScarEnhanceModuleLib.Logic._importArray", failing)
    with pytest.raises(RuntimeError, match="half-way"):
        logic._importLabels(tmp_path / "labels.nrrd", volume)
    assert scene.GetNumberOfNodes() == before  # no half-made segmentation, nor its display node


def test_cancel_stops_the_process_and_makes_no_nodes(scene, logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    count = _volume_count(scene)
    job = logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=4, steps=50))
    job.cancel()
    assert not job.isRunning()
    with pytest.raises(JobCancelled):
        job.result()
    assert _volume_count(scene) == count


def _work_dirs() -> set:
    return set(Path(tempfile.gettempdir()).glob("ScarEnhance-*"))


def test_bad_input_gets_a_clear_error_and_changes_nothing(scene, logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    before = _snapshot(volume, segmentation)
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    dirs = _work_dirs()
    count = _volume_count(scene)
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    empty.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    empty.GetSegmentation().AddEmptySegment("nothing", "nothing", [1, 0, 0])
    cases = [((None, segmentation), "no input volume"), ((volume, None), "no segmentation"),
             ((volume, segmentation, "Missing"), "no segment 'Missing'"), ((volume, empty, "nothing"), "empty"),
             ((volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=0)), "k must be"),
             ((volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(dilation_mm=-2)), "dilation")]
    for arguments, message in cases:
        with pytest.raises(InputError, match=message):
            logic.enhance(*arguments)
    with pytest.raises(InputError, match="not a grey-level volume"):
        logic.segmentHeart(label_node)
    assert _volume_count(scene) == count and _work_dirs() == dirs
    _assert_unchanged(before, _snapshot(volume, segmentation))


def test_a_failing_process_reports_its_error_and_logs_what_it_said(scene, tmp_path, caplog):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    logic = ScarEnhanceLogic(pythonExecutable=sys.executable, modelsDir=tmp_path / "no-models")
    with caplog.at_level(logging.INFO), pytest.raises(JobFailed, match="manifest"):
        logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    said = [r for r in caplog.records if r.getMessage().startswith("ScarEnhance: ")]
    assert any(r.getMessage().startswith("ScarEnhance: scarenhance: error:") and "manifest" in r.getMessage()
               for r in said)
    assert {r.threadName for r in said} == {threading.current_thread().name}  # Slicer's log handler calls Qt


def test_a_process_that_cannot_start_leaves_no_work_folder(scene, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    dirs = _work_dirs()
    logic = ScarEnhanceLogic(pythonExecutable=str(tmp_path / "no-such-python"))
    with pytest.raises(OSError):
        logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    with pytest.raises(OSError):
        logic.startSegmentHeart(volume)
    assert _work_dirs() == dirs


def test_a_segmentation_of_another_volume_is_refused(scene, logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    image, _ = make_phantom(PhantomSpec(matrix=112, slices=3, spacing_mm=1.4, seed=9))
    sitk.WriteImage(image, str(tmp_path / "other.nrrd"))
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "other")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "other.nrrd"))
    assert storage.ReadData(other)
    with pytest.raises(InputError, match="was made on 'lge', not on 'other'"):
        logic.startEnhance(other, segmentation, ROI_SEGMENT_ID, FAST)


def test_the_result_view_shows_the_same_plane_as_the_original(scene, tmp_path):
    """Yellow starts sagittal (Slicer's Conventional layout); both views end in the volume's acquisition plane."""
    from ScarEnhanceModuleLib.Logic import alignSliceViews
    volume, _ = _load_phantom(tmp_path)  # oblique: its slice normal is not an axis
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    red, yellow = slicer.vtkMRMLSliceNode(), slicer.vtkMRMLSliceNode()
    for node, orientation in ((red, "Axial"), (yellow, "Sagittal")):
        scene.AddNode(node)
        node.SetOrientation(orientation)
    alignSliceViews(red, yellow, volume)
    normal = lambda node: np.array([node.GetSliceToRAS().GetElement(row, 2) for row in range(3)])
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    slice_direction = np.array([ijk_to_ras.GetElement(row, 2) for row in range(3)])
    np.testing.assert_allclose(normal(yellow), normal(red), atol=1e-9)
    assert abs(np.dot(normal(red), slice_direction / np.linalg.norm(slice_direction))) > 0.999


def test_the_weights_licence_is_asked_for_once():
    from ScarEnhanceModuleLib.Logic import acceptWeightsLicence, weightsLicenceAccepted

    class Settings(dict):  # qt.QSettings' value/setValue
        def value(self, key, default=None):
            return self.get(key, default)

        def setValue(self, key, value):
            self[key] = value

    settings = Settings()
    assert not weightsLicenceAccepted(settings)
    acceptWeightsLicence(settings)
    assert weightsLicenceAccepted(settings) and "CC BY-NC-SA 4.0" in settings.values()


def _launcher(tmp_path: Path) -> Path:
    """A stand-in for Slicer's PythonSlicer: a parent process that runs the interpreter as its child and
    forwards no signal (CTKAppLauncher runs python-real through QProcess)."""
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                        f"sys.exit(subprocess.call([{sys.executable!r}] + sys.argv[1:]))\n")
    launcher.chmod(0o755)
    return launcher


def _process_tree(pid: int) -> set:
    """``pid`` and every process below it that is still alive (not a zombie), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid} & set(parents), True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | below, bool(below)
    return tree


def _gone_within(processes: set, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(Path(f"/proc/{pid}").exists() and pid in _process_tree(pid) for pid in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _started_long_job(logic, tmp_path):
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    job = logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=8, steps=250, sampler="ddpm"))
    deadline = time.monotonic() + 120
    while job.progress == 0 and job.isRunning() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.isRunning() and job.progress > 0, job.output()
    return job


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_cancel_behind_a_launcher_leaves_no_process_and_no_file(scene, tiny_models, tmp_path):
    logic = ScarEnhanceLogic(pythonExecutable=str(_launcher(tmp_path)), modelsDir=tiny_models)
    job = _started_long_job(logic, tmp_path)
    work = job._workDir
    processes = _process_tree(logic.worker._process.pid)
    assert len(processes) == 2  # the launcher and the interpreter it started
    job.cancel()
    assert _gone_within(processes, 5)
    with pytest.raises(JobCancelled):
        job.result()
    time.sleep(1)  # nothing may write the folder again
    assert not Path(work).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_the_computation_stops_when_slicer_goes_away(scene, tiny_models, tmp_path):
    """Slicer exiting or crashing closes the worker's stdin; the interpreter behind the launcher then stops too."""
    logic = ScarEnhanceLogic(pythonExecutable=str(_launcher(tmp_path)), modelsDir=tiny_models)
    job = _started_long_job(logic, tmp_path)
    launcher = logic.worker._process
    processes = _process_tree(launcher.pid)
    launcher.stdin.close()  # what the operating system does when Slicer's process ends
    os.kill(launcher.pid, signal.SIGKILL)  # the launcher dies; its child is not told
    assert _gone_within(processes, 5)
    shutil.rmtree(job._workDir, ignore_errors=True)


def test_the_worker_stays_between_jobs_and_a_cancelled_one_is_replaced(scene, tiny_models, tmp_path):
    logic = ScarEnhanceLogic(pythonExecutable=sys.executable, modelsDir=tiny_models)
    volume, labels = _load_phantom(tmp_path)
    segmentation = _segmentation_from(volume, labels)
    logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    worker = logic.worker._process.pid
    logic.segmentHeart(volume)
    second = logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    assert logic.worker._process.pid == worker  # one process: imports and models loaded once
    running = logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=8, steps=250,
                                                                                         sampler="ddpm"))
    dirs = _work_dirs()
    with pytest.raises(RuntimeError, match="still running"):
        logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, FAST)
    assert _work_dirs() == dirs  # the refused job left no folder
    running.cancel()
    with pytest.raises(JobCancelled):
        running.result()
    assert _gone_within({worker}, 5)
    third = logic.enhance(volume, segmentation, ROI_SEGMENT_ID, FAST)  # a new worker after the cancel
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(third.enhancedVolume),
                                  slicer.util.arrayFromVolume(second.enhancedVolume))  # same seed, same result
    replacement = logic.worker._process.pid
    assert replacement != worker
    logic.stopWorker()  # module reload, Slicer exit
    assert _gone_within({replacement}, 5) and not logic.worker.isAlive()
