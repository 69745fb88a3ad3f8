"""The printed-digits kind: the human-readable digits printed under an EAN-13, UPC-A or EAN-8
code in the ROI, read where the code's layout prints them (``core.engine.label_text.read_printed_digits``,
guided by the code's position, never by its decoded text), checked like label text against an
exact text, a pattern or the value sent with the trigger. It is the print check of a retail
label: the digits a person or a till reads say what they must (a code tool checks the bars).

Read this way rather than by the text kind's reader, the digits under the bars of real photos
are read right about two and a half times as often, in a tenth of the time (``BENCHMARKS.md``,
label text).
"""

from __future__ import annotations

import numpy as np

from core.engine.kinds._reading import READ_FAILED, Expectation, ReadingKind
from core.engine.kinds._registry import Judgement, register_kind
from core.engine.kinds.text import TextJudge

NO_RETAIL_CODE = "no EAN or UPC code found"


class DigitsJudge(TextJudge):
    """Finds the retail code in a ROI, reads the digits printed under it and checks them."""

    format = "printed digits"

    def read(self, roi: np.ndarray, expected: str | None) -> Judgement:
        from core.engine.label_text import find_retail_code, read_printed_digits

        code = find_retail_code(roi)
        if code is None:
            return Judgement(READ_FAILED, NO_RETAIL_CODE, None)
        return self.check(read_printed_digits(roi, code), expected)


@register_kind
class Digits(ReadingKind):
    name = "digits"
    title = "reads the digits printed under an EAN or UPC code and checks them"

    def judge_for(self, expectation: Expectation) -> DigitsJudge:
        return DigitsJudge(expectation)
