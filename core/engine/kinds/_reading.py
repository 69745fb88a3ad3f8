"""What reading kinds (a code, printed text) share: the expected value that is their whole setup,
and a version that is that setup saved, so activation, trials, export and the history's version
work for them as for a trained model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.engine.kinds._registry import NONE, Judgement, Kind, ReadingJudge, Report, Trained
from core.errors import InspectorError, quoted
from core.records.validation import Validation

if TYPE_CHECKING:
    from core.engine.training import TrainingOptions
    from core.records.verdicts import Reading
    from core.store.datasets import LoadedImages
    from core.store.tools import ToolConfig, VersionMeta

EXACT, PATTERN, TRIGGER = "exact", "pattern", "trigger"
MODES = (EXACT, PATTERN, TRIGGER)
READ_PASSED, READ_FAILED = 0.0, 1.0  # a reading tool's scores: either side of any threshold in (0, 1]


def compiled_pattern(pattern: str) -> re.Pattern[str]:
    """An expected pattern compiled, or refused with how one is written: the one rule for every
    reading tool's pattern."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InspectorError(f"{quoted(pattern)} is not a valid regular expression ({exc}): write "
                             "it like LOT\\d{6}") from None


@dataclass(frozen=True)
class Expectation:
    """What the ROI must read: an exact text, a regular expression it must match whole, or the
    value sent with each trigger (``value`` unused). Stored as a tool's ``expect``."""

    mode: str
    value: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InspectorError(f"unknown expected-value mode {quoted(self.mode)}; use one of {MODES}")
        if self.mode != TRIGGER and not self.value.strip():
            raise InspectorError("the expected value is empty: type what the ROI must read")
        if self.mode == PATTERN:
            compiled_pattern(self.value)

    @classmethod
    def from_json(cls, data: Any) -> Expectation:
        if not isinstance(data, dict) or set(data) - {"mode", "value"} or not all(
                isinstance(v, str) for v in data.values()):
            raise InspectorError("'expect' must be {\"mode\": \"exact\"|\"pattern\"|\"trigger\", "
                                 "\"value\": text}")
        return cls(data.get("mode", ""), data.get("value", ""))

    def to_json(self) -> dict[str, str]:
        return {"mode": self.mode, "value": self.value}

    def shown(self) -> str:
        """The expectation in words, for pages and the CLI."""
        if self.mode == TRIGGER:
            return "the value sent with each trigger"
        return f"{'text matching ' if self.mode == PATTERN else ''}'{self.value}'"


def reading_judgement(passed: bool, why: str | None, reading: Reading | None) -> Judgement:
    """A reading tool's judgement of one ROI: a pass, or a fail and why, with what was read."""
    return Judgement(READ_PASSED if passed else READ_FAILED, None if passed else why, None,
                     reading=reading)


class _SetupOnly:
    """A reading version's model: nothing beside its meta.json, which holds the setup."""

    def save(self, folder: Path) -> None:
        """Nothing to write: the expectation is in the version's metadata."""


class ReadingKind(Kind):
    """A kind that reads its ROI and compares what it read with the expected value: no photos, no
    backbone. Its score is 0.0 when the read matches, 1.0 when not, so the verdict rule (and the
    moving average, if the tool smooths) apply as to any tool."""

    photos: ClassVar[str] = NONE
    neural: ClassVar[bool] = False
    weights_file: ClassVar[str | None] = None
    # A reading judges each part on its own: no moving average over parts, no defect classes.
    new_tool: ClassVar[dict[str, Any]] = {"classes": ("good",), "smoothing": 1}

    def check_setup(self, expect: dict[str, Any] | None) -> None:
        """A new tool may not say yet what it expects (its setup is saved as a version later)."""
        if expect is not None:
            Expectation.from_json(expect)

    def train(self, config: ToolConfig, data: LoadedImages, options: TrainingOptions,
              report: Report) -> Trained:
        """The tool's expectation saved as a version: nothing is learnt."""
        if config.expect is None:
            raise InspectorError(f"say what '{config.name}' must read first (an exact text, a "
                                 "pattern, or the value sent with each trigger)")
        expectation = Expectation.from_json(config.expect)
        validation = Validation(method=f"set up, not trained: expects {expectation.shown()}")
        return Trained(_SetupOnly(), np.zeros(0, np.float32), validation,
                       {"expect": expectation.to_json()})

    def load(self, folder: Path, meta: VersionMeta) -> ReadingJudge:
        return self.judge_for(Expectation.from_json(meta.details.get("expect")))

    def judge_for(self, expectation: Expectation) -> ReadingJudge:
        """The reader that checks ROIs against ``expectation``."""
        raise NotImplementedError

