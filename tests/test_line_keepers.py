"""Learning on the line at the live station, on real casting photos judged by a real trained
tool: the station keeps a line tool's uncertain frames (the ROI of the frame) up to the hourly
bound and no further while the session runs, builds the novelty reference off the video thread,
and an operator's correction of a verdict (the latest, or one of the tool's recent ones, once per
judged frame) lands in the tool's dataset with its label and author and in the history, where a
report counts corrections against parts per tool."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.engine.preprocessing import crop_roi
from core.errors import InspectorError
from core.records.reports import operator_corrections
from core.security.access import OPERATOR, AccessDenied, User, as_user
from core.station import line_keepers
from core.station.line import close_lines
from core.station.line_keepers import correct_verdict, right_label
from core.station.line_learning import CORRECTED, KeepPolicy, ReviewQueue
from core.station.live import RecentParts
from core.station.live_station import close_live_stations, live_station
from core.store.datasets import ToolDataset, read_image
from core.store.tools import ROI
from tests.conftest import load_sample, on_conveyor

ROI_AROUND_PART = ROI(0.25, 0.15, 0.5, 0.7)  # the part's disc on the 640 x 480 conveyor
KIOSK = User("kiosk", OPERATOR)


@pytest.fixture
def frames() -> list[np.ndarray]:
    """Unseen casting parts on the conveyor: 4 good ones, then 4 defective ones."""
    sample = load_sample("casting", 4, seed=1, skip=12)
    return [on_conveyor(im, seed=i) for i, im in enumerate(sample.images)]


@pytest.fixture
def station(casting_tool, workspace, monkeypatch):
    """The station with the casting tool on the line, ROI around the part; it keeps every
    judged frame (margin 1.0) but at most 3 an hour; its dataset holds the training photos."""
    monkeypatch.setattr(line_keepers, "DEFAULT_POLICY", KeepPolicy(margin=1.0, per_hour=3))
    dataset = ToolDataset(casting_tool.images_dir, casting_tool.config.classes)
    for path, label in zip(*(lambda s: (s.paths, s.labels))(load_sample("casting", 12, seed=1))):
        dataset.add_file(casting_tool.config.classes[label], path.read_bytes(), path.name)
    casting_tool.update(smoothing=1, roi=ROI_AROUND_PART)
    yield live_station(workspace)
    close_live_stations()
    close_lines()


def test_uncertain_frames_are_kept_up_to_the_bound_and_no_further(station, frames):
    session = station.session("0")
    for frame in frames * 2:  # 16 frames, every one uncertain by this policy
        session.process(frame)
    assert session.latest is not None and session.error is None
    keeper = session.lineup.keepers["casting"]
    keeper.flush()
    assert keeper.trained_share == 0.5  # good against one defect class, weighted equally
    assert keeper.fail_share.value() is None  # 16 frames: the line's FAIL share is not known yet
    pending = ReviewQueue(keeper.review.tool).pending()
    assert len(pending) == 3  # the hour's bound, whatever else the session judged
    crops = {p.id: ReviewQueue(keeper.review.tool).crop(p.id) for p in pending}
    roi_crops = [crop_roi(f, ROI_AROUND_PART) for f in frames[:3]]
    assert all(any(np.array_equal(c, r) for r in roi_crops) for c in crops.values())
    assert {p.version for p in pending} == {station.settings("casting").active_version}

    deadline = time.monotonic() + 120  # the novelty reference is built on its own thread
    while not station.keeping.ready("casting") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert station.keeping.ready("casting")
    novelty = keeper.novelty.novelty(session.latest.results[0].features)
    assert novelty.shape == (1,) and np.isfinite(novelty[0])


def test_an_operator_s_correction_lands_in_the_dataset_and_in_the_history(station, frames):
    session = station.session("0")
    session.process(frames[4])  # a defective part: whatever the verdict, the operator knows
    result = session.latest.results[0]
    wanted = right_label(result, ("good", "defect"))
    assert wanted == {"FAIL": "good", "PASS": "defect"}[result.verdict]
    with as_user(KIOSK):
        record = correct_verdict(session, "casting", wanted)
        with pytest.raises(AccessDenied, match="engineer"):  # reviewing the queue is theirs
            ReviewQueue(session.runners["casting"].tool).undo(record.id)
    tool = session.runners["casting"].tool
    assert (record.label, record.labelled_by, record.reason) == (wanted, "kiosk", CORRECTED)
    assert record.time == session.latest.time and time.time() - record.labelled_at < 60
    photo = tool.images_dir / record.dataset_path
    assert photo.parent.name == wanted
    assert np.array_equal(read_image(photo), crop_roi(frames[4], ROI_AROUND_PART))
    assert ReviewQueue(tool).labelled()[0].id == record.id  # shown for the engineer's review

    assert station.line.recorder.flush(10)
    changes = station.line.history.changes()
    row = changes[changes["action"] == CORRECTED].iloc[0]
    assert (row["tool"], row["actor"]) == ("casting", "kiosk")
    assert row["details"]["verdict"] == result.verdict and row["details"]["label"] == wanted
    report = operator_corrections(station.line.history).set_index("tool").loc["casting"]
    assert report["corrections"] == 1 and report["parts"] >= 1
    assert report["share"] == pytest.approx(1 / report["parts"])


def test_an_operator_corrects_a_recent_verdict_once(station, frames):
    """The session keeps each tool's last parts (a change of verdict or a trigger, not every
    frame), at most ``RecentParts.KEEP``; correcting the one before the latest puts that
    frame's ROI into the dataset with its label, who and when, and the history; the same
    judged frame corrected again, from the strip or as the latest, adds no second photo."""
    session = station.session("0")
    for _ in range(5):  # one part held on screen: one verdict, however many frames
        session.process(frames[0])
    assert len(session.recent.of("casting")) == 1
    session.continuous = False  # triggered: every trigger is a part of its own
    times = []
    for frame in frames:
        session.request_trigger()
        session.process(frame)
        times.append(session.latest.time)
    parts = session.recent.of("casting")
    assert len(parts) == RecentParts.KEEP == 6  # bounded: the oldest went
    assert [p.time for p in parts] == times[::-1][:6]  # newest first
    assert all(np.array_equal(p.crop, crop_roi(f, ROI_AROUND_PART))
               for p, f in zip(parts, frames[::-1]))

    tool = session.runners["casting"].tool
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    before, second = dataset.counts(), parts[1]  # the verdict before the latest
    wanted = right_label(second.result, tool.config.classes)
    with as_user(KIOSK):
        record = correct_verdict(session, "casting", wanted, at=second.time)
    assert (record.label, record.labelled_by, record.reason) == (wanted, "kiosk", CORRECTED)
    assert record.time == second.time and time.time() - record.labelled_at < 60
    photo = tool.images_dir / record.dataset_path
    assert photo.parent.name == wanted
    assert np.array_equal(read_image(photo), crop_roi(frames[-2], ROI_AROUND_PART))
    assert dataset.counts() == {**before, wanted: before[wanted] + 1}
    assert ReviewQueue(tool).correction("0", second.time).id == record.id  # the strip's mark

    with as_user(KIOSK), pytest.raises(InspectorError, match="already corrected: labelled"):
        correct_verdict(session, "casting", wanted, at=second.time)
    latest = parts[0]  # the latest verdict is the strip's newest part: one frame, one photo
    with as_user(KIOSK):
        correct_verdict(session, "casting", right_label(latest.result, tool.config.classes))
        with pytest.raises(InspectorError, match="already corrected"):
            correct_verdict(session, "casting", right_label(latest.result, tool.config.classes),
                            at=latest.time)
        with pytest.raises(InspectorError, match="among its last 6"):
            correct_verdict(session, "casting", wanted, at=times[0])  # no longer in memory
    assert sum(dataset.counts().values()) == sum(before.values()) + 2

    assert station.line.recorder.flush(10)
    changes = station.line.history.changes()
    rows = changes[changes["action"] == CORRECTED]  # newest first
    assert len(rows) == 2 and set(rows["actor"]) == {"kiosk"}
    first = rows.iloc[-1]["details"]
    assert (first["verdict"], first["label"], first["kept"]) == (second.result.verdict, wanted,
                                                                  record.id)


def test_a_tool_deleted_while_the_line_keeps_its_frames_is_gone_at_once(workspace):
    """The line may write a kept crop into a tool at the moment it is deleted: the delete
    succeeds, and no write brings the tool's folder back."""
    import threading
    import uuid

    from core.station.line_learning import NEAR_THRESHOLD, KeptFrame
    from core.store.tools import ToolStore

    store = ToolStore()
    tool = store.create("doomed")
    review, crop = ReviewQueue(tool), load_sample("casting", 1, seed=0).images[0]
    stop, written = threading.Event(), []

    def keep() -> None:  # the line's writer thread, as fast as it goes
        while not stop.is_set():
            frame = KeptFrame(uuid.uuid4().hex[:12], "doomed", 0.5, 0.5, "v001", time.time(), NEAR_THRESHOLD)
            try:
                review.add(crop, frame)
                written.append(frame.id)
            except OSError:
                pass  # the tool went between the check and the write: the crop is lost, as it should

    writer = threading.Thread(target=keep)
    writer.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        store.delete("doomed")
    finally:
        stop.set()
        writer.join()
    assert not store.exists("doomed") and not (store.root / "doomed").exists()
    assert [p.name for p in store.root.iterdir()] == []  # the deleted folder went too


def test_a_correction_of_a_tool_deleted_since_its_verdict_says_so_and_keeps_nothing(station, frames):
    """An operator corrects a verdict just as an engineer deletes the tool (the correction read
    the tool before the delete, and writes after it): a clear refusal, and the deleted tool's
    folder does not come back."""
    from core.store.tools import ToolStore

    session = station.session("0")
    session.process(frames[4])
    part = session.latest.part("casting")
    wanted = right_label(part.result, ("good", "defect"))
    tool = session.runners["casting"].tool
    review = ReviewQueue(tool)
    ToolStore().delete("casting")
    with as_user(KIOSK), pytest.raises(InspectorError, match="no longer in this station's tools"):
        review.correct(part.crop, part.result, wanted, "0", part.time)
    assert not tool.folder.exists()
