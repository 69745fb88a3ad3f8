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
    find_retail_code(image) -> CodeRead | None
    read_printed_digits(image, code, options=PrintedDigitsOptions()) -> TextReading
        The HRI check: the digits printed under an EAN-13, UPC-A or EAN-8, read where the code's
        symbology prints them relative to its bars (the code found by zxing, its position used,
        never its text), one line in the printed groups ("9 780201 310054").
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

from core.engine.kinds._reading import compiled_pattern
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
            compiled_pattern(self.value)

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


# --- The printed digits of a retail code (HRI check) ----------------------------------------------
#
# Where an EAN/UPC's digits are printed is fixed by the symbology, relative to its bars, in modules
# (the narrowest bar's width; both codes are 95 modules from the left guard's first bar to the
# right guard's last): the digit cells below, left to right, and the guard bars, which reach down
# between the digit groups and are whitened before reading. UPC-A's first and last characters'
# bars are as long as the guards' and its outer digits are printed smaller beyond the guards.
@dataclass(frozen=True)
class DigitLayout:
    modules: int
    cells: tuple[tuple[float, float], ...]  # each digit's columns (modules from the left guard)
    long_bars: tuple[tuple[float, float], ...]  # columns whose bars reach down among the digits
    groups: tuple[int, ...]  # digits per printed group (how the text is shown)


def _run(start: float, count: int) -> tuple[tuple[float, float], ...]:
    return tuple((start + 7 * k, start + 7 * (k + 1)) for k in range(count))


DIGIT_LAYOUTS = {
    "EAN-13": DigitLayout(95, ((-8.0, -1.0), *_run(3, 6), *_run(50, 6)),
                          ((0, 3), (45, 50), (92, 95)), (1, 6, 6)),
    "UPC-A": DigitLayout(95, ((-8.0, -1.0), *_run(10, 5), *_run(50, 5), (96.0, 103.0)),
                         ((0, 10), (45, 50), (85, 95)), (1, 5, 5, 1)),
    "EAN-8": DigitLayout(67, (*_run(3, 4), *_run(36, 4)), ((0, 3), (31, 36), (64, 67)), (4, 4)),
}
REC_HEIGHT = 48  # the PP-OCRv4 recogniser's input height; one output step per 8 input columns
REC_STRIDE = 8
BARS_END_CORRELATION = 0.5  # a row is the bars' while its profile correlates this much with theirs
BARS_END_SEGMENTS = 8  # stretches of the data bars whose median bar end is fitted
BARS_END_OUTLIER = 2.0  # modules: a stretch's end this far off the first fit is left out
MIN_FRAME_HEIGHT = 6.0  # a code read over fewer modules' height is rectified square to its axis
BAND_SIDE = 11.0  # modules read beyond each guard (a first or last digit printed there)
FIND_UPSCALES = (1.5, 2.0)  # find_retail_code's retries on the image scaled up this much


@dataclass(frozen=True)
class PrintedDigitsOptions:
    """How ``read_printed_digits`` reads (defaults chosen on the benchmark's tuned half, see
    BENCHMARKS.md, label text).

    ``band_heights`` / ``band_offsets``: the bands read (one recogniser call each), their height
    and where they start below the bars' end, in modules. ``decoders``: "cells" (each digit cell
    takes the likeliest digit among the recogniser's steps within its columns), "ctc" (the
    likeliest CTC path spelling exactly the code's digit count); the reading whose check digit
    holds, else the surest on average, is kept. ``whiten``: the guard bars reaching down among
    the digits are painted out, "from top" (only their dark run down from the band's top),
    "columns" (their whole columns) or "" (not). ``refine_ends``: module 0 and the code's last
    module set on the outer guard bars seen in the image, not zxing's corners alone.
    ``adaptive_bars_end``: a bar column ends where it is lighter than its neighbourhood (uneven
    light), not than one threshold for the code. ``bars_end_rule``: each stretch of bars ends
    at its bar columns' first light pixel ("light"), where its rows stop correlating with the
    bars' pattern ("correlation": a digit touching a bar continues its dark run, not the
    pattern), or at the earlier of the two ("earlier"); ``bars_end_degree``: the polynomial
    fitted through the stretches' ends (2: a curve, 0: one straight row).
    """

    band_heights: tuple[float, ...] = (12.0,)
    band_offsets: tuple[float, ...] = (-0.5,)
    decoders: tuple[str, ...] = ("cells", "ctc")
    whiten: str = ""
    refine_ends: bool = False
    adaptive_bars_end: bool = False
    bars_end_degree: int = 2
    bars_end_rule: str = "earlier"


class _Recogniser:
    """The PP-OCRv4 recogniser's ONNX session alone, giving its per-step class probabilities."""

    def __init__(self):
        self._session = None
        self._digits: np.ndarray | None = None
        self._lock = threading.Lock()

    def _load(self):
        if self._session is None:
            import os

            import onnxruntime as ort
            import rapidocr_onnxruntime

            path = os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models",
                                "ch_PP-OCRv4_rec_infer.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one band is small: 2 threads were slower, loaded
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
            # output class 0 is CTC's blank, class i + 1 the dictionary's character i
            self._digits = np.array([characters.index(str(d)) + 1 for d in range(10)])
            self._session = session
        return self._session

    def digit_probabilities(self, bands: np.ndarray) -> np.ndarray:
        """(n, steps, 11) probabilities of blank and the digits 0-9 for n grey bands (n, 48, w)."""
        x = (bands.astype(np.float32) / 255 - 0.5) / 0.5
        x = np.repeat(x[:, None], 3, axis=1)
        with self._lock:
            session = self._load()
            probs = session.run(None, {session.get_inputs()[0].name: x})[0]
        return np.concatenate([probs[:, :, :1], probs[:, :, self._digits]], axis=2)


_RECOGNISER = _Recogniser()


def _code_frame(corners, layout: DigitLayout) -> np.ndarray:
    """The 3 x 3 homography from module coordinates (x along the code from its left guard's first
    bar, y down its bars from the bottom of zxing's read, both in modules) to image pixels.
    A code read over at least ``MIN_FRAME_HEIGHT`` modules keeps its own perspective (its
    corners' quadrilateral); a thinner read, whose sides say little, is taken square to its axis."""
    tl, tr, br, bl = (np.asarray(c, np.float64) for c in corners)
    along = ((tr - tl) + (br - bl)) / 2 / layout.modules
    module = float(np.hypot(*along))
    if module < 0.5:
        raise InspectorError("the code is too small to read its printed digits")
    down = np.array([-along[1], along[0]]) / module
    height = float((((bl - tl) + (br - tr)) / 2) @ down) / module  # zxing's read height, modules
    if height >= MIN_FRAME_HEIGHT:
        source = np.float32([[0, -height], [layout.modules, -height], [layout.modules, 0], [0, 0]])
        return cv2.getPerspectiveTransform(source, np.float32([tl, tr, br, bl]))
    down *= module
    return np.array([[along[0], down[0], bl[0]], [along[1], down[1], bl[1]], [0, 0, 1]])


def _refined(grey: np.ndarray, frame: np.ndarray, layout: DigitLayout) -> np.ndarray:
    """The frame stretched along the code so that module 0 and ``layout.modules`` fall on the
    outer guard bars' outer edges, as seen in the bottom rows of zxing's read (its corners can
    be a few modules off, which puts the digit cells and the whitened guards beside the print)."""
    scale, margin, rows = 4.0, 8.0, 4.0
    rect = _warp(grey, frame, -margin, -rows, scale,
                 (int((layout.modules + 2 * margin) * scale), int(rows * scale)))
    threshold, _ = cv2.threshold(rect, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = np.nonzero(np.median(rect, axis=0) < threshold)[0] / scale - margin
    near_left = dark[(dark > -margin + 1) & (dark < 6)]
    near_right = dark[(dark > layout.modules - 6) & (dark < layout.modules + margin - 1)]
    if not near_left.size or not near_right.size:
        return frame
    left, right = float(near_left.min()), float(near_right.max()) + 1 / scale
    if not 0.9 <= (right - left) / layout.modules <= 1.1:
        return frame
    return frame @ np.array([[(right - left) / layout.modules, 0, left], [0, 1, 0], [0, 0, 1]])


def _warp(grey: np.ndarray, frame: np.ndarray, x0: float, y0: float, scale: float,
          size: tuple[int, int]) -> np.ndarray:
    """The image resampled on the module grid: pixel (u, v) is module (x0 + u/scale, y0 + v/scale)."""
    pixels = np.array([[1 / scale, 0, x0], [0, 1 / scale, y0], [0, 0, 1]])
    return cv2.warpPerspective(grey, frame @ pixels, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def find_retail_code(image: np.ndarray):
    """The first EAN-13, UPC-A or EAN-8 that ``core.engine.codes.read_codes`` finds in ``image``, also
    tried on a contrast-equalised copy (CLAHE) and on copies scaled up by ``FIND_UPSCALES`` (a
    small code's bars a pixel or two wide), its corners given in ``image``'s pixels; None when
    none of them shows one. Only where the code is matters for reading its printed digits."""
    import dataclasses

    from core.engine.codes import ReadOptions, read_codes

    options = ReadOptions(symbologies=("EAN-13", "UPCA", "EAN-8"))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    tries = [(grey, 1.0), (cv2.createCLAHE(2.0, (8, 8)).apply(grey), 1.0)]
    tries += [(cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC), s) for s in FIND_UPSCALES]
    for picture, scale in tries:
        reads = read_codes(picture, options)
        if reads:
            corners = tuple((round(x / scale), round(y / scale)) for x, y in reads[0].corners)
            return dataclasses.replace(reads[0], corners=corners)
    return None


def read_printed_digits(image: np.ndarray, code,
                        options: PrintedDigitsOptions = PrintedDigitsOptions()) -> TextReading:
    """The digits printed under a retail code's bars, read where its symbology prints them.

    ``code`` is a ``core.engine.codes.CodeRead`` of an EAN-13, UPC-A or EAN-8 in ``image`` (its
    symbology and corners are used, never its text). The code is rectified on its module grid,
    where its bars end is found per bar column (a curve), each band below (``options``) is read
    by the PP-OCRv4 recogniser following that curve, and the recogniser's step probabilities
    are decoded with the code's layout (``PrintedDigitsOptions.decoders``); the reading whose
    check digit holds, else the surest on average, is kept. The reading is one line: the digits
    in their printed groups ("9 780201 310054", "0 36602 30146 7"), its confidence the least
    sure digit's, its box the band's corners in ``image``. Not for a UPC-A printed as an
    EAN-13 (zxing names both UPC-A: the digits are then read in the UPC-A's groups).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
            or min(image.shape[:2]) < 8:
        raise InspectorError("the image is empty or not an 8-bit picture: give the camera frame "
                             "the code was read in")
    started = time.perf_counter()
    layout = DIGIT_LAYOUTS.get(code.symbology)
    if layout is None:
        raise InspectorError(f"the printed digits of a {code.symbology} are not read: choose an "
                             f"EAN-13, UPC-A or EAN-8 code ({', '.join(DIGIT_LAYOUTS)})")
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    frame = _code_frame(code.corners, layout)
    if options.refine_ends:
        frame = _refined(grey, frame, layout)
    bars_end = _bars_end(grey, frame, layout, options.adaptive_bars_end, options.bars_end_degree,
                        options.bars_end_rule)
    x0 = -BAND_SIDE
    best = None
    for band_height in options.band_heights:
        scale = REC_HEIGHT / band_height  # rectified pixels per module
        width = int(round((layout.modules + 2 * BAND_SIDE) * scale / REC_STRIDE)) * REC_STRIDE
        # one recogniser call a band: a batch of them costs ONNX Runtime more than one by one
        for offset in options.band_offsets:
            band = _whiten(_band(grey, frame, bars_end, layout, x0, offset, scale, width),
                           layout, x0, scale, options.whiten)
            probs = _RECOGNISER.digit_probabilities(band[None])[0]
            for decoder in options.decoders:
                digits, confidences = (_ctc_digits(probs, len(layout.cells)) if decoder == "ctc"
                                       else _cells(probs, layout, x0, scale))
                # a reading whose check digit holds first, then the surest on average
                score = (_check_digit_holds(digits), float(np.mean(confidences)))
                if best is None or score > best[0]:
                    best = (score, digits, confidences, (x0, offset, band_height))
    _, digits, confidences, (x0, offset, band_height) = best
    text, start = [], 0
    for size in layout.groups:
        text.append("".join(digits[start:start + size]))
        start += size
    right = x0 + layout.modules + 2 * BAND_SIDE
    top_left, top_right = (_end_at(bars_end, x, layout) + offset for x in (x0, right))
    corners = np.float64([[x0, top_left, 1], [right, top_right, 1], [right, top_right + band_height, 1],
                          [x0, top_left + band_height, 1]]) @ frame.T
    box = tuple((int(round(x / w)), int(round(y / w))) for x, y, w in corners)
    line = TextLine(" ".join(text), float(min(confidences)), box)
    return TextReading((line,), (time.perf_counter() - started) * 1000)


def _bars_end(grey: np.ndarray, frame: np.ndarray, layout: DigitLayout, adaptive: bool,
              degree: int, rule: str) -> np.ndarray:
    """Where the bars end, in modules below zxing's read, as a curve over the code: quadratic
    coefficients in x (modules). Each bar column (dark in the read: below Otsu's threshold of
    it) ends at its first light pixel from a module above the read's bottom, and each of
    ``BARS_END_SEGMENTS`` stretches of the data bars at its columns' median end, or (``rule``)
    where its rows stop correlating with the read's pattern, or the earlier of both; the
    stretches' ends are fitted (a label on a can or a bent pack curves), those
    ``BARS_END_OUTLIER`` modules off the first fit left out."""
    scale, above, below = 4.0, 6.0, 30.0
    lo, hi = layout.long_bars[0][1], layout.long_bars[-1][0]  # the data bars' columns
    rect = _warp(grey, frame, lo, -above, scale, (int((hi - lo) * scale), int((above + below) * scale)))
    read = rect[:int(above * scale)]
    threshold, _ = cv2.threshold(read, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    start = int((above - 1) * scale)
    bar_columns = np.nonzero(np.median(read, axis=0) < threshold)[0]
    if adaptive:  # light against its neighbourhood across the bars (uneven lighting)
        local = cv2.blur(rect.astype(np.float32), (int(8 * scale) | 1, 1))
        light = rect[start:, bar_columns] >= local[start:, bar_columns]
    else:
        light = rect[start:, bar_columns] >= threshold
    ends = np.where(light.any(axis=0), light.argmax(axis=0), light.shape[0])
    ends = -1 + ends / scale
    xs = lo + (bar_columns + 0.5) / scale
    segments = np.array_split(np.arange(len(xs)), BARS_END_SEGMENTS)
    points = np.array([(np.median(xs[i]), np.median(ends[i])) for i in segments if len(i)])
    if rule != "light" and len(points):
        # where each stretch's rows stop looking like the bars above (a digit touching a bar
        # continues its dark run, not its pattern)
        chunks = np.array_split(np.arange(rect.shape[1]), len(points))
        data = rect.astype(np.float32)
        for k, chunk in enumerate(chunks):
            part = data[:, chunk]
            reference = part[:int(above * scale)].mean(axis=0)
            reference -= reference.mean()
            centred = part[start:] - part[start:].mean(axis=1, keepdims=True)
            corr = centred @ reference / (np.linalg.norm(centred, axis=1) * np.linalg.norm(reference) + 1e-6)
            below_ref = np.nonzero(corr < BARS_END_CORRELATION)[0]
            end = -1 + (below_ref[0] if below_ref.size else len(corr)) / scale
            points[k, 1] = end if rule == "correlation" else min(end, points[k, 1])
    if len(points) < 3:
        return np.array([0.0, 0.0, float(np.median(ends)) if len(ends) else 0.0])
    if degree == 0:
        return np.array([0.0, 0.0, float(np.median(points[:, 1]))])
    fit = np.polyfit(points[:, 0], points[:, 1], degree)
    keep = np.abs(np.polyval(fit, points[:, 0]) - points[:, 1]) <= BARS_END_OUTLIER
    if 3 <= keep.sum() < len(points):
        fit = np.polyfit(points[keep, 0], points[keep, 1], degree)
    return np.concatenate([np.zeros(2 - degree), fit])


def _end_at(bars_end: np.ndarray, x, layout: DigitLayout):
    """The bars' end curve at x (modules), held at its value at the guards beyond them."""
    return np.polyval(bars_end, np.clip(x, 0, layout.modules))


def _band(grey, frame, bars_end, layout, x0, offset, scale, width) -> np.ndarray:
    """The REC_HEIGHT-pixel band from ``offset`` modules below the bars' end curve, its columns
    from module x0 on at ``scale`` pixels a module, each column following the curve."""
    x = x0 + (np.arange(width) + 0.5) / scale
    y = _end_at(bars_end, x, layout)[None, :] + offset + (np.arange(REC_HEIGHT)[:, None] + 0.5) / scale
    x = np.broadcast_to(x, y.shape)
    points = frame @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)])
    map_x = (points[0] / points[2]).reshape(y.shape).astype(np.float32)
    map_y = (points[1] / points[2]).reshape(y.shape).astype(np.float32)
    return cv2.remap(grey, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _whiten(band: np.ndarray, layout: DigitLayout, x0: float, scale: float, whiten: str) -> np.ndarray:
    """The band with the long bars' columns painted in its paper's grey."""
    if not whiten:
        return band
    band = band.copy()
    paper = np.percentile(band, 90)
    threshold, _ = cv2.threshold(band, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for a, b in layout.long_bars:
        u0, u1 = max(int(round((a - x0) * scale)), 0), max(int(round((b - x0) * scale)), 0)
        if whiten == "from top":  # only the dark run down from the band's top: the bar itself
            bar = np.cumprod(band[:, u0:u1] < threshold, axis=0).astype(bool)
            bar |= np.roll(bar, 1, axis=1) | np.roll(bar, -1, axis=1)
            band[:, u0:u1][bar] = paper
        else:
            band[:, u0:u1] = paper
    return band


def _check_digit_holds(digits: list[str]) -> bool:
    """Whether the last digit is the EAN/UPC check digit of the others (weights 3, 1 from the
    right)."""
    if not all(d.isdigit() for d in digits):
        return False
    values = [int(d) for d in digits]
    total = sum(v * (3 if i % 2 == 0 else 1) for i, v in enumerate(reversed(values[:-1])))
    return (10 - total % 10) % 10 == values[-1]


def _ctc_digits(probs: np.ndarray, count: int):
    """The most likely CTC path over blank and the digits that spells exactly ``count`` digits
    (a repeated digit needs a blank between), and each digit's probability at its step."""
    logp = np.log(np.maximum(probs, 1e-12))
    steps = logp.shape[0]
    # state (k digits so far, last symbol 0 = blank or 1 + digit); best log-probability
    score = np.full((count + 1, 11), -np.inf)
    score[0, 0] = 0.0
    back = np.zeros((steps, count + 1, 11, 2), np.int16)
    for t in range(steps):
        new = np.full_like(score, -np.inf)
        prev_best = score.max(axis=1)
        prev_arg = score.argmax(axis=1)
        # blank: any state keeps its count
        new[:, 0] = prev_best + logp[t, 0]
        back[t, :, 0, 0] = np.arange(count + 1)
        back[t, :, 0, 1] = prev_arg
        for d in range(1, 11):
            stay = score[:, d] + logp[t, d]  # the same digit held over another step
            others = score.copy()
            others[:, d] = -np.inf
            move_from = others.max(axis=1)[:-1]
            move_arg = others.argmax(axis=1)[:-1]
            move = np.concatenate([[-np.inf], move_from + logp[t, d]])
            take_move = move > stay
            new[:, d] = np.where(take_move, move, stay)
            back[t, :, d, 0] = np.where(take_move, np.arange(count + 1) - 1, np.arange(count + 1))
            back[t, :, d, 1] = np.where(take_move, np.concatenate([[0], move_arg]), d)
        score = new
    state = (count, int(score[count].argmax()))
    if not np.isfinite(score[state]):
        return ["?"] * count, [0.0] * count
    digits, confidences = [], []
    for t in range(steps - 1, -1, -1):
        k, last = state
        prev = (int(back[t, k, last, 0]), int(back[t, k, last, 1]))
        if last and prev[0] == k - 1:
            digits.append(str(last - 1))
            confidences.append(float(probs[t, last]))
        elif last and confidences:
            confidences[-1] = max(confidences[-1], float(probs[t, last]))
        state = prev
    return digits[::-1], confidences[::-1]


def _cells(probs: np.ndarray, layout: DigitLayout, x0: float, scale: float):
    """Each digit cell's most likely digit among the output steps centred within its columns,
    and its probability."""
    steps = probs.shape[0]
    centres = x0 + (np.arange(steps) * REC_STRIDE + REC_STRIDE / 2) / scale  # modules
    digits, confidences = [], []
    for a, b in layout.cells:
        inside = probs[(centres >= a) & (centres < b), 1:]
        if inside.size == 0:
            digits.append("?")
            confidences.append(0.0)
            continue
        best = np.unravel_index(np.argmax(inside), inside.shape)
        digits.append(str(best[1]))
        confidences.append(float(inside[best]))
    return digits, confidences
