"""Reading barcodes, QR and DataMatrix codes in an ROI, and checking what they say.

zxing-cpp decodes. This module chooses how (the cheap settings first, one retry on a sharpened
image only when the first pass finds nothing: see ``BENCHMARKS.md``, code reading), turns
zxing's text into the text a person expects (``printed_text``, the one place where that is
done), and turns the reads into a result a verdict can be made of.

API (no Streamlit, no torch):

    read_codes(image: np.ndarray, options: ReadOptions = ReadOptions()) -> list[CodeRead]
        Every code zxing finds in a BGR (or grey) ROI image, with its text as printed under
        it, its symbology, its corners in the image's pixels and what zxing tells of its print.
    ExpectedCode.exact(text) | ExpectedCode.matching(pattern) | ExpectedCode.given_at_trigger()
        What the code must say: that text, text the regular expression matches whole, or the
        value sent with each trigger (e.g. the order's serial).
    check_code(reads, expected, trigger_value=None) -> CodeCheck
        Passes when a read says what is expected; else fails with "no code found" or
        "read 'X', expected 'Y'" (one line, each text cut to ``SHOWN_CHARS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import cv2
import numpy as np
import zxingcpp

from core.engine.kinds._reading import compiled_pattern
from core.errors import InspectorError

SHOWN_CHARS = 40  # of a code's text in a check's message, so that it stays one line
# The retry: an unsharp mask (blur sigma in px, amount) on the image shrunk to at most
# RETRY_MAX_PIXELS, so that it costs at most a quarter of a 640x480 first pass. A soft or
# slightly blurred print (most of what the first pass misses) reads after it. Chosen on half of
# the benchmark's photos (BENCHMARKS.md, code reading), the other half left untuned.
RETRY_MAX_PIXELS = 320 * 240
RETRY_SHARPEN_SIGMA = 1.0
RETRY_SHARPEN_AMOUNT = 1.0
# zxing shows invisible characters (GS, RS, EOT... and the spaces among them) as Unicode
# control pictures in its human-readable text; a scanner types the characters themselves.
_CONTROL_PICTURES = {chr(0x2400 + code): chr(code) for code in range(0x21)} | {"\u2421": "\x7f"}
_SHOWN_CONTROLS = {ord(char): picture for picture, char in _CONTROL_PICTURES.items() if char != " "}
_DATABAR_GTIN_ONLY = ("DataBar Omni", "DataBar Stacked", "DataBar Stacked Omni",
                      "DataBar Limited")  # carry one GTIN, AI (01), and nothing else


@dataclass(frozen=True)
class ReadOptions:
    """How to look for codes. ``symbologies``: zxing's names ("QRCode", "EAN-13", "UPCA",
    "DataMatrix", "Code128", "DataBar"...); empty reads every kind. Naming what the tool
    expects avoids reading another code on the part and saves time."""

    symbologies: tuple[str, ...] = ()
    try_rotate: bool = False  # also look for 1D codes turned 90 degrees: about twice the time
    retry_sharpened: bool = True  # a second pass on a sharpened image when the first finds none
    formats: zxingcpp.BarcodeFormats = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.symbologies, str):  # one name given bare
            object.__setattr__(self, "symbologies", (self.symbologies,))
        try:
            formats = zxingcpp.barcode_formats_from_str(",".join(self.symbologies))
        except ValueError:
            readable = zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormat.AllReadable)
            known = ", ".join(str(f) for f in readable)
            raise InspectorError(f"Unknown code type in '{', '.join(self.symbologies)}': use names "
                                 f"among {known}") from None
        object.__setattr__(self, "formats", formats)


@dataclass(frozen=True)
class CodeRead:
    """One code found: its text as printed under it (``printed_text``) and what zxing tells.

    ``corners``: top-left, top-right, bottom-right, bottom-left in the image's pixels (the
    code's own corners, so they turn with it). ``gtin``: the 14-digit GTIN of a retail code
    (EAN/UPC, DataBar), so that its 8, 12, 13 and 14-digit forms compare equal, else None.
    zxing gives no ISO print grade; ``unused_error_correction`` (2D codes: 1.0 = nothing had to
    be corrected, near 0 = about to become unreadable) and ``second_pass`` (read only once
    sharpened: a soft print or focus) tell how close the print is to failing.
    """

    text: str
    symbology: str
    corners: tuple[tuple[int, int], ...]
    orientation: int  # degrees the code is turned from upright
    gtin: str | None = None
    error_correction_level: str = ""
    unused_error_correction: float | None = None
    version: str = ""
    second_pass: bool = False


def read_codes(image: np.ndarray, options: ReadOptions = ReadOptions()) -> list[CodeRead]:
    """Every code in ``image`` (BGR or grey uint8), the first pass's or else the retry's."""
    grey = _grey(image)
    found = _decode(grey, options)
    if found or not options.retry_sharpened:
        return [_code_read(barcode, scale=1.0, second_pass=False) for barcode in found]
    scale = min(1.0, (RETRY_MAX_PIXELS / grey.size) ** 0.5)
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
    blurred = cv2.GaussianBlur(small, (0, 0), RETRY_SHARPEN_SIGMA)
    sharpened = cv2.addWeighted(small, 1 + RETRY_SHARPEN_AMOUNT, blurred, -RETRY_SHARPEN_AMOUNT, 0)
    return [_code_read(barcode, scale=scale, second_pass=True) for barcode in _decode(sharpened, options)]


def _decode(grey: np.ndarray, options: ReadOptions) -> list[zxingcpp.Barcode]:
    """One zxing pass at the image's own resolution (its downscaled copies cost more than they
    found on the benchmark's photos)."""
    return zxingcpp.read_barcodes(grey, formats=options.formats, try_rotate=options.try_rotate,
                                  try_downscale=False, text_mode=zxingcpp.TextMode.HRI)


def printed_text(barcode: zxingcpp.Barcode) -> tuple[str, str]:
    """The (symbology, text) a person reads under the code and types as the expected value.

    zxing's human-readable text differs from it in four ways, each undone here: invisible
    characters come as control pictures (``_CONTROL_PICTURES``); a UPC-A comes as its 13-digit
    EAN-13 form, "0" + its 12 digits (and an EAN-13 starting with "0" is the same symbol as a
    UPC-A: both are given as the UPC-A's 12 digits); a UPC-E as the 13 digits it expands to
    (printed: its own 8, which zxing gives in ``extra``); a DataBar that holds only a GTIN as
    "(01)" + GTIN (printed: the 14 digits). Other GS1 codes (DataBar Expanded, GS1-128) keep
    their AIs in parentheses, as printed. Line breaks are left as the code holds them (often
    CR LF); a check takes them for the LF a person types (``ExpectedCode.accepts``).
    """
    symbology, text = str(barcode.format), barcode.text
    text = "".join(_CONTROL_PICTURES.get(char, char) for char in text)
    if symbology == "UPC-A" or (symbology == "EAN-13" and text.startswith("0")):
        return "UPC-A", text[1:]
    if symbology == "UPC-E" and "UPCE" in (barcode.extra or {}):
        return symbology, barcode.extra["UPCE"]
    if symbology in _DATABAR_GTIN_ONLY and re.fullmatch(r"\(01\)\d{14}", text):
        return symbology, text[4:]
    return symbology, text


def _gtin(barcode: zxingcpp.Barcode) -> str | None:
    """The 14-digit GTIN of a retail code (zxing's digits: a UPC-E expanded), else None."""
    digits = re.sub(r"^\(01\)", "", barcode.text)
    retail = str(barcode.format) in ("EAN-13", "EAN-8", "UPC-A", "UPC-E", *_DATABAR_GTIN_ONLY)
    return digits.zfill(14) if retail and re.fullmatch(r"\d{8,14}", digits) else None


def _code_read(barcode: zxingcpp.Barcode, scale: float, second_pass: bool) -> CodeRead:
    """``barcode`` as read in an image ``scale`` times the ROI's size."""
    symbology, text = printed_text(barcode)
    extra = barcode.extra or {}
    position = barcode.position
    corners = tuple((round(point.x / scale), round(point.y / scale))
                    for point in (position.top_left, position.top_right, position.bottom_right,
                                  position.bottom_left))
    return CodeRead(text=text, symbology=symbology, corners=corners, orientation=barcode.orientation,
                    gtin=_gtin(barcode), error_correction_level=barcode.ec_level,
                    unused_error_correction=extra.get("UEC"), version=str(extra.get("Version", "")),
                    second_pass=second_pass)


def _grey(image: np.ndarray) -> np.ndarray:
    """The image as contiguous grey uint8 (an ROI crop is a view with strides)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InspectorError("Codes are read from an 8-bit BGR or grey image: pass the ROI crop "
                             "of a camera frame or a photo read with OpenCV")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InspectorError(f"The ROI is {image.shape[1]}x{image.shape[0]} px, too small to hold a "
                             "code: draw it around the whole code")
    if image.ndim == 3:
        if image.shape[2] != 3:
            raise InspectorError(f"The image has {image.shape[2]} channels: pass a BGR (3) or grey image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class ExpectedCode:
    """What the code must say. Build it with ``exact``, ``matching`` or ``given_at_trigger``."""

    text: str | None = None
    pattern: str | None = None
    from_trigger: bool = False
    _compiled: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if sum((self.text is not None, self.pattern is not None, self.from_trigger)) != 1:
            raise InspectorError("Say what the code must read: an exact text, a pattern, or a "
                                 "value given at each trigger (one of them)")
        if self.text == "":
            raise InspectorError("The expected text is empty: type what the code must read")
        if self.pattern is not None:
            object.__setattr__(self, "_compiled", compiled_pattern(self.pattern))

    @classmethod
    def exact(cls, text: str) -> ExpectedCode:
        return cls(text=text)

    @classmethod
    def matching(cls, pattern: str) -> ExpectedCode:
        """Text the regular expression matches whole, e.g. ``SN-\\d{6}``."""
        return cls(pattern=pattern)

    @classmethod
    def given_at_trigger(cls) -> ExpectedCode:
        """The value sent with each trigger (an order's serial), compared exactly."""
        return cls(from_trigger=True)

    def wanted(self, trigger_value: str | None) -> str | None:
        """The exact text this trigger asks for (None for a pattern)."""
        if not self.from_trigger:
            return self.text
        if not trigger_value:
            raise InspectorError("This check compares the code with a value sent with each trigger: "
                                 "send it with the trigger (e.g. the order's serial)")
        return trigger_value

    def accepts(self, read: CodeRead, wanted: str | None) -> bool:
        """Whether ``read`` says it: the pattern matches its whole text, or its text (a retail
        code: its GTIN, whatever the number of digits typed) is ``wanted``. A line break is one
        whether CR LF (as codes often hold it) or LF (as a browser's text box gives it)."""
        text = _unified_lines(read.text)
        if self._compiled is not None:
            return self._compiled.fullmatch(text) is not None
        same_gtin = read.gtin is not None and wanted.isdigit() and wanted.zfill(14) == read.gtin
        return text == _unified_lines(wanted) or same_gtin

    def shown(self, wanted: str | None) -> str:
        """What is expected, as a check's message says it."""
        if self.pattern is not None:
            return f"text matching '{_shown(self.pattern)}'"
        return f"'{_shown(wanted)}'"


@dataclass(frozen=True)
class CodeCheck:
    """A check's outcome: ``passed``, one line saying why, and the read it is about (the
    matching one, else the first; None when no code was found)."""

    passed: bool
    message: str
    read: CodeRead | None
    reads: tuple[CodeRead, ...] = ()


def check_code(reads: list[CodeRead], expected: ExpectedCode, trigger_value: str | None = None) -> CodeCheck:
    """Pass when one of ``reads`` says what ``expected`` asks (``trigger_value``: the value sent
    with this trigger, for ``ExpectedCode.given_at_trigger``)."""
    wanted = expected.wanted(trigger_value)
    if not reads:
        return CodeCheck(False, "no code found", None)
    match = next((read for read in reads if expected.accepts(read, wanted)), None)
    if match is not None:
        return CodeCheck(True, f"read '{_shown(match.text)}'", match, tuple(reads))
    others = f" (and {len(reads) - 1} other code{'s' if len(reads) > 2 else ''})" if len(reads) > 1 else ""
    return CodeCheck(False, f"read '{_shown(reads[0].text)}'{others}, expected {expected.shown(wanted)}",
                     reads[0], tuple(reads))


def _unified_lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def _shown(text: str) -> str:
    """``text`` on one line (invisible characters as control pictures), cut to ``SHOWN_CHARS``."""
    text = text.translate(_SHOWN_CONTROLS)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"
