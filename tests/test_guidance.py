"""Plain-language next steps, from an empty tool to one judging on the line."""

from __future__ import annotations

import json

from core.engine.training import TrainingOptions, train_tool
from core.station.guidance import active_balanced_accuracy, next_steps
from core.station.line import close_lines
from core.station.live_station import STATE_FILE, LineState, close_live_stations, live_station
from core.store.datasets import ToolDataset
from core.store.tools import ToolStore
from core.store.workspace import atomic_write_json
from tests.conftest import load_sample, sample_paths


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
    active = casting_tool.config.active_version
    ready = [f"On the line with {active}: its verdicts show on the Live inspection page."]
    assert next_steps(casting_tool) == ready  # a first start puts a trained tool on the line

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
    assert next_steps(casting_tool)[0] == (
        f"Trained but not running: run {active} as a trial on the Training page, then promote it.")


def test_a_trained_tool_not_on_the_line_says_how_to_get_it_there(casting_tool, workspace):
    add_photos(casting_tool, 6)
    active = casting_tool.config.active_version
    atomic_write_json(workspace / STATE_FILE, LineState().to_json())  # someone took it off
    assert next_steps(casting_tool) == [
        f"Trained but not running: {active} is active but not on the line. Add it on the Live "
        "inspection page ('Add to line'), or run a newer version as a trial on the Training "
        "page, then promote it."]
    casting_tool.update(enabled=False)
    assert next_steps(casting_tool)[0].startswith("Trained but not running: the tool is disabled")


def test_a_new_version_goes_through_a_trial_then_runs(casting_tool, workspace):
    """As a new user's first version: trained (not activated), run as a trial, promoted."""
    add_photos(casting_tool, 6)
    casting_tool.update(active_version=None)
    atomic_write_json(workspace / STATE_FILE, LineState().to_json())
    meta = train_tool(casting_tool, load_sample("casting", 12, seed=1),
                      TrainingOptions(views_per_image=2, activate=False))
    new = meta.id
    assert next_steps(casting_tool) == [
        f"Trained but not running: run {new} as a trial on the Training page, then promote it."]
    station = live_station(workspace)
    try:
        station.start_trial("casting", new, "ann")
        assert next_steps(casting_tool) == [
            f"{new} runs as a trial on the line: watch it agree on the Live inspection page, "
            "then promote it on the Training page."]
        station.promote("casting", "ann")
        tool = ToolStore(workspace).get("casting")
        assert next_steps(tool) == [
            f"On the line with {new}: its verdicts show on the Live inspection page."]
    finally:
        close_live_stations()
        close_lines()
