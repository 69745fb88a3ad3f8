"""A model version on photos it has never seen: what an engineer uploads to check the figures.

Validation figures come from held-out photos of the training set, which shared the training's
day, light and parts; new photos say whether the figures hold. They are scored by the batch path
``inspector evaluate`` uses (``TrainedModel.defect_scores``), photo as it is (a crop like the
tool's own photos), and judged at the threshold the version judges at (``Tool.threshold_of``).
A file that is incomplete, unreadable, too large, or a copy of one of the tool's own photos (not
new at all) is skipped with a message saying so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from core.engine.inference import TrainedModel
from core.engine.metrics import Rates, rates_at
from core.errors import InspectorError
from core.store.datasets import MAX_UPLOAD_BYTES, ToolDataset, decode_photo
from core.store.tools import Tool

ANY_DEFECT = "defect"  # what a photo shows when the tool has no defect class of its own


class ScoredPhoto(NamedTuple):
    """One new photo: its file name, the class the engineer says it shows, its defect score."""

    name: str
    shows: str
    score: float
    digest: str  # SHA-1 of the file: the same photo uploaded twice counts once

    @property
    def is_defect(self) -> bool:
        return self.shows != "good"


def photo_classes(tool: Tool) -> tuple[str, ...]:
    """What a new photo may show: the tool's classes (an anomaly tool of good photos only: good
    or a defect of any kind)."""
    return tool.config.classes if tool.config.defect_classes else ("good", ANY_DEFECT)


def score_new_photos(tool: Tool, version: str, files: Iterable[tuple[str, bytes]], shows: str
                     ) -> tuple[list[ScoredPhoto], list[str]]:
    """Score uploaded photos (file name, bytes) that show ``shows`` with ``version``; returns
    the scored photos and one message per skipped file."""
    if shows not in photo_classes(tool):
        raise InspectorError(f"unknown class '{shows}': a photo shows one of "
                             + ", ".join(f"'{c}'" for c in photo_classes(tool)))
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    names, images, digests, skipped = [], [], [], []
    for name, data in files:
        if len(data) > MAX_UPLOAD_BYTES:
            skipped.append(f"'{name}' is larger than {MAX_UPLOAD_BYTES // 2**20} MB: skipped")
            continue
        try:
            image = decode_photo(data, name, outcome="skipped")
        except InspectorError as exc:
            skipped.append(str(exc))
            continue
        copy = dataset.find_copy(data)
        if copy is not None:
            skipped.append(f"'{name}' is one of the tool's own photos ({copy.parent.name}/"
                           f"{copy.name}), not a new one: skipped")
            continue
        digest = hashlib.sha1(data).hexdigest()
        if digest in digests:
            skipped.append(f"'{name}' is the same photo as '{names[digests.index(digest)]}': "
                           "counted once")
            continue
        names.append(name)
        images.append(image)
        digests.append(digest)
    if not images:
        return [], skipped
    scores = TrainedModel(tool, version).defect_scores(images)
    return [ScoredPhoto(n, shows, float(s), d) for n, s, d in zip(names, scores, digests)], skipped


def merge_photos(earlier: list[ScoredPhoto], new: list[ScoredPhoto]) -> list[ScoredPhoto]:
    """Photos tested so far and new ones; a photo uploaded again replaces its earlier entry
    (another class chosen for it included), so no photo counts twice."""
    fresh = {p.digest for p in new}
    return [p for p in earlier if p.digest not in fresh] + list(new)


def new_photo_rates(photos: list[ScoredPhoto], threshold: float) -> Rates:
    """Good parts passed and defects caught among the tested photos at ``threshold``."""
    return rates_at(np.array([p.is_defect for p in photos], bool),
                    np.array([p.score for p in photos], float), threshold)
