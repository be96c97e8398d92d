"""ScarEnhance logic over MRML nodes, usable from the Python console without the GUI:

    logic = ScarEnhanceLogic()
    segmentation = logic.segmentHeart(volume)
    outputs = logic.enhance(volume, segmentation, "HeartROI")

No Qt here: the work runs in a background process (``Process.py``) that the logic keeps between jobs, with
its models loaded (``stopWorker`` ends it); ``start...`` methods return the job for a GUI to poll, the plain
methods wait for it. Input nodes are never modified: volumes and
segments are written to a temporary folder, and every result is a new node (or the output volume
the caller chose).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import slicer
import vtk
from ScarEnhanceLib.parameters import EnhanceParameters, InputError

from . import Dependencies
from .Process import BackgroundJob, Worker, defaultPythonExecutable

# (segment ID, name, label value in ScarEnhanceLib, colour) of the tissue classes the segmentation predicts.
CLASS_SEGMENTS = (
    ("BloodPool", "Blood pool", 1, (0.85, 0.25, 0.25)),
    ("Myocardium", "Myocardium", 2, (0.80, 0.60, 0.45)),
    ("Scar", "Scar", 3, (1.00, 0.90, 0.15)),
)
ROI_SEGMENT_ID = "HeartROI"
ROI_SEGMENT_NAME = "Heart ROI"
ROI_COLOR = (0.25, 0.80, 0.35)


def _terminology(category: str, segmentType: str, region: str = "^^") -> str:
    """A segment's terminology entry in Slicer's tag format (contexts and codes of the DICOM master lists that
    Slicer 5.8 ships; Modules/Loadable/Terminologies/Resources). Slicer matches the codes, not the meanings."""
    return (f"Segmentation category and type - DICOM master list~{category}~{segmentType}~^^"
            f"~Anatomic codes - DICOM master list~{region}~^^")


_ANATOMY, _TISSUE = "SCT^123037004^Anatomical Structure", "SCT^85756007^Tissue"
_LEFT_VENTRICLE = "SCT^87878005^Left ventricle"
# Slicer's lists have no blood-pool, myocardium or infarct type: the closest ones, the ventricle as the region
TERMINOLOGY = {
    "BloodPool": _terminology(_ANATOMY, _LEFT_VENTRICLE),
    "Myocardium": _terminology(_TISSUE, "SCT^71616004^Muscle", _LEFT_VENTRICLE),
    "Scar": _terminology(_TISSUE, "SCT^12402003^Scar tissue", _LEFT_VENTRICLE),
    ROI_SEGMENT_ID: _terminology(_ANATOMY, "SCT^80891009^Heart"),
}
CNR_ROWS = (("cnr_scar_myo", "CNR scar/myocardium"), ("cnr_scar_blood", "CNR scar/blood pool"))
# cnr.json regions: where each readout is read (the Scar segment, and threshold regions that rest on no scar label)


@dataclass
class EnhanceOutputs:
    enhancedVolume: object  # vtkMRMLScalarVolumeNode
    uncertaintyVolume: object  # vtkMRMLScalarVolumeNode
    cnrTable: object  # vtkMRMLTableNode
    readouts: dict  # cnr.json of the command line


class ScarEnhanceLogic:
    def __init__(self, pythonExecutable: Optional[str] = None, modelsDir: Optional[Path] = None):
        self.pythonExecutable = pythonExecutable or defaultPythonExecutable()
        self.modelsDir = modelsDir  # None: the bundled models
        self.worker = Worker(self.pythonExecutable)

    def stopWorker(self) -> None:
        """End the background process and the job it runs (module reload, Slicer exit); the next job starts it."""
        self.worker.stop()

    # ------------------------------------------------------------------ heart segmentation
    def segmentHeart(self, volumeNode, device: str = "auto"):
        """A new segmentation node with the blood pool, myocardium, scar and heart ROI segments of ``volumeNode``
        (waits for the result). Always a new node: a segmentation the user has corrected is never overwritten."""
        return self.startSegmentHeart(volumeNode, device).wait()

    def startSegmentHeart(self, volumeNode, device: str = "auto") -> BackgroundJob:
        self._checkVolume(volumeNode)
        workDir = workFolder()
        try:
            _writeVolume(volumeNode, workDir / "image.nrrd")
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        arguments = ["segment", str(workDir / "image.nrrd"), "-o", str(workDir / "labels.nrrd"), "--device", device,
                     *self._modelArguments()]

        def loadSegmentation():
            return self._importLabels(workDir / "labels.nrrd", volumeNode)

        return self._startJob(arguments, loadSegmentation, workDir)

    def _importLabels(self, labelsPath: Path, volumeNode):
        scene = slicer.mrmlScene
        with _temporaryLabelmap() as labelmap, _removedOnFailure() as created:
            _readVolume(labelsPath, labelmap)
            segmentationNode = created.add(scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{volumeNode.GetName()} heart")))
            segmentationNode.CreateDefaultDisplayNodes()
            segmentation = segmentationNode.GetSegmentation()
            for segmentId, name, _, color in CLASS_SEGMENTS + ((ROI_SEGMENT_ID, ROI_SEGMENT_NAME, None, ROI_COLOR),):
                segmentation.AddEmptySegment(segmentId, name, list(color))
                segment = segmentation.GetSegment(segmentId)
                segment.SetTag(segment.GetTerminologyEntryTagName(), TERMINOLOGY[segmentId])
            labels = slicer.util.arrayFromVolume(labelmap)
            _importArray(labels, labelmap, segmentationNode, [segment[0] for segment in CLASS_SEGMENTS])
            _importArray((labels > 0).astype(np.uint8), labelmap, segmentationNode, [ROI_SEGMENT_ID])
        segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        # after the transform: the reference grid is given in the segmentation's own coordinates, and would be moved
        # by the volume's transform while the segmentation had none (the labels were imported untransformed)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        return segmentationNode

    # ------------------------------------------------------------------ enhancement
    def enhance(self, volumeNode, segmentationNode, roiSegmentId: str = ROI_SEGMENT_ID,
                parameters: EnhanceParameters = EnhanceParameters(), outputVolumeNode=None) -> EnhanceOutputs:
        """Enhanced volume, uncertainty volume and CNR table (waits for the result)."""
        return self.startEnhance(volumeNode, segmentationNode, roiSegmentId, parameters, outputVolumeNode).wait()

    def startEnhance(self, volumeNode, segmentationNode, roiSegmentId: str = ROI_SEGMENT_ID,
                     parameters: EnhanceParameters = EnhanceParameters(), outputVolumeNode=None) -> BackgroundJob:
        self._checkVolume(volumeNode)
        parameters = parameters.validate()
        if outputVolumeNode is not None and outputVolumeNode is volumeNode:
            raise InputError("the output volume must not be the input volume: choose another or a new volume")
        self._checkSegmentationBelongsTo(segmentationNode, volumeNode)
        roi = self._roiMask(volumeNode, segmentationNode, roiSegmentId)
        workDir = workFolder()
        try:
            _writeVolume(volumeNode, workDir / "image.nrrd")
            _writeArray(roi.astype(np.uint8), volumeNode, workDir / "roi.nrrd")
            _writeArray(self._classLabels(volumeNode, segmentationNode), volumeNode, workDir / "labels.nrrd")
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        output = workDir / "output"
        arguments = ["enhance", str(workDir / "image.nrrd"), "--labels", str(workDir / "labels.nrrd"),
                     "--roi", str(workDir / "roi.nrrd"), "-o", str(output), "--format", "nrrd", "--no-report",
                     *parameters.command_line(), *self._modelArguments()]

        def loadOutputs():
            return self._loadOutputs(output, volumeNode, outputVolumeNode)

        return self._startJob(arguments, loadOutputs, workDir)

    @staticmethod
    def _checkSegmentationBelongsTo(segmentationNode, volumeNode) -> None:
        """A segmentation made on another volume would be resampled onto this one without a word: refuse it."""
        if segmentationNode is None:
            return
        reference = segmentationNode.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        if reference is not None and reference is not volumeNode and not _sameGeometry(reference, volumeNode):
            raise InputError(f"the segmentation {segmentationNode.GetName()!r} was made on {reference.GetName()!r}, "
                             f"not on {volumeNode.GetName()!r}: segment this volume or choose its segmentation")

    def _roiMask(self, volumeNode, segmentationNode, roiSegmentId: str) -> np.ndarray:
        if segmentationNode is None:
            raise InputError("no segmentation: segment the heart first, or choose a segmentation with the heart ROI")
        if not roiSegmentId or segmentationNode.GetSegmentation().GetSegment(roiSegmentId) is None:
            raise InputError(f"the segmentation {segmentationNode.GetName()!r} has no segment {roiSegmentId!r}")
        roi = _segmentArray(segmentationNode, roiSegmentId, volumeNode)
        if not roi.any():
            raise InputError("the heart ROI segment is empty: segment the heart or paint the ROI first")
        return roi

    def _classLabels(self, volumeNode, segmentationNode) -> np.ndarray:
        """Label map (1 blood pool, 2 myocardium, 3 scar) of the class segments there are, as the user corrected
        them: the CNR readouts are read in it, and a tissue-conditioned model sees its blood pool and wall."""
        labels = np.zeros(slicer.util.arrayFromVolume(volumeNode).shape, dtype=np.uint8)
        segmentation = segmentationNode.GetSegmentation()
        for segmentId, name, value, _ in CLASS_SEGMENTS:
            found = segmentId if segmentation.GetSegment(segmentId) is not None else \
                segmentation.GetSegmentIdBySegmentName(name)
            if found:
                labels[_segmentArray(segmentationNode, found, volumeNode)] = value
        return labels

    def _loadOutputs(self, folder: Path, volumeNode, outputVolumeNode) -> EnhanceOutputs:
        scene = slicer.mrmlScene
        name = volumeNode.GetName()
        readouts = json.loads((folder / "cnr.json").read_text())  # before any node: a bad file leaves none
        with _removedOnFailure() as created:
            if outputVolumeNode is None:
                outputVolumeNode = created.add(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                                       scene.GenerateUniqueName(f"{name} enhanced")))
            _readVolume(folder / "enhanced.nrrd", outputVolumeNode)
            uncertainty = created.add(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                              scene.GenerateUniqueName(f"{name} uncertainty")))
            _readVolume(folder / "uncertainty.nrrd", uncertainty)
            table = created.add(self.cnrTable(readouts, scene.GenerateUniqueName(f"{name} CNR")))
        for node in (outputVolumeNode, uncertainty):
            node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return EnhanceOutputs(outputVolumeNode, uncertainty, table, readouts)

    @staticmethod
    def cnrTable(readouts: dict, name: str = "CNR"):
        """A table node: one row per readout and region, original and enhanced (NaN where a region is empty)."""
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        columns = {"Readout": vtk.vtkStringArray(), "Region": vtk.vtkStringArray(), "Original": vtk.vtkDoubleArray(),
                   "Enhanced": vtk.vtkDoubleArray()}
        for columnName, column in columns.items():
            column.SetName(columnName)
        for label, region, original, enhanced in readoutRows(readouts):
            columns["Readout"].InsertNextValue(label)
            columns["Region"].InsertNextValue(region)
            columns["Original"].InsertNextValue(_number(original))
            columns["Enhanced"].InsertNextValue(_number(enhanced))
        for column in columns.values():
            table.AddColumn(column)
        return table

    # ------------------------------------------------------------------ checks and helpers
    @staticmethod
    def _checkVolume(volumeNode) -> None:
        if volumeNode is None:
            raise InputError("no input volume: choose the LGE volume")
        if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"{volumeNode.GetName()!r} is not a grey-level volume")
        if volumeNode.GetImageData() is None:
            raise InputError(f"{volumeNode.GetName()!r} has no voxels")
        dimensions = volumeNode.GetImageData().GetDimensions()
        if sorted(dimensions)[1] < 16:
            raise InputError(f"{volumeNode.GetName()!r} is not a 3D LGE stack (dimensions {dimensions})")

    @staticmethod
    def gpuAvailable() -> bool:
        """An NVIDIA driver and a CUDA build of torch (checked without importing torch into Slicer's process)."""
        return Dependencies.gpuAvailable()

    def _modelArguments(self) -> List[str]:
        return ["--models", str(self.modelsDir)] if self.modelsDir is not None else []

    def _startJob(self, arguments: List[str], onSuccess, workDir: Path) -> BackgroundJob:
        """The job, run by the worker; if the worker cannot even start, the work folder (patient data) goes at once."""
        try:
            return self.worker.submit(arguments, onSuccess, workDir)
        except Exception:
            shutil.rmtree(workDir, ignore_errors=True)
            raise


def workFolder() -> Path:
    """A new folder for a job's files, under Slicer's temporary folder where Slicer has one."""
    application = getattr(slicer, "app", None)
    parent = getattr(application, "temporaryPath", None) if application is not None else None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="ScarEnhance-", dir=parent or None))


def _sameGeometry(a, b, tolerance: float = 1e-4) -> bool:
    """Two volumes on the same voxel grid (dimensions and IJK-to-RAS matrix)."""
    if a.GetImageData() is None or b.GetImageData() is None:
        return False
    if a.GetImageData().GetDimensions() != b.GetImageData().GetDimensions():
        return False
    first, second = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(first)
    b.GetIJKToRASMatrix(second)
    return all(abs(first.GetElement(r, c) - second.GetElement(r, c)) <= tolerance for r in range(4) for c in range(4))


def alignSliceViews(leadingSliceNode, followingSliceNode, volumeNode) -> None:
    """Both views in the volume's acquisition plane: the leading view rotates to it, the following one takes
    its orientation (rotating each on its own picks the plane nearest to each view's current one, which for a
    sagittal Yellow view is a cut across the slices)."""
    leadingSliceNode.RotateToVolumePlane(volumeNode)
    followingSliceNode.GetSliceToRAS().DeepCopy(leadingSliceNode.GetSliceToRAS())
    followingSliceNode.UpdateMatrices()


WEIGHTS_LICENCE_SETTING = "ScarEnhance/AcceptedWeightsLicence"
WEIGHTS_LICENCE = "CC BY-NC-SA 4.0"


def weightsLicenceAccepted(settings) -> bool:
    """Whether the user has accepted the bundled weights' licence (kept in Slicer's settings: asked once)."""
    return str(settings.value(WEIGHTS_LICENCE_SETTING, "")) == WEIGHTS_LICENCE


def acceptWeightsLicence(settings) -> None:
    settings.setValue(WEIGHTS_LICENCE_SETTING, WEIGHTS_LICENCE)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _writeVolume(volumeNode, path: Path) -> None:
    """Write with a storage node of our own: the node's own storage and modified state stay as they were."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volumeNode):
        raise RuntimeError(f"could not write {volumeNode.GetName()!r} to {path}")


def _readVolume(path: Path, volumeNode) -> None:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(volumeNode):
        raise RuntimeError(f"could not read the result {path}")


class _CreatedNodes(list):
    def add(self, node):
        self.append(node)
        return node


@contextmanager
def _removedOnFailure():
    """The nodes ``add``ed inside the block leave the scene again if it fails: no half-made results."""
    created = _CreatedNodes()
    try:
        yield created
    except Exception:
        for node in created:
            display = node.GetDisplayNode() if hasattr(node, "GetDisplayNode") else None  # a table has none
            if display is not None:
                slicer.mrmlScene.RemoveNode(display)
            slicer.mrmlScene.RemoveNode(node)
        raise


@contextmanager
def _temporaryLabelmap(array: Optional[np.ndarray] = None, geometry=None):
    """A labelmap node, removed from the scene afterwards; holding ``array`` on ``geometry``'s grid if given."""
    labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        if array is not None:
            slicer.util.updateVolumeFromArray(labelmap, array)
            labelmap.CopyOrientation(geometry)
        yield labelmap
    finally:
        slicer.mrmlScene.RemoveNode(labelmap)


def _writeArray(array: np.ndarray, referenceVolume, path: Path) -> None:
    """A label array on the reference volume's grid, written as a labelmap file."""
    with _temporaryLabelmap(array, referenceVolume) as labelmap:
        _writeVolume(labelmap, path)


def _segmentArray(segmentationNode, segmentId: str, referenceVolume) -> np.ndarray:
    """Boolean mask of one segment on the reference volume's voxel grid."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentId)
    with _temporaryLabelmap() as labelmap:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmap, referenceVolume):
            raise RuntimeError(f"could not export segment {segmentId!r}")
        return slicer.util.arrayFromVolume(labelmap) > 0


def _importArray(array: np.ndarray, geometry, segmentationNode, segmentIds: List[str]) -> None:
    """Label value i + 1 of ``array`` (on ``geometry``'s grid) into segment ``segmentIds[i]``."""
    ids = vtk.vtkStringArray()
    for segmentId in segmentIds:
        ids.InsertNextValue(segmentId)
    with _temporaryLabelmap(array, geometry) as labelmap:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentationNode, ids):
            raise RuntimeError("could not import the heart labels into the segmentation")


def readoutRows(readouts: dict) -> List[tuple]:
    """(readout, region, original, enhanced) of every readout in cnr.json, CNRs first."""
    rows = []
    for region in readouts["regions"].values():
        volume = region["volume"]
        rows += [(label, region["name"], volume[f"{key}_original"], volume[f"{key}_enhanced"]) for key, label in CNR_ROWS]
    for region in readouts["regions"].values():
        burden = region["burden_percent"]
        rows.append(("scar % of myocardium", region["name"], burden["original"], burden["enhanced"]))
    return rows


def cnrSummary(readouts: dict) -> Dict[str, str]:
    """Readable 'before -> after' text per CNR readout and region, for the panel."""
    def text(value):
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"

    return {f"{label}, {region}": f"{text(original)} \u2192 {text(enhanced)}"
            for label, region, original, enhanced in readoutRows(readouts) if label.startswith("CNR")}
