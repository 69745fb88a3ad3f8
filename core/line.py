"""The station on its line: where verdict events go and where triggers come from.

One ``Line`` per station process (the Streamlit server or ``inspector station run``) gives every
live session the same sink, ``Fanout(RECENT, history recorder, MQTT, OPC UA)``, records every
change made to a tool in the history, and routes a trigger from the line (an MQTT command, the
OPC UA ``Trigger`` node) to the live session of the camera it names, or to all of them.
Integrations are started only when ``station.json`` enables them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from core.history import HistoryStore, open_history
from core.integrations import LinkStatus
from core.live import RECENT, Fanout, LiveSession, VerdictSink
from core.station import StationSettings, load_settings
from core.tools import ToolStore
from core.workspace import workspace_root

LOG = logging.getLogger("shopfloor_inspector.line")


class Line:
    """A station's history and integrations, shared by all its live sessions."""

    def __init__(self, settings: StationSettings, root: Path | None = None,
                 store: ToolStore | None = None):
        self.settings = settings
        self.history: HistoryStore = open_history(settings, root)
        self.recorder = self.history.recorder(settings.name)
        self._stop_auditing = self.history.listen_to_tool_changes(settings.name)
        self._sessions: list[LiveSession] = []
        self._lock = threading.Lock()
        self.links: list = []
        if settings.mqtt.enabled:
            from core.integrations.mqtt import MqttLink

            self.links.append(MqttLink(settings.mqtt, settings.name, self.trigger))
        if settings.opcua.enabled:
            from core.integrations.opcua import OpcUaLink

            tools = (store or ToolStore(root)).all()
            self.links.append(OpcUaLink(settings.opcua, settings.name,
                                        {t.name: t.config.classes for t in tools}, self.trigger))
        for link in self.links:
            link.start()
        self.sink: VerdictSink = Fanout(RECENT, self.recorder, *self.links)

    def attach(self, session: LiveSession) -> None:
        """Route the line's triggers to this session from now on."""
        with self._lock:
            if session not in self._sessions:
                self._sessions.append(session)

    def detach(self, session: LiveSession) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def trigger(self, camera: str | None, trigger_id: str | None) -> int:
        """Ask the session of ``camera`` (every session if None) to judge its next frame;
        returns how many sessions were asked (0 = no camera of that name is running)."""
        with self._lock:
            targets = [s for s in self._sessions if camera is None or s.camera == camera]
        for session in targets:
            session.request_trigger(trigger_id)
        if not targets:
            LOG.warning("trigger %s for camera %s: no such camera is running", trigger_id, camera)
        return len(targets)

    def status(self) -> list[LinkStatus]:
        return [link.status() for link in self.links]

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


def close_lines() -> None:
    """Close every line of this process (at exit, or between tests)."""
    with _lines_lock:
        lines = list(_lines.values())
        _lines.clear()
    for line in lines:
        line.close()
