"""Tools on disk and their datasets: persistence, validation, and refusal of bad input."""

import io
import json
import os
import zipfile

import cv2
import numpy as np
import pytest

from core.errors import InspectorError
from core.store.datasets import ToolDataset, check_trainable, load_folder, read_image
from core.store.tools import ROI, ToolConfig, ToolStore, acting_as, add_change_listener
from core.store.workspace import atomic_write_bytes
from tests.conftest import sample_paths


def test_tool_round_trips_through_readable_json(workspace):
    store = ToolStore()
    tool = store.create("weld seam", classes=("good", "porosity", "crack"), profile="balanced")
    tool.update(roi=ROI(0.1, 0.2, 0.5, 0.4), threshold=0.7, smoothing=9)
    data = json.loads((workspace / "tools" / "weld seam" / "tool.json").read_text())
    assert data["roi"] == {"x": 0.1, "y": 0.2, "w": 0.5, "h": 0.4}
    again = store.get("weld seam").config
    assert again.classes == ("good", "porosity", "crack")
    assert again.defect_classes == ("porosity", "crack")
    assert (again.threshold, again.smoothing, again.profile) == (0.7, 9, "balanced")


def test_rename_duplicate_delete(workspace):
    store = ToolStore()
    store.create("label")
    store.duplicate("label", "label copy")
    store.rename("label", "label front")
    assert store.names() == ["label copy", "label front"]
    store.delete("label copy")
    assert store.names() == ["label front"]
    with pytest.raises(InspectorError, match="already exists"):
        store.create("label front")


def test_every_change_to_a_tool_is_announced_with_who_and_what(workspace):
    changes = []
    stop = add_change_listener(changes.append)
    try:
        store = ToolStore()
        with acting_as("anna"):
            tool = store.create("label")
            tool.update(threshold=0.7, smoothing=5)  # smoothing 5 is the default: no change
            tool.update(roi=ROI(0.1, 0.1, 0.5, 0.5))
        store.rename("label", "label front")
    finally:
        stop()
    store.delete("label front")  # after stop(): not heard
    assert [(c.tool, c.action, c.actor) for c in changes] == [
        ("label", "created", "anna"), ("label", "threshold", "anna"), ("label", "roi", "anna"),
        ("label front", "renamed", os.environ.get("USER") or changes[-1].actor)]
    assert changes[1].details == {"old": 0.5, "new": 0.7}
    assert changes[2].details["new"] == {"x": 0.1, "y": 0.1, "w": 0.5, "h": 0.5}
    assert changes[0].time <= changes[-1].time


@pytest.mark.parametrize("bad, message", [
    ({"name": "../escape"}, "not allowed"),
    ({"name": "x", "classes": ["defect", "scratch"]}, "include 'good'"),
    ({"name": "x", "threshold": 1.5}, "between 0 and 1"),
    ({"name": "x", "roi": {"x": 0.8, "y": 0, "w": 0.5, "h": 1}}, "outside the frame"),
    ({"name": "x", "kind": "magic"}, "unknown tool kind"),
    ({"name": "x", "exec": "rm -rf /"}, "unknown field"),
])
def test_invalid_configurations_are_refused_with_a_reason(bad, message):
    with pytest.raises(InspectorError, match=message):
        ToolConfig.from_json(bad)


def test_roi_pixels_round_trip():
    roi = ROI.from_pixels(64, 48, 320, 240, 640, 480)
    assert roi == ROI(0.1, 0.1, 0.4, 0.4)
    assert roi.to_pixels(640, 480) == (64, 48, 320, 240)
    assert roi.to_pixels(1280, 960) == (128, 96, 640, 480)


def test_dataset_add_move_delete_counts(workspace):
    tool = ToolStore().create("surface")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    photo = read_image(sample_paths("casting", 1, seed=0)["good"][0])
    first = dataset.add_image("good", photo)
    second = dataset.add_image("good", photo[10:, 10:])
    assert dataset.counts() == {"good": 2, "defect": 0}
    dataset.move([second], "defect")
    assert dataset.counts() == {"good": 1, "defect": 1}
    dataset.delete([first])
    assert dataset.counts() == {"good": 0, "defect": 1}
    with pytest.raises(InspectorError, match="unknown class"):
        dataset.add_image("scratch", photo)
    with pytest.raises(InspectorError, match="not a readable image"):
        dataset.add_file("good", b"%PDF-1.4 not a photo", "report.pdf")
    assert dataset.counts() == {"good": 0, "defect": 1}


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    for name in ("good", "defect"):
        (tmp_path / name).mkdir()
        for i, path in enumerate(sample_paths("casting", 2, seed=3)[name]):
            (tmp_path / name / f"{i}.jpg").write_bytes(path.read_bytes())
    (tmp_path / "defect" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    loaded = load_folder(tmp_path, ("good", "defect"))
    assert len(loaded.images) == 4
    assert [p.name for p in loaded.skipped] == ["truncated.jpg"]
    assert "truncated.jpg" in loaded.skipped_report()


def test_training_is_refused_without_enough_images_or_classes():
    with pytest.raises(InspectorError, match="at least two classes"):
        check_trainable({"good": 30, "defect": 0})
    with pytest.raises(InspectorError, match="capture 3 more 'defect'"):
        check_trainable({"good": 30, "defect": 2})
    check_trainable({"good": 5, "defect": 5})


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "tool.json"
    atomic_write_bytes(target, b'{"version": 1}')

    def power_cut(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b'{"version": 2, "half')
    assert target.read_bytes() == b'{"version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["tool.json"]


def test_a_corrupt_tool_file_gives_a_clear_message(workspace):
    ToolStore().create("broken")
    (workspace / "tools" / "broken" / "tool.json").write_text('{"name": "broken", "thr')
    with pytest.raises(InspectorError, match="not valid JSON"):
        ToolStore().get("broken")
    ToolStore().create("weld")
    assert [t.name for t in ToolStore().all()] == ["weld"]  # the others still open
    broken = ToolStore().scan()[1]
    assert list(broken) == ["broken"]
    assert "restore it or re-import" in broken["broken"]


def test_stored_snapshot_is_lossless(workspace):
    tool = ToolStore().create("lossless")
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    path = ToolDataset(tool.images_dir, tool.config.classes).add_image("good", frame)
    assert np.array_equal(cv2.imread(str(path)), frame)


def test_uploaded_photos_and_zips_are_added_and_tricks_refused(workspace):
    tool = ToolStore().create("uploads")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    photos = sample_paths("casting", 3, seed=5)["defect"]
    assert dataset.add_upload(photos[0].name, photos[0].read_bytes(), name="defect") == (1, [])

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(photos[1], f"batch/{photos[1].name}")
        archive.write(photos[2], f"batch/more/{photos[2].name.upper()}")
        archive.writestr("batch/", b"")
        archive.writestr("batch/readme.txt", "not a photo: skipped")
        archive.writestr("__MACOSX/batch/._a.jpg", b"resource fork: skipped")
        archive.writestr("batch/.thumbnail.png", b"hidden: skipped")
        for trick in ("../escape.png", "/etc/abs.png", "C:/windows.png", "batch\\..\\up.png"):
            archive.writestr(trick, photos[1].read_bytes())
        archive.writestr("batch/huge.png", bytes(65 * 1024 * 1024))  # compresses to little
        archive.writestr("batch/broken.jpg", b"\xff\xd8 not really a jpeg")
    added, problems = dataset.add_upload("photos.zip", buffer.getvalue(), name="defect")
    assert added == 2 and dataset.counts() == {"good": 0, "defect": 3}
    assert len(problems) == 6
    assert all("has an unsafe path" in p for p in problems[:4])
    assert "'batch/huge.png' in 'photos.zip' is larger than 64 MB" in problems[4]
    assert "'broken.jpg' is not a readable image" in problems[5]
    stored = [p for p in workspace.rglob("*") if p.is_file() and p.name != "tool.json"]
    assert len(stored) == 3 and all(p.parent == tool.images_dir / "defect" for p in stored)

    assert dataset.add_upload("notes.zip", b"PK not a zip", name="good") == (
        0, ["'notes.zip' is not a readable zip file: nothing was added"])
    added, problems = dataset.add_upload("report.pdf", b"%PDF-1.4", name="good")
    assert added == 0 and "'report.pdf' is not a readable image" in problems[0]
    with pytest.raises(InspectorError, match="unknown class"):
        dataset.add_upload(photos[0].name, photos[0].read_bytes(), name="scratch")
    assert dataset.counts() == {"good": 0, "defect": 3}


def test_a_truncated_jpeg_is_refused_and_nothing_is_added(workspace):
    tool = ToolStore().create("uploads")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    photo = sample_paths("casting", 1, seed=5)["good"][0]
    data = photo.read_bytes()
    added, problems = dataset.add_upload("cut.jpg", data[: len(data) * 2 // 3], name="good")
    assert added == 0 and dataset.counts() == {"good": 0, "defect": 0}
    assert problems == ["'cut.jpg' is incomplete: the file ends before the image does (a broken "
                        "download or copy). Copy it again; nothing was added"]
    assert dataset.add_upload("whole.jpg", data, name="good") == (1, [])


def test_a_copy_of_one_of_the_tool_s_photos_is_found_by_its_bytes(workspace):
    tool = ToolStore().create("copies")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    photos = sample_paths("casting", 2, seed=5)["defect"]
    dataset.add_upload(photos[0].name, photos[0].read_bytes(), name="defect")
    stored = dataset.files("defect")[0]
    assert dataset.find_copy(photos[0].read_bytes()) == stored
    assert dataset.find_copy(photos[1].read_bytes()) is None
    assert dataset.find_copy(photos[0].read_bytes() + b"\0") is None  # other bytes, another photo


def test_the_threshold_a_version_judges_at(workspace):
    tool = ToolStore().create("versions")
    for version, suggested in (("v001", 0.5), ("v002", 0.4)):
        folder = tool.versions_dir / version
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"suggested_threshold": suggested}))
    tool.activate("v001")
    tool.update(threshold=0.62)
    assert tool.threshold_of("v001") == 0.62  # the active version: the tool's own threshold
    assert tool.threshold_of("v002") == 0.4  # another: its suggested one, as a trial runs it
    with pytest.raises(InspectorError, match="no model version 'v003'"):
        tool.threshold_of("v003")


def test_camera_photos_are_told_from_uploaded_ones(workspace):
    from core.store.datasets import from_camera

    tool = ToolStore().create("origins")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    photo = sample_paths("casting", 1, seed=5)["good"][0]
    captured = dataset.add_image("good", read_image(photo))
    uploaded = dataset.add_file("good", photo.read_bytes(), photo.name)
    assert from_camera(captured) and not from_camera(uploaded)
    assert sorted(dataset.files("good")) == sorted([captured, uploaded])


def test_training_refusal_names_the_counts_in_words():
    with pytest.raises(InspectorError) as refused:
        check_trainable({"good": 30, "defect": 0})
    assert str(refused.value) == ("training needs photos of at least two classes (good and a "
                                  "defect): there are 30 'good', 0 'defect'; capture photos of the "
                                  "missing class")


def test_capture_saves_the_roi_crop_of_new_frames_and_keeps_them_when_the_camera_stops(workspace):
    import threading

    from core.station.live import FrameHolder
    from core.store.datasets import from_camera
    from core.store.tools import ROI

    tool = ToolStore().create("camera")
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    frames = FrameHolder()
    parts = [read_image(p) for p in sample_paths("casting", 3, seed=2)["good"]]  # 300 x 300
    stop = threading.Event()

    def camera() -> None:  # a camera sends a new picture every 30 ms
        i = 0
        while not stop.is_set():
            frames.put(parts[i % len(parts)])
            i += 1
            stop.wait(0.03)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    roi = ROI(0.1, 0.2, 0.5, 0.4)
    try:
        done = []
        saved = dataset.capture(frames, "good", roi, count=4, interval_s=0.05,
                                progress=lambda i, n: done.append((i, n)))
    finally:
        stop.set()
        thread.join()
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(saved) == 4 and all(from_camera(p) for p in saved)
    assert {read_image(p).shape for p in saved} == {(120, 150, 3)}  # exactly the ROI's crop
    with pytest.raises(InspectorError, match="no picture from the camera for 2 s.*1 photo"):
        dataset.capture(frames, "good", roi, count=3)  # the latest frame, then silence
    assert dataset.counts()["good"] == 5  # what was taken before the silence stays


def test_a_write_that_must_not_make_folders_fails_where_its_folder_was_deleted(tmp_path):
    """The line's keeper writes with make_parents=False: a tool deleted between its check and the
    write loses the crop (an OSError) and is not brought back as an empty folder."""
    gone = tmp_path / "tools" / "doomed" / "review"
    with pytest.raises(OSError):
        atomic_write_bytes(gone / "kept.png", b"png", make_parents=False)
    assert not (tmp_path / "tools").exists()
    atomic_write_bytes(gone / "kept.png", b"png")  # the default makes them, as every other writer wants
    assert (gone / "kept.png").read_bytes() == b"png"
