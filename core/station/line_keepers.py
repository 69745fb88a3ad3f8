"""The live station's side of learning on the line: a ``LineKeeper`` per tool on the line, its
novelty reference built off the video thread, and the operator's correction of a verdict.

Why a module of its own: building the novelty reference runs the tool's model on its dataset
photos (torch and the backbone), which ``core.station.line_learning`` must not import (the Labeling page
and ``inspector review`` read it). Until a tool's reference is built (a few seconds after it
joins the line, on a background thread), its keeper keeps frames by threshold margin only.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import numpy as np

from core.engine.inference import ToolRunner, TrainedModel
from core.engine.model import pool_features
from core.errors import InspectorError
from core.records.verdicts import ERROR, FAIL, PASS, ToolResult
from core.station.line_learning import KeepPolicy, KeptFrame, LineKeeper, NoveltyReference, ReviewQueue
from core.station.live import LiveSession
from core.store.datasets import ToolDataset, read_image
from core.store.tools import Tool

LOG = logging.getLogger("shopfloor_inspector.line_keepers")

DEFAULT_POLICY = KeepPolicy()  # what every station keeps (per tool: 60 frames an hour at most)
REFERENCE_PHOTOS = 96  # dataset photos the novelty reference is built from (a sample, seeded)
BATCH = 8


def novelty_reference(tool: Tool, model: TrainedModel) -> NoveltyReference | None:
    """Where a model's pooled features of the tool's dataset photos lie (None: fewer than two
    readable photos). A classifier standardises features as its head does; an anomaly tool,
    which has no head, by the photos' own spread."""
    files = ToolDataset(tool.images_dir, tool.config.classes).files()
    if len(files) > REFERENCE_PHOTOS:
        files = [files[i] for i in sorted(np.random.default_rng(0).choice(
            len(files), REFERENCE_PHOTOS, replace=False))]
    images = [im for im in (read_image(p) for p in files) if im is not None]
    if len(images) < 2:
        return None
    pooled = np.concatenate([pool_features(model.maps(images[i:i + BATCH]))
                             for i in range(0, len(images), BATCH)])
    if model.head is not None:
        return NoveltyReference(pooled, model.head.mean, model.head.std)
    return NoveltyReference(pooled, pooled.mean(0), pooled.std(0) + 1e-6)


def learns_on_the_line(runner: ToolRunner) -> bool:
    """Whether the line's frames and corrections are worth keeping for a tool: only a kind that
    learns from photos (a code or text tool's setup is its expected value, not photos)."""
    return runner.model.kind.learns


def trained_share(runner: ToolRunner) -> float | None:
    """The defect share a tool's score assumes (its classes weighted equally: the defect classes'
    share of them), or None for a score that is no such probability (``Kind.balanced_score``)."""
    if not runner.model.kind.balanced_score:
        return None
    config = runner.tool.config
    return len(config.defect_classes) / len(config.classes)


class LineKeeping:
    """The keepers of the tools on a station's line. ``follow`` is called with the line's
    runners at every change of the line: a tool joining gets a keeper, a tool whose version
    changes gets that version's novelty reference (built on a thread; until then none), a tool
    leaving has its keeper closed (its queued crops written first)."""

    def __init__(self, policy: KeepPolicy | None = None):
        self.policy = policy or DEFAULT_POLICY
        self._keepers: dict[str, LineKeeper] = {}
        self._versions: dict[str, str] = {}  # tool -> the version its keeper's novelty is of
        self._lock = threading.Lock()

    def follow(self, runners: dict[str, ToolRunner]) -> dict[str, LineKeeper]:
        """The keepers of these runners' tools (a copy: the lineup holds it)."""
        with self._lock:
            learning = {name: r for name, r in runners.items() if learns_on_the_line(r)}
            for name in set(self._keepers) - set(learning):
                self._versions.pop(name, None)
                self._keepers.pop(name).close()
            for name, runner in learning.items():
                keeper = self._keepers.get(name)
                if keeper is None or keeper.review.folder != runner.tool.folder / "review":
                    keeper = self._keepers[name] = LineKeeper(ReviewQueue(runner.tool, self.policy))
                if self._versions.get(name) != runner.model.version:
                    keeper.new_version(trained_share(runner))
                    self._versions[name] = runner.model.version
                    threading.Thread(target=self._build, args=(name, runner), daemon=True,
                                     name=f"novelty-{name}").start()
            return dict(self._keepers)

    def _build(self, name: str, runner: ToolRunner) -> None:
        try:
            reference = novelty_reference(runner.tool, runner.model)
        except Exception:  # noqa: BLE001 - without it, frames are kept by threshold margin only
            LOG.exception("the novelty reference of '%s' could not be built", name)
            return
        with self._lock:
            keeper = self._keepers.get(name)
            if keeper is not None and self._versions.get(name) == runner.model.version:
                keeper.novelty = reference

    def ready(self, name: str) -> bool:
        """Whether a tool's keeper has its novelty reference yet."""
        keeper = self._keepers.get(name)
        return keeper is not None and keeper.novelty is not None

    def close(self) -> None:
        with self._lock:
            for keeper in self._keepers.values():
                keeper.close()
            self._keepers.clear()
            self._versions.clear()


def right_label(result: ToolResult, classes: tuple[str, ...]) -> str | None:
    """What "this verdict was wrong" means for a verdict: a FAIL was a good part; a PASS was a
    defect, named when the tool knows only one defect class (else the operator names it)."""
    defects = [c for c in classes if c != "good"]
    if result.verdict == FAIL:
        return "good"
    if result.verdict == PASS and len(defects) == 1:
        return defects[0]
    return None


def other_labels(result: ToolResult, classes: tuple[str, ...]) -> list[str]:
    """The classes an operator may name for a verdict besides ``right_label``'s: every class
    but the one the verdict said and that one (an ERROR offers none: it said nothing)."""
    if result.verdict == ERROR:
        return []
    said = "good" if result.passed else result.defect_class
    return [c for c in classes if c not in (said, right_label(result, classes))]


def correct_verdict(session: LiveSession, tool: str, label: str, who: str | None = None,
                    at: float | None = None) -> KeptFrame:
    """The operator says a verdict of ``tool`` on the session's camera was wrong (the part is
    ``label``): the latest one, or the recent one judged at ``at`` (``LiveSession.recent``).
    The ROI of the judged frame goes into the tool's dataset with its label, who said it and
    the frame's time (``ReviewQueue.correct``, which refuses a frame corrected already), and
    the history records the correction."""
    if at is None:
        latest = session.latest
        part = latest.part(tool) if latest is not None else None
    else:
        part = next((p for p in session.recent.of(tool) if p.time == at), None)
    runner = session.runners.get(tool)
    if part is None or runner is None:
        which = "" if at is None else (f" of {datetime.fromtimestamp(at):%H:%M:%S} among its last "
                                       f"{session.recent.keep}")
        raise InspectorError(f"'{tool}' has no verdict{which} on camera {session.camera} to "
                             "correct")
    if not learns_on_the_line(runner):
        raise InspectorError(f"'{tool}' learns from no photos: change what it expects on the "
                             "Training page instead")
    if part.result.verdict == ERROR:
        raise InspectorError(f"'{tool}' could not judge that frame ({part.result.error}): there "
                             "is no verdict to correct")
    return ReviewQueue(runner.tool).correct(part.crop, part.result, label, session.camera,
                                            part.time, who)
