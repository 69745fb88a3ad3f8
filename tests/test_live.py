"""The live session on real casting photos: continuous and triggered modes, verdict events,
timestamps, staleness, triggers in both modes, trials beside the line, one feeder at a time,
errors that must not stop the stream, and the recent verdicts buffer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.engine.inference import ToolRunner
from core.records.verdicts import CHANGE, HEARTBEAT, TRIGGER, VerdictRecord
from core.station.live import Fanout, Feeder, FrameHolder, Lineup, LiveSession, RecentVerdicts, TrialRun
from core.store.tools import ToolStore
from tests.conftest import load_sample


@pytest.fixture(scope="module")
def photos() -> dict[str, list[np.ndarray]]:
    """Photos the casting tool was trained on (seed 1): its verdicts on them are certain."""
    sample = load_sample("casting", 12, seed=1)
    return {name: [im for im, y in zip(sample.images, sample.labels) if y == label][:3]
            for label, name in enumerate(("good", "defect"))}


def session(tools, sink=None, heartbeat_s=None, trials=()) -> LiveSession:
    return LiveSession(Lineup(tuple(ToolRunner(t) for t in tools), tuple(trials)),
                       sink if sink is not None else RecentVerdicts(), heartbeat_s=heartbeat_s)


def test_frame_holder_keeps_the_latest_frame_and_waits_for_a_new_one():
    holder = FrameHolder()
    assert holder.get() is None and holder.wait_new(0, timeout=0.05) is None
    first = np.zeros((4, 4, 3), np.uint8)
    before = time.monotonic()
    arrived = holder.put(first)
    assert holder.count == 1 and before <= holder.stamp <= time.monotonic()
    assert abs(arrived - time.time()) < 1  # the frame's timestamp is the wall clock
    copy = holder.get()
    copy[:] = 255
    assert holder.get().max() == 0  # readers get a copy

    second = np.full((4, 4, 3), 7, np.uint8)
    timer = threading.Timer(0.1, holder.put, args=(second,))
    timer.start()
    try:
        assert holder.wait_new(1, timeout=5).max() == 7
    finally:
        timer.join()
    assert holder.wait_new(2, timeout=0.05) is None  # nothing newer than the second frame


def test_continuous_mode_records_one_event_per_verdict_change(casting_tool, photos):
    casting_tool.update(smoothing=1)
    sink = RecentVerdicts()
    live = session([casting_tool], sink)
    frames = photos["good"] + photos["defect"] + photos["good"][:1]
    times = []
    for image in frames:
        before = time.time()
        out = live.process(image)
        assert out.shape == image.shape and not np.array_equal(out, image)  # ROI box drawn
        assert before <= live.latest.time <= time.time() and not live.latest.triggered
        times.append(live.latest.time)
    assert live.error is None
    assert [r.verdict for r in live.latest.results] == ["PASS"]

    events = sink.recent()
    assert [(e.verdict, e.cause) for e in events] == [("PASS", CHANGE), ("FAIL", CHANGE),
                                                     ("PASS", CHANGE)]
    assert [e.time for e in events] == [times[0], times[3], times[6]]  # the judged frames' times
    fail = events[1]
    assert fail.tool == "casting" and fail.defect_class == "defect"
    assert fail.score >= fail.threshold == casting_tool.config.threshold
    assert fail.version == casting_tool.config.active_version


def test_continuous_results_go_stale(casting_tool, photos):
    live = session([casting_tool])
    live.process(photos["good"][0])
    latest = live.latest
    assert not latest.triggered and live.current() is latest
    assert live.current(now=latest.seen + LiveSession.STALE_AFTER_S + 0.1) is None
    live.continuous = False  # a continuous verdict is not held as a triggered one
    assert live.current() is None


def test_a_trigger_in_continuous_mode_is_answered_not_eaten(casting_tool, photos):
    casting_tool.update(smoothing=3)
    sink = RecentVerdicts()
    live = session([casting_tool], sink)
    live.process(photos["good"][0])
    live.process(photos["good"][1])
    live.request_trigger("plc-9")  # a PLC asks while the camera runs continuously
    live.process(photos["good"][2])
    assert not live.trigger.is_set()
    events = sink.recent()
    assert [(e.cause, e.trigger_id) for e in events] == [(CHANGE, None), (TRIGGER, "plc-9")]
    assert live.latest.results[0].smoothed != pytest.approx(live.latest.results[0].score)  # the
    # moving average of continuous mode was not reset by the trigger
    live.process(photos["good"][0])
    assert len(sink.recent()) == 2  # back to one event per change


def test_a_value_sent_with_a_trigger_judges_that_part_only(casting_tool, photos):
    """The expected value (an order's serial) is the trigger's: its frame is judged with it, the
    next trigger without one expects nothing, a continuous frame never gets one."""
    sink = RecentVerdicts()
    live = session([casting_tool], sink)
    live.process(photos["good"][0])
    assert live.latest.expected is None
    live.request_trigger("part-1", "8480010001136")
    live.process(photos["good"][1])
    assert (live.latest.triggered, live.latest.expected) == (True, "8480010001136")
    assert sink.recent()[-1].trigger_id == "part-1"
    live.process(photos["good"][2])
    assert (live.latest.triggered, live.latest.expected) == (False, None)
    live.continuous = False
    live.request_trigger("part-2")
    live.process(photos["good"][0])
    assert (live.latest.expected, sink.recent()[-1].trigger_id) == (None, "part-2")
    with pytest.raises(ValueError, match="at most 200"):
        live.request_trigger("part-3", "9" * 201)
    assert not live.trigger.is_set()  # refused: no part is judged without what it must read


def test_triggered_mode_judges_one_frame_per_trigger_and_holds_it(casting_tool, photos):
    runner_sink = RecentVerdicts()
    live = session([casting_tool], runner_sink)
    assert live.runners["casting"].config.smoothing == 5 and live.lineup.tools == ["casting"]
    for image in photos["good"]:  # continuous first: the moving average fills with PASS scores
        live.process(image)
    live.continuous = False

    untouched = live.process(photos["defect"][0])
    assert untouched is not None and np.array_equal(untouched, photos["defect"][0])
    assert live.current() is None and len(runner_sink.recent()) == 1  # the continuous PASS

    live.request_trigger("part-17")
    live.process(photos["defect"][0])
    held = live.current()
    assert held.triggered and not live.trigger.is_set()
    result = held.results[0]
    assert result.verdict == "FAIL" and held.verdict == "FAIL"
    assert result.smoothed == pytest.approx(result.score)  # judged on this part alone

    shown = live.process(photos["good"][0])  # no trigger: the verdict is held and drawn
    assert live.current() is held and not np.array_equal(shown, photos["good"][0])

    live.request_trigger()
    live.process(photos["defect"][1])  # the same verdict again: still an event per trigger
    events = runner_sink.recent()
    assert [(e.verdict, e.cause) for e in events] == [("PASS", CHANGE), ("FAIL", TRIGGER),
                                                     ("FAIL", TRIGGER)]
    assert events[-1].time == live.current().time != held.time
    assert [e.trigger_id for e in events] == [None, "part-17", None]
    first = events[1]
    assert first.camera == live.camera and first.raw_score == pytest.approx(first.score)
    assert first.latency_ms > 0 and first.roi_image().shape[:2] == (
        first.box[3] - first.box[1], first.box[2] - first.box[0])  # a FAIL keeps its ROI image
    assert events[0].frame is None and events[0].roi_image() is None  # a PASS keeps none


def test_a_verdict_that_holds_gets_a_heartbeat_event(casting_tool, photos):
    casting_tool.update(smoothing=1)
    sink = RecentVerdicts()
    live = session([casting_tool], sink, heartbeat_s=0.3)
    live.process(photos["good"][0])
    live.process(photos["good"][1])  # same verdict, soon after: nothing
    time.sleep(0.35)
    live.process(photos["good"][2])
    live.process(photos["good"][0])
    assert [(e.verdict, e.cause) for e in sink.recent()] == [("PASS", CHANGE), ("PASS", HEARTBEAT)]


def test_fanout_hands_events_to_every_sink_even_when_one_fails():
    class Broken:
        def remember(self, records):
            raise ConnectionError("broker gone")

    first, second = RecentVerdicts(), RecentVerdicts()
    record = VerdictRecord(1.0, "a", "PASS", None, 0.1, 0.5, "v001")
    Fanout(first, Broken(), second).remember([record])
    assert first.recent() == second.recent() == [record]


def test_verdict_changes_are_tracked_per_tool_and_any_fail_fails_the_part(casting_tool, photos):
    strict = ToolStore().duplicate("casting", "strict")
    strict.update(threshold=0.0, smoothing=1)  # every score is at or above 0: always FAIL
    casting_tool.update(smoothing=1)
    sink = RecentVerdicts()
    live = session([casting_tool, strict], sink)
    for image in photos["good"]:
        live.process(image)
    assert [(r.tool, r.verdict) for r in live.latest.results] == [("casting", "PASS"),
                                                                  ("strict", "FAIL")]
    assert live.latest.verdict == "FAIL"
    assert [(e.tool, e.verdict) for e in sink.recent()] == [("casting", "PASS"),
                                                            ("strict", "FAIL")]
    assert sink.last("strict").verdict == "FAIL" and sink.last("casting").verdict == "PASS"


def test_a_bad_frame_is_reported_and_the_stream_goes_on(casting_tool, photos):
    live = session([casting_tool])
    gray = np.zeros((480, 640), np.uint8)
    assert live.process(gray) is gray
    assert "BGR colour frame" in live.error and live.latest is None
    live.process(photos["good"][0])
    assert live.error is None and live.latest is not None


def test_recent_verdicts_are_bounded_and_searchable_by_tool():
    buffer = RecentVerdicts(maxlen=3)
    records = [VerdictRecord(float(i), tool, "PASS", None, 0.1, 0.5, "v001")
               for i, tool in enumerate(["a", "b", "a", "b"])]
    buffer.remember(records[:2])
    buffer.remember(records[2:])
    assert buffer.recent() == records[1:]  # the oldest went
    assert buffer.last("a") is records[2] and buffer.last("b") is records[3]
    assert buffer.last("c") is None
    buffer.recent().clear()
    assert len(buffer.recent()) == 3  # a copy


def test_a_trial_judges_the_same_frames_counted_but_never_sent(casting_tool, photos):
    casting_tool.update(smoothing=1)
    strict = TrialRun(ToolRunner(casting_tool))
    strict.runner.configure(threshold=0.0)  # this 'version' fails everything
    sink = RecentVerdicts()
    live = session([casting_tool], sink, trials=[strict])
    for image in photos["good"] + photos["defect"]:
        live.process(image)
    summary = strict.summary()
    assert (summary.judged, summary.compared, summary.failed) == (6, 6, 6)
    assert summary.agreed == 3 and summary.agreement == pytest.approx(0.5)  # the defects agree
    assert [d.line_verdict for d in summary.disagreements] == ["PASS"] * 3
    assert [r.verdict for r in live.latest.trials] == ["FAIL"]
    assert [(e.tool, e.verdict) for e in sink.recent()] == [("casting", "PASS"), ("casting", "FAIL")]
    assert all(e.version == casting_tool.config.active_version for e in sink.recent())

    alone = TrialRun(ToolRunner(casting_tool))  # a first version: nothing to agree with
    first = session([], sink, trials=[alone])
    first.process(photos["good"][0])
    assert alone.summary().judged == 1 and alone.summary().agreement is None
    assert first.latest.results == () and first.latest.verdict == "PASS"
    assert len(sink.recent()) == 2  # still nothing sent


def test_only_the_feeder_s_frames_are_judged(casting_tool, photos):
    live = session([casting_tool])
    assert live.feeder is None and live.camera_problem() is None
    out = live.offer("kiosk", photos["defect"][0])  # nobody feeds yet: not judged
    assert live.latest is None and not np.array_equal(out, photos["defect"][0])  # says so

    assert live.claim(Feeder("kiosk", "browser kiosk", time.monotonic())) is None
    live.offer("kiosk", photos["defect"][0])
    assert live.latest.verdict == "FAIL" and live.overlay is not None
    previous = live.claim(Feeder("laptop", "browser laptop", time.monotonic()))
    assert previous.browser == "kiosk"
    assert abs(previous.started() - time.time()) < 5  # shown as a time of day, not monotonic
    live.offer("kiosk", photos["defect"][0])  # the old feeder's frames no longer count
    assert live.frames.count == 1
    live.offer("laptop", photos["good"][0])
    assert live.frames.count == 2
    assert not live.release("kiosk") and live.release("laptop") and live.feeder is None


def test_a_clock_set_back_an_hour_hides_no_silent_camera_and_stops_no_heartbeat(
        casting_tool, photos, monkeypatch):
    sink = RecentVerdicts()
    live = session([casting_tool], sink, heartbeat_s=0.3)
    live.claim(Feeder("kiosk", "browser kiosk", time.monotonic()))
    live.offer("kiosk", photos["good"][0])
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() - 3600)  # NTP (or a person) steps the clock
    for _ in range(4):
        time.sleep(0.15)
        live.offer("kiosk", photos["good"][0])
    assert [r.cause for r in sink.recent()].count(HEARTBEAT) >= 1  # the verdict's heartbeat goes on
    time.sleep(LiveSession.NO_FRAMES_AFTER_S + 0.2)  # then the camera goes silent
    assert "stopped sending frames" in live.camera_problem()
    assert live.current() is None  # the last verdict is not shown as current
