"""A model version's validation figures (meta.json's ``validation``), typed.

Training writes them (``core.engine.metrics.pass_fail_metrics`` and the kinds' method, class
confusion, held-out scores); the pages, the CLI and the guidance read them. Light on purpose (no
numpy, no sklearn): the store parses every version's meta.json with it.

meta.json round-trips: a key this station does not know is kept in ``extra``, a missing one
defaults, and ``to_json`` writes back the keys that were measured (see ``Validation.to_json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

Interval = tuple[float, float]  # a rate's 95 % Wilson interval


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix (rows: truth, columns: verdict or predicted class, in ``labels``'
    order); the pass/fail one also counts its false FAILs and missed defects."""

    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]
    false_fail: int | None = None  # good photos that FAIL (pass/fail confusion only)
    missed_defect: int | None = None  # defect photos that PASS (pass/fail confusion only)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Confusion:
        return cls(tuple(data.get("labels", ())), tuple(tuple(row) for row in data.get("matrix", ())),
                   data.get("false_fail"), data.get("missed_defect"))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"labels": list(self.labels), "matrix": [list(row) for row in self.matrix]}
        for key in ("false_fail", "missed_defect"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


# measured together by pass_fail_metrics: written (a None as null) whenever its confusion is
_PASS_FAIL = ("n", "auroc", "threshold", "confusion", "false_fail_rate", "false_fail_interval",
              "missed_defect_rate", "missed_defect_interval")


@dataclass(frozen=True)
class Validation:
    """What a version's validation measured on held-out photos. A reading kind's has only its
    ``method`` (and no balanced accuracy); a version saved before a figure existed lacks it."""

    n: int | None = None  # held-out photos judged
    balanced_accuracy: float | None = None  # None: not measurable (no defect photo, a reading kind)
    auroc: float | None = None
    threshold: float | None = None  # the figures were measured at
    confusion: Confusion | None = None  # good-vs-rest at ``threshold``
    false_fail_rate: float | None = None
    false_fail_interval: Interval | None = None
    missed_defect_rate: float | None = None
    missed_defect_interval: Interval | None = None
    method: str | None = None  # how the photos were held out, as an engineer reads it
    classes: Confusion | None = None  # by class, for a classifier
    named_defect_share: float | None = None  # FAILed defects whose class is named right
    scores: dict[str, tuple[float, ...]] | None = None  # held-out defect scores: good, defect
    extra: dict[str, Any] = field(default_factory=dict)  # keys this station does not know

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Validation:
        """Figures already checked by ``validation_problem``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("confusion", "classes"):
            if values.get(key) is not None:
                values[key] = Confusion.from_json(values[key])
        for key in ("false_fail_interval", "missed_defect_interval"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("scores") is not None:
            values["scores"] = {side: tuple(s) for side, s in values["scores"].items()}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The figures as meta.json holds them: a figure is written when measured, and as null
        when its group was measured without it (no defect photo to give a balanced accuracy: a
        kind's training always says it, with its ``method``; the pass/fail figures with their
        confusion), so older stations reading ``validation["balanced_accuracy"]`` still can."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            written = (value is not None or f.name == "balanced_accuracy" and self.method is not None
                       or f.name in _PASS_FAIL and self.confusion is not None)
            if f.name == "extra" or not written:
                continue
            if isinstance(value, Confusion):
                value = value.to_json()
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "scores":
                value = {side: list(s) for side, s in value.items()}
            data[f.name] = value
        return {**self.extra, **data}


def _number(value: Any, whole: bool = False) -> bool:
    return not isinstance(value, bool) and isinstance(value, int if whole else (int, float))


def _not_confusion(value: Any) -> bool:
    return not (isinstance(value, dict) and isinstance(value.get("labels", []), list)
                and all(isinstance(label, str) for label in value.get("labels", []))
                and isinstance(value.get("matrix", []), list)
                and all(isinstance(row, list) and all(_number(c, True) for c in row)
                        for row in value.get("matrix", []))
                and all(value.get(k) is None or _number(value[k], True)
                        for k in ("false_fail", "missed_defect")))


def validation_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the figures ``Validation`` types, if anything (each checked when
    present; null allowed, as for a figure that could not be measured)."""
    for key, value in data.items():
        if value is None:
            continue
        if key == "method":
            wrong = not isinstance(value, str)
        elif key == "n":
            wrong = not _number(value, True)
        elif key in ("balanced_accuracy", "auroc", "threshold", "false_fail_rate", "missed_defect_rate",
                     "named_defect_share"):
            wrong = not _number(value)
        elif key in ("confusion", "classes"):
            wrong = _not_confusion(value)
        elif key in ("false_fail_interval", "missed_defect_interval"):
            wrong = not (isinstance(value, list) and len(value) == 2 and all(map(_number, value)))
        elif key == "scores":
            wrong = not (isinstance(value, dict) and all(
                isinstance(s, list) and all(map(_number, s)) for s in value.values()))
        else:
            continue
        if wrong:
            return f"'validation.{key}' is not what training writes"
    return None
