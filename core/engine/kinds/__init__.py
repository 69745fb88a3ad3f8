"""Kinds of check. A tool is one check on one ROI; its kind says what that check is:

- how a version is made: learnt from photos (and which photos it needs), or, for a kind that
  needs no training, its setup (the expected value) saved as a version;
- what a version holds on disk (meta.json and the kind's weights file, if any), and how it loads;
- how it judges ROIs: a neural kind scores the backbone's maps of a batch of ROIs (the Inspector
  runs one backbone pass for every neural tool sharing a network profile), a reading kind reads
  each ROI itself; both give a ``Judgement`` (score, defect class, heatmap, reading, features);
- what its validation figures are, and what export means (its files; ONNX or not).

The rest of the station asks ``get_kind(name)`` and never tests a kind's name, so a new kind is
one module here (``@register_kind``) plus its page widgets. Importing this package is light: a
kind's engine (torch, zxing-cpp, the OCR) loads when a version is trained or loaded.
"""

# each module registers its kind; in this order the pages list them
from core.engine.kinds import classifier, anomaly, code, text, digits  # noqa: F401, I001
from core.engine.kinds._reading import EXACT, PATTERN, TRIGGER, Expectation
from core.engine.kinds._registry import (
    KINDS,
    NONE,
    OPTIONAL,
    REQUIRED,
    Explanation,
    Judgement,
    Kind,
    NeuralJudge,
    ReadingJudge,
    SavableModel,
    Trained,
    get_kind,
    kind_names,
    register_kind,
)

__all__ = ["EXACT", "KINDS", "NONE", "OPTIONAL", "PATTERN", "REQUIRED", "TRIGGER", "Expectation",
           "Explanation", "Judgement", "Kind", "NeuralJudge", "ReadingJudge", "SavableModel", "Trained",
           "get_kind", "kind_names", "register_kind"]
