"""The Live inspection and Training pages over the station's live state, driven with AppTest on
real casting photos: two AppTests are two browsers of one station. Opening a page changes
nothing, one browser's change shows in the other, one browser feeds a camera and the other
views it until it takes over, trial settings show as TRIAL and revert, and the Training page
runs a new version as a trial, then promotes it."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from core.engine.training import TrainingOptions, train_tool
from core.station.line import close_lines
from core.station.live_station import STATE_FILE, TRIGGERED, close_live_stations, live_station
from core.store.tools import ToolStore
from tests.conftest import load_sample
from tests.test_pages import (  # noqa: F401 - webrtc: autouse, the fake stream widget
    FakeWebRtc,
    log_in,
    no_errors,
    page,
    texts,
    webrtc,
)

LIVE = "pages/4_Live_inspection.py"
THRESHOLD = "Threshold (FAIL at or above)"


@pytest.fixture
def stream(webrtc) -> FakeWebRtc:  # noqa: F811 - the imported fixture
    """The fake stream widget of test_pages (AppTest cannot run the real component)."""
    return webrtc


@pytest.fixture(scope="module")
def photos() -> dict[str, list[np.ndarray]]:
    """Photos the casting tool was trained on (seed 1): its verdicts on them are certain."""
    sample = load_sample("casting", 12, seed=1)
    return {name: [im for im, y in zip(sample.images, sample.labels) if y == label][:3]
            for label, name in enumerate(("good", "defect"))}


@pytest.fixture
def station_home(casting_tool, workspace):
    casting_tool.update(smoothing=1)
    yield workspace
    close_live_stations()
    close_lines()


def browser(name: str | None = None, role: str = "operator"):
    """A browser page of Live inspection, logged in as ``name`` (else as whoever the station
    lets in: anyone while it has no user)."""
    return log_in(page(LIVE), name, role) if name else page(LIVE).run()


def widget(elements, label: str):
    """The widget with this label (its key names the station's value it shows)."""
    return next(e for e in elements if e.label == label)


def verdicts(at) -> list[str]:
    return [m.value for m in at.markdown if 'class="verdict' in m.value]


def audit(action: str):
    station = live_station()
    assert station.line.recorder.flush(10)
    changes = station.line.history.changes()
    return changes[changes["action"] == action]


def test_a_second_browser_changes_nothing_and_sees_the_first_one_s_changes(station_home, stream,
                                                                          photos):
    kiosk = browser("kiosk")
    stream.playing = True  # the kiosk pressed START
    kiosk.run()
    no_errors(kiosk)
    widget(kiosk.radio, "Mode").set_value("Triggered").run()
    feed_kiosk = stream.callbacks.pop("live::0")
    state = (station_home / STATE_FILE).read_bytes()
    station = live_station()
    assert station.mode("0") == TRIGGERED and station.session("0").feeder.label.endswith("(kiosk)")

    station.trigger("0", "plc-1")  # a PLC trigger is pending when the second browser opens
    laptop = browser("bob", "engineer")
    no_errors(laptop)
    assert "live::0" not in stream.callbacks  # a viewer: it shows no camera of its own
    assert "is fed by browser" in texts(laptop) and "(kiosk)" in texts(laptop)
    assert widget(laptop.radio, "Mode").value == "Triggered"
    assert (station_home / STATE_FILE).read_bytes() == state  # opening changed nothing
    stream.callbacks["live::0"] = feed_kiosk  # the kiosk's frames still count, the trigger too
    stream.send("live::0", photos["defect"][0])
    assert station.session("0").latest.triggered and station.session("0").latest.verdict == "FAIL"

    widget(laptop.slider, THRESHOLD).set_value(0.95).run()
    no_errors(laptop)
    assert station.settings("casting").threshold == pytest.approx(0.95)
    assert ToolStore().get("casting").config.threshold != pytest.approx(0.95)  # a trial
    kiosk.run()  # its next refresh shows the value the laptop set, marked as a trial
    no_errors(kiosk)
    assert widget(kiosk.slider, THRESHOLD).value == pytest.approx(0.95)
    assert "TRIAL threshold 0.95" in kiosk.warning[0].value and "by bob" in kiosk.warning[0].value
    row = audit("threshold (trial)").iloc[0]
    assert row["actor"] == "bob" and row["details"]["new"] == 0.95

    kiosk.button(key="revert::casting").click().run()
    no_errors(kiosk)
    laptop.run()
    assert widget(laptop.slider, THRESHOLD).value == pytest.approx(
        ToolStore().get("casting").config.threshold)
    assert audit("trial reverted").iloc[0]["actor"] == "kiosk"


def test_a_take_over_moves_the_feed_and_the_old_feeder_becomes_a_viewer(station_home, stream,
                                                                       photos):
    kiosk = browser("kiosk")
    stream.playing = True
    kiosk.run()
    feed_kiosk = stream.callbacks.pop("live::0")
    laptop = browser("ann")
    laptop.button(key="take::0").click().run()
    no_errors(laptop)
    feed_laptop = stream.callbacks["live::0"]  # it shows its own camera now
    station = live_station()
    assert station.session("0").feeder.label.endswith("(ann)")
    assert audit("camera fed by").iloc[0]["details"]["previous"].endswith("(kiosk)")
    feed_kiosk(__import__("av").VideoFrame.from_ndarray(photos["defect"][0], format="bgr24"))
    assert station.session("0").latest is None  # the kiosk's frames no longer count
    stream.callbacks["live::0"] = feed_laptop
    stream.send("live::0", photos["good"][0])
    assert station.session("0").latest.verdict == "PASS"
    stream.callbacks.clear()
    kiosk.run()
    assert "live::0" not in stream.callbacks and "is fed by browser" in texts(kiosk)


def test_live_page_shows_streamed_verdicts_and_holds_a_triggered_one(station_home, stream, photos):
    stream.playing = True
    at = browser()
    assert "WAITING" in texts(at)
    stream.send("live::0", photos["defect"][0])
    at.run()
    no_errors(at)
    assert 'class="verdict fail"' in texts(at) and "1 tool(s)" in texts(at)

    widget(at.radio, "Mode").set_value("Triggered").run()
    assert "PRESS TRIGGER" in texts(at)  # a continuous verdict is not held as a triggered one
    at.button(key="live_trigger").click().run()
    stream.send("live::0", photos["good"][0])
    stream.send("live::0", photos["defect"][0])  # after the triggered frame: not judged
    at.run()
    no_errors(at)
    assert 'class="verdict pass"' in texts(at) and "1 tool(s) at " in texts(at)
    assert at.button(key="live_trigger").proto.shortcut == "t"  # the T key triggers too


def test_live_page_shows_one_stream_per_camera_and_adds_a_tool_to_the_line(station_home, stream,
                                                                          photos):
    live_station()  # the station runs: a tool made now is not on its line
    ToolStore().duplicate("casting", "casting side").update(camera="1")
    stream.playing = True
    at = browser()
    no_errors(at)
    assert sorted(stream.callbacks) == ["live::0"]  # a new tool is not on the line
    at.selectbox(key="line_add_tool").select("casting side")
    at.button(key="line_add").click().run()
    no_errors(at)
    assert sorted(stream.callbacks) == ["live::0", "live::1"]
    assert [h.value for h in at.subheader][:2] == ["Camera 0", "Camera 1"]
    stream.send("live::1", photos["defect"][0])  # only camera 1 sees a part
    at.run()
    shown = verdicts(at)
    assert "WAITING" in shown[0] and 'class="verdict fail"' in shown[1]
    assert "casting side" in texts(at) and "**casting** " not in texts(at)
    assert at.selectbox(key="tune::1").options == ["casting side"]


def test_a_tool_deleted_elsewhere_leaves_the_page_and_the_line(station_home, stream, photos):
    stream.playing = True
    at = browser()
    stream.send("live::0", photos["good"][0])
    at.run()
    assert "**casting**" in texts(at)
    ToolStore().delete("casting")  # e.g. on the Home page of another browser
    stream.send("live::0", photos["good"][0])
    at.run()
    no_errors(at)
    assert "NO TOOL" in texts(at) and "**casting**" not in texts(at)
    assert "deleted" in audit("removed from the line").iloc[0]["details"]["reason"]


def test_live_page_says_what_to_do_when_the_camera_sends_no_frames(station_home, stream, photos,
                                                                   monkeypatch):
    from core.station.live import LiveSession

    # long enough that a page run on a busy machine never outlasts it right after a frame
    monkeypatch.setattr(LiveSession, "NO_FRAMES_AFTER_S", 1.5)
    stream.playing = True  # START pressed
    at = browser()
    assert "WAITING" in texts(at) and not at.error
    time.sleep(2.0)
    at.run()  # what the verdict panel shows on its next refresh
    assert "NO FRAMES" in texts(at)
    assert "sends no frames" in at.error[0].value and "press STOP and START" in at.error[0].value
    stream.send("live::0", photos["good"][0])  # the camera streams: the verdict is back by itself
    at.run()
    no_errors(at)
    assert 'class="verdict pass"' in texts(at)
    time.sleep(2.0)  # the cable is pulled
    at.run()
    assert "stopped sending frames" in at.error[0].value and "check the cable" in at.error[0].value
    stream.send("live::0", photos["good"][0])  # and plugged back in
    at.run()
    no_errors(at)
    stream.playing = False  # STOP: no problem, just a camera to start
    at.run()
    no_errors(at)
    assert "START CAMERA" in texts(at) and live_station().session("0").feeder is None


def test_training_page_runs_a_version_as_a_trial_then_promotes_it(station_home, stream, photos):
    tool = ToolStore().get("casting")
    first = tool.config.active_version
    meta = train_tool(tool, load_sample("casting", 8, seed=4),
                      TrainingOptions(views_per_image=1, folds=2, seed=3, activate=False))
    at = page("pages/3_Training.py").run()
    no_errors(at)
    assert at.selectbox(key="review::casting").value == meta.id
    assert at.button(key="trial_start").label.startswith(f"Run {meta.id} as trial on the line")
    at.button(key="trial_start").click().run()
    no_errors(at)
    station = live_station()
    assert station.trial("casting")[0].version == meta.id
    assert ToolStore().get("casting").config.active_version == first  # not active yet

    station.claim_feed("0", "kiosk", "browser kiosk", "kiosk")
    for image in photos["good"] + photos["defect"]:
        station.session("0").offer("kiosk", image)
    at.run()
    assert "6 frames judged" in at.info[0].value and "agrees with" in at.info[0].value
    live = browser()
    assert "TRIAL" in texts(live) and "agrees on" in texts(live)

    at.button(key="promote").click().run()
    no_errors(at)
    assert ToolStore().get("casting").config.active_version == meta.id
    assert station.state.tools["casting"].version == meta.id
    assert audit("promoted").iloc[0]["details"]["frames"] == 6

    at.selectbox(key="review::casting").select(first).run()
    at.button(key="rollback").click().run()  # an older version: back at once, audited
    no_errors(at)
    assert ToolStore().get("casting").config.active_version == first
    assert station.state.tools["casting"].version == first


def test_training_page_offers_a_first_version_as_a_trial(station_home):
    shutil.rmtree(ToolStore().get("casting").folder)
    tool = ToolStore().create("fresh", allow_flips=True)
    train_tool(tool, load_sample("casting", 6, seed=2),
               TrainingOptions(views_per_image=1, folds=2, activate=False))
    at = page("pages/3_Training.py").run()
    no_errors(at)
    at.button(key="trial_start").click().run()
    assert at.button(key="promote").label.endswith("and add 'fresh' to the line")
    at.button(key="promote").click().run()
    no_errors(at)
    assert "fresh" in live_station().state.tools


def framing_warnings(at) -> list[str]:
    return [w.value for w in at.warning if ", framing:" in w.value]


def test_live_page_says_when_the_roi_frames_the_part_unlike_the_tool_s_photos(station_home, stream,
                                                                             photos):
    """The tool's photos were captured 300x300 around the part; the camera ROI (the whole frame
    here) shows the part small in a wide picture: the page says so and what to do, from one
    frame checked every few seconds, never from the frame callback."""
    from core.store.datasets import ToolDataset
    from tests.conftest import on_conveyor

    tool = ToolStore().get("casting")
    ds = ToolDataset(tool.images_dir, tool.config.classes)
    for name, images in photos.items():
        for image in images:
            ds.add_image(name, image)  # as captured through a tight ROI
    stream.playing = True
    at = browser("kiosk")
    station = live_station()
    stream.send("live::0", photos["good"][1])  # the ROI shows the part as the photos do
    at.run()
    no_errors(at)
    assert station.framing.checks == 1 and framing_warnings(at) == []

    wide = on_conveyor(photos["good"][1])  # 640x480, the part 300 px in the middle
    for _ in range(20):
        stream.send("live::0", wide)
    at.run()
    assert station.framing.checks == 1  # throttled: the frame callback never checks
    assert framing_warnings(at) == []  # the last check's findings until the next one

    station.framing.every_s = 0.0  # the next check is due
    at.run()
    no_errors(at)
    found = framing_warnings(at)
    assert station.framing.checks == 2 and found, texts(at)
    assert found[0].startswith("**casting**, framing: The 6 photos captured from the camera")
    assert "times larger" in found[0] and "set the ROI back, or capture them again" in found[0]
    assert any("(1.33)" in w for w in found), found

    tool.update(roi=tool.config.roi.from_pixels(170, 90, 470, 390, 640, 480))  # redrawn on Capture
    stream.send("live::0", wide)  # the saved ROI judges from the next frame
    at.run()
    no_errors(at)
    assert station.framing.checks == 3 and not any("times larger" in w for w in framing_warnings(at))


def test_an_operator_corrects_the_latest_verdict_with_one_click(station_home, stream, photos):
    from core.station.line_learning import CORRECTED, ReviewQueue

    kiosk = browser("kiosk")  # an operator
    stream.playing = True
    kiosk.run()
    stream.send("live::0", photos["defect"][0])  # the tool says FAIL: the operator says good
    kiosk.run()
    no_errors(kiosk)
    wrong = kiosk.button(key="wrong::0")
    assert wrong.label == "Wrong: it is good"
    wrong.click().run()
    no_errors(kiosk)
    assert "is in the photos of casting as 'good' (by kiosk)" in texts(kiosk)
    tool = ToolStore().get("casting")
    record = ReviewQueue(tool).labelled()[0]
    assert (record.label, record.labelled_by, record.reason) == ("good", "kiosk", CORRECTED)
    assert (tool.images_dir / record.dataset_path).parent.name == "good"
    row = audit(CORRECTED).iloc[0]
    assert row["actor"] == "kiosk" and row["details"]["verdict"] == "FAIL"


def test_an_operator_corrects_a_recent_verdict_from_the_strip_once(station_home, stream, photos):
    from core.station.line_learning import CORRECTED, ReviewQueue

    kiosk = browser("kiosk")
    stream.playing = True
    kiosk.run()
    stream.send("live::0", photos["defect"][0])  # FAIL: the part the operator noticed too late
    stream.send("live::0", photos["good"][0])  # PASS: the part on screen now
    kiosk.run()
    no_errors(kiosk)
    assert "Recent verdicts of casting" in texts(kiosk)
    assert kiosk.button(key="wrong::0").label == "Wrong: it is defect"  # the latest, as before
    strip = [b for b in kiosk.button if b.key.startswith("recent::0::casting::")]
    assert [b.label for b in strip] == ["Wrong: it is defect", "Wrong: it is good"]  # newest first
    strip[1].click().run()
    no_errors(kiosk)
    assert "is in the photos of casting as 'good' (by kiosk)" in texts(kiosk)
    record = ReviewQueue(ToolStore().get("casting")).labelled()[0]
    assert (record.label, record.labelled_by, record.reason) == ("good", "kiosk", CORRECTED)
    assert record.time == live_station().session("0").recent.of("casting")[1].time
    assert "corrected: good" in texts(kiosk)  # marked in the strip: no button to add it twice
    assert [b.label for b in kiosk.button if b.key.startswith("recent::0::casting::")] == [
        "Wrong: it is defect"]
    assert audit(CORRECTED).iloc[0]["details"]["verdict"] == "FAIL"
