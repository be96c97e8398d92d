"""Slow: `scarenhance evaluate` reproduces the model card's numbers (run with `make test-slow`)."""
import json

import pytest

from ScarEnhanceLib.cli import main
from ScarEnhanceLib.weights import MODELS_DIR

from conftest import SHARED_DATA, needs_shared_data

RECORDED = MODELS_DIR / "evaluation" / "evaluation_enhancement.json"


@pytest.mark.slow
@needs_shared_data("emidec")
@pytest.mark.skipif(not RECORDED.exists(), reason="no recorded evaluation")
def test_evaluate_reproduces_the_recorded_table(tmp_path):
    assert main(["evaluate", str(SHARED_DATA / "emidec"), "--split", "test", "-o", str(tmp_path)]) == 0
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    now = json.loads((tmp_path / "evaluation_enhancement.json").read_text(encoding="utf-8"))
    name = next(iter(now))
    for key, value in recorded[name]["summary"].items():
        assert now[name]["summary"][key] == pytest.approx(value, rel=0.02), key
