"""Live inspection as a session: one camera's latest frame, continuous or triggered judging, and
the verdict events it produces.

A *verdict event* is what a station records: one row per part, not per frame. In continuous
mode one per change of a tool's smoothed verdict (PASS to FAIL or back; the first verdict of a
session counts as a change) plus a heartbeat when a verdict has held for ``heartbeat_s``; in
triggered mode one per trigger, whatever the verdict, carrying the trigger's id. A trigger may
also bring the value its part must read (the order's serial): the reading tools get it for
that frame only. A trigger that reaches a camera in continuous mode is answered too (the next
frame's verdicts, as trigger events with its id), so a PLC waiting for a result is never left
hanging. ``LiveSession`` hands its events to a sink with a ``remember(records)`` method,
called on the video thread, so a sink must never block (the history store and the line
integrations queue them). ``Fanout`` hands them to several sinks (``core.station.line`` gives every
session the station's); ``RecentVerdicts`` keeps the latest ones in memory. ``LiveSession.recent``
keeps each tool's last few parts with the ROI each judged, so that an operator can say one of them
was wrong (``core.station.line_keepers.correct_verdict``).

What a session runs is its ``Lineup``: the runners of the tools on the line (their verdicts are
the station's) and ``TrialRun``s beside them (a model version judging the same frames, its
verdicts counted and compared with the line's, never sent anywhere). The station
(``core.station.live_station``) builds lineups and swaps them in between two frames.

A station may have several cameras: each tool names the camera it watches (``ToolConfig.camera``)
and ``by_camera`` groups tools so that each camera gets its own session. Only one *feeder* (a
browser page, or the headless camera reader) feeds a session at a time: frames of two cameras
interleaved in one moving average would be wrong, so ``offer`` judges only the feeder's frames.
``LiveSession.camera_problem`` tells the operator what to do when the feeder sends no frames
(unplugged, refused, used by another program) and clears as soon as frames come back.

``LiveSession.process`` runs on the video thread; page scripts read ``current()`` and the
station changes ``lineup`` / ``continuous`` / ``heatmaps`` and requests triggers from other
threads. Results are published as one immutable ``LiveResults`` object, so a reader never sees
results of one frame with the time of another.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from core.engine.inference import Inspector, ToolRunner
from core.errors import InspectorError
from core.records.verdicts import (CHANGE, DEFAULT_CAMERA, ERROR, HEARTBEAT, TRIGGER, ToolResult,
                                   VerdictRecord, expected_value, overall)
from core.station.line_learning import LineKeeper
from core.store.tools import Tool, ToolConfig

LOG = logging.getLogger("shopfloor_inspector.live")

_CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,31}$")


class FrameHolder:
    """The latest webcam frame, written by the video thread and read by another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self.count = 0  # frames received so far
        self.stamp = 0.0  # time.monotonic() of the latest frame: for intervals, never a date

    def put(self, frame: np.ndarray) -> float:
        """Keep a frame as the latest; returns the wall-clock time it arrived (its timestamp)."""
        with self._lock:
            self._frame, self.count, self.stamp = frame, self.count + 1, time.monotonic()
        return time.time()

    def get(self) -> np.ndarray | None:
        with self._lock:
            return None if self._frame is None else self._frame.copy()

    def wait_new(self, after: int, timeout: float = 2.0) -> np.ndarray | None:
        """The latest frame once more than ``after`` frames have arrived, or None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count > after:
                return self.get()
            time.sleep(0.02)
        return None


# ------------------------------------------------------------------ cameras

def camera_name(value: str) -> str:
    """A camera name as typed by the engineer (trimmed), or a clear error."""
    name = str(value).strip()
    if not _CAMERA_NAME.match(name):
        raise InspectorError(f"camera name '{name}' is not allowed: use 1-32 letters, digits, "
                             "spaces, '_', '-' or '.', starting with a letter or digit (e.g. "
                             "'0', '1', 'left', 'top view')")
    return name


def by_camera(tools: list[Tool]) -> dict[str, list[Tool]]:
    """The tools grouped by the camera they watch, cameras in name order, tools in given order."""
    groups: dict[str, list[Tool]] = {}
    for tool in tools:
        groups.setdefault(tool.config.camera, []).append(tool)
    return dict(sorted(groups.items()))


# ------------------------------------------------------------------ verdict events

class VerdictSink(Protocol):
    def remember(self, records: list[VerdictRecord]) -> None: ...


class RecentVerdicts:
    """The latest verdict events in memory, oldest first (thread-safe, bounded)."""

    def __init__(self, maxlen: int = 500):
        self._records: deque[VerdictRecord] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def remember(self, records: list[VerdictRecord]) -> None:
        with self._lock:
            self._records.extend(records)

    def recent(self) -> list[VerdictRecord]:
        with self._lock:
            return list(self._records)

    def last(self, tool: str) -> VerdictRecord | None:
        """The latest event of a tool, or None if it has none in memory."""
        for record in reversed(self.recent()):
            if record.tool == tool:
                return record
        return None


@dataclass(frozen=True)
class JudgedPart:
    """One tool's verdict on one frame, with the ROI it judged: what an operator corrects."""

    result: ToolResult
    crop: np.ndarray = field(compare=False, repr=False)
    time: float  # time.time() of the judged frame: its timestamp, shown and recorded


class RecentParts:
    """Per tool, its last ``keep`` judged parts an operator can tell apart, newest first
    (thread-safe, bounded, in memory only).

    Why not every frame: at 15 frames a second the last six frames are one part seen for
    half a second. What an operator tells apart is what the history records as a part: a
    change of the tool's smoothed verdict (its first frame) or a trigger; a heartbeat is the
    same part still held, and an ERROR has no verdict to correct. The video thread only
    copies the ROI (not a view that would hold the whole frame), and only at such a verdict:
    no encoding, a few microseconds a part.
    """

    KEEP = 6

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._parts: dict[str, deque[JudgedPart]] = {}
        self._lock = threading.Lock()

    def add(self, part: JudgedPart) -> None:
        kept = JudgedPart(part.result, part.crop.copy(), part.time)
        with self._lock:
            self._parts.setdefault(part.result.tool, deque(maxlen=self.keep)).appendleft(kept)

    def of(self, tool: str) -> list[JudgedPart]:
        """A tool's recent parts, newest first."""
        with self._lock:
            return list(self._parts.get(tool, ()))


class Fanout:
    """Hands every event to several sinks; one failing sink never stops the others."""

    def __init__(self, *sinks: VerdictSink):
        self.sinks = list(sinks)

    def remember(self, records: list[VerdictRecord]) -> None:
        for sink in self.sinks:
            try:
                sink.remember(records)
            except Exception:  # noqa: BLE001 - the video thread must go on
                LOG.exception("a verdict sink failed")


# ------------------------------------------------------------------ trials

class Disagreement(NamedTuple):
    """One frame on which a trial version and the line's version gave different verdicts."""

    time: float
    line_verdict: str
    line_score: float
    trial_verdict: str
    trial_score: float


@dataclass(frozen=True)
class TrialSummary:
    """What a trial has shown so far (counted since it started in this process)."""

    version: str
    judged: int  # frames the trial version judged
    compared: int  # of which the line's version of the tool judged too, after the trial's warm-up
    agreed: int
    failed: int  # trial verdicts that were FAIL
    disagreements: tuple[Disagreement, ...]  # the latest ones, oldest first

    @property
    def agreement(self) -> float | None:
        """Share of compared frames with the same verdict (None: nothing to compare with yet)."""
        return self.agreed / self.compared if self.compared else None


class TrialRun:
    """A model version judging a camera's frames beside the line: its verdicts are counted and
    compared with the line's version of the same tool on the video thread, never sent."""

    KEEP_DISAGREEMENTS = 20

    def __init__(self, runner: ToolRunner):
        self.runner = runner
        self._lock = threading.Lock()
        self._judged = self._compared = self._agreed = self._failed = 0
        self._disagreements: deque[Disagreement] = deque(maxlen=self.KEEP_DISAGREEMENTS)

    @property
    def tool(self) -> str:
        return self.runner.tool.name

    @property
    def version(self) -> str:
        return self.runner.model.version

    def count(self, trial: ToolResult, line: ToolResult | None, when: float) -> None:
        """Count one frame; verdicts are compared once the trial's moving average is as full as
        the line's (before, the same model would still disagree at a part change)."""
        with self._lock:
            self._judged += 1
            self._failed += not trial.passed
            if line is None or self._judged < self.runner.config.smoothing:
                return
            self._compared += 1
            if line.verdict == trial.verdict:
                self._agreed += 1
            else:
                self._disagreements.append(Disagreement(when, line.verdict, line.smoothed,
                                                        trial.verdict, trial.smoothed))

    def summary(self) -> TrialSummary:
        with self._lock:
            return TrialSummary(self.version, self._judged, self._compared, self._agreed,
                                self._failed, tuple(self._disagreements))


# ------------------------------------------------------------------ the session

@dataclass(frozen=True)
class UnableTool:
    """A tool on the line whose model cannot load: judged ERROR on every frame, with the reason,
    so that its parts never pass unchecked while the other tools go on."""

    config: ToolConfig
    version: str
    reason: str

    def result(self, frame_shape: tuple[int, ...]) -> ToolResult:
        box = self.config.roi.to_pixels(frame_shape[1], frame_shape[0])
        return ToolResult(self.config.name, ERROR, None, math.nan, math.nan, self.config.threshold,
                          box, None, 0.0, self.version, f"cannot load: {self.reason}")


@dataclass(frozen=True)
class Lineup:
    """What a session judges every frame with: the line's runners, the trials beside them, the
    line's tools that cannot load, and per line tool the keeper of its uncertain frames."""

    runners: tuple[ToolRunner, ...] = ()
    trials: tuple[TrialRun, ...] = ()
    unable: tuple[UnableTool, ...] = ()
    keepers: Mapping[str, LineKeeper] = field(default_factory=dict, compare=False)

    @property
    def tools(self) -> list[str]:
        return [r.tool.name for r in self.runners]


@dataclass(frozen=True)
class LiveResults:
    """The line's results on one frame (and the trials'), with when the frame arrived."""

    results: tuple[ToolResult, ...]
    time: float  # time.time() of the judged frame: its timestamp, shown and recorded
    seen: float  # time.monotonic() of the judged frame: for its age (a clock step changes none)
    triggered: bool  # judged because of a trigger
    trials: tuple[ToolResult, ...] = ()  # shown and counted, never part of the verdict
    expected: str | None = None  # the value the trigger sent for this part (e.g. its serial)
    frame: np.ndarray | None = field(default=None, compare=False, repr=False)  # the judged frame

    def part(self, tool: str) -> JudgedPart | None:
        """A line tool's result on this frame and the ROI it judged (None: no such result)."""
        found = next((r for r in self.results if r.tool == tool), None)
        if found is None or self.frame is None:
            return None
        x0, y0, x1, y1 = found.box
        return JudgedPart(found, self.frame[y0:y1, x0:x1], self.time)

    @property
    def verdict(self) -> str:
        """The station's verdict on the frame: ``overall`` of the line's tools."""
        return overall([r.verdict for r in self.results])

    def age(self, now: float | None = None) -> float:
        """Seconds since the frame arrived (``now``: a ``time.monotonic()`` reading)."""
        return (time.monotonic() if now is None else now) - self.seen


class TriggerRequest(NamedTuple):
    """A trigger waiting for the next frame: the id its events carry and the value its reading
    tools compare with (one object, so the video thread never reads one trigger's id with
    another's value)."""

    trigger_id: str | None = None
    expected: str | None = None


@dataclass(frozen=True)
class Feeder:
    """Who feeds a session its frames: one browser page (or the headless camera reader)."""

    browser: str  # an id unique to the page (a browser tab) or reader
    label: str  # how it is shown: "browser 3f2a1c (ann)"
    since: float  # time.monotonic() it started feeding

    def started(self) -> float:
        """When it started feeding, on the wall clock: to show (intervals use ``since``)."""
        return time.time() - (time.monotonic() - self.since)


class LiveSession:
    """One camera's live inspection, shared by its video thread, the station and page scripts.

    ``lineup``, ``continuous`` and ``heatmaps`` may be replaced at any time and triggers
    requested (``request_trigger``): each frame reads them afresh, so a change takes effect on
    the next frame without restarting the stream.
    """

    STALE_AFTER_S = 3.0  # continuous results older than this are not shown as current
    NO_FRAMES_AFTER_S = 3.0  # a feeder silent for longer than this has a problem

    def __init__(self, lineup: Lineup, sink: VerdictSink, camera: str = DEFAULT_CAMERA,
                 heartbeat_s: float | None = 60.0):
        self.lineup = lineup
        self.camera = camera
        self.sink = sink
        self.heartbeat_s = heartbeat_s
        self.frames = FrameHolder()
        self.continuous = True
        self.heatmaps = False
        self.trigger = threading.Event()
        self.latest: LiveResults | None = None
        self.recent = RecentParts()  # per tool, its last parts with their ROIs: to correct
        self.overlay: np.ndarray | None = None  # the latest frame as drawn, for viewers
        self.error: str | None = None
        self.feeder: Feeder | None = None
        self._feeder_lock = threading.Lock()
        self._request = TriggerRequest()
        self._last_events: dict[str, tuple[str, float]] = {}  # tool -> (verdict, monotonic time)

    @property
    def runners(self) -> dict[str, ToolRunner]:
        return {r.tool.name: r for r in self.lineup.runners}

    # -------------------------------------------------------------- who feeds it

    def claim(self, feeder: Feeder) -> Feeder | None:
        """Make ``feeder`` the one whose frames are judged; returns the one it replaces."""
        with self._feeder_lock:
            previous, self.feeder = self.feeder, feeder
        return previous

    def release(self, browser: str) -> bool:
        """The feeder stopped (STOP pressed, page closed); True if ``browser`` was feeding."""
        with self._feeder_lock:
            if self.feeder is None or self.feeder.browser != browser:
                return False
            self.feeder = None
        return True

    def silent_for(self, now: float | None = None) -> float | None:
        """Seconds since the feeder's last frame (or its start); None when nobody feeds. On the
        monotonic clock (``now`` too): a clock set back never hides a silent camera."""
        feeder = self.feeder
        if feeder is None:
            return None
        return (time.monotonic() if now is None else now) - max(self.frames.stamp, feeder.since)

    def offer(self, browser: str, image: np.ndarray) -> np.ndarray:
        """A frame from ``browser``: judged and drawn if it feeds this camera, else returned
        with a note (another browser feeds the camera; its frames are the ones judged)."""
        feeder = self.feeder
        if feeder is not None and feeder.browser == browser:
            return self.process(image)
        note = image.copy()
        text = (f"not judged: camera {self.camera} is fed by {feeder.label}" if feeder else
                f"not judged yet: camera {self.camera} starts with this browser")
        cv2.putText(note, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1,
                    cv2.LINE_AA)
        return note

    # -------------------------------------------------------------- judging

    def request_trigger(self, trigger_id: str | None = None, expected: str | None = None) -> None:
        """Judge the next frame as a part of its own; its events carry ``trigger_id`` and its
        reading tools compare what they read with ``expected`` (ValueError: see
        ``expected_value``)."""
        self._request = TriggerRequest(trigger_id, expected_value(expected))
        self.trigger.set()

    def process(self, image: np.ndarray) -> np.ndarray:
        """Inspect a BGR frame (every frame, or the next one after a trigger) and draw on it."""
        arrived = self.frames.put(image)
        seen = self.frames.stamp  # this video thread is the only one putting frames
        try:
            triggered = self.trigger.is_set()
            if self.continuous or triggered:
                shown = self._judge(image, arrived, seen, triggered)
            else:
                shown = self.current()  # the held verdict of the last trigger, if any
            out = Inspector.draw(image, list(shown.results), self.heatmaps) if shown else image
            self.overlay = out
            return out
        except InspectorError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the stream must survive; the page shows it
            LOG.exception("live inspection failed on a frame")
            self.error = f"inspection failed on a frame: {exc}"
        self.overlay = image
        return image

    def _judge(self, image: np.ndarray, arrived: float, seen: float, triggered: bool) -> LiveResults:
        lineup = self.lineup
        request = TriggerRequest()
        if triggered:
            request, self._request = self._request, TriggerRequest()
            self.trigger.clear()
            if not self.continuous:
                for runner in (*lineup.runners, *(t.runner for t in lineup.trials)):
                    runner.reset()  # a triggered verdict judges this part only
        runners = [*lineup.runners, *(t.runner for t in lineup.trials)]
        judged = Inspector(runners).inspect(image, heatmaps=self.heatmaps, expected=request.expected)
        line, trials = judged[:len(lineup.runners)], judged[len(lineup.runners):]
        line += [unable.result(image.shape) for unable in lineup.unable]
        by_tool = {r.tool: r for r in line}
        for trial, result in zip(lineup.trials, trials):
            trial.count(result, by_tool.get(result.tool), arrived)
        results = LiveResults(tuple(line), arrived, seen, triggered, tuple(trials), request.expected,
                              image)
        self.latest, self.error = results, None
        events = self._events(results, image, request.trigger_id)
        if events:
            self.sink.remember(events)
            for event in events:
                if event.cause != HEARTBEAT and event.verdict != ERROR:
                    self.recent.add(results.part(event.tool))
        self._keep(results, lineup)
        return results

    def _keep(self, results: LiveResults, lineup: Lineup) -> None:
        """Offer each line tool's frame to its keeper (it decides in microseconds and never
        waits: a crop it keeps is written on its own thread)."""
        for result in results.results:
            keeper = lineup.keepers.get(result.tool)
            judged = results.part(result.tool) if keeper is not None else None
            if judged is None:
                continue
            try:
                keeper.offer(judged.crop, result, self.camera, result.features)
            except Exception:  # noqa: BLE001 - keeping a frame for review never costs a verdict
                LOG.exception("keeping a frame of '%s' for review failed", result.tool)

    def _events(self, results: LiveResults, image: np.ndarray,
                trigger_id: str | None) -> list[VerdictRecord]:
        """The verdict events of freshly judged results (and note when each tool had one)."""
        events = []
        for result in results.results:
            if results.triggered:
                cause = TRIGGER
            else:
                verdict, since = self._last_events.get(result.tool, (None, 0.0))
                if verdict != result.verdict:
                    cause = CHANGE
                elif self.heartbeat_s is not None and results.seen - since >= self.heartbeat_s:
                    cause = HEARTBEAT
                else:
                    continue
            events.append(VerdictRecord.of(result, results.time, cause, self.camera, trigger_id,
                                           image))
            self._last_events[result.tool] = (result.verdict, results.seen)
        return events

    def current(self, now: float | None = None) -> LiveResults | None:
        """What to show now: in continuous mode the latest results unless stale, in triggered
        mode the latest triggered results (held until the next trigger)."""
        latest = self.latest
        if latest is None:
            return None
        if self.continuous:
            return latest if latest.age(now) <= self.STALE_AFTER_S else None
        return latest if latest.triggered else None

    def camera_problem(self, now: float | None = None) -> str | None:
        """What the operator should do if the feeder sends no frames, else None.

        Nobody feeding is no problem (a page asks to start the camera); frames arriving again
        clear the problem on the next call.
        """
        feeder, silent = self.feeder, self.silent_for(now)
        if feeder is None or silent is None or silent <= self.NO_FRAMES_AFTER_S:
            return None
        if self.frames.stamp < feeder.since:
            return (f"Camera {self.camera} sends no frames ({silent:.0f} s since START): check "
                    "that it is plugged in, that the browser may use it and that no other "
                    "program holds it, then press STOP and START under the video.")
        return (f"Camera {self.camera} stopped sending frames {silent:.0f} s ago: check the "
                "cable, then press STOP and START under the video.")
