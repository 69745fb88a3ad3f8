"""A station without a browser: each camera read with OpenCV into its live session, verdicts and
triggers through the station's line (history, MQTT, OPC UA).

It runs the same live state as the browser station (``core.station.live_station``): the tools on the
line, each camera's mode and the trial settings and versions, all as ``line.json`` keeps them.

A camera is a device index ("0"), a video file or a stream URL (rtsp://...). One that cannot be
opened or stops sending frames is reopened with back-off and never stops the other cameras; a
video file is played at its own frame rate, as a camera would deliver it, and loops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2

from core.errors import InspectorError
from core.station.live import LiveSession, camera_name
from core.station.live_station import TRIGGERED, LiveStation

LOG = logging.getLogger("shopfloor_inspector.headless")


def parse_sources(specs: list[str]) -> dict[str, str]:
    """``["0=/dev/video0", "top=rtsp://..."]`` (or a bare source for camera "0") as
    {camera: source}."""
    sources: dict[str, str] = {}
    for spec in specs:
        camera, sep, source = spec.partition("=")
        if not sep:
            camera, source = "0", spec
        camera = camera_name(camera)
        if camera in sources:
            raise InspectorError(f"camera '{camera}' is given twice")
        sources[camera] = source
    return sources


class CameraReader(threading.Thread):
    """Feeds one camera's frames to its live session until ``stop`` is set."""

    RETRY_S = (0.5, 10.0)  # back-off between attempts to (re)open the camera

    def __init__(self, source: str, session: LiveSession, stop: threading.Event,
                 on_problem: Callable[[str, str | None], None] | None = None):
        super().__init__(name=f"camera-{session.camera}", daemon=True)
        self.source, self.session, self.stop_event = source, session, stop
        self.on_problem = on_problem  # (camera, problem or None once solved)
        self.problem: str | None = None
        self.frames = 0

    def _open(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(int(self.source) if self.source.isdigit() else self.source)

    def run(self) -> None:
        delay = self.RETRY_S[0]
        while not self.stop_event.is_set():
            capture = self._open()
            if not capture.isOpened():
                self._report(f"camera {self.session.camera} ({self.source}) cannot be opened: check "
                             f"the cable or the address; retrying in {delay:.0f} s")
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.RETRY_S[1])
                continue
            delay = self.RETRY_S[0]
            self._play(capture)
            capture.release()

    def _play(self, capture: cv2.VideoCapture) -> None:
        fps = capture.get(cv2.CAP_PROP_FPS)
        is_file = capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        period = 1.0 / fps if is_file and fps > 0 else 0.0
        due = time.monotonic()
        while not self.stop_event.is_set():
            ok, frame = capture.read()
            if not ok:
                if is_file and self.frames:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # a video file loops
                    continue
                self._report(f"camera {self.session.camera} ({self.source}) stopped sending "
                             "frames: reopening it")
                return
            if self.problem:
                self._report(None)
            self.frames += 1
            self.session.process(frame)
            if period:
                due += period
                self.stop_event.wait(max(0.0, due - time.monotonic()))

    def _report(self, problem: str | None) -> None:
        if problem != self.problem:
            LOG.warning(problem or f"camera {self.session.camera} sends frames again")
            if self.on_problem:
                self.on_problem(self.session.camera, problem)
        self.problem = problem


def run_station(station: LiveStation, sources: dict[str, str], triggered: bool = False,
                stop: threading.Event | None = None, actor: str = "inspector station run"
                ) -> dict[str, int]:
    """Inspect every camera in ``sources`` with the tools the station has on the line for it
    until ``stop`` is set (``triggered`` switches those cameras to triggered mode, audited);
    returns the number of frames judged per camera."""
    stop = stop or threading.Event()
    unknown = sorted(set(station.cameras()) - set(sources))
    if unknown:
        LOG.warning("no source given for camera(s) %s: their tools are not inspected", unknown)
    readers = []
    for camera, source in sources.items():
        session = station.session(camera)
        if not session.lineup.runners and not session.lineup.trials:
            raise InspectorError(f"no tool on the line watches camera '{camera}': bind a tool to "
                                 "it (inspector set --tool NAME --camera ...) and put it on the "
                                 "line (Live inspection: Add to line)")
        if triggered:
            station.set_mode(camera, TRIGGERED, actor)
        readers.append(CameraReader(source, session, stop,  # the line may be restarted meanwhile
                                    lambda c, p: station.line.camera_problem(c, p)))
    for reader in readers:
        reader.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        LOG.info("station stopped by the operator")
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=5)
    return {r.session.camera: r.frames for r in readers}
