"""Reviewing a tool's stored photos with its model: defect scores and the hardest photos first.

A photo's label is its class folder ("good" or a defect class). The photos worth an engineer's
look first are those the model puts on the wrong side of the threshold (a wrong label, or a
part the model has not learnt), then those closest to the threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from core.engine.explanation import blend_heatmap
from core.engine.inference import TrainedModel
from core.records.verdicts import FAIL, PASS, verdict_of
from core.store.datasets import read_image
from core.store.tools import Tool

UNCERTAIN_MARGIN = 0.15  # a score this close to the threshold is "uncertain"

WRONG, UNCERTAIN, OK, UNREADABLE = "wrong", "uncertain", "ok", "unreadable"


class ReviewedPhoto(NamedTuple):
    path: Path
    score: float  # defect score under the model (NaN if the file does not decode)
    status: str  # WRONG, UNCERTAIN, OK or UNREADABLE


def defect_scores(tool: Tool, paths: list[Path], version: str | None = None) -> np.ndarray:
    """Defect score (1 - P(good), or an anomaly tool's 0..1 score) of stored photos under a model
    version (default: the active one); NaN for a file that does not decode."""
    model = TrainedModel(tool, version)
    images, keep = [], []
    for i, path in enumerate(paths):
        image = read_image(path)
        if image is not None:
            images.append(image)
            keep.append(i)
    scores = np.full(len(paths), np.nan, np.float32)
    if images:
        scores[keep] = model.defect_scores(images)
    return scores


def hardness_order(paths: list[Path], scores: np.ndarray, threshold: float) -> list[ReviewedPhoto]:
    """Photos hardest first: unreadable ones, then those on the wrong side of the threshold
    (furthest first), then the rest closest to the threshold first."""
    rows = []
    for path, score in zip(paths, scores):
        score = float(score)
        if np.isnan(score):
            rows.append(((0, 0.0), ReviewedPhoto(path, score, UNREADABLE)))
            continue
        margin = abs(score - threshold)
        if verdict_of(score, threshold) != (PASS if path.parent.name == "good" else FAIL):
            rows.append(((1, -margin), ReviewedPhoto(path, score, WRONG)))
        else:
            status = UNCERTAIN if margin < UNCERTAIN_MARGIN else OK
            rows.append(((2, margin), ReviewedPhoto(path, score, status)))
    rows.sort(key=lambda row: row[0])
    return [photo for _, photo in rows]


def hardest_first(tool: Tool, paths: list[Path]) -> list[ReviewedPhoto]:
    """A tool's photos scored by its active model and ordered hardest first."""
    return hardness_order(paths, defect_scores(tool, paths), tool.config.threshold)


def with_heatmap(tool: Tool, image: np.ndarray) -> np.ndarray:
    """An ROI image with the active model's heatmap over it (Grad-CAM, or an anomaly tool's
    anomaly map): where the model sees the defect in a crop kept for review."""
    return blend_heatmap(image, TrainedModel(tool).explain([image])[0].heat)
