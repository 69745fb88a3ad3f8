"""The station on its line: where verdict events go and where triggers come from.

One ``Line`` per station process (the Streamlit server or ``inspector station run``) gives every
live session the same sink, ``Fanout(history recorder, MQTT, OPC UA)``, records every
change made to a tool in the history, and routes a trigger from the line (an MQTT command, the
OPC UA ``Trigger`` node), with the value it expects a reading tool to read, to the live session
of the camera it names, or to all of them.
Integrations are started only when ``station.json`` enables them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from core.integrations import LinkStatus
from core.records.history import HistoryStore, open_history
from core.station.live import Fanout, LiveSession, VerdictSink
from core.store.settings import StationSettings, load_settings
from core.store.workspace import workspace_root

LOG = logging.getLogger("shopfloor_inspector.line")


class Line:
    """A station's history and integrations, shared by all its live sessions."""

    def __init__(self, settings: StationSettings, root: Path | None = None):
        self.settings = settings
        self.history: HistoryStore = open_history(settings, root, while_away=True)
        self.recorder = self.history.recorder(settings.name)
        self._stop_auditing = self.history.listen_to_tool_changes(settings.name)
        self._sessions: dict[str, LiveSession] = {}  # camera -> its live session
        self._camera_problems: dict[str, str] = {}
        self._lock = threading.Lock()
        self.links: list = []
        if settings.mqtt.enabled:
            from core.integrations.mqtt import MqttLink

            mqtt = MqttLink(settings.mqtt, settings.name, self.trigger)
            mqtt.start()  # connects (and reconnects) in the background
            self.links.append(mqtt)
        if settings.opcua.enabled:
            from core.integrations.opcua import OpcUaLink

            # its tools are those of the attached sessions: a trigger waits for each of them
            opcua = OpcUaLink(settings.opcua, settings.name, {}, self.trigger,
                              pki=settings.opcua_pki(root))
            opcua.start(wait_s=0)  # serves a few seconds later; the page does not wait
            self.links.append(opcua)
        self.sink: VerdictSink = Fanout(self.recorder, *self.links)

    def attach(self, session: LiveSession) -> None:
        """Make this the live session of its camera: the line's triggers go to it, OPC UA
        shows its tools."""
        with self._lock:
            self._sessions[session.camera] = session
        self.publish_tools()

    def detach(self, session: LiveSession) -> None:
        with self._lock:
            if self._sessions.get(session.camera) is session:
                del self._sessions[session.camera]
        self.publish_tools()

    def publish_tools(self) -> None:
        """Show the line the tools its sessions run now (after the station changed a lineup)."""
        with self._lock:
            tools = {r.tool.name: r.tool.config.classes
                     for s in self._sessions.values() for r in s.lineup.runners}
            tools.update({u.config.name: u.config.classes  # the PLC sees their ERROR verdicts
                          for s in self._sessions.values() for u in s.lineup.unable})
        for link in self.links:
            if hasattr(link, "update_tools"):
                link.update_tools(tools)

    def trigger(self, camera: str | None, trigger_id: str | None, expected: str | None = None) -> int:
        """Ask the session of ``camera`` (every session if None) to judge its next frame, its
        reading tools comparing with ``expected`` (e.g. the order's serial); returns how many
        sessions were asked (0 = no camera of that name is running)."""
        with self._lock:
            targets = [s for c, s in self._sessions.items() if camera is None or c == camera]
        for session in targets:
            session.request_trigger(trigger_id, expected)
        if not targets:
            LOG.warning("trigger %s for camera %s: no such camera is running", trigger_id, camera)
        return len(targets)

    def camera_problem(self, camera: str, problem: str | None) -> None:
        """A camera's problem (None: solved), shown to the line: OPC UA ``Error``, not ``Ready``."""
        with self._lock:
            if problem:
                self._camera_problems[camera] = problem
            else:
                self._camera_problems.pop(camera, None)
            summary = "; ".join(self._camera_problems[c] for c in sorted(self._camera_problems))
        for link in self.links:
            if hasattr(link, "report_problem"):
                link.report_problem(summary or None)

    def status(self) -> list[LinkStatus]:
        return [link.status() for link in self.links]

    def problems(self) -> list[str]:
        """What the operator should know about the history and the integrations now."""
        found = [self.recorder.problem] if self.recorder.problem else []
        return found + [s.summary() for s in self.status() if not s.connected or s.last_error]

    def close(self) -> None:
        """Stop the integrations and write every queued event."""
        for link in self.links:
            link.stop()
        self._stop_auditing()
        self.recorder.close()


_lines: dict[Path, Line] = {}
_lines_lock = threading.Lock()


def station_line(root: Path | None = None) -> Line:
    """The station's line for this workspace, started on first use and kept for the process."""
    root = (root or workspace_root()).resolve()
    with _lines_lock:
        if root not in _lines:
            _lines[root] = Line(load_settings(root), root)
        return _lines[root]


def reopen_line(root: Path | None = None) -> Line:
    """Close the workspace's line and open it again with the settings saved since (history
    database, heartbeat, MQTT, OPC UA); its sessions must be attached again."""
    root = (root or workspace_root()).resolve()
    with _lines_lock:
        line = _lines.pop(root, None)
    if line is not None:
        line.close()
    return station_line(root)


def close_lines() -> None:
    """Close every line of this process (at exit, or between tests)."""
    with _lines_lock:
        lines = list(_lines.values())
        _lines.clear()
    for line in lines:
        line.close()
