"""Shared dashboard helpers for the Streamlit pages (Streamlit does not list ``__init__.py`` as a page).

Everything here arranges widgets around calls into ``core``; nothing re-implements the engine.
Objects that must outlive a script rerun (training jobs, the live inspection session, the recent
verdicts) live at module level: this module is imported once per server process, and a station
is one process on one PC.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import streamlit as st

from core.datasets import (IMAGE_SUFFIXES, MIN_IMAGES_PER_CLASS, ToolDataset, check_trainable,
                           read_image)
from core.errors import InspectorError
from core.tools import ROI, Tool, ToolStore

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("shopfloor_inspector.ui")
CURRENT_TOOL = "current_tool"
RTC_CONFIGURATION = {"iceServers": []}  # local station: no STUN/TURN, nothing leaves the LAN
MAX_UPLOAD_MEMBER_BYTES = 64 * 1024 * 1024

_CSS = """
<style>
.verdict {border-radius: 14px; padding: 0.3em 0.4em; text-align: center; font-weight: 800;
          font-size: clamp(56px, 7vw, 150px); line-height: 1.1; color: white;
          letter-spacing: 0.04em; margin-bottom: 0.2em; white-space: nowrap; overflow: hidden;}
.verdict.pass {background: #1f9d3a;}
.verdict.fail {background: #d62828;}
.verdict.idle {background: #555; font-size: clamp(28px, 3vw, 64px); padding: 1em 0.4em;}
.verdict-detail {font-size: 1.35rem; text-align: center; margin-bottom: 0.4em;}
</style>
"""


def page_setup(title: str, icon: str = ":material/visibility:") -> None:
    st.set_page_config(page_title=f"{title} - Shopfloor Inspector", page_icon=icon, layout="wide")
    st.markdown(_CSS, unsafe_allow_html=True)
    st.title(title)
    show_flash()


def flash(message: str) -> None:
    """A success message that survives the rerun that follows an action."""
    st.session_state["_flash"] = message


def show_flash() -> None:
    message = st.session_state.pop("_flash", None)
    if message:
        st.success(message)


def store() -> ToolStore:
    """The station's tools (re-read every time: INSPECTOR_HOME is resolved per call)."""
    return ToolStore()


def tool_picker(require_model: bool = False, where: Any = None) -> Tool | None:
    """Choose the tool this page works on; the choice follows the engineer across pages."""
    where = where or st.sidebar
    try:
        tools = store().all()
    except InspectorError as exc:
        st.error(str(exc))
        return None
    if require_model:
        tools = [t for t in tools if t.config.active_version]
    if not tools:
        st.info("No trained tool yet: train one on the Training page." if require_model
                else "No tool yet: create one on the Home page.")
        return None
    names = [t.name for t in tools]
    current = st.session_state.get(CURRENT_TOOL)
    index = names.index(current) if current in names else 0
    name = where.selectbox("Tool", names, index=index, key=f"picker_{require_model}")
    st.session_state[CURRENT_TOOL] = name
    return tools[names.index(name)]


def dataset(tool: Tool) -> ToolDataset:
    return ToolDataset(tool.images_dir, tool.config.classes)


def next_steps(tool: Tool) -> list[str]:
    """What the engineer should do next with a tool, in plain words."""
    counts = dataset(tool).counts()
    hints = []
    try:
        check_trainable(counts, kind=tool.config.kind)
    except InspectorError:
        for name, n in counts.items():
            if n < MIN_IMAGES_PER_CLASS and (tool.config.kind == "classifier" or name == "good"):
                hints.append(f"Capture {MIN_IMAGES_PER_CLASS - n} more '{name}' photo(s) "
                             f"(have {n}, need {MIN_IMAGES_PER_CLASS}).")
        return hints
    versions = tool.versions()
    if not versions:
        hints.append("Enough photos: train a first model on the Training page.")
    elif not tool.config.active_version:
        hints.append("A model is trained but none is active: activate one on the Training page.")
    else:
        trained_on = versions[-1].get("images", {})
        if sum(counts.values()) > sum(trained_on.values()):
            hints.append("New photos since the last training: retrain to use them.")
        validation = tool.version_meta().get("validation", {})
        bacc = validation.get("balanced_accuracy")
        if bacc is not None and bacc < 0.9:
            smallest = min(counts, key=counts.get)
            hints.append(f"Validation balanced accuracy is {bacc:.0%}: add photos (most needed: "
                         f"'{smallest}') and review the hardest images on the Labeling page.")
        if not hints:
            hints.append("Ready: run it on the Live inspection page.")
    return hints


def read_upload_members(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """An uploaded photo, or the image members of an uploaded zip, as (filename, bytes)."""
    if not name.lower().endswith(".zip"):
        return [(name, data)]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InspectorError(f"'{name}' is not a readable zip file") from exc
    members = []
    with archive:
        for info in archive.infolist():
            path = PurePosixPath(info.filename)
            if (info.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES
                    or any(part.startswith((".", "__MACOSX")) for part in path.parts)):
                continue
            if info.file_size > MAX_UPLOAD_MEMBER_BYTES:
                raise InspectorError(f"'{info.filename}' in '{name}' is larger than 64 MB")
            members.append((path.name, archive.read(info)))
    return members


def add_uploads(tool: Tool, class_name: str, files: list[tuple[str, bytes]]) -> tuple[int, list[str]]:
    """Add uploaded photos (or zips of photos) to a class; returns (added, problems)."""
    ds = dataset(tool)
    added, problems = 0, []
    for filename, data in files:
        try:
            for member, content in read_upload_members(filename, data):
                try:
                    ds.add_file(class_name, content, member)
                    added += 1
                except InspectorError as exc:
                    problems.append(str(exc))
        except InspectorError as exc:
            problems.append(str(exc))
    return added, problems


def roi_from_canvas(json_data: dict | None, canvas_size: tuple[int, int],
                    frame_size: tuple[int, int]) -> ROI | None:
    """The last rectangle drawn on a canvas showing the frame, as a normalised ROI."""
    rects = [o for o in (json_data or {}).get("objects", []) if o.get("type") in ("rect", "Rect")]
    if not rects:
        return None
    o = rects[-1]
    (cw, ch), (fw, fh) = canvas_size, frame_size
    w = o.get("width", 0) * o.get("scaleX", 1)
    h = o.get("height", 0) * o.get("scaleY", 1)
    left, top = o.get("left", 0), o.get("top", 0)
    if o.get("originX") == "center":
        left -= w / 2
    if o.get("originY") == "center":
        top -= h / 2
    sx, sy = fw / cw, fh / ch
    if w < 2 or h < 2:
        return None
    return ROI.from_pixels(left * sx, top * sy, (left + w) * sx, (top + h) * sy, fw, fh)


# ------------------------------------------------------------------ hardest-first ordering

def hardness_order(paths: list[Path], classes: tuple[str, ...], scores: np.ndarray,
                   threshold: float) -> list[tuple[Path, float, str]]:
    """Images ordered hardest first: wrong side of the threshold (worst first), then the ones
    closest to it. Returns (path, defect score, "wrong"/"uncertain"/"ok")."""
    rows = []
    for path, score in zip(paths, scores):
        is_defect = path.parent.name != "good"
        wrong = (score >= threshold) != is_defect
        margin = abs(float(score) - threshold)
        status = "wrong" if wrong else ("uncertain" if margin < 0.15 else "ok")
        rows.append(((0, -margin) if wrong else (1, margin), path, float(score), status))
    rows.sort(key=lambda r: r[0])
    return [(p, s, status) for _, p, s, status in rows]


def defect_scores(tool: Tool, paths: list[Path]) -> np.ndarray:
    """Defect score (1 - P(good)) of stored images under the tool's active model."""
    from core.inference import TrainedModel

    model = TrainedModel(tool)
    images, keep = [], []
    for i, p in enumerate(paths):
        image = read_image(p)
        if image is not None:
            images.append(image)
            keep.append(i)
    scores = np.full(len(paths), np.nan, np.float32)
    if images:
        scores[keep] = model.head.defect_scores(model.probabilities(images))
    return scores


# ------------------------------------------------------------------ verdicts kept in memory

@dataclass(frozen=True)
class VerdictRecord:
    time: float
    tool: str
    verdict: str
    defect_class: str | None
    score: float
    threshold: float
    version: str


RECENT: deque[VerdictRecord] = deque(maxlen=500)
_recent_lock = threading.Lock()


def remember(results: list) -> None:
    now = time.time()
    with _recent_lock:
        for r in results:
            RECENT.append(VerdictRecord(now, r.tool, r.verdict, r.defect_class, r.smoothed,
                                        r.threshold, r.version))


def recent_verdicts() -> list[VerdictRecord]:
    with _recent_lock:
        return list(RECENT)


def last_verdict(tool_name: str) -> VerdictRecord | None:
    for record in reversed(recent_verdicts()):
        if record.tool == tool_name:
            return record
    return None


def verdict_html(verdict: str, detail: str = "") -> str:
    css = {"PASS": "pass", "FAIL": "fail"}.get(verdict, "idle")
    extra = f'<div class="verdict-detail">{detail}</div>' if detail else ""
    return f'<div class="verdict {css}" data-testid="verdict">{verdict}</div>{extra}'


# ------------------------------------------------------------------ frames from the webcam thread

class FrameHolder:
    """The latest webcam frame, written by the video thread and read by the script."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self.count = 0
        self.stamp = 0.0

    def put(self, frame: np.ndarray) -> None:
        with self._lock:
            self._frame, self.count, self.stamp = frame, self.count + 1, time.time()

    def get(self) -> np.ndarray | None:
        with self._lock:
            return None if self._frame is None else self._frame.copy()

    def wait_new(self, after: int, timeout: float = 2.0) -> np.ndarray | None:
        end = time.time() + timeout
        while time.time() < end:
            if self.count > after:
                return self.get()
            time.sleep(0.02)
        return None


# ------------------------------------------------------------------ background training

@dataclass
class TrainingJob:
    tool: str
    profile: str
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Any = None  # core.training.Progress
    meta: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


JOBS: dict[str, TrainingJob] = {}
_jobs_lock = threading.Lock()


def start_training(tool: Tool, trainer: Callable[..., dict] | None = None) -> TrainingJob:
    """Train a new version in a thread, never activating it (the engineer decides)."""
    from core.training import TrainingOptions, train_tool

    trainer = trainer or train_tool
    with _jobs_lock:
        job = JOBS.get(tool.name)
        if job is not None and job.running:
            raise InspectorError(f"'{tool.name}' is already training")
        job = TrainingJob(tool.name, tool.config.profile)
        JOBS[tool.name] = job

    def run() -> None:
        try:
            job.meta = trainer(tool, options=TrainingOptions(activate=False),
                               on_progress=lambda p: setattr(job, "progress", p),
                               cancel=job.cancel)
        except InspectorError as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the engineer, logged with traceback
            LOG.exception("training %s failed", tool.name)
            job.error = f"training failed unexpectedly: {exc}"

    job.thread = threading.Thread(target=run, name=f"train-{tool.name}", daemon=True)
    job.thread.start()
    return job


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def to_rgb(image: np.ndarray) -> np.ndarray:
    return image[:, :, ::-1]


# ------------------------------------------------------------------ live inspection session

class LiveSession:
    """The live inspection state shared by the video thread and the page script.

    ``process`` runs on the webcam thread (no Streamlit calls in it). The page changes the
    settings through ``ToolRunner.configure`` and the plain attributes below; every frame reads
    them afresh, so a change takes effect on the next frame without restarting the stream.
    """

    STALE_AFTER_S = 3.0

    def __init__(self, inspector: Any):
        self.inspector = inspector
        self.frames = FrameHolder()
        self.continuous = True
        self.heatmaps = False
        self.trigger = threading.Event()
        self.results: list = []
        self.result_time = 0.0
        self.error: str | None = None
        self._last_verdicts: dict[str, str] = {}

    @property
    def runners(self) -> dict[str, Any]:
        return {r.tool.name: r for r in self.inspector.runners}

    def process(self, image: np.ndarray) -> np.ndarray:
        """Inspect a BGR frame (every frame, or the next one after a trigger) and draw on it."""
        from core.inference import Inspector

        self.frames.put(image)
        fresh = None
        try:
            triggered = self.trigger.is_set()
            if self.continuous or triggered:
                if triggered:
                    self.trigger.clear()
                    for runner in self.inspector.runners:
                        runner.reset()  # a triggered verdict judges this part only
                fresh = self.inspector.inspect(image, heatmaps=self.heatmaps)
                self.results, self.result_time, self.error = fresh, time.time(), None
                changed = [r for r in fresh
                           if triggered or self._last_verdicts.get(r.tool) != r.verdict]
                self._last_verdicts.update({r.tool: r.verdict for r in fresh})
                remember(changed)
        except InspectorError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the stream must survive; the page shows it
            LOG.exception("live inspection failed on a frame")
            self.error = f"inspection failed on a frame: {exc}"
        shown = fresh if fresh is not None else ([] if self.continuous else self.results)
        return Inspector.draw(image, shown, heatmaps=self.heatmaps) if shown else image

    def current(self) -> tuple[list, float]:
        """The latest results and their age in seconds."""
        return self.results, time.time() - self.result_time if self.result_time else float("inf")
