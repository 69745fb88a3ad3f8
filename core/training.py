"""Few-shot transfer learning: frozen ImageNet features of augmented views, a balanced linear head.

Why this shape: on a 2-core CPU a backward pass through the backbone is too slow for "a model
within a minute", while a frozen backbone needs one forward pass per view and the head fits in
milliseconds. That speed buys a real validation estimate: every image is scored by a head that
never saw any view of it (stratified k-fold), which gives the confusion matrix and the suggested
threshold an engineer sees before activating the model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from core.backbones import get_profile
from core.datasets import LoadedImages, ToolDataset, check_trainable
from core.errors import InspectorError, TrainingCancelled
from core.metrics import class_confusion, pass_fail_metrics, suggest_threshold
from core.model import ClassifierHead, pool_features
from core.preprocessing import augment, to_tensor
from core.runtime import get_extractor
from core.tools import Tool, announce
from core.workspace import atomic_write_json, fsync_dir

BATCH = 16


@dataclass(frozen=True)
class TrainingOptions:
    views_per_image: int = 4  # the photo itself plus 3 augmented re-takes
    seed: int = 0
    folds: int = 5
    activate: bool = True
    min_per_class: int = 5


@dataclass(frozen=True)
class Progress:
    """What a progress bar needs: a stage name, a fraction and an estimate of time left."""

    stage: str
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


class _Reporter:
    def __init__(self, callback: ProgressCallback | None, cancel: threading.Event | None):
        self.callback, self.cancel, self.start = callback, cancel, time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise TrainingCancelled("training was cancelled; the active model is unchanged")
        if self.callback is not None:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / done * (total - done) if done else None
            self.callback(Progress(stage, done, total, elapsed, eta))


def extract_view_features(images: list[np.ndarray], profile_name: str, views: int, seed: int,
                          allow_flips: bool, report: Callable[[str, int, int], None]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of ``views`` variants of every image; view 0 is the photo itself.

    Returns features (N * views, D) ordered image by image, and each row's image index.
    """
    profile = get_profile(profile_name)
    extractor = get_extractor(profile)
    rng = np.random.default_rng(seed)
    jobs = [(i, v) for i in range(len(images)) for v in range(views)]
    features = []
    for start in range(0, len(jobs), BATCH):
        chunk = jobs[start:start + BATCH]
        pictures = [images[i] if v == 0 else augment(images[i], rng, allow_flips) for i, v in chunk]
        mid, last = extractor(to_tensor(pictures, profile.input_size, profile.mean, profile.std))
        features.append(pool_features(mid, last))
        report("extracting features", start + len(chunk), len(jobs))
    groups = np.array([i for i, _ in jobs])
    return np.concatenate(features), groups


def fit_head(features: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
             last_channels: int, seed: int = 0) -> ClassifierHead:
    """Standardise, then a class-balanced L2 logistic regression (strength scaled to the width)."""
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-4
    z = (features - mean) / std
    regression = LogisticRegression(C=10.0 / features.shape[1], class_weight="balanced",
                                    max_iter=2000, random_state=seed).fit(z, labels)
    weight = np.zeros((len(classes), features.shape[1]), np.float32)
    bias = np.zeros(len(classes), np.float32)
    if regression.coef_.shape[0] == 1:  # binary: split the single logit symmetrically
        hi = regression.classes_[1]
        lo = regression.classes_[0]
        weight[hi], bias[hi] = regression.coef_[0] / 2, regression.intercept_[0] / 2
        weight[lo], bias[lo] = -regression.coef_[0] / 2, -regression.intercept_[0] / 2
    else:
        weight[regression.classes_] = regression.coef_
        bias[regression.classes_] = regression.intercept_
    return ClassifierHead(classes, mean.astype(np.float32), std.astype(np.float32), weight, bias,
                          last_channels)


def cross_validate(features: np.ndarray, groups: np.ndarray, labels: np.ndarray,
                   classes: tuple[str, ...], last_channels: int, folds: int, seed: int,
                   report: Callable[[str, int, int], None]) -> tuple[np.ndarray, int]:
    """Out-of-fold class probabilities of every image's own photo (view 0), and the fold count.

    All views of an image stay in the same fold, so no held-out photo was seen in any form.
    """
    n_images = len(labels)
    folds = max(2, min(folds, int(np.bincount(labels).min())))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = np.zeros((n_images, len(classes)), np.float32)
    originals = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    for k, (train, held_out) in enumerate(splitter.split(np.zeros(n_images), labels)):
        rows = np.isin(groups, train)
        head = fit_head(features[rows], labels[groups[rows]], classes, last_channels, seed)
        probabilities[held_out] = head.probabilities(features[originals[held_out]])
        report("validating", k + 1, folds)
    return probabilities, folds


def _calibrate_cam_scale(head: ClassifierHead, images: list[np.ndarray], labels: np.ndarray,
                         profile_name: str) -> float:
    """Typical peak of defect evidence on defect photos, so heatmaps mean the same across models."""
    defect_rows = [i for i, y in enumerate(labels) if y != head.good_index][:24]
    if not defect_rows:
        return 1.0
    profile = get_profile(profile_name)
    mid, last = get_extractor(profile)(to_tensor([images[i] for i in defect_rows],
                                                 profile.input_size, profile.mean, profile.std))
    features = pool_features(mid, last)
    targets = head.top_defect(head.probabilities(features))
    peaks = [head.gradcam(mid[j], last[j], int(targets[j])).max() for j in range(len(defect_rows))]
    return float(max(np.median(peaks), 1e-3))


def _new_version_id(tool: Tool) -> str:
    count = len(tool.versions()) + 1
    return f"v{count:03d}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train_tool(tool: Tool, data: LoadedImages | None = None, options: TrainingOptions = TrainingOptions(),
               on_progress: ProgressCallback | None = None,
               cancel: threading.Event | None = None) -> dict:
    """Train a new model version of a classifier tool, validate it, save it atomically.

    ``data`` defaults to the tool's own dataset. The previous active version stays live if this
    run fails or is cancelled. Returns the new version's metadata.
    """
    config = tool.config
    if config.kind != "classifier":
        raise InspectorError(f"tool kind '{config.kind}' cannot be trained by this station yet")
    report = _Reporter(on_progress, cancel)
    data = data if data is not None else ToolDataset(tool.images_dir, config.classes).load()
    counts = {c: int(sum(1 for y in data.labels if y == i)) for i, c in enumerate(config.classes)}
    check_trainable(counts, options.min_per_class)
    started = time.perf_counter()
    labels = np.asarray(data.labels)
    last_channels = get_extractor(config.profile).channels[1]
    features, groups = extract_view_features(data.images, config.profile, options.views_per_image,
                                             options.seed, config.allow_flips, report)
    oof, folds = cross_validate(features, groups, labels, config.classes, last_channels, options.folds,
                         options.seed, report)
    head = fit_head(features, labels[groups], config.classes, last_channels, options.seed)
    head.cam_scale = _calibrate_cam_scale(head, data.images, labels, config.profile)
    report("saving", 0, 1)

    is_defect = labels != head.good_index
    scores = head.defect_scores(oof)
    threshold = suggest_threshold(is_defect, scores)
    validation = pass_fail_metrics(is_defect, scores, threshold)
    validation["method"] = f"{folds}-fold cross-validation"
    validation["classes"] = class_confusion(labels, oof.argmax(axis=1), config.classes)
    wrong = [(str(p), float(s)) for p, s, d in zip(data.paths, scores, is_defect)
             if (s >= threshold) != d]
    meta = {
        "id": _new_version_id(tool), "kind": config.kind, "profile": config.profile,
        "classes": list(config.classes), "created": datetime.now(timezone.utc).isoformat(),
        "images": counts, "views_per_image": options.views_per_image, "seed": options.seed,
        "suggested_threshold": threshold, "validation": validation,
        "misclassified": [{"path": p, "score": s} for p, s in wrong],
        "skipped": [str(p) for p in data.skipped],
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    save_version(tool, head, meta)
    announce(tool.name, "trained", version=meta["id"], profile=config.profile,
             balanced_accuracy=validation.get("balanced_accuracy"))
    report("saving", 1, 1)
    if options.activate:
        tool.activate(meta["id"])
    return meta


def save_version(tool: Tool, head: ClassifierHead, meta: dict) -> Path:
    """Write a version into a hidden folder, then rename it into place in one atomic step."""
    final = tool.versions_dir / meta["id"]
    staging = tool.versions_dir / f".staging-{meta['id']}"
    staging.mkdir(parents=True, exist_ok=False)
    head.save(staging)
    atomic_write_json(staging / "meta.json", meta)
    for file in staging.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    os.replace(staging, final)
    fsync_dir(tool.versions_dir)
    return final
