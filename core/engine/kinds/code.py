"""The code kind: reads the barcode, QR or DataMatrix code in the ROI (``core.engine.codes``, zxing-cpp)
and passes when a code says what is expected: an exact text, a pattern, or the value sent with
the trigger (an order's serial). A ROI without a code fails with "no code found", a wrong code
with what was read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.engine.kinds._reading import EXACT, PATTERN, Expectation, ReadingKind, reading_judgement
from core.engine.kinds._registry import Judgement, register_kind
from core.records.verdicts import Reading

if TYPE_CHECKING:
    from core.engine.codes import CodeRead


def print_grade(read: CodeRead) -> str | None:
    """How close the print is to unreadable, in words, where zxing tells (it gives no ISO grade):
    the share of a 2D code's error correction left unused, and a read only after sharpening."""
    parts = []
    if read.unused_error_correction is not None:
        parts.append(f"{read.unused_error_correction:.0%} error correction unused")
    if read.second_pass:
        parts.append("read only once sharpened")
    return ", ".join(parts) or None


class CodeJudge:
    """Reads a ROI's codes and checks them against one expectation."""

    def __init__(self, expectation: Expectation):
        from core.engine.codes import ExpectedCode

        self.expected = (ExpectedCode.exact(expectation.value) if expectation.mode == EXACT else
                         ExpectedCode.matching(expectation.value) if expectation.mode == PATTERN else
                         ExpectedCode.given_at_trigger())

    def read(self, roi: np.ndarray, expected: str | None) -> Judgement:
        from core.engine.codes import check_code, read_codes

        check = check_code(read_codes(roi), self.expected, expected)
        reading = None if check.read is None else Reading(check.read.text, check.read.symbology,
                                                          grade=print_grade(check.read))
        return reading_judgement(check.passed, check.message, reading)


@register_kind
class Code(ReadingKind):
    name = "code"
    title = "reads a barcode, QR or DataMatrix code and checks what it says"

    def judge_for(self, expectation: Expectation) -> CodeJudge:
        return CodeJudge(expectation)
