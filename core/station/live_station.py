"""The station's live state: which tools judge on the line, with which settings, and who said so.

One ``LiveStation`` per workspace and process (``live_station()``, like ``core.station.line.station_line``)
owns everything live inspection runs on, whichever browser, page or command looks at it:

- one ``LiveSession`` per camera, attached to the station's line (history, MQTT, OPC UA); one
  browser page at a time *feeds* a camera (``claim_feed``: pressing START where nobody feeds, or
  an explicit take-over); every other page is a viewer of its verdicts and processed picture;
- the tools **on the line**: only their verdicts are the station's. A tool joins when someone
  adds it (``add_to_line``) or promotes its first version after a trial, never by being
  trained, activated or imported;
- per camera its mode (continuous or triggered) and whether heatmaps are drawn;
- per tool, **trial settings**: a threshold, smoothing window, TTA or ROI moved live but not
  saved. They judge on the line at once and are shown as TRIAL with who and when until someone
  saves them to the tool (``save_settings``) or reverts them (``revert_settings``);
- per running tool, whether the camera frames the part as its photos do (``framing``: a
  ``core.engine.framing.FramingWatch``, checked on one frame every few seconds when a page asks);
- per tool, a **trial version** beside the line's (``start_trial``): it judges the same frames,
  its verdicts are counted and compared with the line's, never sent to the line or the history;
  ``promote`` makes it the active version (``stop_trial`` ends it).
- per tool on the line, the **keeper** of its uncertain frames (``keeping``,
  ``core.station.line_keepers``): frames near the line's boundary or unlike the tool's photos are kept for
  review in ``<tool>/review/``, a bounded number an hour, never making the video thread wait.

The state is kept in ``<workspace>/line.json`` (written atomically), so a restart runs exactly
what ran before; the first start of a workspace without it puts every trained, enabled tool on
the line, as earlier versions ran them. Opening a page changes nothing: pages read this state
and every change goes through a method that takes the actor and is announced with
``core.store.tools.announce``, so the history's audit trail records it like any tool change.

Tools change under a running line. A tool deleted, disabled, renamed or replaced (an import, or
an activation the station did not make) is **removed from the line on the next frame**, with
the reason in the audit trail; it comes back only when someone adds it again (after a trial). A
saved change of a setting (the ROI drawn on Capture, ``inspector set``) judges from the next
frame and ends a trial value of the same setting. Changes made in this process arrive through
``core.store.tools.add_change_listener``; changes made by other processes (the ``inspector`` CLI,
another station process) are found by checking ``tool.json`` and ``line.json`` every
``POLL_S`` seconds on the station's own thread. The video thread never waits for any of this:
it reads its session's lineup, which the station replaces between two frames.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from core.engine.framing import FramingWatch
from core.engine.inference import ToolRunner
from core.errors import InspectorError
from core.records.verdicts import DEFAULT_CAMERA, short_error
from core.security.access import ADMINISTER, CONFIGURE, INSPECT, require
from core.station.line import Line, reopen_line, station_line
from core.station.line_keepers import LineKeeping
from core.station.line_learning import LineKeeper
from core.station.live import Feeder, Lineup, LiveSession, RecentVerdicts, TrialRun, UnableTool, camera_name
from core.store.tools import (STATION, Tool, ToolChange, ToolConfig, ToolStore, acting_as,
                              add_change_listener, announce)
from core.store.workspace import atomic_write_json, workspace_root

LOG = logging.getLogger("shopfloor_inspector.live_station")

STATE_FILE = "line.json"
SCHEMA = 1
CONTINUOUS, TRIGGERED = "continuous", "triggered"
MODES = (CONTINUOUS, TRIGGERED)
TRIAL_SETTINGS = ("threshold", "smoothing", "tta", "roi")  # what may be tried before it is saved
FIRST_START = "station (first start)"
POLL_S = 0.5


def camera_subject(camera: str) -> str:
    """The audit trail's subject for a change of one camera (no tool name has parentheses)."""
    return f"(camera {camera})"


def clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M")


# ------------------------------------------------------------------ the persisted state

@dataclass(frozen=True)
class OnLine:
    """A tool on the line: the version it judges with, and who put it there when."""

    version: str
    model: str  # the version's 'created' stamp: a replaced model with the same id differs
    by: str
    at: float


@dataclass(frozen=True)
class TrialValue:
    """A setting moved live but not saved (JSON form, as in ``tool.json``)."""

    value: Any
    by: str
    at: float


@dataclass(frozen=True)
class TrialVersion:
    version: str
    by: str
    at: float


@dataclass(frozen=True)
class CameraSettings:
    mode: str = CONTINUOUS
    heatmaps: bool = False


@dataclass
class LineState:
    """What ``line.json`` holds. Never changed in place: a change copies it (``copy()``)."""

    tools: dict[str, OnLine] = field(default_factory=dict)
    trials: dict[str, TrialVersion] = field(default_factory=dict)
    trial_settings: dict[str, dict[str, TrialValue]] = field(default_factory=dict)
    cameras: dict[str, CameraSettings] = field(default_factory=dict)

    def copy(self) -> LineState:
        return copy.deepcopy(self)

    def camera(self, camera: str) -> CameraSettings:
        return self.cameras.get(camera, CameraSettings())

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA,
                "tools": {n: asdict(e) for n, e in sorted(self.tools.items())},
                "trials": {n: asdict(t) for n, t in sorted(self.trials.items())},
                "trial_settings": {n: {k: asdict(v) for k, v in sorted(values.items())}
                                   for n, values in sorted(self.trial_settings.items()) if values},
                "cameras": {c: asdict(s) for c, s in sorted(self.cameras.items())}}

    @classmethod
    def from_json(cls, data: Any) -> LineState:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InspectorError(f"not a schema {SCHEMA} line state")
        try:
            state = cls({n: OnLine(**e) for n, e in data.get("tools", {}).items()},
                        {n: TrialVersion(**t) for n, t in data.get("trials", {}).items()},
                        {n: {k: TrialValue(**v) for k, v in values.items()}
                         for n, values in data.get("trial_settings", {}).items()},
                        {c: CameraSettings(**s) for c, s in data.get("cameras", {}).items()})
        except (TypeError, AttributeError) as exc:
            raise InspectorError(f"a field is missing or unknown ({exc})") from exc
        for values in state.trial_settings.values():
            if set(values) - set(TRIAL_SETTINGS):
                raise InspectorError(f"only {TRIAL_SETTINGS} can be trial settings")
        if any(s.mode not in MODES for s in state.cameras.values()):
            raise InspectorError(f"a camera's mode must be one of {MODES}")
        return state


def model_stamp(tool: Tool, version: str) -> str:
    """What tells a model version from another one with the same id (an imported replacement)."""
    return tool.version_meta(version).created


def first_start(store: ToolStore) -> LineState:
    """A workspace's first line: every trained, enabled tool, as stations ran them before (a
    tool whose model cannot be read is left off, with a warning in the log)."""
    state, now = LineState(), time.time()
    for tool in store.all():
        version = tool.config.active_version
        if tool.config.enabled and version:
            try:
                state.tools[tool.name] = OnLine(version, model_stamp(tool, version), FIRST_START, now)
            except (InspectorError, OSError, ValueError) as exc:
                LOG.warning("'%s' is not put on the line: %s", tool.name, exc)
    return state


def read_state(root: Path, store: ToolStore) -> tuple[LineState, bool, str | None]:
    """(state, whether line.json exists, what is wrong with it): a damaged file leaves nothing
    on the line (fail safe) and says what to do."""
    path = root / STATE_FILE
    if not path.is_file():
        return first_start(store), False, None
    try:
        return LineState.from_json(json.loads(path.read_text())), True, None
    except (OSError, ValueError, InspectorError) as exc:
        return LineState(), True, (f"{path} cannot be read ({exc}): nothing is on the line; "
                                   "add the tools again on Live inspection or restore the file")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class _HeldEvents:
    """Keeps the verdict events of a line restart's few milliseconds, then hands them on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = RecentVerdicts(maxlen=100_000)
        self._target = None

    def remember(self, records: list) -> None:
        with self._lock:
            (self._target or self._held).remember(records)

    def release_to(self, target: Any) -> None:
        with self._lock:
            target.remember(self._held.recent())
            self._target = target


# ------------------------------------------------------------------ the station

class LiveStation:
    """A workspace's live state and its running sessions (use ``live_station()``)."""

    FEED_LOST_S = 5.0  # a feeder silent this long has gone (page closed): START may feed again

    def __init__(self, root: Path):
        self.root = root
        self.store = ToolStore(root)
        self.line: Line = station_line(root)
        self._lock = threading.RLock()
        self._own_change = threading.local()  # set while the station itself writes a tool
        self._sessions: dict[str, LiveSession] = {}
        self._tools: dict[str, Tool] = {}  # as last read: every tool on the line or in trial
        self._seen: dict[str, tuple[int, tuple | None]] = {}  # their folder inode, tool.json
        self._runners: dict[str, ToolRunner] = {}
        self._trials: dict[str, TrialRun] = {}
        self._state_file: tuple | None = None
        self.not_running: dict[str, str] = {}  # tool on the line -> why it cannot judge
        self._unable: dict[str, UnableTool] = {}  # of those, the ones judged ERROR on every frame
        self.framing = FramingWatch()  # the running tools' framing, checked every few seconds
        self.keeping = LineKeeping()  # per tool on the line, the keeper of its uncertain frames
        self._keepers: dict[str, LineKeeper] = {}
        state, exists, self.state_problem = read_state(root, self.store)
        self.state = LineState()
        with self._lock:
            added = [(n, "added to the line", {"version": e.version}) for n, e in state.tools.items()]
            self._commit(state, [] if exists else added, FIRST_START, save=not exists)
            for name in state.tools.keys() | state.trials.keys():
                self._reconcile(name, FIRST_START)  # what changed while the station was down
        self._stop = threading.Event()
        self._stop_listening = add_change_listener(self._on_change)
        self._watcher = threading.Thread(target=self._watch, name=f"live-station-{root.name}",
                                         daemon=True)
        self._watcher.start()

    # -------------------------------------------------------------- reading

    def cameras(self) -> list[str]:
        """The cameras with tools on the line or in trial (the default camera when none)."""
        with self._lock:
            found = {s.camera for s in self._sessions.values()
                     if s.lineup.runners or s.lineup.trials or s.lineup.unable}
        return sorted(found) or [DEFAULT_CAMERA]

    def session(self, camera: str) -> LiveSession:
        """The camera's session (created on first use, attached to the line)."""
        with self._lock:
            found = self._sessions.get(camera)
            if found is None:
                found = self._sessions[camera] = LiveSession(
                    Lineup(), self.line.sink, camera, heartbeat_s=self.line.settings.heartbeat_s)
                self._apply_camera(found)
                self.line.attach(found)
            return found

    def mode(self, camera: str) -> str:
        return self.state.camera(camera).mode

    def heatmaps(self, camera: str) -> bool:
        return self.state.camera(camera).heatmaps

    def settings(self, name: str) -> ToolConfig:
        """The settings a tool on the line judges with now (saved, with its trial values)."""
        with self._lock:
            return self._effective(self.state, name)

    def trial_values(self, name: str) -> dict[str, TrialValue]:
        return dict(self.state.trial_settings.get(name, {}))

    def trial_note(self, name: str) -> str | None:
        """'TRIAL threshold 0.62 (saved 0.50) by ann at 10:32', or None without trial values."""
        tool = self._tools.get(name)
        return describe_trial_values(self.state, name, tool.config if tool else None)

    def trial(self, name: str) -> tuple[TrialVersion, TrialRun | None] | None:
        """A tool's trial version and its run (None while it cannot run), or None."""
        with self._lock:
            found = self.state.trials.get(name)
            return None if found is None else (found, self._trials.get(name))

    def problems(self) -> list[str]:
        """What the operator should know about the line state now."""
        found = [self.state_problem] if self.state_problem else []
        return found + [f"'{n}' is on the line but cannot judge: {why}"
                        for n, why in sorted(self.not_running.items())]

    def feed_state(self, camera: str, browser: str, now: float | None = None) -> str:
        """'mine' (this browser feeds the camera), 'other' (another one does) or 'free' (nobody,
        or a feeder silent for FEED_LOST_S: its page was closed)."""
        session = self.session(camera)
        feeder, silent = session.feeder, session.silent_for(now)
        if feeder is None or (feeder.browser != browser and silent > self.FEED_LOST_S):
            return "free"
        return "mine" if feeder.browser == browser else "other"

    # -------------------------------------------------------------- changing (audited)

    def add_to_line(self, name: str, actor: str) -> None:
        """Put a trained, enabled tool on the line: its verdicts count from the next frame."""
        require(CONFIGURE)
        with self._lock:
            if name in self.state.tools:
                raise InspectorError(f"'{name}' is already on the line")
            tool = self.store.get(name)
            version = tool.config.active_version
            if not tool.config.enabled:
                raise InspectorError(f"'{name}' is disabled: enable it first")
            if not version:
                raise InspectorError(f"'{name}' has no active version: train it, run the version "
                                     "as a trial on the Training page, then promote it")
            state = self.state.copy()
            state.tools[name] = OnLine(version, model_stamp(tool, version), actor, time.time())
            self._remember(tool)
            self._commit(state, [(name, "added to the line", {"version": version})], actor,
                         strict={name})

    def remove_from_line(self, name: str, actor: str) -> None:
        require(CONFIGURE)
        with self._lock:
            if name not in self.state.tools:
                raise InspectorError(f"'{name}' is not on the line")
            state = self.state.copy()
            self._commit(state, self._take_off(state, name, "removed by hand"), actor)

    def set_mode(self, camera: str, mode: str, actor: str) -> None:
        """Continuous (every frame) or triggered (one verdict per trigger) for one camera."""
        require(INSPECT)
        if mode not in MODES:
            raise InspectorError(f"mode '{mode}' is unknown: use one of {MODES}")
        self._set_camera(camera_name(camera), "mode", mode, actor)

    def set_heatmaps(self, camera: str, on: bool, actor: str) -> None:
        require(INSPECT)
        self._set_camera(camera_name(camera), "heatmaps", bool(on), actor)

    def try_settings(self, name: str, actor: str, **changes: Any) -> ToolConfig:
        """Judge with other settings from the next frame without saving them: trial values,
        shown as TRIAL until saved or reverted. A value equal to the saved one ends its trial."""
        require(CONFIGURE)
        unknown = set(changes) - set(TRIAL_SETTINGS)
        if unknown:
            raise InspectorError(f"{sorted(unknown)} cannot be tried live; use {TRIAL_SETTINGS}")
        with self._lock:
            if name not in self.state.tools:
                raise InspectorError(f"'{name}' is not on the line: add it first")
            before = self._effective(self.state, name).to_json()
            wanted = replace(self._effective(self.state, name), **changes).to_json()  # validates
            saved = self._tools[name].config.to_json()
            state, audit, now = self.state.copy(), [], time.time()
            values = state.trial_settings.setdefault(name, {})
            for key in changes:
                if wanted[key] == before[key]:
                    continue
                if wanted[key] == saved[key]:
                    values.pop(key, None)
                else:
                    values[key] = TrialValue(wanted[key], actor, now)
                audit.append((name, f"{key} (trial)", {"old": before[key], "new": wanted[key],
                                                       "saved": saved[key]}))
            if audit:
                self._commit(state, audit, actor)
            return self._effective(self.state, name)

    def revert_settings(self, name: str, actor: str) -> None:
        """Back to the saved settings (one click for every trial value of the tool)."""
        require(INSPECT)
        with self._lock:
            values = self.state.trial_settings.get(name)
            if not values:
                return
            saved = self._tools[name].config.to_json()
            state = self.state.copy()
            del state.trial_settings[name]
            self._commit(state, [(name, "trial reverted", {
                k: {"trial": v.value, "saved": saved[k]} for k, v in values.items()})], actor)

    def save_settings(self, name: str, actor: str) -> ToolConfig:
        """Save the trial values to the tool (each saved change is audited by ``Tool.update``)."""
        require(CONFIGURE)
        with self._lock:
            values = self.state.trial_settings.get(name)
            if values:
                effective, tool = self._effective(self.state, name), self._tools[name]
                with self._writing(actor):
                    tool.update(**{k: getattr(effective, k) for k in values})
                self._remember(tool)
                state = self.state.copy()
                del state.trial_settings[name]
                self._commit(state, [], actor)
            return self._effective(self.state, name)

    def start_trial(self, name: str, version: str, actor: str) -> None:
        """Run a version beside the line's on the tool's camera: same frames, its verdicts
        counted and compared, never sent. A tool's first version goes through one too."""
        require(CONFIGURE)
        with self._lock:
            tool = self.store.get(name)
            tool.version_dir(version)  # refuses an unknown version with the tool's name
            running = self.state.trials.get(name)
            if running is not None:
                raise InspectorError(f"a trial of {running.version} of '{name}' is already "
                                     "running: promote it or stop it first")
            on_line = self.state.tools.get(name)
            if on_line is not None and on_line.version == version:
                raise InspectorError(f"{version} already judges '{name}' on the line")
            state = self.state.copy()
            state.trials[name] = TrialVersion(version, actor, time.time())
            self._remember(tool)
            self._commit(state, [(name, "trial started", {
                "version": version, "beside": on_line.version if on_line else None})], actor,
                strict={name})

    def stop_trial(self, name: str, actor: str) -> None:
        require(CONFIGURE)
        with self._lock:
            if name not in self.state.trials:
                raise InspectorError(f"'{name}' has no trial running")
            state = self.state.copy()
            self._commit(state, self._stop_trial(state, name, "stopped by hand"), actor)

    def promote(self, name: str, actor: str) -> None:
        """The trial version becomes the tool's active version and judges on the line from the
        next frame (a tool not on the line joins it: the trial was its check before the line).
        Its trial settings end: they were tried with the previous version."""
        require(CONFIGURE)
        with self._lock:
            found = self.state.trials.get(name)
            if found is None:
                raise InspectorError(f"'{name}' has no trial running: run a version as a trial "
                                     "first")
            run, tool = self._trials.get(name), self._tools[name]
            summary = run.summary() if run is not None else None
            with self._writing(actor):
                tool.activate(found.version)
            self._remember(tool)
            state = self.state.copy()
            joined = name not in state.tools
            del state.trials[name]
            state.trial_settings.pop(name, None)
            state.tools[name] = OnLine(found.version, model_stamp(tool, found.version), actor,
                                       time.time())
            self._commit(state, [(name, "promoted", {
                "version": found.version, "joined_line": joined,
                "frames": summary.judged if summary else 0,
                "agreement": summary.agreement if summary else None})], actor, strict={name})

    def rollback(self, name: str, version: str, actor: str) -> None:
        """Make an older version active at once (no trial: going back to a known version); on
        the line it judges from the next frame. Its trial settings end, as on promotion."""
        require(CONFIGURE)
        with self._lock:
            tool = self.store.get(name)
            with self._writing(actor):
                tool.activate(version)
            state = self.state.copy()
            if name in state.tools:
                state.tools[name] = OnLine(version, model_stamp(tool, version), actor, time.time())
                state.trial_settings.pop(name, None)
            if name in state.trials and state.trials[name].version == version:
                del state.trials[name]
            if name in state.tools or name in state.trials:
                self._remember(tool)
            self._commit(state, [], actor, strict={name})

    def claim_feed(self, camera: str, browser: str, label: str, actor: str) -> None:
        """This browser's frames are judged for the camera from now on (the previous feeder's
        are not): when it presses START where nobody feeds, or takes over explicitly."""
        require(INSPECT)
        previous = self.session(camera).claim(Feeder(browser, label, time.monotonic()))
        if previous is None or previous.browser != browser:
            with acting_as(actor):
                announce(camera_subject(camera), "camera fed by", browser=label,
                         previous=previous.label if previous else None)

    def release_feed(self, camera: str, browser: str) -> None:
        """The browser stopped its camera (nothing is judged any more, so nothing to audit)."""
        self.session(camera).release(browser)

    def trigger(self, camera: str | None, trigger_id: str | None = None) -> int:
        """Judge the next frame of ``camera`` (every camera if None), as a trigger of the line."""
        require(INSPECT)
        return self.line.trigger(camera, trigger_id)

    def restart_line(self, actor: str) -> Line:
        """Close the history writer and integrations and open them again with the saved station
        settings; the sessions go on with the new line (events of the moment are kept)."""
        require(ADMINISTER)
        with self._lock:
            held = _HeldEvents()
            for session in self._sessions.values():
                session.sink = held
            self.line = reopen_line(self.root)
            held.release_to(self.line.sink)
            for session in self._sessions.values():
                session.sink, session.heartbeat_s = self.line.sink, self.line.settings.heartbeat_s
                self.line.attach(session)
        audit_restart(self.line, actor)
        return self.line

    def close(self) -> None:
        self._stop.set()
        self._stop_listening()
        self._watcher.join(timeout=5)
        with self._lock:
            for session in self._sessions.values():
                self.line.detach(session)
            self.keeping.close()

    # -------------------------------------------------------------- keeping the state true

    def _effective(self, state: LineState, name: str) -> ToolConfig:
        """A tool's saved settings with the state's trial values over them."""
        tool = self._tools.get(name)
        if tool is None:
            raise InspectorError(f"'{name}' is not on the line")
        values = state.trial_settings.get(name)
        if not values:
            return tool.config
        return ToolConfig.from_json({**tool.config.to_json(),
                                     **{k: v.value for k, v in values.items()}})

    def _remember(self, tool: Tool) -> None:
        """Keep a tool as read now, and what tells later that it changed on disk."""
        self._tools[tool.name] = tool
        folder = _signature(tool.folder)
        self._seen[tool.name] = (folder[2] if folder else 0, _signature(tool.folder / "tool.json"))

    def _forget(self, name: str) -> None:
        self._tools.pop(name, None)
        self._seen.pop(name, None)

    @contextmanager
    def _writing(self, actor: str) -> Iterator[None]:
        """The station writes a tool or announces a change itself: not one to reconcile."""
        before, self._own_change.active = getattr(self._own_change, "active", False), True
        try:
            with acting_as(actor):
                yield
        finally:
            self._own_change.active = before

    def _set_camera(self, camera: str, key: str, value: Any, actor: str) -> None:
        with self._lock:
            before = self.state.camera(camera)
            if getattr(before, key) == value:
                return
            state = self.state.copy()
            state.cameras[camera] = replace(before, **{key: value})
            self._commit(state, [(camera_subject(camera), key,
                                  {"old": getattr(before, key), "new": value})], actor)

    @staticmethod
    def _take_off(state: LineState, name: str, reason: str) -> list:
        entry = state.tools.pop(name)
        state.trial_settings.pop(name, None)
        return [(name, "removed from the line", {"version": entry.version, "reason": reason})]

    def _stop_trial(self, state: LineState, name: str, reason: str) -> list:
        found = state.trials.pop(name)
        run = self._trials.get(name)
        summary = run.summary() if run is not None else None
        return [(name, "trial stopped", {"version": found.version, "reason": reason,
                                         "frames": summary.judged if summary else 0,
                                         "agreement": summary.agreement if summary else None})]

    def _commit(self, state: LineState, audit: list[tuple[str, str, dict]], actor: str,
                strict: frozenset[str] | set[str] = frozenset(), save: bool = True) -> None:
        """Make ``state`` the station's: load the models it needs (a failure refuses the change
        for the tools in ``strict`` and is reported for the others), save it, judge with it from
        the next frame, then announce the changes."""
        runners, trials, not_running, unable = self._build(state, strict)
        if save and state.to_json() != self.state.to_json():
            atomic_write_json(self.root / STATE_FILE, state.to_json())
            self.state_problem = None
        self._state_file = _signature(self.root / STATE_FILE)
        for name, runner in runners.items():
            runner.use(self._effective(state, name))
        for name, (trial, threshold) in trials.items():
            trial.runner.use(replace(self._effective(state, name), threshold=threshold))
        self.state, self._runners, self.not_running, self._unable = state, runners, not_running, unable
        self._keepers = self.keeping.follow(runners)
        self._trials = {name: trial for name, (trial, _) in trials.items()}
        for name in set(self._tools) - state.tools.keys() - state.trials.keys():
            self._forget(name)
        cameras = {r.config.camera for r in runners.values()} | {u.config.camera for u in unable.values()} | {
            t.runner.config.camera for t in self._trials.values()} | set(self._sessions)
        for camera in sorted(cameras):
            self._apply_camera(self.session(camera))
        self.line.publish_tools()
        with self._writing(actor):
            for subject, action, details in audit:
                announce(subject, action, **details)

    def _build(self, state: LineState, strict: frozenset[str] | set[str]
               ) -> tuple[dict[str, ToolRunner], dict[str, tuple[TrialRun, float]], dict[str, str],
                          dict[str, UnableTool]]:
        """The runners a state needs, reusing those that run the same version (a promoted
        trial's runner goes on as the line's), loading the others. A line tool that cannot load
        is reported and, when its settings can still be read, judged ERROR on every frame (its
        parts never pass unchecked) while the other tools go on."""
        runners, trials, problems, unable = {}, {}, {}, {}
        known = {(n, t.version): t.runner for n, t in self._trials.items()}
        known.update({(n, r.model.version): r for n, r in self._runners.items()})
        for name, entry in state.tools.items():
            try:
                runners[name] = known.get((name, entry.version)) or ToolRunner(
                    self._tool(name), entry.version)
            except Exception as exc:  # noqa: BLE001 - one damaged tool never stops the others
                why = self._cannot_load(name, exc, strict)
                problems[name] = why
                config = self._readable_config(name)
                if config is not None:
                    unable[name] = UnableTool(config, entry.version, why)
        for name, found in state.trials.items():
            try:
                trial = self._trials.get(name)
                if trial is None or trial.version != found.version:
                    trial = TrialRun(ToolRunner(self._tool(name), found.version))
                trials[name] = (trial, self._tool(name).suggested_threshold(found.version))
            except Exception as exc:  # noqa: BLE001 - a trial that cannot run is only reported
                problems[name] = f"its trial of {found.version} cannot run: " + self._cannot_load(
                    name, exc, strict)
        return runners, trials, problems, unable

    @staticmethod
    def _cannot_load(name: str, exc: Exception, strict: frozenset[str] | set[str]) -> str:
        """Why a tool cannot load, in one line; raised (as an InspectorError) for a tool whose
        change is being made, so the engineer's change is refused instead."""
        if name in strict:
            if isinstance(exc, InspectorError):
                raise exc
            raise InspectorError(f"tool '{name}' cannot run: {short_error(exc)}") from exc
        if not isinstance(exc, InspectorError):
            LOG.warning("tool '%s' cannot load: %s", name, short_error(exc))
        return short_error(exc)

    def _readable_config(self, name: str) -> ToolConfig | None:
        try:
            return self._tool(name).config
        except Exception:  # noqa: BLE001 - a tool.json past reading: reported, not judged
            return None

    def _tool(self, name: str) -> Tool:
        if name not in self._tools:
            self._remember(self.store.get(name))
        return self._tools[name]

    def _apply_camera(self, session: LiveSession) -> None:
        camera = session.camera
        settings = self.state.camera(camera)
        session.lineup = Lineup(
            tuple(r for _, r in sorted(self._runners.items()) if r.config.camera == camera),
            tuple(t for _, t in sorted(self._trials.items()) if t.runner.config.camera == camera),
            tuple(u for _, u in sorted(self._unable.items()) if u.config.camera == camera),
            self._keepers)
        session.continuous = settings.mode == CONTINUOUS
        session.heatmaps = settings.heatmaps

    def _on_change(self, change: ToolChange) -> None:
        """A tool changed in this process (any page, job or command): reconcile it now."""
        if getattr(self._own_change, "active", False) or change.tool.startswith("("):
            return
        renamed_from = change.details.get("old") if change.action == "renamed" else None
        for name in {change.tool, renamed_from} - {None}:
            try:
                self._reconcile(name, change.actor)
            except Exception:  # noqa: BLE001 - the change itself succeeded; the poll retries
                LOG.exception("could not apply the change of '%s' to the line", name)

    def _reconcile(self, name: str, actor: str) -> None:
        """Bring the line in step with a tool as it is on disk now: off the line if it was
        deleted, disabled, renamed or replaced; its saved settings judge from the next frame."""
        with self._lock:
            if name not in self.state.tools and name not in self.state.trials:
                return
            try:
                tool, gone = self.store.get(name), None
            except InspectorError as exc:
                tool = None
                gone = ("it was deleted or renamed" if not self.store.exists(name)
                        else f"its tool file cannot be read ({exc})")
            folder = _signature(tool.folder) if tool is not None else None
            replaced = (tool is not None and name in self._seen
                        and (folder[2] if folder else 0) != self._seen[name][0])
            state, audit = self.state.copy(), []
            entry = state.tools.get(name)
            if entry is not None:
                reason = gone or self._why_off(tool, entry, replaced)
                if reason:
                    audit += self._take_off(state, name, reason)
            trial = state.trials.get(name)
            if trial is not None:
                reason = gone or ("it was disabled" if not tool.config.enabled else
                                  "it was replaced by an import" if replaced else
                                  None if (tool.versions_dir / trial.version / "meta.json").is_file()
                                  else f"its version {trial.version} is gone")
                if reason:
                    audit += self._stop_trial(state, name, reason)
            if name in state.tools or name in state.trials:
                previous = self._tools.get(name)
                for key in list(state.trial_settings.get(name, {})):
                    if previous is not None and (previous.config.to_json()[key]
                                                 != tool.config.to_json()[key]):
                        del state.trial_settings[name][key]
                        audit.append((name, "trial ended", {"setting": key,
                                                            "reason": "a new value was saved"}))
                self._remember(tool)
            self._commit(state, audit, actor)

    @staticmethod
    def _why_off(tool: Tool, entry: OnLine, replaced: bool) -> str | None:
        if not tool.config.enabled:
            return "it was disabled"
        if replaced:
            return "it was replaced by another tool of the same name (an import)"
        if tool.config.active_version != entry.version:
            return (f"its active version became {tool.config.active_version or 'none'} outside "
                    f"the line ({entry.version} was judging): run it as a trial, then promote it")
        try:
            if model_stamp(tool, entry.version) != entry.model:
                return f"its model {entry.version} was replaced"
        except (InspectorError, OSError, ValueError) as exc:
            return f"its model {entry.version} cannot be read ({exc})"
        return None

    def _watch(self) -> None:
        """Changes by other processes: line.json rewritten, a tool file changed or gone."""
        while not self._stop.wait(POLL_S):
            try:
                self._check_files()
            except Exception:  # noqa: BLE001 - the next poll tries again
                LOG.exception("checking the line's files failed")

    def _check_files(self) -> None:
        with self._lock:
            if _signature(self.root / STATE_FILE) != self._state_file:
                state, _, problem = read_state(self.root, self.store)
                if problem is None:
                    self._commit(state, [], "station", save=False)
                    for name in state.tools.keys() | state.trials.keys():
                        self._reconcile(name, "station")
            for name, (_, tool_file) in list(self._seen.items()):
                if _signature(self.store.root / name / "tool.json") != tool_file:
                    self._reconcile(name, "station")


def describe_trial_values(state: LineState, name: str, saved: ToolConfig | None) -> str | None:
    """One line for every screen: 'TRIAL threshold 0.62 (saved 0.50) by ann at 10:32'."""
    values = state.trial_settings.get(name)
    if not values:
        return None
    saved_json = saved.to_json() if saved is not None else {}
    parts = []
    for key, value in sorted(values.items()):
        shown = _show(key, value.value)
        before = f" (saved {_show(key, saved_json[key])})" if key in saved_json else ""
        parts.append(f"{key} {shown}{before} by {value.by} at {clock(value.at)}")
    return "TRIAL " + "; ".join(parts)


def _show(key: str, value: Any) -> str:
    if key == "threshold":
        return f"{value:.2f}"
    if key == "tta":
        return "on" if value.get("enabled") else "off"
    if key == "roi":
        return f"x {value['x']:.2f} y {value['y']:.2f} w {value['w']:.2f} h {value['h']:.2f}"
    return str(value)


# ------------------------------------------------------------------ one per workspace

_stations: dict[Path, LiveStation] = {}
_stations_lock = threading.Lock()


def live_station(root: Path | None = None) -> LiveStation:
    """The workspace's live station, started on first use (its models loaded) and kept for the
    process."""
    root = (root or workspace_root()).resolve()
    with _stations_lock:
        if root not in _stations:
            _stations[root] = LiveStation(root)
        return _stations[root]


def line_state(root: Path | None = None) -> LineState:
    """What is on the workspace's line now: the running station's state, else ``line.json``
    (reading never starts a station)."""
    root = (root or workspace_root()).resolve()
    running = _stations.get(root)
    return running.state if running is not None else read_state(root, ToolStore(root))[0]


def line_summary(root: Path | None = None) -> dict[str, str]:
    """Per tool, whether it judges on the line (with its TRIAL values) or is in trial: read
    from the running station, else from ``line.json`` (reading never starts a station)."""
    root = (root or workspace_root()).resolve()
    store = ToolStore(root)
    state = line_state(root)
    summary = {}
    for tool in store.all():
        name, parts = tool.name, []
        if name in state.tools:
            parts.append(f"on the line ({state.tools[name].version})")
        if name in state.trials:
            parts.append(f"trial of {state.trials[name].version}")
        note = describe_trial_values(state, name, tool.config)
        if note:
            parts.append(note)
        summary[name] = "; ".join(parts) or "not on the line"
    return summary


def restart_line(actor: str, root: Path | None = None) -> Line:
    """Restart the workspace's line: through its live station if one runs (its sessions go on
    with the new line), else just the line."""
    require(ADMINISTER)
    root = (root or workspace_root()).resolve()
    running = _stations.get(root)
    if running is not None:
        return running.restart_line(actor)
    line = reopen_line(root)
    audit_restart(line, actor)
    return line


def audit_restart(line: Line, actor: str) -> None:
    with acting_as(actor):
        announce(STATION, "line restarted", history=line.history.location,
                 integrations=[s.name for s in line.status()])


def close_live_stations() -> None:
    """Stop every live station of this process (at exit, or between tests)."""
    with _stations_lock:
        stations = list(_stations.values())
        _stations.clear()
    for station in stations:
        station.close()
