"""What a verdict is: PASS, FAIL or ERROR, the one rule that makes one from a score, and the
events a station records.

This module is light on purpose (numpy only, no network stack): the history, the reports and the
line links import it to read and send verdicts without loading the models that make them.

The verdict rule fails closed: a score that is not a finite number (a model with damaged weights
gives NaN, and ``NaN >= threshold`` is false) or a tool that could not run is an ``ERROR``,
never a PASS. An ERROR is shown as such, sent to the line as "no valid result", and recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PASS = "PASS"  # the part is good
FAIL = "FAIL"  # the part is defective
ERROR = "ERROR"  # the tool could not judge the part: its model did not run or gave no number
VERDICTS = (PASS, FAIL, ERROR)

DEFAULT_CAMERA = "0"  # ToolConfig.camera of a new tool: the station's first camera
CHANGE = "change"  # cause of a continuous-mode event: the tool's smoothed verdict changed
HEARTBEAT = "heartbeat"  # cause of a continuous-mode event: the verdict held for heartbeat_s
TRIGGER = "trigger"  # cause of an event asked for by a trigger: one per trigger
CORRECTED = "corrected"  # an operator said a verdict was wrong: the audit trail's action for it

MAX_ERROR_CHARS = 200  # an error quoted in a verdict, an overlay or a message stays one short line
MAX_EXPECTED_CHARS = 200  # a value sent with a trigger: a serial or a part number, never a file
LABEL_READING_CHARS = 24  # of a read text in a result's label, so that the overlay stays one line


def verdict_of(score: float, threshold: float) -> str:
    """The verdict rule: FAIL at or above the threshold, PASS below it, ERROR when either is not
    a finite number."""
    if not (math.isfinite(score) and math.isfinite(threshold)):
        return ERROR
    return FAIL if score >= threshold else PASS


def rejects(scores: np.ndarray | list[float], threshold: float) -> np.ndarray:
    """``verdict_of`` for many scores at once: True where the part does not pass (FAIL or ERROR)."""
    return ~(np.asarray(scores, dtype=float) < threshold)


def overall(verdicts: list[str]) -> str:
    """One verdict for several tools' verdicts on a part: any ERROR, else any FAIL, else PASS."""
    if ERROR in verdicts:
        return ERROR
    return FAIL if FAIL in verdicts else PASS


def short_error(error: BaseException | str) -> str:
    """An error as one line of at most ``MAX_ERROR_CHARS`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def expected_value(value: object) -> str | None:
    """The value a trigger sent for its part (e.g. the order's serial), which a reading tool
    compares what it reads with; None when none was sent ("" is none: an OPC UA string node
    cleared). Refused with a ValueError when it is not a text or longer than
    ``MAX_EXPECTED_CHARS`` (a line that sends something else is misconfigured)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("the expected value sent with a trigger must be a text (a JSON string: "
                         f"a number would lose its leading zeros), not {type(value).__name__}")
    if len(value) > MAX_EXPECTED_CHARS:
        raise ValueError(f"the expected value sent with a trigger is {len(value)} characters "
                         f"long: at most {MAX_EXPECTED_CHARS} are taken (send the serial alone)")
    return value


@dataclass(frozen=True)
class Reading:
    """What a reading tool (a code or label text tool) read in its ROI: the text as read, what it
    was read as (a symbology such as "EAN-13", or "text"), and the reader's confidence and print
    quality grade where it gives one."""

    text: str
    format: str
    confidence: float | None = None
    grade: str | None = None

    def __post_init__(self) -> None:  # an OCR's numpy float would reach no database or JSON
        if self.confidence is not None:
            object.__setattr__(self, "confidence", float(self.confidence))

    def shown(self, limit: int = LABEL_READING_CHARS) -> str:
        """The text on one line (a line break or control character as '?'), cut to ``limit``."""
        text = "".join(c if c.isprintable() else "?" for c in self.text)
        return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class ToolResult:
    """One tool's decision on one frame."""

    tool: str
    verdict: str  # PASS, FAIL or ERROR
    defect_class: str | None  # the most likely defect when FAIL
    score: float  # this frame's defect score (0..1; NaN when the tool could not judge it)
    smoothed: float  # moving average of the last ``smoothing`` finite scores (NaN on ERROR)
    threshold: float
    box: tuple[int, int, int, int]  # ROI in frame pixels (x0, y0, x1, y1)
    heatmap: np.ndarray | None  # Grad-CAM or anomaly map over the ROI, 1.0 = a typical defect
    latency_ms: float
    version: str
    error: str | None = None  # why the verdict is ERROR: one short line
    reading: Reading | None = None  # what a reading tool read (None for other kinds or no read)
    features: np.ndarray | None = field(default=None, compare=False, repr=False)  # pooled
    # backbone features of the ROI (row 0), for the line's "far from the training photos" check

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def label(self) -> str:
        """One line for the overlay: the verdict, then what a reading tool read (its score
        means nothing to an operator) or the smoothed score."""
        if self.verdict == ERROR:
            return f"{self.tool}: {ERROR} {self.error or ''}".rstrip()
        cls = f" {self.defect_class}" if self.defect_class and not self.passed else ""
        if self.reading is not None:
            return f'{self.tool}: {self.verdict}{cls} "{self.reading.shown()}" ({self.reading.format})'
        return f"{self.tool}: {self.verdict}{cls} {self.smoothed:.2f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class VerdictRecord:
    """One verdict event of one tool."""

    time: float  # time.time() of the judged frame
    tool: str
    verdict: str  # PASS, FAIL or ERROR
    defect_class: str | None
    score: float | None  # the smoothed defect score the verdict was decided on (None on ERROR)
    threshold: float
    version: str
    cause: str = CHANGE  # CHANGE or HEARTBEAT (continuous mode), TRIGGER (triggered mode)
    camera: str = DEFAULT_CAMERA
    raw_score: float | None = None  # the frame's own score, before smoothing
    latency_ms: float | None = None
    trigger_id: str | None = None  # the id of the trigger that asked for this verdict
    box: tuple[int, int, int, int] | None = None  # the ROI in frame pixels
    frame: np.ndarray | None = field(default=None, compare=False, repr=False)  # FAIL events only
    error: str | None = None  # why the verdict is ERROR
    reading: Reading | None = None  # what a reading tool read

    @classmethod
    def of(cls, result: ToolResult, when: float, cause: str, camera: str = DEFAULT_CAMERA,
           trigger_id: str | None = None, frame: np.ndarray | None = None) -> VerdictRecord:
        return cls(when, result.tool, result.verdict, result.defect_class, _finite(result.smoothed),
                   result.threshold, result.version, cause, camera, _finite(result.score),
                   result.latency_ms, trigger_id, result.box,
                   frame if result.verdict == FAIL else None, result.error, result.reading)

    def roi_image(self) -> np.ndarray | None:
        """The judged ROI of a FAIL event (what a manager wants to see), else None."""
        if self.frame is None or self.box is None:
            return None
        x0, y0, x1, y1 = self.box
        return self.frame[y0:y1, x0:x1]
