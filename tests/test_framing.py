"""Framing checks on real casting photos: a tool trained on uploaded tight crops, and a camera
that sees the same kind of parts on a grey conveyor through a ROI drawn too loose (or right)."""

from __future__ import annotations

import shutil

import pytest

from core.engine import framing
from core.engine.preprocessing import crop_roi
from core.engine.training import TrainingOptions, train_tool
from core.store.datasets import ToolDataset, read_image
from core.store.tools import ROI, ToolStore
from tests.conftest import on_conveyor, sample_paths

H, W = 480, 640  # the camera's frame


def centred(width: int, height: int) -> ROI:
    return ROI.from_pixels(W / 2 - width / 2, H / 2 - height / 2, W / 2 + width / 2,
                           H / 2 + height / 2, W, H)


def upload(tool, per_class: int = 12) -> ToolDataset:
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for cls, paths in sample_paths("casting", per_class, seed=1).items():
        for path in paths:
            ds.add_file(cls, path.read_bytes(), path.name)
    return ds


@pytest.fixture(scope="module")
def trained_on_uploads(tmp_path_factory):
    """A workspace with tool 'casting' trained on 12 + 12 uploaded 300x300 casting photos."""
    home = tmp_path_factory.mktemp("framing")
    tool = ToolStore(home).create("casting", allow_flips=True)
    upload(tool)
    train_tool(tool, options=TrainingOptions(views_per_image=2, folds=3))
    return home


@pytest.fixture
def tool(trained_on_uploads, workspace):
    shutil.copytree(trained_on_uploads / "tools", workspace / "tools")
    return ToolStore(workspace).get("casting")


def unseen_parts(count: int = 3):
    picks = sample_paths("casting", count, seed=1, skip=12)
    return [read_image(p) for paths in picks.values() for p in paths]


def topics(findings: list[framing.Finding]) -> set[str]:
    return {f.topic for f in findings}


def test_a_loose_roi_on_the_conveyor_is_reported_with_what_to_do(tool):
    for part in unseen_parts():
        frame = on_conveyor(part)
        loose = framing.check_camera(tool, frame, centred(440, 400))
        assert {framing.SIZE, framing.FEATURES} <= topics(loose), loose
        size = next(f.message for f in loose if f.topic == framing.SIZE)
        assert "The 24 uploaded photos (12 'good', 12 'defect') are 300x300 px" in size
        assert "the camera ROI is 440x400 px" in size and "more around the part" in size
        assert "Redraw the ROI" in size and "capture the photos from the camera" in size
        model = next(f.message for f in loose if f.topic == framing.FEATURES)
        assert tool.config.active_version in model and "times farther" in model

        # the ROI drawn as tight as the photos: same size and shape, nothing about the frame
        assert not topics(framing.check_camera(tool, frame, centred(300, 300))) & {
            framing.SIZE, framing.ASPECT}
        # the unseen photos themselves, as if the camera framed them exactly: nothing to report
        assert framing.check_camera(tool, part, ROI()) == []


def test_a_roi_of_another_shape_says_the_part_looks_stretched(tool):
    frame = on_conveyor(unseen_parts(1)[0])
    findings = framing.check_camera(tool, frame, centred(380, 290))
    aspect = next(f.message for f in findings if f.topic == framing.ASPECT)
    assert "300x300 px (width/height 1.00)" in aspect and "380x290 px (1.31)" in aspect
    assert "looks wider" in aspect
    assert framing.check_camera(tool, frame, centred(380, 290)) == findings  # cached, same answer


def test_a_darker_camera_is_reported(tool):
    frame = (on_conveyor(unseen_parts(1)[0]) * 0.6).astype("uint8")
    message = next(f.message for f in framing.check_camera(tool, frame, centred(300, 300))
                   if f.topic == framing.BRIGHTNESS)
    assert message.startswith("The camera ROI is darker (mean grey level")
    assert "Set the light and the camera's exposure" in message


def test_without_a_model_only_pixels_are_compared(workspace):
    tool = ToolStore(workspace).create("fresh")
    upload(tool, per_class=3)
    findings = framing.check_camera(tool, on_conveyor(unseen_parts(1)[0]), centred(440, 400))
    assert framing.SIZE in topics(findings) and framing.FEATURES not in topics(findings)
    empty = ToolStore(workspace).create("empty")
    assert framing.check_camera(empty, on_conveyor(unseen_parts(1)[0])) == []  # nothing to compare


def test_dataset_check_tells_uploaded_from_captured_photos(tool):
    only = framing.check_dataset(tool)
    assert topics(only) == {framing.ORIGIN}
    assert only[0].message.startswith("All 24 photos were uploaded (300x300 px)")

    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for part in unseen_parts(2):  # captured from the camera through a loose, wide ROI
        ds.add_image("good", crop_roi(on_conveyor(part), centred(380, 290)))
    mixed = framing.check_dataset(tool)
    assert framing.ASPECT in topics(mixed)
    message = next(f.message for f in mixed if f.topic == framing.ASPECT)
    assert "the 4 'good' photos captured from the camera are 380x290 px" in message
    assert "capture all the photos from the camera" in message

    # the camera check names the captured photos apart: they match the ROI they were taken with
    camera = framing.check_camera(tool, on_conveyor(unseen_parts(1)[0]), centred(380, 290))
    assert all("captured from the camera" not in f.message for f in camera
               if f.topic in (framing.SIZE, framing.ASPECT))


def test_no_frame_is_a_clear_error(tool):
    import numpy as np

    from core.errors import InspectorError

    with pytest.raises(InspectorError, match="start the camera first"):
        framing.check_camera(tool, np.zeros((0, 0, 3), np.uint8))


def test_the_watch_checks_one_frame_every_few_seconds_and_at_once_after_a_roi_change(tmp_path):
    """FramingWatch: a check at most every ``every_s`` per tool, whoever asks; a new ROI is
    checked at once; a camera that sends nothing is not checked."""
    from core.station.live import FrameHolder

    tool = ToolStore(tmp_path).create("casting")
    seen = []
    watch = framing.FramingWatch(every_s=5.0, check=lambda t, frame, roi: seen.append(roi) or [
        framing.Finding(framing.SIZE, f"checked {len(seen)}")])
    frames = FrameHolder()
    assert watch.findings(tool, frames) is None  # no frame yet
    frames.put(on_conveyor(read_image(sample_paths("casting", 1, seed=1)["good"][0])))
    now = frames.stamp
    assert [f.message for f in watch.findings(tool, frames, now=now)] == ["checked 1"]
    for dt in (0.5, 1.0, 2.0):  # every page refresh in between gets the same findings
        assert [f.message for f in watch.findings(tool, frames, now=now + dt)] == ["checked 1"]
    assert watch.checks == 1
    tight = centred(300, 300)
    assert [f.message for f in watch.findings(tool, frames, tight, now=now + 2.5)] == ["checked 2"]
    assert seen == [ROI(), tight]
    assert watch.findings(tool, frames, tight, now=now + 10) is None  # the camera went silent
    assert watch.checks == 2
