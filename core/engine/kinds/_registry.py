"""The contract every kind of check fulfils, and the registry that finds a kind by its name.

Modelled on timm's ``_registry`` / ``_factory``: a kind module declares its class with
``@register_kind``; everything else asks ``get_kind(name)`` and never tests a kind's name. The
kind modules are light to import (their engines load inside ``train`` and ``load``), so the
tool store can validate a tool's kind and setup without the neural-network stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

from core.errors import InspectorError, quoted
from core.records.validation import Validation
from core.records.verdicts import Reading, short_error

if TYPE_CHECKING:
    from core.engine.runtime import FeatureMaps
    from core.engine.training import TrainingOptions
    from core.store.datasets import LoadedImages
    from core.store.tools import ToolConfig, VersionMeta

Report = Callable[[str, int, int], None]  # (stage, done, total): progress, and where a cancel lands

# What a kind asks of the photos of its tool (the capture page, guidance and training read it).
REQUIRED = "required"  # good photos and photos of every defect class
OPTIONAL = "optional"  # good photos; defect photos only sharpen the validation figures
NONE = "none"  # no photos at all: the setup is the expected value


class Judgement(NamedTuple):
    """What a tool made of one ROI: its defect score (0..1), likeliest defect, heatmap, what it
    read, the ROI's pooled backbone features (neural kinds), or why it could not judge it."""

    score: float
    defect: str | None
    heat: np.ndarray | None
    error: str | None = None
    reading: Reading | None = None
    features: np.ndarray | None = None

    @classmethod
    def failed(cls, error: BaseException) -> Judgement:
        return cls(math.nan, None, None, short_error(error))


class Explanation(NamedTuple):
    """One image under a neural model: its defect score, likeliest defect, heatmap and class
    probabilities (None for a kind that has no classes, such as an anomaly tool)."""

    score: float
    defect_class: str | None
    heat: np.ndarray
    probabilities: np.ndarray | None


class SavableModel(Protocol):
    """What a kind's training makes: it writes its own files into a version folder."""

    def save(self, folder: Path) -> None: ...


class Trained(NamedTuple):
    """What a kind's training gives: the model to save, a held-out defect score per photo, the
    validation figures, and the metadata fields of its own (input shape, settings...)."""

    model: SavableModel
    scores: np.ndarray
    validation: Validation
    details: dict[str, Any]


class NeuralJudge(Protocol):
    """A loaded version of a kind that reads the backbone's maps of its ROI: the Inspector feeds
    the ROIs of every such tool sharing a network profile to one backbone pass."""

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """ROI images as this model feeds them to the backbone."""

    def scores(self, maps: FeatureMaps) -> np.ndarray:
        """0..1 defect score of every image of the batch."""

    def judge(self, maps: FeatureMaps, heatmap: bool) -> tuple[float, str | None, np.ndarray | None]:
        """One ROI's maps (its TTA variants as rows): the mean score, the likeliest defect and
        (optionally) the heatmap of the ROI itself (row 0)."""

    def explain(self, maps: FeatureMaps) -> list[Explanation]:
        """Score, likeliest defect, heatmap (and probabilities) of every image of the batch."""


class ReadingJudge(Protocol):
    """A loaded version of a kind that reads its ROI itself (a code, printed text): no backbone."""

    def read(self, roi: np.ndarray, expected: str | None) -> Judgement:
        """The judgement of one ROI image; ``expected`` is the value sent with the trigger."""


class Kind:
    """One kind of check. A subclass states what its tools need and do; ``get_kind`` gives its
    one instance."""

    name: ClassVar[str]
    title: ClassVar[str]  # what it does, in a few words (the CLI and the pages show it)
    photos: ClassVar[str]  # REQUIRED, OPTIONAL or NONE (see above)
    neural: ClassVar[bool]  # judged from the backbone's maps (NeuralJudge), else ReadingJudge
    weights_file: ClassVar[str | None]  # the file a version holds beside meta.json; None: settings only
    onnx: ClassVar[bool] = False  # whether 'inspector export --onnx' can write it as one graph
    # whether its score is a defect probability learnt with both classes weighted equally (the
    # line's FAIL share then tells where it is unsure: core.station.line_learning.KeepPolicy.centre)
    balanced_score: ClassVar[bool] = False
    new_tool: ClassVar[dict[str, Any]] = {}  # settings a new tool of this kind starts with

    def classes_to_capture(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        """The classes whose photos its training counts: every class, good only, or none."""
        return {REQUIRED: classes, OPTIONAL: ("good",), NONE: ()}[self.photos]

    @property
    def learns(self) -> bool:
        """Whether a version is learnt from photos (else it is the setup saved as a version)."""
        return self.photos != NONE

    def check_setup(self, expect: dict[str, Any] | None) -> None:
        """Refuse a tool configuration's ``expect`` this kind cannot use."""
        if expect is not None:
            raise InspectorError(f"a {self.name} tool learns from photos and expects no value: "
                                 "remove 'expect' from its configuration")

    def check_photos(self, counts: dict[str, int], minimum: int) -> None:
        """Refuse to train on too few photos, saying what to capture next."""

    def train(self, config: ToolConfig, data: LoadedImages, options: TrainingOptions,
              report: Report) -> Trained:
        """A new version's model, scores, validation figures and metadata fields."""
        raise NotImplementedError

    def load(self, folder: Path, meta: VersionMeta) -> NeuralJudge | ReadingJudge:
        """A saved version ready to judge, refused unless its files are sound."""
        raise NotImplementedError

    def check_import(self, judge: NeuralJudge | ReadingJudge, config: ToolConfig) -> None:
        """Refuse an imported version that does not fit the tool it comes with."""


_KINDS: dict[str, Kind] = {}
KINDS: Mapping[str, Kind] = MappingProxyType(_KINDS)  # every registered kind by name, read-only


def register_kind(cls: type[Kind]) -> type[Kind]:
    """Class decorator: make a kind known by its ``name``."""
    if cls.name in _KINDS:
        raise RuntimeError(f"kind {cls.name!r} is registered twice")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> Kind:
    """The kind called ``name``, or ``InspectorError`` listing the known ones."""
    try:
        return _KINDS[name]
    except KeyError:
        raise InspectorError(f"unknown tool kind {quoted(name)}; use one of {kind_names()}") from None


def kind_names() -> tuple[str, ...]:
    """Every registered kind's name, in registration order."""
    return tuple(KINDS)
