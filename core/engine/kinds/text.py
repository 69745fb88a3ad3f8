"""The text kind: reads the printed text in the ROI (``core.engine.label_text``, RapidOCR) and passes
when it matches the expected text or pattern (a lot number, a date format, a part number) or the
value sent with the trigger. The read text and the OCR's confidence are shown and recorded.

The OCR engine is the process's one shared reader (``core.engine.label_text.read_text``): its models
load on the first read and serve every text tool after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.engine.kinds._reading import EXACT, PATTERN, Expectation, ReadingKind, reading_judgement
from core.engine.kinds._registry import Judgement, register_kind
from core.records.verdicts import Reading

if TYPE_CHECKING:
    from core.engine.label_text import TextReading

TEXT_FORMAT = "text"  # Reading.format of what a text tool read


class TextJudge:
    """Reads a ROI's text and checks it against one expectation."""

    format = TEXT_FORMAT

    def __init__(self, expectation: Expectation):
        from core.engine.label_text import ExpectedText

        self.expected = (ExpectedText.exact(expectation.value) if expectation.mode == EXACT else
                         ExpectedText.pattern(expectation.value) if expectation.mode == PATTERN else
                         ExpectedText.at_trigger())

    def read(self, roi: np.ndarray, expected: str | None) -> Judgement:
        from core.engine.label_text import read_text

        return self.check(read_text(roi), expected)

    def check(self, reading: TextReading, expected: str | None) -> Judgement:
        """The verdict on what was read, with the reading to show and record."""
        verdict = self.expected.check(reading, expected)
        confidence = min((line.confidence for line in reading.lines), default=None)
        read = Reading(verdict.read, self.format, confidence=confidence) if reading.lines else None
        return reading_judgement(verdict.passed, verdict.message, read)


@register_kind
class Text(ReadingKind):
    name = "text"
    title = "reads the printed text of a label and checks it"

    def judge_for(self, expectation: Expectation) -> TextJudge:
        return TextJudge(expectation)
