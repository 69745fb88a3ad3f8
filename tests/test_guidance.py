"""Plain-language next steps, from an empty tool to one ready for the line."""

from __future__ import annotations

import json

from core.datasets import ToolDataset
from core.guidance import active_balanced_accuracy, next_steps
from core.tools import ToolStore
from tests.conftest import sample_paths


def add_photos(tool, per_class: int, skip: int = 0) -> None:
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for cls, paths in sample_paths("casting", per_class, seed=4, skip=skip).items():
        for path in paths:
            ds.add_file(cls, path.read_bytes(), path.name)


def test_missing_photos_come_first(workspace):
    tool = ToolStore().create("impeller", classes=("good", "crack", "porosity"))
    assert next_steps(tool) == [f"Capture 5 more '{c}' photo(s) (have 0, need 5)."
                                for c in ("good", "crack", "porosity")]
    anomaly = ToolStore().create("label", kind="anomaly")
    assert next_steps(anomaly) == ["Capture 5 more 'good' photo(s) (have 0, need 5)."]
    assert active_balanced_accuracy(tool) is None


def test_train_then_activate(workspace):
    tool = ToolStore().create("casting")
    add_photos(tool, 5)
    assert next_steps(tool) == ["Enough photos: train a first model on the Training page."]


def test_a_trained_tool_is_ready_until_photos_are_added_or_validation_is_weak(casting_tool):
    bacc = active_balanced_accuracy(casting_tool)
    assert bacc is not None and bacc >= 0.9
    add_photos(casting_tool, 6)  # 12 photos: fewer than the 24 it was trained on
    assert next_steps(casting_tool) == ["Ready: run it on the Live inspection page."]

    add_photos(casting_tool, 7, skip=6)  # 26 photos now
    assert next_steps(casting_tool) == ["New photos since the last training: retrain to use them."]

    meta_file = casting_tool.version_dir() / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["validation"]["balanced_accuracy"] = 0.75
    meta_file.write_text(json.dumps(meta))
    assert next_steps(casting_tool)[-1] == (
        "Validation balanced accuracy is 75%: add photos (most needed: 'good') and review the "
        "hardest images on the Labeling page.")

    casting_tool.update(active_version=None)
    assert next_steps(casting_tool) == [
        "A model is trained but none is active: run it as a trial on the line (Training page), "
        "then promote it."]
