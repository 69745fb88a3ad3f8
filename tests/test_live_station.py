"""The station's live state on real casting photos and a real history database: what is on the
line, trial settings shown and reverted, every change audited with who made it, tools that are
deleted, disabled, renamed, replaced or re-activated leaving the line on the next frame, trial
versions counted but never sent, promotion, changes made by another process, and a line
restart that keeps the sessions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.engine.exchange import export_tool, import_tool
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.records.verdicts import ERROR
from core.station.line import close_lines
from core.station.live_station import (FIRST_START, STATE_FILE, TRIGGERED, LiveStation, close_live_stations,
                                       line_summary, live_station)
from core.store.tools import ROI, ToolStore, TTASettings
from tests.conftest import load_sample

APP = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos() -> dict[str, list[np.ndarray]]:
    """Photos the casting tool was trained on (seed 1): its verdicts on them are certain."""
    sample = load_sample("casting", 12, seed=1)
    return {name: [im for im, y in zip(sample.images, sample.labels) if y == label][:3]
            for label, name in enumerate(("good", "defect"))}


@pytest.fixture(scope="module")
def second_version(trained_workspace, tmp_path_factory) -> Path:
    """The trained casting tool with a second, not activated version (other photos)."""
    home = tmp_path_factory.mktemp("two_versions")
    shutil.copytree(trained_workspace / "tools", home / "tools")
    train_tool(ToolStore(home).get("casting"), load_sample("casting", 10, seed=5),
               TrainingOptions(views_per_image=1, folds=2, activate=False))
    return home


@pytest.fixture
def station(casting_tool, workspace):
    casting_tool.update(smoothing=1)
    yield live_station(workspace)
    close_live_stations()
    close_lines()


def audit(station: LiveStation, action: str | None = None):
    """The history's audit trail (oldest first), optionally of one action."""
    assert station.line.recorder.flush(10)
    changes = station.line.history.changes().iloc[::-1]
    return changes if action is None else changes[changes["action"] == action]


def events(station: LiveStation):
    assert station.line.recorder.flush(10)
    return station.line.history.events(newest_first=False)


def judge(station: LiveStation, image: np.ndarray, camera: str = "0"):
    session = station.session(camera)
    session.process(image)
    return session.latest


def test_a_first_start_puts_the_trained_tools_on_the_line_and_a_restart_keeps_it(station, workspace):
    assert set(station.state.tools) == {"casting"} and station.cameras() == ["0"]
    saved = json.loads((workspace / STATE_FILE).read_text())
    assert saved["tools"]["casting"]["version"] == ToolStore().get("casting").config.active_version
    first = audit(station, "added to the line")
    assert list(first["actor"]) == [FIRST_START] and list(first["tool"]) == ["casting"]

    station.set_mode("0", TRIGGERED, "ann")
    station.try_settings("casting", "ann", threshold=0.7)
    close_live_stations()
    again = live_station(workspace)  # the process restarted: the same line, nothing re-audited
    assert again is not station and again.mode("0") == TRIGGERED
    assert again.settings("casting").threshold == pytest.approx(0.7)
    assert not again.session("0").continuous
    assert len(audit(again, "added to the line")) == 1


def test_reading_the_station_changes_nothing(station, workspace):
    before = (workspace / STATE_FILE).read_bytes()
    for _ in range(2):  # what every page run does
        station.cameras(), station.session("0"), station.mode("0"), station.settings("casting")
        station.trial_note("casting"), station.problems(), line_summary(workspace)
    assert (workspace / STATE_FILE).read_bytes() == before
    assert len(audit(station)) == 1  # only the first start


def test_a_trial_setting_judges_at_once_is_shown_as_trial_and_reverts(station, photos):
    saved = ToolStore().get("casting").config.threshold
    runner = station.session("0").runners["casting"]
    station.try_settings("casting", "ann", threshold=0.0)  # every part fails
    assert judge(station, photos["good"][0]).verdict == "FAIL"
    assert ToolStore().get("casting").config.threshold == saved  # not saved
    note = station.trial_note("casting")
    assert note.startswith("TRIAL threshold 0.00") and f"(saved {saved:.2f}) by ann at " in note
    assert "TRIAL threshold 0.00" in line_summary()["casting"]
    assert station.session("0").runners["casting"] is runner  # the same runner, new settings

    station.revert_settings("casting", "bob")
    assert station.trial_note("casting") is None
    assert judge(station, photos["good"][0]).verdict == "PASS"
    rows = audit(station)
    trial = rows[rows["action"] == "threshold (trial)"].iloc[0]
    assert trial["actor"] == "ann" and trial["details"]["new"] == 0.0
    assert trial["details"]["saved"] == pytest.approx(saved)
    assert audit(station, "trial reverted").iloc[0]["actor"] == "bob"
    assert audit(station, "threshold").empty  # nothing was saved


def test_saving_trial_settings_writes_the_tool_and_audits_each(station):
    station.try_settings("casting", "ann", threshold=0.42, smoothing=3,
                         tta=TTASettings(True, ("hflip",)))
    with pytest.raises(InspectorError, match="threshold 1.5 must lie between 0 and 1"):
        station.try_settings("casting", "ann", threshold=1.5)
    with pytest.raises(InspectorError, match="cannot be tried live"):
        station.try_settings("casting", "ann", camera="1")
    assert "smoothing 3 (saved 1)" in station.trial_note("casting")
    station.save_settings("casting", "carla")
    config = ToolStore().get("casting").config
    assert (config.threshold, config.smoothing, config.tta.enabled) == (0.42, 3, True)
    assert station.trial_note("casting") is None
    assert station.session("0").runners["casting"].config.smoothing == 3
    saved = audit(station)
    saved = saved[saved["action"].isin(["threshold", "smoothing", "tta"])]
    assert set(saved["action"]) == {"threshold", "smoothing", "tta"}
    assert set(saved["actor"]) == {"carla"}


def test_a_deleted_tool_stops_judging_on_the_next_frame(station, photos):
    ToolStore().duplicate("casting", "copy")
    station.add_to_line("copy", "ann")
    assert [r.tool for r in judge(station, photos["defect"][0]).results] == ["casting", "copy"]
    ToolStore().delete("copy")
    assert [r.tool for r in judge(station, photos["good"][0]).results] == ["casting"]
    removed = audit(station, "removed from the line")
    assert removed.iloc[0]["tool"] == "copy" and "deleted" in removed.iloc[0]["details"]["reason"]
    assert set(events(station)["tool"]) == {"casting", "copy"}
    count = len(events(station))
    judge(station, photos["defect"][0])
    assert set(events(station)["tool"][count:]) == {"casting"}
    assert "copy" not in station.state.tools


@pytest.mark.parametrize("change", ["disabled", "renamed", "activated elsewhere", "imported"])
def test_a_tool_changed_under_the_line_leaves_it(station, photos, workspace, change):
    store = ToolStore()
    if change == "disabled":
        store.get("casting").update(enabled=False)
    elif change == "renamed":
        store.rename("casting", "casting 2")
    elif change == "activated elsewhere":  # e.g. 'inspector train', which activates
        tool = store.get("casting")
        shutil.copytree(tool.version_dir(), tool.versions_dir / "v999")
        tool.activate("v999")
    else:
        exported = export_tool(store.get("casting"), workspace / "casting.inspector")
        import_tool(exported, store, replace_existing=True)
    assert judge(station, photos["defect"][0]).results == ()
    reason = audit(station, "removed from the line").iloc[0]["details"]["reason"]
    assert {"disabled": "disabled", "renamed": "renamed", "activated elsewhere": "outside the line",
            "imported": "import"}[change] in reason
    assert "casting 2" not in station.state.tools  # a renamed tool does not join by itself


def test_a_new_tool_joins_the_line_only_when_someone_adds_it(station, photos):
    ToolStore().duplicate("casting", "twin")
    assert station.session("0").lineup.tools == ["casting"]
    assert line_summary()["twin"] == "not on the line"
    station.add_to_line("twin", "ann")
    with pytest.raises(InspectorError, match="already on the line"):
        station.add_to_line("twin", "ann")
    assert station.session("0").lineup.tools == ["casting", "twin"]
    station.remove_from_line("twin", "bob")
    assert station.session("0").lineup.tools == ["casting"]
    rows = audit(station)
    rows = rows[rows["tool"] == "twin"]
    assert list(zip(rows["action"], rows["actor"]))[-2:] == [("added to the line", "ann"),
                                                            ("removed from the line", "bob")]
    ToolStore().create("empty")
    with pytest.raises(InspectorError, match="no active version: train it"):
        station.add_to_line("empty", "ann")


def test_a_trial_version_is_counted_never_sent_and_promoted(second_version, workspace, photos):
    shutil.copytree(second_version / "tools", workspace / "tools")
    store = ToolStore()
    tool = store.get("casting")
    active, trial = [v.id for v in tool.versions()]
    assert tool.config.active_version == active
    station = live_station(workspace)
    try:
        station.start_trial("casting", trial, "ann")
        with pytest.raises(InspectorError, match="already running"):
            station.start_trial("casting", trial, "ann")
        for image in photos["good"] + photos["defect"]:
            shown = judge(station, image)
        assert [r.version for r in shown.trials] == [trial]
        assert [r.version for r in shown.results] == [active]
        version, run = station.trial("casting")
        summary = run.summary()
        warm_up = tool.config.smoothing - 1  # frames before the trial's moving average is full
        assert version.by == "ann" and summary.judged == 6 and summary.compared == 6 - warm_up
        assert summary.agreement is not None
        assert set(events(station)["version"]) == {active}  # the trial sent nothing
        assert f"trial of {trial}" in line_summary()["casting"]

        station.promote("casting", "bob")
        assert store.get("casting").config.active_version == trial
        judge(station, photos["defect"][0])
        assert [r.version for r in station.session("0").latest.results] == [trial]
        assert station.trial("casting") is None
        promoted = audit(station, "promoted").iloc[0]
        assert promoted["actor"] == "bob" and promoted["details"]["frames"] == 6
        assert audit(station, "activated").iloc[0]["actor"] == "bob"
        assert audit(station, "removed from the line").empty  # its own activation is no reason

        station.rollback("casting", active, "carla")  # audited as an activation
        judge(station, photos["good"][0])
        assert [r.version for r in station.session("0").latest.results] == [active]
        assert list(audit(station, "activated")["actor"]) == ["bob", "carla"]
    finally:
        close_live_stations()
        close_lines()


def test_a_first_version_goes_through_a_trial_before_the_line(second_version, workspace, photos):
    shutil.copytree(second_version / "tools", workspace / "tools")
    tool = ToolStore().create("fresh")
    shutil.copytree(ToolStore().get("casting").versions_dir, tool.versions_dir)
    station = live_station(workspace)
    try:
        assert "fresh" not in station.state.tools
        first = tool.versions()[0].id
        station.start_trial("fresh", first, "ann")
        judge(station, photos["good"][0])
        _, run = station.trial("fresh")
        assert run.summary().judged == 1 and run.summary().agreement is None
        station.promote("fresh", "ann")
        assert station.state.tools["fresh"].version == first
        assert audit(station, "promoted").iloc[0]["details"]["joined_line"]
    finally:
        close_live_stations()
        close_lines()


def test_a_saved_roi_judges_on_the_next_frame_and_ends_a_trial_roi(station, photos):
    station.try_settings("casting", "ann", roi=ROI(0.0, 0.0, 0.5, 0.5), threshold=0.3)
    frame = photos["good"][0]
    assert judge(station, frame).results[0].box[2] == frame.shape[1] // 2
    ToolStore().get("casting").update(roi=ROI(0.1, 0.1, 0.8, 0.8))  # what Capture saves
    box = judge(station, frame).results[0].box
    assert box[0] == round(0.1 * frame.shape[1]) and box[2] == round(0.9 * frame.shape[1])
    assert "roi" not in station.trial_values("casting")  # the saved value won
    assert "threshold" in station.trial_values("casting")  # the other trial value stays
    assert audit(station, "trial ended").iloc[0]["details"]["setting"] == "roi"


def test_changes_made_by_another_process_reach_the_running_line(station, workspace, photos):
    def inspector(*args: str) -> None:
        env = {**os.environ, "INSPECTOR_HOME": str(workspace), "PYTHONPATH": str(APP)}
        subprocess.run([sys.executable, "-m", "core", *args], check=True, env=env,
                       capture_output=True, timeout=300)

    def within(seconds: float, check) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if check():
                return True
            time.sleep(0.1)
        return check()

    runner = station.session("0").runners["casting"]
    inspector("set", "--tool", "casting", "--threshold", "0.77")
    assert within(3, lambda: runner.config.threshold == pytest.approx(0.77))
    tool = ToolStore().get("casting")
    shutil.copytree(tool.version_dir(), tool.versions_dir / "v999")
    inspector("activate", "--tool", "casting", "--version", "v999")
    assert within(3, lambda: not station.session("0").lineup.runners)
    assert judge(station, photos["defect"][0]).results == ()
    assert "outside the line" in audit(station, "removed from the line").iloc[0]["details"]["reason"]


def test_modes_triggers_and_a_line_restart(station, photos):
    station.set_mode("0", TRIGGERED, "ann")
    station.set_mode("0", TRIGGERED, "bob")  # no change: nothing audited
    assert list(audit(station, "mode")["actor"]) == ["ann"]
    assert audit(station, "mode").iloc[0]["tool"] == "(camera 0)"
    session = station.session("0")
    judge(station, photos["defect"][0])
    assert session.current() is None  # triggered: nothing judged without a trigger
    old_line = station.line
    station.restart_line("carla")
    assert station.line is not old_line and session.sink is station.line.sink
    assert station.trigger("0", "part-1") == 1
    judge(station, photos["defect"][0])
    fired = events(station)
    assert list(fired["trigger_id"]) == ["part-1"] and list(fired["verdict"]) == ["FAIL"]
    assert audit(station, "line restarted").iloc[0]["actor"] == "carla"


def test_a_damaged_line_file_leaves_nothing_on_the_line_and_says_what_to_do(casting_tool,
                                                                           workspace, photos):
    (workspace / STATE_FILE).write_text('{"schema": 1, "tools": ["casting"]')
    station = live_station(workspace)
    try:
        assert station.state.tools == {} and station.session("0").lineup.runners == ()
        assert judge(station, photos["defect"][0]).results == ()  # fail safe: no verdict
        assert "cannot be read" in station.problems()[0]
        assert "add the tools again" in station.problems()[0]
        station.add_to_line("casting", "ann")  # the way back, audited like any change
        assert station.problems() == [] and "casting" in json.loads(
            (workspace / STATE_FILE).read_text())["tools"]
    finally:
        close_live_stations()
        close_lines()


def test_a_tool_damaged_on_disk_is_judged_error_and_the_others_go_on(station, photos, workspace):
    ToolStore().duplicate("casting", "copy")
    station.add_to_line("copy", "ann")
    weights = ToolStore().get("copy").version_dir() / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a power cut in the middle of a copy
    close_live_stations()
    close_lines()
    restarted = live_station(workspace)  # the station starts all the same
    assert any("'copy' is on the line but cannot judge" in p for p in restarted.problems())
    results = {r.tool: r for r in judge(restarted, photos["defect"][0]).results}
    assert results["casting"].verdict == "FAIL"
    assert results["copy"].verdict == ERROR and "cannot load" in results["copy"].error
    assert judge(restarted, photos["defect"][0]).verdict == ERROR  # the part never passes unchecked
    recorded = events(restarted)
    assert set(recorded[recorded["tool"] == "copy"]["verdict"]) == {ERROR}
