"""A retrain proves itself before it serves: the new version and the active one, scored on the
same photos that neither of them learnt from, side by side.

Which photos: the newest, the photos in the tool's dataset that the active version was not
trained on (the photos labelled from the line among them: kept frames and the operator's
corrections, put there by ``core.station.line_learning.ReviewQueue``). They are the most telling: the
parts the line showed since, and the verdicts an operator disagreed with. The active version
never saw them, so it scores them as it would on the line.

The candidate was trained on them: that is what the retrain is for. Its own verdicts on them
would be its training fit, so it is scored by its held-out figures instead: training scores
every photo with a head that never saw any view of it nor any re-take of its part (out-of-fold
cross-validation, ``core.engine.training.cross_validate``; an anomaly tool's good photos leave-one-out)
and keeps those scores in the version's metadata (``held_out_by_photo``). That is the candidate's
recipe trained on four fifths of its photos: if anything a little pessimistic for it, never
flattering. The other way, holding the newest photos out of the candidate's training ("train on
all but the newest N"), would compare a model nobody should serve: one without the photos that
matter most.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from core.engine.inference import TrainedModel
from core.engine.metrics import pass_fail_metrics
from core.errors import InspectorError
from core.station.line_learning import ReviewQueue
from core.store.datasets import ToolDataset, photo_key, read_image
from core.store.tools import Tool


@dataclass(frozen=True)
class VersionFigures:
    """One version's verdicts on the compared photos, at the threshold it judges at."""

    version: str
    threshold: float
    scored_as: str  # how its scores were obtained, for the reader
    scores: tuple[float, ...]
    balanced_accuracy: float | None  # None: the photos show one side only
    misses: int  # defect photos it passes
    false_rejects: int  # good photos it fails


@dataclass(frozen=True)
class Comparison:
    """The candidate and the active version on the same photos (``photos``, by ``photo_key``)."""

    tool: str
    photos: tuple[str, ...]
    is_defect: tuple[bool, ...]
    corrections: int  # of the photos, those an operator labelled in the review queue
    candidate: VersionFigures
    active: VersionFigures

    @property
    def good(self) -> int:
        return len(self.is_defect) - sum(self.is_defect)

    @property
    def defects(self) -> int:
        return sum(self.is_defect)


def _figures(version: str, threshold: float, scored_as: str, is_defect: np.ndarray,
             scores: np.ndarray) -> VersionFigures:
    metrics = pass_fail_metrics(is_defect, scores, threshold)
    return VersionFigures(version, threshold, scored_as, tuple(float(s) for s in scores),
                          metrics["balanced_accuracy"], metrics["confusion"]["missed_defect"],
                          metrics["confusion"]["false_fail"])


def new_photos(tool: Tool, candidate: str, active: str) -> list[Path]:
    """The dataset's photos the candidate was trained on and the active version was not.

    A version trained before versions recorded their photos (no ``held_out_by_photo``) counts
    as trained on the photos older than it."""
    candidate_photos = tool.version_meta(candidate).held_out_by_photo
    if not candidate_photos:
        raise InspectorError(f"{candidate} of '{tool.name}' was trained before versions kept "
                             "their held-out scores: retrain it to compare it")
    active_meta = tool.version_meta(active)
    active_photos = active_meta.held_out_by_photo or None
    created = datetime.fromisoformat(active_meta.created).timestamp()
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    return [path for path in dataset.files() if photo_key(path) in candidate_photos
            and (photo_key(path) not in active_photos if active_photos is not None
                 else path.stat().st_mtime > created)]


def compare_with_active(tool: Tool, candidate: str) -> Comparison:
    """Score ``candidate`` (held out) and the active version (as it judges) on the photos the
    active version was not trained on, each at its own threshold."""
    active = tool.config.active_version
    if active is None:
        raise InspectorError(f"'{tool.name}' has no active version to compare {candidate} with: "
                             "run it as a trial on the line, then promote it")
    if candidate == active:
        raise InspectorError(f"{candidate} is the active version of '{tool.name}': pick a new one")
    paths = new_photos(tool, candidate, active)
    if not paths:
        raise InspectorError(f"{candidate} of '{tool.name}' was trained on no photo that {active} "
                             "was not: add or label new photos, retrain, then compare")
    keys = [photo_key(p) for p in paths]
    good = tool.config.classes.index("good")
    is_defect = np.array([tool.config.classes.index(p.parent.name) != good for p in paths])
    held_out = tool.version_meta(candidate).held_out_by_photo
    images = [read_image(p) for p in paths]
    unreadable = [k for k, image in zip(keys, images) if image is None]
    if unreadable:
        raise InspectorError(f"photos of '{tool.name}' became unreadable since training: "
                             f"{', '.join(unreadable[:5])}; replace them and retrain")
    corrected = {photo_key(Path(c.dataset_path)) for c in ReviewQueue(tool).labelled() if c.dataset_path}
    return Comparison(
        tool.name, tuple(keys), tuple(bool(d) for d in is_defect), sum(k in corrected for k in keys),
        _figures(candidate, tool.threshold_of(candidate), "held out in its training (out of fold)",
                 is_defect, np.array([held_out[k] for k in keys])),
        _figures(active, tool.threshold_of(active), "judged by the active model (never trained on them)",
                 is_defect, TrainedModel(tool, active).defect_scores(images)),
    )
