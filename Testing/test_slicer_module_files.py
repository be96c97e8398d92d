"""Static checks of the Slicer module files, which import Qt and so cannot run outside Slicer."""
import ast
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT

MODULE = ROOT / "ScarEnhance" / "ScarEnhance.py"
UI = ROOT / "ScarEnhance" / "Resources" / "UI" / "ScarEnhance.ui"
SLICER_IMPORTED = sorted((ROOT / "ScarEnhance").rglob("*.py")) + sorted((ROOT / "ScarEnhanceLib").glob("*.py"))


def _ui_widgets() -> dict:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameter_fields() -> set:
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScarEnhanceParameterNode")
    return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}


def test_every_widget_the_code_uses_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert used, "the widget uses no ui elements?"
    assert used <= set(_ui_widgets()), f"missing in the .ui: {sorted(used - set(_ui_widgets()))}"


def test_every_parameter_is_bound_to_a_widget_and_every_binding_to_a_parameter():
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    # The ROI segment is kept in step with the segment selector by hand (no parameter-node connector for it).
    assert set(bound) == _parameter_fields() - {"roiSegmentId"}


@pytest.mark.parametrize("path", SLICER_IMPORTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_slicer_imports_parses_as_python_3_9(path):
    source = path.read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 9))  # rejects match statements and other 3.10+ syntax
    if "def " in source or "class " in source:
        assert "from __future__ import annotations" in source  # PEP 604/585 annotations on 3.9


def test_the_library_never_imports_slicer_or_qt():
    for path in (ROOT / "ScarEnhanceLib").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert not imported & {"slicer", "qt", "ctk", "vtk", "PythonQt"}, path.name


def test_no_invented_address_or_contributor_and_the_linked_readme_is_installed():
    for path in (ROOT / "CMakeLists.txt", MODULE, ROOT / "README.md"):
        text = path.read_text(encoding="utf-8")
        assert "scarenhance/ScarEnhance" not in text and "ScarEnhance developers" not in text, path.name
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_CONTRIBUTORS ""\)', cmake) and "README.md)" in cmake
    from ScarEnhanceLib import README_FILE
    assert README_FILE.exists() and "README_FILE.as_uri()" in MODULE.read_text(encoding="utf-8")


def test_the_default_self_test_installs_nothing_and_the_sample_is_registered():
    source = MODULE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScarEnhanceTest")
    smoke = next(f for f in test.body if isinstance(f, ast.FunctionDef)
                 and f.name == "test_module_and_bundled_files_without_installing_anything")
    smoke_source = ast.get_source_segment(source, smoke)
    assert "ensureDependencies" not in smoke_source and "segmentHeart" not in smoke_source
    run = ast.get_source_segment(source, next(f for f in test.body if getattr(f, "name", "") == "runTest"))
    assert "FULL_SELF_TEST" in run and run.index("FULL_SELF_TEST") < run.index("test_segment_and_enhance_the_sample")
    assert "registerCustomSampleDataSource" in source and "SAMPLE_IMAGE.as_uri()" in source
    # the smoke test's library imports stay torch-free
    import subprocess
    import sys
    probe = ("import sys; import ScarEnhanceLib; from ScarEnhanceLib import MODELS_DIR, README_FILE; "
             "from ScarEnhanceLib.sample import SAMPLE_IMAGE; from ScarEnhanceLib.parameters import EnhanceParameters; "
             "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
