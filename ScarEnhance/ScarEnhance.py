"""ScarEnhance: myocardial scar enhancement in LGE cardiac MR by localized partial diffusion.

The module is a thin shell: the work is done by ScarEnhanceLib (pure Python) in a background
process, driven by ``ScarEnhanceModuleLib.Logic`` over MRML nodes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional


def _addLibraryPath() -> None:
    """ScarEnhanceLib lies beside this file once built, and one folder up in the source tree."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "ScarEnhanceLib").is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
            return


_addLibraryPath()

import qt  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.i18n import translate  # noqa: E402
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,  # noqa: E402
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin  # noqa: E402

from ScarEnhanceLib import README_FILE  # noqa: E402
from ScarEnhanceLib.parameters import SAMPLERS, EnhanceParameters, estimated_seconds  # noqa: E402
from ScarEnhanceModuleLib import Dependencies  # noqa: E402
from ScarEnhanceModuleLib.Logic import ROI_SEGMENT_ID, ROI_SEGMENT_NAME, cnrSummary  # noqa: E402
from ScarEnhanceModuleLib.Logic import ScarEnhanceLogic as MRMLLogic  # noqa: E402

SLOW_RUN_SECONDS = 60


class ScarEnhance(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ScarEnhance")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Cardiac")]
        self.parent.dependencies = ["Segmentations", "SegmentEditor"]  # Edit ROI opens Segment Editor
        self.parent.contributors = []  # no public repository or contributor list yet (see CMakeLists.txt)
        self.parent.helpText = _(
            "Makes myocardial scar easier to see in late gadolinium enhancement (LGE) MR: segment the heart, "
            "correct the heart ROI in Segment Editor, and get an enhanced copy of the volume with CNR readouts "
            "before and after. Method: localized partial diffusion (MICCAI 2024). "
            '<a href="{readme}">Documentation (the README installed with the module)</a>.').format(
                readme=README_FILE.as_uri())
        self.parent.acknowledgementText = _(
            "Bundled models were trained on EMIDEC (CC BY-NC-SA 4.0, Lalande et al., Data 2020), MS-CMRSeg 2019 "
            "LGE (Zhuang, TPAMI 2019) and MyoPS 2020 (Zhuang, MICCAI 2016; Li et al., Medical Image Analysis 2023); "
            "they are for research, not for diagnosis.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The bundled sample (EMIDEC P050, a held-out case) in Slicer's Sample Data module, read from the
    extension's own files (no download)."""
    import SampleData
    from ScarEnhanceLib.sample import SAMPLE_IMAGE
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="ScarEnhance", sampleName="ScarEnhanceSampleLGE", uris=SAMPLE_IMAGE.as_uri(),
        fileNames=SAMPLE_IMAGE.name, nodeNames="ScarEnhance sample LGE",
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "ScarEnhance.png"),
        loadFileType="VolumeFile")


@parameterNodeWrapper
class ScarEnhanceParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    roiSegmentId: str = ROI_SEGMENT_ID
    dilationMm: Annotated[float, WithinRange(0.0, 30.0)] = EnhanceParameters.dilation_mm
    sampler: Annotated[str, Choice(list(SAMPLERS))] = EnhanceParameters.sampler
    steps: Annotated[int, WithinRange(1, 250)] = EnhanceParameters.steps
    lam: Annotated[int, WithinRange(1, 1000)] = EnhanceParameters.lam
    k: Annotated[int, WithinRange(1, 64)] = EnhanceParameters.k
    device: Annotated[str, Choice(Dependencies.deviceChoices())] = EnhanceParameters.device
    seed: Annotated[int, WithinRange(0, 1000000)] = EnhanceParameters.seed
    outputVolume: vtkMRMLScalarVolumeNode

    def enhanceParameters(self) -> EnhanceParameters:
        return EnhanceParameters(sampler=self.sampler, lam=self.lam, steps=self.steps, k=self.k,
                                 dilation_mm=self.dilationMm, seed=self.seed, device=self.device)


class ScarEnhanceLogic(ScriptedLoadableModuleLogic, MRMLLogic):
    """The MRML logic with Slicer's parameter node; see ScarEnhanceModuleLib.Logic for the methods."""

    def __init__(self, pythonExecutable: Optional[str] = None, modelsDir: Optional[Path] = None):
        ScriptedLoadableModuleLogic.__init__(self)
        MRMLLogic.__init__(self, pythonExecutable, modelsDir)

    def getParameterNode(self) -> ScarEnhanceParameterNode:
        return ScarEnhanceParameterNode(super().getParameterNode())


def ensureWeightsLicence() -> bool:
    """Ask once (remembered in Slicer's settings) for consent to the bundled weights' non-commercial licence, as
    the Extensions Index asks for non-permissive components; False if the user declines."""
    from ScarEnhanceModuleLib.Logic import acceptWeightsLicence, weightsLicenceAccepted
    settings = qt.QSettings()
    if weightsLicenceAccepted(settings):
        return True
    if not slicer.util.confirmOkCancelDisplay(
            _("The bundled models were trained on EMIDEC data and are licensed CC BY-NC-SA 4.0: non-commercial "
              "research use, with attribution (Lalande et al., Data 2020), results shared alike. They are not for "
              "diagnosis. Do you accept these terms?"), windowTitle=_("ScarEnhance model licence")):
        return False
    acceptWeightsLicence(settings)
    return True


def ensureDependencies(ask: bool = True) -> bool:
    """Install what ScarEnhanceLib needs into Slicer's Python, after asking; False if the user declines."""
    missing = Dependencies.missingRequirements()
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
            _("ScarEnhance needs these Python packages, which will be downloaded and installed now "
              "(a few minutes, about 1-3 GB with PyTorch):\n\n") + "\n".join(missing)):
        return False

    def installTorch(requirement: str) -> bool:
        try:
            import PyTorchUtils
        except ImportError:
            return False  # the PyTorch extension is not installed: plain pip
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=requirement.replace("torch", "")) is not None

    with slicer.util.WaitCursor():
        Dependencies.installRequirements(missing, slicer.util.pip_install, installTorch)
    return True


class ScarEnhanceWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic: Optional[ScarEnhanceLogic] = None) -> None:
        # Everything setup() uses exists before the base class runs it (it does so when parent is None).
        self.logic = logic  # injected in tests; made in setup otherwise
        self._parameterNode: Optional[ScarEnhanceParameterNode] = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobKind = None  # "segment" or "enhance": whose button is the Cancel
        self._installing = False  # pip is running (on the GUI thread, pumping events)
        self._onJobDone = None
        self._timer = qt.QTimer()
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._pollJob)
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ScarEnhance.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or ScarEnhanceLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentHeartButton.connect("clicked(bool)", self.onSegmentHeart)
        self.ui.editRoiButton.connect("clicked(bool)", self.onEditRoi)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._showSegmentsOf)
        self.ui.roiSegmentSelector.connect("currentSegmentChanged(QString)", self._onRoiSegmentChanged)
        self.ui.roiSegmentSelector.noneEnabled = False
        self.ui.roiSegmentSelector.segmentationNodeSelectorVisible = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module reload or Slicer exit: the job and the background process (which keeps the models) end."""
        self._cancelJob()
        if self.logic is not None:
            self.logic.stopWorker()
        self.removeObservers()

    def _cancelJob(self) -> None:
        """Stop the running job, its processes and its polling (module reload, scene close, Slicer exit)."""
        self._timer.stop()
        job, self._job = self._job, None
        if job is not None:
            job.cancel()
            try:
                job.result()  # removes its work folder
            except Exception:
                pass

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()  # its results would land in the next scene
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        node = self.logic.getParameterNode()
        if node.device not in Dependencies.deviceChoices():
            node.device = "auto"  # a scene saved where CUDA is offered, opened on macOS: the GUI cannot show it
        self.setParameterNode(node)
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = firstGreyLevelVolume()

    def setParameterNode(self, inputParameterNode: Optional[ScarEnhanceParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateSegmentSelector()
            self._updateButtons()

    # ------------------------------------------------------------------ GUI state
    def _updateSegmentSelector(self) -> None:
        self._showSegmentsOf(self._parameterNode.segmentation if self._parameterNode else None)

    def _showSegmentsOf(self, segmentation) -> None:
        """The segment selector follows the segmentation selector (the signal passes the new node). The ROI
        segment is read first and the selector's signals held: given a new node, the selector picks its first
        segment (Blood pool) and would write that into the parameter node as the ROI."""
        segmentId = self._parameterNode.roiSegmentId if self._parameterNode else ""
        wasBlocked = self.ui.roiSegmentSelector.blockSignals(True)
        try:
            self.ui.roiSegmentSelector.setCurrentNode(segmentation)
            if segmentation and not (segmentId and segmentation.GetSegmentation().GetSegment(segmentId)):
                segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName(ROI_SEGMENT_NAME) or segmentId
            if segmentation and segmentId and segmentation.GetSegmentation().GetSegment(segmentId):
                self.ui.roiSegmentSelector.setCurrentSegmentID(segmentId)
        finally:
            self.ui.roiSegmentSelector.blockSignals(wasBlocked)
        shown = self.ui.roiSegmentSelector.currentSegmentID()
        if self._parameterNode and shown and shown != self._parameterNode.roiSegmentId:
            self._rememberRoi(segmentation, shown)

    def _rememberRoi(self, segmentation, segmentId: str) -> None:
        """The segmentation lacks the remembered ROI segment: remember the one shown, and say so; in a dialog where
        the ROI segment went from the segmentation it was in (deleted in Segment Editor), as the ROI is then most
        likely another tissue's segment. The segmentation is written with it, at once: the parameter node's change
        rewrites every widget from the node, and would set the segmentation selector back to the node it held."""
        previous, lostId = self._parameterNode.segmentation, self._parameterNode.roiSegmentId
        lost = bool(lostId) and previous is not None and previous.GetID() == segmentation.GetID()
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.segmentation = segmentation
            self._parameterNode.roiSegmentId = segmentId
        name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
        if lost:
            slicer.util.warningDisplay(
                _("The heart ROI segment ({lost}) is no longer in '{segmentation}'. The ROI is now its segment "
                  "'{segment}': choose the ROI segment before enhancing.").format(
                    lost=lostId, segmentation=segmentation.GetName(), segment=name), windowTitle=_("ScarEnhance"))
            return
        message = _("ScarEnhance: the heart ROI is now the segment '{segment}' of '{segmentation}': check it before "
                    "enhancing").format(segment=name, segmentation=segmentation.GetName())
        slicer.util.showStatusMessage(message, 10000)

    def _onRoiSegmentChanged(self, segmentId: str) -> None:
        # only the user's choice while the module is shown: a segment deleted in Segment Editor makes the selector
        # pick the first one left, which must not silently become the ROI
        if self._parameterNode and segmentId and self.parent.isEntered:
            self._parameterNode.roiSegmentId = segmentId

    def _updateButtons(self, *_unused) -> None:
        node = self._parameterNode
        busy = self._job is not None or self._installing
        running = self._job is not None
        segmenting, enhancing = running and self._jobKind == "segment", running and self._jobKind == "enhance"
        hasVolume = bool(node and node.inputVolume)
        hasRoi = bool(hasVolume and node.segmentation and node.roiSegmentId)
        # each running job's own button turns into its Cancel; the other buttons wait
        self.ui.segmentHeartButton.enabled = segmenting or (hasVolume and not busy)
        self.ui.segmentHeartButton.text = _("Cancel") if segmenting else _("Segment heart")
        self.ui.editRoiButton.enabled = hasRoi and not busy
        self.ui.applyButton.enabled = enhancing or (hasRoi and not busy)
        self.ui.applyButton.text = _("Cancel") if enhancing else _("Enhance")
        for selector in (self.ui.inputVolumeSelector, self.ui.segmentationSelector, self.ui.roiSegmentSelector):
            selector.enabled = not busy  # a job's results belong to the inputs it started with

    # ------------------------------------------------------------------ actions
    def _readyToRun(self) -> bool:
        """Consent to the weights' licence and the Python packages, asked for before any wait cursor. The buttons
        are off while pip runs: it pumps Qt events, and a second click would start a second installation."""
        if not ensureWeightsLicence():
            self.ui.statusLabel.text = _("Not started: the models' licence was not accepted.")
            return False
        ready = False
        self._installing = True
        self._updateButtons()
        try:
            with slicer.util.tryWithErrorDisplay(_("Installing the Python packages ScarEnhance needs failed.")):
                ready = ensureDependencies()
                if not ready:
                    self.ui.statusLabel.text = _("Not started: the Python packages ScarEnhance needs are not "
                                                 "installed.")
        finally:
            self._installing = False
            self._updateButtons()
        return ready

    def onSegmentHeart(self) -> None:
        if self._job is not None:
            self._job.cancel()
            return
        if not self._readyToRun():
            return
        with slicer.util.tryWithErrorDisplay(_("Heart segmentation failed."), waitCursor=True):
            node = self._parameterNode
            volume = node.inputVolume
            job = self.logic.startSegmentHeart(volume, device=node.device)
            self._runJob(job, "segment", _("Segmenting the heart"),
                         lambda segmentation: self._showSegmentation(volume, segmentation))

    def _showSegmentation(self, volume, segmentation) -> None:
        """Select the new segmentation, unless the panel has moved on to another volume meanwhile (a script or
        another module can change the parameter node while the job runs)."""
        if self._parameterNode.inputVolume is not volume:
            self.ui.statusLabel.text = _("Heart of '{volume}' segmented as '{segmentation}' (not selected: the panel "
                                         "shows another volume now).").format(volume=volume.GetName(),
                                                                              segmentation=segmentation.GetName())
            return
        self._parameterNode.segmentation = segmentation
        self._parameterNode.roiSegmentId = ROI_SEGMENT_ID
        self._updateSegmentSelector()
        self.ui.statusLabel.text = _("Heart segmented. Check the Heart ROI segment and correct it if needed.")

    def onEditRoi(self) -> None:
        node = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(node.segmentation)
        editor.setSourceVolumeNode(node.inputVolume)
        editor.setCurrentSegmentID(node.roiSegmentId)
        # Segment Editor overwrites all other segments by default: painting the ROI would erase Blood pool,
        # Myocardium and Scar under the brush, which the readouts use.
        editor.mrmlSegmentEditorNode().SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
        slicer.util.showStatusMessage(_("ScarEnhance: Segment Editor set to let segments overlap, so editing the "
                                        "Heart ROI leaves the tissue segments alone."), 5000)

    def onApply(self) -> None:
        if self._job is not None:
            self._job.cancel()
            return
        node, parameters = self._parameterNode, None
        with slicer.util.tryWithErrorDisplay(_("Enhancement failed to start.")):
            parameters = node.enhanceParameters().validate()
        if parameters is None or not self._confirmSlowRun(parameters) or not self._readyToRun():
            return
        with slicer.util.tryWithErrorDisplay(_("Enhancement failed to start."), waitCursor=True):
            original, segmentation = node.inputVolume, node.segmentation
            job = self.logic.startEnhance(original, segmentation, node.roiSegmentId, parameters, node.outputVolume)
            self._runJob(job, "enhance", _("Enhancing"),
                         lambda outputs: self._showOutputs(original, segmentation, outputs))

    def _confirmSlowRun(self, parameters: EnhanceParameters) -> bool:
        dimensions = self._parameterNode.inputVolume.GetImageData().GetDimensions()
        onGpu = parameters.device != "cpu" and self.logic.gpuAvailable()
        seconds = estimated_seconds(min(dimensions), parameters, onGpu)
        if seconds < SLOW_RUN_SECONDS:
            return True
        return slicer.util.confirmOkCancelDisplay(
            _("This will take about {minutes} minutes on the {device}. Fewer samples (k) or steps make it faster. "
              "Continue?").format(minutes=max(1, round(seconds / 60)), device="GPU" if onGpu else "CPU"))

    def _showOutputs(self, original, segmentation, outputs) -> None:
        """The results beside the volume and with the segmentation they were computed from."""
        enhanced = outputs.enhancedVolume
        for node in (enhanced, outputs.uncertaintyVolume):
            node.CreateDefaultDisplayNodes()
        source = original.GetDisplayNode()
        if source is not None:
            enhanced.GetDisplayNode().SetAutoWindowLevel(False)
            enhanced.GetDisplayNode().SetWindowLevel(source.GetWindow(), source.GetLevel())
        shown = showSideBySide(original, enhanced)
        if segmentation is not None and segmentation.GetDisplayNode() is not None:
            segmentation.GetDisplayNode().SetVisibility2DFill(False)  # outlines only: the fill would cover the scar
        rows = cnrSummary(outputs.readouts)
        self.ui.cnrLabel.text = "<table>" + "".join(
            f"<tr><td>{name}:&nbsp;</td><td><b>{value}</b></td></tr>" for name, value in rows.items()) + "</table>"
        self.ui.statusLabel.text = _("Done: '{enhanced}', '{uncertainty}' and table '{table}'.").format(
            enhanced=enhanced.GetName(), uncertainty=outputs.uncertaintyVolume.GetName(),
            table=outputs.cnrTable.GetName())
        if not shown:
            slicer.util.showStatusMessage(_("ScarEnhance finished: '{enhanced}' is ready (the views were left as "
                                            "they are).").format(enhanced=enhanced.GetName()), 5000)

    # ------------------------------------------------------------------ background job
    def _runJob(self, job, kind: str, description: str, onDone) -> None:
        self._job, self._jobKind, self._onJobDone = job, kind, onDone
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = description + "..."
        self._updateButtons()
        self._timer.start()

    def _pollJob(self) -> None:
        job = self._job
        self.ui.progressBar.value = int(job.progress * 1000)
        self.ui.statusLabel.text = job.message
        if job.isRunning():
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.visible = False
        self._updateButtons()
        from ScarEnhanceModuleLib.Process import JobCancelled
        try:
            result = job.result()
        except JobCancelled:
            self.ui.statusLabel.text = _("Cancelled.")
            return
        except Exception as error:
            self.ui.statusLabel.text = ""
            slicer.util.errorDisplay(_("ScarEnhance failed: {error}").format(error=error))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the results."), waitCursor=True):
            self._onJobDone(result)


def firstGreyLevelVolume():
    """The first scalar volume that is not a labelmap (a labelmap is a vtkMRMLScalarVolumeNode too, and the
    volume selector, which hides child classes, could not show it)."""
    volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
    return next((v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")), None)


def showSideBySide(original, enhanced) -> bool:
    """Original in the red view, enhanced in the yellow one, both in the original's acquisition plane, linked;
    only while ScarEnhance is the module shown (a result that arrives while the user works in another module
    leaves that module's layout and views alone). True if shown."""
    from ScarEnhanceModuleLib.Logic import alignSliceViews
    if slicer.util.selectedModule() != "ScarEnhance":
        return False
    layoutManager = slicer.app.layoutManager()
    layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    widgets = {name: layoutManager.sliceWidget(name) for name in ("Red", "Yellow")}
    alignSliceViews(widgets["Red"].mrmlSliceNode(), widgets["Yellow"].mrmlSliceNode(), original)
    for viewName, volume in (("Red", original), ("Yellow", enhanced)):
        composite = widgets[viewName].mrmlSliceCompositeNode()
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(True)
        widgets[viewName].sliceLogic().FitSliceToAll()
    return True


FULL_SELF_TEST = "SCARENHANCE_FULL_SELF_TEST"  # set to 1 for the self-test that installs packages and runs models


class ScarEnhanceTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Developer mode > Reload and Test). By default a smoke test that needs no network and
    installs nothing; with the environment variable SCARENHANCE_FULL_SELF_TEST=1 it also installs what is
    missing (after no question: gigabytes with PyTorch), then segments and enhances the bundled sample and
    cancels a run."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_module_and_bundled_files_without_installing_anything()
        self.setUp()
        self.test_the_panel_keeps_a_segmentation_painted_in_segment_editor()
        if os.environ.get(FULL_SELF_TEST) == "1":
            self.setUp()
            self.test_segment_and_enhance_the_sample()
            self.setUp()
            self.test_cancel_leaves_no_output()
        else:
            self.delayDisplay(f"Segmentation and enhancement not run: set {FULL_SELF_TEST}=1 for them")

    def test_module_and_bundled_files_without_installing_anything(self):
        import hashlib
        import json
        from ScarEnhanceLib.sample import SAMPLE_IMAGE
        from ScarEnhanceLib import MODELS_DIR
        self.delayDisplay("Smoke test: parameters, bundled files, dependency check")
        node = ScarEnhanceLogic().getParameterNode()
        self.assertEqual(node.enhanceParameters().validate(), EnhanceParameters())
        self.assertTrue(SAMPLE_IMAGE.exists() and README_FILE.exists())
        manifest = json.loads((MODELS_DIR / "manifest.json").read_text())
        for entry in manifest.values():
            for part in (entry, *entry.get("members", [])):  # an ensemble's networks each have their own file
                digest = hashlib.sha256((MODELS_DIR / part["file"]).read_bytes()).hexdigest()
                self.assertEqual(digest, part["sha256"])
        self.assertIsInstance(Dependencies.missingRequirements(), list)  # reads package metadata only
        self.delayDisplay("Smoke test passed")

    def test_the_panel_keeps_a_segmentation_painted_in_segment_editor(self):
        """A segmentation without a HeartROI segment stays chosen, its segment the ROI (the parameter node's update
        once set the selector back to the node before), and a device this platform does not offer reads as auto."""
        self.delayDisplay("The panel with a segmentation painted in Segment Editor")
        slicer.util.selectModule("ScarEnhance")
        widget = slicer.modules.scarenhance.widgetRepresentation().self()
        painted = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
        segmentId = painted.GetSegmentation().AddEmptySegment("", "my heart")
        widget.ui.segmentationSelector.setCurrentNode(painted)
        self.assertEqual(widget.ui.segmentationSelector.currentNode().GetID(), painted.GetID())
        self.assertEqual(widget._parameterNode.segmentation.GetID(), painted.GetID())
        self.assertEqual(widget._parameterNode.roiSegmentId, segmentId)
        slicer.util.selectModule("Data")
        widget._parameterNode.parameterNode.SetParameter("device", "no-such-device")
        painted.GetSegmentation().RemoveSegment(segmentId)  # the ROI deleted while the module is hidden
        other = painted.GetSegmentation().AddEmptySegment("", "another")
        self.assertEqual(widget._parameterNode.roiSegmentId, segmentId)  # not moved while hidden
        slicer.util.selectModule("ScarEnhance")  # the loss is shown in a dialog (auto-closed when testing)
        self.assertEqual(widget._parameterNode.roiSegmentId, other)
        self.assertEqual(widget._parameterNode.device, "auto")
        self.delayDisplay("Panel test passed")

    def _sample(self):
        from ScarEnhanceLib.sample import SAMPLE_IMAGE
        if os.environ.get(FULL_SELF_TEST) != "1":  # ctest runs every test_ method, not runTest
            self.skipTest(f"installs packages and runs the models: set {FULL_SELF_TEST}=1")
        self.assertTrue(ensureDependencies(ask=False))
        return slicer.util.loadVolume(str(SAMPLE_IMAGE))

    def test_segment_and_enhance_the_sample(self):
        self.delayDisplay("Segmenting and enhancing the sample volume")
        volume = self._sample()
        voxels = slicer.util.arrayFromVolume(volume).copy()
        logic = ScarEnhanceLogic()
        segmentation = logic.segmentHeart(volume)
        self.assertTrue(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ROI_SEGMENT_ID, volume).any())
        outputs = logic.enhance(volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=2, steps=10))
        enhanced = slicer.util.arrayFromVolume(outputs.enhancedVolume)
        self.assertEqual(enhanced.shape, voxels.shape)
        inputMatrix, outputMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(inputMatrix)
        outputs.enhancedVolume.GetIJKToRASMatrix(outputMatrix)
        for row in range(4):
            for column in range(4):
                self.assertAlmostEqual(inputMatrix.GetElement(row, column), outputMatrix.GetElement(row, column), 6)
        roi = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ROI_SEGMENT_ID, volume) > 0
        self.assertTrue((enhanced[~roi] == voxels[~roi]).all())
        self.assertTrue((slicer.util.arrayFromVolume(volume) == voxels).all())
        self.assertEqual(outputs.cnrTable.GetNumberOfRows() >= 2, True)
        logic.stopWorker()
        self.delayDisplay("Segment and enhance passed")

    def test_cancel_leaves_no_output(self):
        from ScarEnhanceModuleLib.Process import JobCancelled
        volume = self._sample()
        logic = ScarEnhanceLogic()
        segmentation = logic.segmentHeart(volume)
        volumes = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        job = logic.startEnhance(volume, segmentation, ROI_SEGMENT_ID, EnhanceParameters(k=5, steps=50))
        process = job._process  # the worker process the job runs in
        job.cancel()
        with self.assertRaises(JobCancelled):
            job.result()
        self.assertIsNotNone(process.poll())  # cancel ended the worker (pytest checks its interpreter too)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), volumes)
        self.delayDisplay("Cancel passed")
