r"""Label text: read the printed text in a ROI and check it against what should be printed there.

The OCR is RapidOCR's PP-OCRv4 (text detector, optional 180-degree classifier, recogniser) run by
ONNX Runtime; its models ship inside the ``rapidocr-onnxruntime`` wheel, so nothing is downloaded
at run time. No torch here: a label-text check costs no deep-learning backbone.

API (no Streamlit; call it from a worker or page thread):

    read_text(roi: np.ndarray) -> TextReading
        The text lines of one BGR (or grey) ROI image, in reading order, from the process's one
        ``TextReader`` (made on first use, shared by every thread, calls serialised).
    TextReader(short_side=SHORT_SIDE, long_side=LONG_SIDE, turned_text=False)
        An OCR engine with its own settings: the ROI is scaled so that its shorter side is
        ``short_side`` pixels unless its longer side would then pass ``long_side`` (a ROI drawn
        along one line of text), then to that (``None``: the library's own sizing), and
        ``turned_text`` runs the classifier that turns upside-down lines round first.
    ExpectedText.exact(text) | .pattern(regex) | .at_trigger()
        What the ROI must say: a fixed text, a regular expression (a lot number, a date format)
        or the value sent with each trigger. ``check(reading, given=None) -> TextVerdict``.

A check passes when one row of the reading (the lines side by side at one height, joined with
a space) or the whole reading (its rows joined with a space) matches in full, after
``normalise``. An exact text ignores spaces (an OCR drops and adds them between words); a
pattern must match a whole row (write ``.*`` around it to allow more, ``\s*`` for a gap).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from core.errors import InspectorError

# The detector sees the ROI at this shorter side, its longer side at most LONG_SIDE: the
# library's own 736 reads small print best (see BENCHMARKS.md), the cap bounds the time of a ROI
# drawn along one line (a 365 x 54 strip would otherwise reach 4975 x 736).
SHORT_SIDE, LONG_SIDE = 736, 1280
SHOWN_CHARS = 40  # a verdict's message quotes at most this much of what was read

# Letters an OCR reads for the digit they resemble: applied only where a digit is expected.
DIGIT_LOOKALIKES = str.maketrans({"O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1",
                                  "i": "1", "!": "1", "Z": "2", "z": "2", "S": "5",
                                  "s": "5", "B": "8"})
# Marks printed beside or between digit groups (hyphens, dots, an ISBN's '>' quiet-zone mark)
# and what an OCR makes of a barcode's guard bars reaching down between them (| / " ′).
DIGIT_SEPARATORS = re.compile(r"[\s\-.,:;'\"`<>_/\\|\u2032]+")
WHITESPACE = re.compile(r"\s+")
# A pattern that can only match digits: \d, [0-9]-style classes, literal digits, quantifiers.
DIGITS_ONLY_PATTERN = re.compile(r"(?:\\d|\[[0-9\-]+\]|[0-9]|\{\d+(?:,\d*)?\}|[?*+^$()|])+")


def normalise(text: str, digits: bool) -> str:
    """The one place OCR output is cleaned before a comparison: Unicode compatibility forms
    folded (full-width digits and colons become ASCII), whitespace collapsed to one space; where
    the expectation is digits only, also separators dropped (digit groups join) and the letters
    of ``DIGIT_LOOKALIKES`` read as their digit (an 'O' under a barcode is a '0')."""
    text = WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    if digits:
        text = DIGIT_SEPARATORS.sub("", text).translate(DIGIT_LOOKALIKES)
    return text


@dataclass(frozen=True)
class TextLine:
    """One line the OCR found: its text, the recogniser's confidence (0..1) and its box, four
    corners (x, y) in ROI pixels clockwise from the top left."""

    text: str
    confidence: float
    box: tuple[tuple[int, int], ...]

    @property
    def top(self) -> float:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.box)

    @property
    def left(self) -> float:
        return min(x for x, _ in self.box)


@dataclass(frozen=True)
class TextReading:
    """Every line read in one ROI, in reading order (rows top to bottom, left to right in a row)."""

    lines: tuple[TextLine, ...]
    elapsed_ms: float

    @property
    def row_lines(self) -> tuple[tuple[TextLine, ...], ...]:
        """The lines grouped by height (side by side in one row), each row left to right."""
        rows: list[list[TextLine]] = []
        for line in self.lines:
            if rows and _same_row(rows[-1], line):
                rows[-1].append(line)
            else:
                rows.append([line])
        return tuple(tuple(sorted(row, key=lambda ln: ln.left)) for row in rows)

    @property
    def rows(self) -> tuple[str, ...]:
        """Each row's lines joined with a space: a code's digit groups, read as separate lines,
        come back together here."""
        return tuple(" ".join(line.text for line in row) for row in self.row_lines)

    @property
    def text(self) -> str:
        """The whole reading, one row a line."""
        return "\n".join(self.rows)


def _same_row(row: list[TextLine], line: TextLine) -> bool:
    """A line belongs to a row when its vertical middle falls within the row's height (a code's
    smaller outer digits sit lower than its groups but still within them)."""
    middle = (line.top + line.bottom) / 2
    top, bottom = min(ln.top for ln in row), max(ln.bottom for ln in row)
    row_middle = (top + bottom) / 2
    return top <= middle <= bottom or line.top <= row_middle <= line.bottom


def _reading_order(lines: list[TextLine]) -> tuple[TextLine, ...]:
    """Lines sorted by their vertical middle, so that rows come out top to bottom."""
    return tuple(sorted(lines, key=lambda ln: ((ln.top + ln.bottom) / 2, ln.left)))


class TextReader:
    """One OCR engine (its three ONNX sessions load on the first read) with a lock: RapidOCR keeps
    per-call state in the engine, so two threads never run it at once."""

    def __init__(self, short_side: int | None = SHORT_SIDE, long_side: int = LONG_SIDE,
                 turned_text: bool = False):
        if short_side is not None and not 32 <= short_side <= long_side:
            raise InspectorError(f"short_side {short_side} is not usable: give 32 to {long_side} pixels")
        self.short_side = short_side
        self.long_side = long_side
        self.turned_text = turned_text
        self._engine = None
        self._lock = threading.Lock()

    def _ocr(self):
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            sizing = {} if self.short_side is None else {
                "det_limit_type": "max", "det_limit_side_len": self.long_side}
            self._engine = RapidOCR(use_cls=self.turned_text, **sizing)
        return self._engine

    def read(self, roi: np.ndarray) -> TextReading:
        """The text lines of a BGR or grey ROI image (uint8), in reading order."""
        if not isinstance(roi, np.ndarray) or roi.dtype != np.uint8 or roi.ndim not in (2, 3) \
                or min(roi.shape[:2]) < 8:
            raise InspectorError("the ROI image is empty or not an 8-bit picture: draw a ROI of at "
                                 "least 8 x 8 pixels on a camera frame")
        started = time.perf_counter()
        image = cv2.cvtColor(roi, cv2.COLOR_GRAY2BGR) if roi.ndim == 2 else roi
        scale = 1.0
        if self.short_side is not None:
            scale = min(self.short_side / min(image.shape[:2]), self.long_side / max(image.shape[:2]))
            interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation)
        with self._lock:
            found, _ = self._ocr()(np.ascontiguousarray(image))
        lines = [TextLine(str(text), float(confidence),
                          tuple((round(x / scale), round(y / scale)) for x, y in box))
                 for box, text, confidence in found or () if str(text).strip()]
        return TextReading(_reading_order(lines), (time.perf_counter() - started) * 1000)


_SHARED = TextReader()


def read_text(roi: np.ndarray) -> TextReading:
    """The text of a ROI image, read by the process's one shared engine."""
    return _SHARED.read(roi)


@dataclass(frozen=True)
class TextVerdict:
    """A label-text check's outcome: ``message`` is one short line for the operator."""

    passed: bool
    message: str
    read: str


@dataclass(frozen=True)
class ExpectedText:
    """What the ROI must say. ``kind`` is 'exact', 'pattern' (a Python regular expression) or
    'trigger' (the exact text arrives with each trigger, e.g. the serial the PLC just printed)."""

    kind: str
    value: str = ""

    KINDS = ("exact", "pattern", "trigger")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise InspectorError(f"unknown expected-text kind '{self.kind}'; choose one of: "
                                 f"{', '.join(self.KINDS)}")
        if self.kind != "trigger" and not self.value.strip():
            raise InspectorError(f"the expected {self._noun} is empty: type the text the label must show")
        if self.kind == "pattern":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise InspectorError(f"'{self.value}' is not a valid regular expression ({exc}); "
                                     r"write it like LOT\d{6}") from None

    @classmethod
    def exact(cls, text: str) -> ExpectedText:
        return cls("exact", text)

    @classmethod
    def pattern(cls, regex: str) -> ExpectedText:
        return cls("pattern", regex)

    @classmethod
    def at_trigger(cls) -> ExpectedText:
        return cls("trigger")

    @property
    def _noun(self) -> str:
        return "pattern" if self.kind == "pattern" else "text"

    def check(self, reading: TextReading, given: str | None = None) -> TextVerdict:
        """PASS when one row or the whole reading matches; ``given`` is the trigger's text."""
        wanted = self._wanted(given)
        digits = _digits_only(wanted, self.kind == "pattern")
        matcher = re.compile(wanted) if self.kind == "pattern" else None
        wanted = wanted if matcher else normalise(wanted, digits)
        candidates = [normalise(row, digits) for row in reading.rows]
        if len(candidates) > 1:
            candidates.append(normalise(" ".join(reading.rows), digits))
        if not candidates:
            return TextVerdict(False, "no text found", "")
        for candidate in candidates:
            if (matcher.fullmatch(candidate) if matcher
                    else candidate.replace(" ", "") == wanted.replace(" ", "")):
                return TextVerdict(True, f"read '{_shown(candidate)}'", candidate)
        read = " / ".join(reading.rows)
        return TextVerdict(False, f"read '{_shown(read)}', expected {self._noun} '{_shown(wanted)}'", read)

    def _wanted(self, given: str | None) -> str:
        if self.kind != "trigger":
            return self.value
        if given is None or not given.strip():
            raise InspectorError("this label-text check compares with the text sent with each "
                                 "trigger, and none came: send the expected text with the trigger")
        return given


def _digits_only(wanted: str, is_pattern: bool) -> bool:
    """Whether the expectation can only be digits (then digit look-alikes and separators are
    normalised away in what was read)."""
    if is_pattern:
        return DIGITS_ONLY_PATTERN.fullmatch(wanted) is not None
    return re.fullmatch(r"[0-9]+", WHITESPACE.sub("", wanted)) is not None


def _shown(text: str) -> str:
    """At most ``SHOWN_CHARS`` of a text, on one line."""
    text = WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."
