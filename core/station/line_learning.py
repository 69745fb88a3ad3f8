"""Learning on the line: the station keeps the frames worth a label, a person labels them, and the
next training learns from them.

Why: a tool trained on 20 photos meets thousands of parts. Most tell it nothing new; the few it is
unsure of (a score near its threshold) or has never seen anything like (pooled features far from
every training photo's) are where a label moves the model most. ``KeepPolicy`` decides per judged
frame in microseconds; ``LineKeeper`` writes the kept crops on its own thread, so the video never
waits; ``ReviewQueue`` is the tool's ``review/`` folder: kept crops in review order (the hardest
of each side of the threshold in turn), labels with undo, a label putting the crop into the tool's
dataset (``core.store.datasets.ToolDataset``), where the next training finds it, and the operator's
corrections of verdicts on the line.

This module is light (numpy and OpenCV, no torch): the Labeling page and ``inspector review``
import it; the live station's side (``core.station.line_keepers``) builds the novelty reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cv2
import numpy as np

from core.errors import InspectorError
from core.records.verdicts import CORRECTED, DEFAULT_CAMERA, ToolResult, rejects
from core.security.access import CONFIGURE, INSPECT, REPORT, require
from core.store.datasets import ToolDataset, decode_image, read_image
from core.store.tools import Tool, acting_as, announce, current_actor
from core.store.workspace import atomic_write_bytes, atomic_write_json

NEAR_THRESHOLD, NOVEL = "near threshold", "novel"  # why the station kept a frame
FROM_HISTORY = "FAIL in the history"  # why a crop is kept: someone sent a recorded FAIL image
DISCARD = "discard"  # the label of a crop nobody should train on (blurred, no part, two parts)
REVIEW_DIR = "review"
SHARE_BOUNDS = (0.02, 0.98)  # the line's FAIL share as KeepPolicy.centre takes it


@dataclass(frozen=True)
class KeepPolicy:
    """Which judged frames are worth an operator's label, and how many per hour.

    ``margin``: a score this close to the line's boundary (``centre``) is uncertain.
    ``line_prior``: that boundary moves with the share of the line's frames judged FAIL (else it
    is the tool's threshold). ``novelty``: a frame whose ``NoveltyReference.novelty`` reaches this
    is unlike the training photos (``math.inf``: never kept for novelty alone); it is reviewed
    after every uncertain one. ``both_sides``: the review order (``review_order``) alternates the
    frames judged FAIL and those judged PASS. ``per_hour`` bounds what one tool asks of the
    operator; ``max_pending`` and ``max_age_days`` bound the disk (the easiest and the oldest
    unlabelled crops go first).
    """

    margin: float = 0.15
    novelty: float = 1.5
    both_sides: bool = True
    line_prior: bool = True
    per_hour: int = 60
    max_pending: int = 500
    max_age_days: float = 30.0

    def centre(self, threshold: float, fail_share: float | None, trained_share: float = 0.5) -> float:
        """The score where the tool is really unsure of a part of this line: the threshold, or
        with ``line_prior`` and the line's FAIL share known, the threshold moved by the line's odds.

        Why: a classifier head is trained with its classes weighted equally, so its score
        assumes a defect share ``trained_share`` (0.5 for good against one defect class). By
        Bayes' rule, on a line where a share f of the parts fail, a score's odds of a defect are
        times f / (1 - f) over the trained odds; the parts the tool is unsure of sit where those
        odds are the threshold's (1 - f for one defect class and the 0.5 threshold), and that is
        where a label moves it most (measured in BENCHMARKS.md, line learning). The share is
        bounded (``SHARE_BOUNDS``) so a line with no FAIL yet keeps something to learn from.
        """
        if not self.line_prior or fail_share is None or not 0.0 < threshold < 1.0:
            return threshold
        share = min(max(fail_share, SHARE_BOUNDS[0]), SHARE_BOUNDS[1])
        odds = threshold / (1.0 - threshold) * (1.0 - share) / share * trained_share / (1.0 - trained_share)
        return odds / (1.0 + odds)

    def reason(self, score: float, centre: float, novelty: float | None = None) -> str | None:
        """Why a frame is worth a label (``NEAR_THRESHOLD`` or ``NOVEL``), or None. A frame the tool
        could not judge (a score that is not a number) is a fault to fix, not a label to give."""
        if not (math.isfinite(score) and math.isfinite(centre)):
            return None
        if abs(score - centre) <= self.margin:
            return NEAR_THRESHOLD
        if novelty is not None and novelty >= self.novelty:
            return NOVEL
        return None

    def keep(self, score: float, threshold: float, novelty: float | None = None,
             fail_share: float | None = None, trained_share: float = 0.5) -> tuple[str, float, float] | None:
        """Whether to keep a judged frame: why, the boundary it was judged near (``centre``) and
        its review rank (``hardness``), or None. One rule for the line and the benchmark."""
        centre = self.centre(threshold, fail_share, trained_share)
        reason = self.reason(score, centre, novelty)
        if reason is None:
            return None
        return reason, centre, self.hardness(score, centre, novelty)

    def hardness(self, score: float, centre: float, novelty: float | None = None) -> float:
        """The review rank of a kept frame: 0 is hardest, a score on the line's boundary; 1 is
        where the policy stops keeping uncertain frames; novel ones rank after them, in (1, 2],
        the farthest from the training photos first. Why after: a label where the tool hesitates
        moves its boundary; a novel part the tool judges with confidence is mostly worth a look."""
        near = abs(score - centre) / self.margin if self.margin > 0 else math.inf
        if near <= 1.0 or not novelty:
            return float(near)
        return float(1.0 + self.novelty / novelty)

    def review_order(self, frames: Sequence[KeptFrame]) -> list[KeptFrame]:
        """The order an operator labels kept frames in: hardest first and, with ``both_sides``,
        alternately the hardest judged FAIL and the hardest judged PASS.

        Why both sides: a tool trained on a few photos is unsure mostly on one side of its
        threshold (the near-threshold frames of a mostly good line are mostly judged PASS), so
        the hardest ten alone teach it one side; a label on each side moves the boundary from
        both (class-balanced uncertainty sampling, measured in BENCHMARKS.md, line learning).
        """
        hardest = sorted(frames, key=lambda f: f.hardness)
        if not self.both_sides:
            return hardest
        judged_fail = [bool(rejects([f.score], f.boundary)[0]) for f in hardest]
        failed = [f for f, fail in zip(hardest, judged_fail) if fail]
        passed = [f for f, fail in zip(hardest, judged_fail) if not fail]
        alternated = [f for pair in zip(failed, passed) for f in pair]
        return alternated + failed[len(passed):] + passed[len(failed):]


class NoveltyReference:
    """How far a frame's pooled features (``core.engine.model.pool_features``) lie from the training
    photos', in units of the training photos' own typical nearest-neighbour distance (1.0: as
    close as two training photos usually are).

    Features are standardised as the head standardises them (``ClassifierHead.mean/std``), and
    at most ``MAX_ROWS`` training rows are kept, so one frame costs one small matrix product.
    """

    MAX_ROWS = 256

    def __init__(self, pooled: np.ndarray, mean: np.ndarray, std: np.ndarray, seed: int = 0):
        if len(pooled) < 2:
            raise InspectorError("novelty needs the features of at least two training photos")
        rows = pooled if len(pooled) <= self.MAX_ROWS else pooled[
            np.random.default_rng(seed).choice(len(pooled), self.MAX_ROWS, replace=False)]
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.rows = ((rows - self.mean) / self.std).astype(np.float32)
        self.squared = (self.rows ** 2).sum(1)
        distances = self._distances(self.rows)
        np.fill_diagonal(distances, np.inf)
        self.scale = float(max(np.median(distances.min(1)), 1e-6))

    def _distances(self, z: np.ndarray) -> np.ndarray:
        squared = (z ** 2).sum(1)[:, None] + self.squared[None, :] - 2 * z @ self.rows.T
        return np.sqrt(np.maximum(squared, 0))

    def novelty(self, pooled: np.ndarray) -> np.ndarray:
        """(N, D) pooled features -> (N,) distance to the nearest training photo, in ``scale``."""
        z = ((np.atleast_2d(pooled) - self.mean) / self.std).astype(np.float32)
        return self._distances(z).min(1) / self.scale


@dataclass
class KeptFrame:
    """A kept crop's record (the JSON beside its PNG) and, once labelled, its correction."""

    id: str
    tool: str
    score: float
    threshold: float
    version: str
    time: float  # time.time() of the judged frame
    reason: str
    camera: str = DEFAULT_CAMERA
    novelty: float | None = None
    hardness: float = 1.0
    centre: float | None = None  # the line's boundary it was kept near (KeepPolicy.centre); None: threshold
    label: str | None = None  # a class of the tool, or DISCARD
    labelled_by: str | None = None
    labelled_at: float | None = None
    previous: list[dict[str, Any]] = field(default_factory=list)  # earlier labels, for undo
    dataset_path: str | None = None  # where the crop is in the tool's dataset ("<class>/<file>")

    @property
    def boundary(self) -> float:
        """The score its side (judged FAIL or PASS on the line) is read against."""
        return self.threshold if self.centre is None else self.centre

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeptFrame:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class ReviewQueue:
    """A tool's kept crops on disk (``<tool>/review/<id>.png`` and ``<id>.json``). A label puts
    the crop into the tool's dataset at once (``core.store.datasets.ToolDataset``), where the next
    training finds it; its undo takes it out again. The record stays here with who labelled it
    and when, so a label can be changed or undone later. Safe for the writer thread and a page
    at once."""

    def __init__(self, tool: Tool, policy: KeepPolicy = KeepPolicy()):
        self.tool, self.policy = tool, policy
        self.folder = tool.folder / REVIEW_DIR
        self._lock = threading.Lock()

    def add(self, crop: np.ndarray, frame: KeptFrame) -> KeptFrame:
        """Store a kept crop (lossless PNG) and its record, then apply the retention rule. A
        tool deleted or renamed since the frame was judged keeps nothing (writing would bring
        its folder back as a tool without a tool file)."""
        if not (self.tool.folder / "tool.json").is_file():
            return frame
        with self._lock:
            self._write(crop, frame)
            self._retain()
        return frame

    def _write(self, crop: np.ndarray, frame: KeptFrame) -> None:
        ok, encoded = cv2.imencode(".png", crop)
        if not ok:
            raise InspectorError("could not encode the kept crop to store it")
        self.folder.mkdir(exist_ok=True)  # inside the tool's folder only: never bring a deleted one back
        atomic_write_bytes(self.folder / f"{frame.id}.png", encoded.tobytes(), make_parents=False)
        atomic_write_json(self.folder / f"{frame.id}.json", frame.to_json(), make_parents=False)

    def _records(self) -> list[KeptFrame]:
        if not self.folder.is_dir():
            return []
        return [KeptFrame.from_json(json.loads(p.read_text())) for p in sorted(self.folder.glob("*.json"))]

    def _retain(self) -> None:
        """Drop unlabelled crops older than ``max_age_days``, then the easiest beyond
        ``max_pending``; forget labels older than ``max_age_days`` (their photos stay in the
        dataset)."""
        oldest = time.time() - self.policy.max_age_days * 86400
        records = self._records()
        waiting = [r for r in records if r.label is None]
        stale = [r for r in waiting if r.time < oldest]
        stale += [r for r in records if r.label is not None and (r.labelled_at or 0.0) < oldest]
        fresh = sorted((r for r in waiting if r.time >= oldest), key=lambda r: r.hardness)
        for record in stale + fresh[self.policy.max_pending:]:
            self._remove(record.id)

    def _remove(self, frame_id: str) -> None:
        for suffix in (".png", ".json"):
            (self.folder / f"{frame_id}{suffix}").unlink(missing_ok=True)

    def pending(self) -> list[KeptFrame]:
        """Kept crops waiting for a label, in the policy's review order (``KeepPolicy.review_order``)."""
        with self._lock:
            return self.policy.review_order([r for r in self._records() if r.label is None])

    def labelled(self) -> list[KeptFrame]:
        """Labelled crops (kept ones labelled here, corrections from the line), newest label
        first: what an undo can take back."""
        with self._lock:
            return sorted((r for r in self._records() if r.label is not None),
                          key=lambda r: r.labelled_at or 0.0, reverse=True)

    def crop(self, frame_id: str) -> np.ndarray:
        image = read_image(self.folder / f"{frame_id}.png")
        if image is None:
            raise InspectorError(f"kept crop '{frame_id}' of tool '{self.tool.name}' is gone or "
                                 "unreadable: it was retired or deleted")
        return image

    def _get(self, frame_id: str) -> KeptFrame:
        path = self.folder / f"{frame_id}.json"
        if not path.is_file():
            raise InspectorError(f"tool '{self.tool.name}' has no kept crop '{frame_id}' "
                                 "(retired, or never kept)")
        return KeptFrame.from_json(json.loads(path.read_text()))

    def _check(self, label: str) -> None:
        if label != DISCARD and label not in self.tool.config.classes:
            known = ", ".join(f"'{c}'" for c in (*self.tool.config.classes, DISCARD))
            raise InspectorError(f"unknown label '{label}': use one of {known}")

    def label(self, frame_id: str, label: str, who: str | None = None) -> KeptFrame:
        """Give a kept crop a label: one of the tool's classes (the crop goes into the dataset
        under it) or ``DISCARD`` (it goes nowhere). An engineer's review: CONFIGURE."""
        require(CONFIGURE)
        self._check(label)
        with self._lock:
            record = self._get(frame_id)
            if record.label is not None:
                record.previous.append({"label": record.label, "labelled_by": record.labelled_by,
                                        "labelled_at": record.labelled_at})
            return self._place(record, label, who or current_actor(), time.time())

    def undo(self, frame_id: str) -> KeptFrame:
        """Take back a crop's last label: its earlier one, or waiting again (out of the dataset)."""
        require(CONFIGURE)
        with self._lock:
            record = self._get(frame_id)
            if record.label is None:
                raise InspectorError(f"kept crop '{frame_id}' has no label to undo")
            earlier = record.previous.pop() if record.previous else {}
            return self._place(record, earlier.get("label"), earlier.get("labelled_by"),
                               earlier.get("labelled_at"))

    @staticmethod
    def correction_id(camera: str, when: float) -> str:
        """The kept crop id of a correction of the frame ``camera`` judged at ``when``: one id
        per judged frame, so that one frame corrected twice (two clicks, two browsers) is one
        photo, as one FAIL image sent twice is one crop."""
        return "corrected-" + hashlib.sha1(f"{camera}\n{when!r}".encode()).hexdigest()[:12]

    def correction(self, camera: str, when: float) -> KeptFrame | None:
        """The correction of the frame ``camera`` judged at ``when``, if one is kept."""
        frame_id = self.correction_id(camera, when)
        return self._get(frame_id) if (self.folder / f"{frame_id}.json").is_file() else None

    def correct(self, crop: np.ndarray, result: ToolResult, label: str, camera: str = DEFAULT_CAMERA,
                when: float | None = None, who: str | None = None) -> KeptFrame:
        """An operator's "this verdict was wrong": the judged ROI crop goes into the dataset under
        ``label`` at once, kept here (reason ``CORRECTED``) for the engineer's review, and the
        correction is announced (the history's audit trail records it). A frame already
        corrected is refused: its label is the engineer's to change, on the Labeling page.
        INSPECT: whoever watches the verdicts may say one was wrong; it changes no model and no
        setting."""
        require(INSPECT)
        if label == DISCARD:
            raise InspectorError("a correction names the right class; discard kept crops on the "
                                 "Labeling page")
        self._check(label)
        when = time.time() if when is None else when
        frame = KeptFrame(self.correction_id(camera, when), self.tool.name, float(result.score),
                          float(result.threshold), result.version, when, CORRECTED, camera,
                          hardness=0.0)
        who = who or current_actor()
        with self._lock:
            done = self.correction(camera, when)
            if done is not None and done.label is not None:
                raise InspectorError(
                    f"that verdict of {self.tool.name} ({result.verdict} at "
                    f"{datetime.fromtimestamp(when):%H:%M:%S}) is already corrected: labelled "
                    f"'{done.label}' by {done.labelled_by}; an engineer changes that label on the "
                    "Labeling page")
            try:
                self._write(crop, frame)
                record = self._place(frame, label, who, time.time(), needs=INSPECT)
            except FileNotFoundError as exc:  # deleted (or renamed) since the frame was judged
                raise InspectorError(f"'{self.tool.name}' is no longer in this station's tools (deleted "
                                     "or renamed meanwhile): the correction was not kept") from exc
        with acting_as(who):
            announce(self.tool.name, CORRECTED, verdict=result.verdict, label=label,
                     score=_finite(result.score), version=result.version, camera=camera,
                     photo=record.dataset_path, kept=record.id)
        return record

    def add_fail_image(self, event_id: int, jpeg: bytes, score: float | None, threshold: float,
                       version: str, when: float, camera: str = DEFAULT_CAMERA) -> KeptFrame:
        """A FAIL image the history kept (the judged ROI, ``core.records.history.HistoryStore.fail_image``)
        into the queue, waiting for an engineer's label: a FAIL someone doubts is worth a look.
        REPORT: whoever reads the history may send one (it changes no photo until labelled);
        sending the same event again keeps one crop."""
        require(REPORT)
        image = decode_image(jpeg)
        if image is None:
            raise InspectorError(f"the FAIL image of event {event_id} cannot be read")
        frame = KeptFrame(f"event-{int(event_id)}", self.tool.name,
                          math.nan if score is None else float(score), float(threshold), version,
                          float(when), FROM_HISTORY, camera, hardness=0.0)
        return self.add(image, frame)

    def _place(self, record: KeptFrame, label: str | None, who: str | None, when: float | None,
               needs: str = CONFIGURE) -> KeptFrame:
        """Give a record its label and put its crop where the label says: in the dataset under
        a class, or nowhere (DISCARD, or no label)."""
        placed = None  # the new photo first: a refusal leaves the old one where it was
        if label is not None and label != DISCARD:
            dataset = ToolDataset(self.tool.images_dir, self.tool.config.classes)
            path = dataset.add_image(label, self.crop(record.id), needs)
            placed = path.relative_to(self.tool.images_dir).as_posix()
        if record.dataset_path:
            (self.tool.images_dir / record.dataset_path).unlink(missing_ok=True)
        record.dataset_path = placed
        record.label, record.labelled_by, record.labelled_at = label, who, when
        atomic_write_json(self.folder / f"{record.id}.json", record.to_json(), make_parents=False)
        return record

    def labelled_since_active(self) -> int:
        """Photos labelled into the dataset (not discarded) after the active version was trained:
        what the next training would add."""
        active = self.tool.config.active_version
        since = 0.0
        if active:
            since = datetime.fromisoformat(self.tool.version_meta(active).created).timestamp()
        return sum(1 for r in self.labelled()
                   if r.label != DISCARD and (r.labelled_at or 0.0) > since)


def new_photos_note(tool: Tool) -> str | None:
    """'12 new photos since v003: retrain', or None when nothing was labelled since."""
    count = ReviewQueue(tool).labelled_since_active()
    if not count:
        return None
    since = f" since {tool.config.active_version}" if tool.config.active_version else ""
    return f"{count} new photo{'s' if count != 1 else ''}{since}: retrain"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class FailShare:
    """The share of a tool's latest judged frames that FAILed: the line's defect share as the
    tool sees it (``KeepPolicy.centre``); None until ``least`` frames were judged. A new version
    starts a new share (its verdicts are its own)."""

    def __init__(self, window: int = 500, least: int = 20):
        self._failed: deque[bool] = deque(maxlen=window)
        self.least = least

    def add(self, failed: bool) -> None:
        self._failed.append(failed)

    def value(self) -> float | None:
        judged = len(self._failed)
        return sum(self._failed) / judged if judged >= self.least else None  # one C loop: no tear


class LineKeeper:
    """The frame callback's side of learning on the line: ``offer`` decides in microseconds and
    queues the crop; one writer thread stores it. A full queue drops the frame, never waits.
    ``trained_share``: the defect share the tool's score assumes, for a score learnt with its
    classes weighted equally (``core.engine.kinds.Kind.balanced_score``; None: any other score),
    so the line's FAIL share may move the boundary frames are kept near (``KeepPolicy.centre``)."""

    QUEUE_SIZE = 32

    def __init__(self, review: ReviewQueue, novelty: NoveltyReference | None = None,
                 trained_share: float | None = None):
        self.review, self.policy, self.novelty = review, review.policy, novelty
        self.trained_share, self.fail_share = trained_share, FailShare()
        self._kept_times: deque[float] = deque()
        self._queue: queue.Queue[tuple[np.ndarray, KeptFrame] | None] = queue.Queue(self.QUEUE_SIZE)
        self._writer = threading.Thread(target=self._write, name=f"keeper-{review.tool.name}", daemon=True)
        self._writer.start()

    def new_version(self, trained_share: float | None) -> None:
        """The tool now judges with another version: its novelty reference (built later, on a
        thread) and its share of FAILs start again, and its score may assume another share."""
        self.novelty, self.fail_share, self.trained_share = None, FailShare(), trained_share

    def offer(self, crop: np.ndarray, result: ToolResult, camera: str = DEFAULT_CAMERA,
              pooled: np.ndarray | None = None, now: float | None = None) -> str | None:
        """Keep a judged frame's ROI crop if the policy wants it and the hour's bound allows;
        ``pooled`` (the frame's pooled features) lets a novel frame be kept. Returns why it
        was kept, or None."""
        novelty, reference = None, self.novelty  # set later, by the thread that builds it
        if reference is not None and pooled is not None:
            novelty = float(reference.novelty(pooled)[0])
        share, trained = None, self.trained_share
        if trained is not None and math.isfinite(result.score):
            self.fail_share.add(bool(rejects([result.score], result.threshold)[0]))
            share = self.fail_share.value()
        decision = self.policy.keep(result.score, result.threshold, novelty, share, trained or 0.5)
        if decision is None:
            return None
        reason, centre, hardness = decision
        now = time.time() if now is None else now
        while self._kept_times and self._kept_times[0] <= now - 3600:
            self._kept_times.popleft()
        if len(self._kept_times) >= self.policy.per_hour:
            return None
        frame = KeptFrame(uuid.uuid4().hex[:12], result.tool, float(result.score), float(result.threshold),
                          result.version, now, reason, camera, novelty, hardness,
                          None if centre == result.threshold else centre)
        try:
            self._queue.put_nowait((crop.copy(), frame))
        except queue.Full:
            return None
        self._kept_times.append(now)
        return reason

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.review.add(*item)
            except (OSError, InspectorError):  # a full disk loses a crop, never the station
                pass
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued crop is on disk."""
        self._queue.join()

    def close(self) -> None:
        """Store what is queued, then stop the writer."""
        self._queue.put(None)
        self._writer.join()
