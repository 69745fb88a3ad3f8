"""Few-shot transfer learning: frozen ImageNet features of several views, a balanced linear head.

Why this shape: on a 2-core CPU a backward pass through the backbone is too slow for "a model
within a minute", while a frozen backbone needs one forward pass per view and the head fits in
a second. That speed buys a real validation estimate: every image is scored by a head that
never saw any view of it, nor any re-take of its part (stratified group k-fold), which gives the
confusion matrix, the rates and the operating curve an engineer sees before activating the
model, all at the threshold every version suggests (``core.engine.metrics.DECISION_POINT``). A part that
looks the same mirrored is taken in its orientations (exact copies of real texture, measured
better than random re-takes); other parts in a few random re-takes (light, small shift,
rotation, blur).

Anomaly tools (``core.engine.anomaly``) take the same views of their good photos only, keep their patch
features in a memory and validate each good photo against the memory without its own patches.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch.nn import functional as F

from core.engine.anomaly import AnomalySettings, fit_memory, patch_features
from core.engine.kinds import SavableModel, Trained, get_kind
from core.engine.metrics import DECISION_POINT, class_confusion, named_defect_share, pass_fail_metrics
from core.engine.model import ClassifierHead, neighbourhood_average, pool_features, softmax
from core.engine.preprocessing import InputShape, augment
from core.engine.runtime import FeatureMaps, get_extractor
from core.errors import TrainingCancelled
from core.records.validation import Validation
from core.security.access import CONFIGURE, require
from core.store.datasets import LoadedImages, ToolDataset, photo_key
from core.store.tools import Tool, ToolConfig, VersionMeta, announce
from core.store.workspace import atomic_write_json, fsync_dir

BATCH = 16


@dataclass(frozen=True)
class TrainingOptions:
    views_per_image: int | None = None  # None: see ``view_count``
    seed: int = 0
    folds: int = 5
    activate: bool = True
    min_per_class: int = 5
    anomaly: AnomalySettings = AnomalySettings()  # used by anomaly tools only


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


ORIENTATIONS = 8  # quarter turns x mirror, for a square input
SHAPE_KEEPING_ORIENTATIONS = 4  # the photo, its half turn and its two mirrors: a long part stays long
RETAKES = 4  # the photo and 3 random re-takes, for a part that is not taken mirrored
_QUARTER_TURNS = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)


def orientation_count(shape: InputShape) -> int:
    """Orientations of a part that looks the same mirrored: quarter turns only fit a square input."""
    return ORIENTATIONS if shape.square else SHAPE_KEEPING_ORIENTATIONS


def view_count(allow_flips: bool, shape: InputShape, options: TrainingOptions) -> int:
    """Views per photo: as the options say, else every orientation of a part that looks the same
    mirrored (``orientation_count``), else ``RETAKES``."""
    if options.views_per_image:
        return options.views_per_image
    return orientation_count(shape) if allow_flips else RETAKES


def oriented(image: np.ndarray, view: int, shape: InputShape) -> np.ndarray:
    """Orientation ``view`` of a photo (0 is the photo itself), see ``orientation_count``."""
    if not shape.square:
        return (image, cv2.rotate(image, cv2.ROTATE_180), cv2.flip(image, 1), cv2.flip(image, 0))[view]
    if view >= 4:
        image = cv2.flip(image, 1)
    return image if view % 4 == 0 else cv2.rotate(image, _QUARTER_TURNS[view % 4 - 1])


def view_of(image: np.ndarray, view: int, rng: np.random.Generator, allow_flips: bool,
            shape: InputShape) -> np.ndarray:
    """View 0 is the photo. A part that looks the same mirrored is taken to look the same in any
    orientation that fits its input, so its next views are its other orientations (exact copies
    of real texture, measured better than random re-takes); further views, and every view of
    other parts, are random re-takes."""
    if view == 0:
        return image
    if not allow_flips or view >= orientation_count(shape):
        return augment(image, rng, allow_flips)
    return oriented(image, view, shape)


@dataclass
class ViewFeatures:
    """What a classifier head learns from, one row per view: pooled features, the mid map its
    local evidence reads, and the image each view shows."""

    pooled: np.ndarray  # (V, D)
    mid: np.ndarray  # (V, C_mid, H, W)
    groups: np.ndarray  # (V,) image index

    def take(self, rows: np.ndarray) -> ViewFeatures:
        return ViewFeatures(self.pooled[rows], self.mid[rows], self.groups[rows])

    def probabilities(self, head: ClassifierHead) -> np.ndarray:
        return softmax(head.logits(self.pooled, head.evidence(self.mid)))

    @property
    def originals(self) -> np.ndarray:
        """The row of each image's own photo (its view 0)."""
        return np.flatnonzero(np.r_[True, self.groups[1:] != self.groups[:-1]])


def view_maps(images: list[np.ndarray], views: int, seed: int, allow_flips: bool, profile_name: str,
              shape: InputShape, report: Callable[[str, int, int], None],
              inputs: Callable[[list[np.ndarray]], list[np.ndarray]] = list) -> Iterator[FeatureMaps]:
    """The maps of ``views`` views of every image (see ``view_of``) at input ``shape``, image by
    image, one batch at a time; ``inputs`` prepares the pictures as the model feeds them to the
    backbone."""
    extractor = get_extractor(profile_name)
    rng = np.random.default_rng(seed)
    jobs = [(i, v) for i in range(len(images)) for v in range(views)]
    for start in range(0, len(jobs), BATCH):
        chunk = jobs[start:start + BATCH]
        pictures = inputs([view_of(images[i], v, rng, allow_flips, shape) for i, v in chunk])
        yield extractor.maps(extractor.tensor(pictures, shape))
        report("extracting features", start + len(chunk), len(jobs))


def extract_view_features(images: list[np.ndarray], profile_name: str, shape: InputShape, views: int,
                          seed: int, allow_flips: bool,
                          report: Callable[[str, int, int], None]) -> ViewFeatures:
    """What a classifier head learns from, for ``views`` views of every image."""
    pooled, mids = [], []
    for maps in view_maps(images, views, seed, allow_flips, profile_name, shape, report):
        pooled.append(pool_features(maps))
        mids.append(maps.mid)
    return ViewFeatures(np.concatenate(pooled), np.concatenate(mids),
                        np.repeat(np.arange(len(images)), views))


EVIDENCE_TOP = 8  # cells of the evidence map averaged into the local part of the logit
_EVIDENCE_DECAY = 1e-2  # L2 penalty on the evidence weights (standardised features)
_EVIDENCE_STEPS = 150


def fit_evidence(mid: np.ndarray, is_defect: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Weights of the local evidence map (``core.engine.model.evidence_maps``), multiple-instance style:
    the mean of each view's ``EVIDENCE_TOP`` highest cells should tell defect views from good ones.

    Full-batch Adam on standardised features, classes weighted equally. The 3x3 averaging is
    linear, so it is applied to the features once, not at every step; the standardisation is
    folded into the returned weight and bias (averaging a constant leaves it unchanged).
    """
    mean, std = mid.mean((0, 2, 3)), mid.std((0, 2, 3)) + 1e-4
    standardised = torch.from_numpy((mid - mean[:, None, None]) / std[:, None, None])
    cells = neighbourhood_average(standardised).permute(0, 2, 3, 1).reshape(len(mid), -1, mid.shape[1])
    generator = torch.Generator().manual_seed(seed)
    limit = 1.0 / np.sqrt(mid.shape[1])
    weight = ((torch.rand(mid.shape[1], generator=generator) * 2 - 1) * limit).requires_grad_()
    bias = torch.zeros(1, requires_grad=True)
    target = torch.from_numpy(np.asarray(is_defect, np.float32))
    positive_weight = (1 - target).sum() / target.sum().clamp(min=1)
    optimiser = torch.optim.Adam([weight, bias], lr=1e-2)
    top = min(EVIDENCE_TOP, cells.shape[1])
    for _ in range(_EVIDENCE_STEPS):
        logit = (cells @ weight).topk(top, dim=1).values.mean(1) + bias
        loss = F.binary_cross_entropy_with_logits(logit, target, pos_weight=positive_weight) \
            + _EVIDENCE_DECAY * (weight ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folded = weight.detach().numpy() / std
    return folded.astype(np.float32), float(bias.item() - folded @ mean)


def fit_head(features: ViewFeatures, labels: np.ndarray, classes: tuple[str, ...],
             last_channels: int, seed: int = 0) -> ClassifierHead:
    """Global part: standardise, then a class-balanced L2 logistic regression (strength scaled to
    the width). Local part: ``fit_evidence`` on good against every defect class."""
    mean = features.pooled.mean(axis=0)
    std = features.pooled.std(axis=0) + 1e-4
    z = (features.pooled - mean) / std
    regression = LogisticRegression(C=10.0 / z.shape[1], class_weight="balanced",
                                    max_iter=2000, random_state=seed).fit(z, labels)
    weight = np.zeros((len(classes), z.shape[1]), np.float32)
    bias = np.zeros(len(classes), np.float32)
    if regression.coef_.shape[0] == 1:  # binary: split the single logit symmetrically
        hi = regression.classes_[1]
        lo = regression.classes_[0]
        weight[hi], bias[hi] = regression.coef_[0] / 2, regression.intercept_[0] / 2
        weight[lo], bias[lo] = -regression.coef_[0] / 2, -regression.intercept_[0] / 2
    else:
        weight[regression.classes_] = regression.coef_
        bias[regression.classes_] = regression.intercept_
    patch_weight, patch_bias = fit_evidence(features.mid, labels != classes.index("good"), seed)
    return ClassifierHead(classes, mean.astype(np.float32), std.astype(np.float32), weight, bias,
                          last_channels, patch_weight=patch_weight, patch_bias=patch_bias,
                          patch_top=EVIDENCE_TOP)


def cross_validate(features: ViewFeatures, labels: np.ndarray, classes: tuple[str, ...],
                   last_channels: int, folds: int, seed: int,
                   report: Callable[[str, int, int], None],
                   retakes: np.ndarray | None = None) -> tuple[np.ndarray, int, bool]:
    """Out-of-fold class probabilities of every image's own photo (view 0), the fold count, and
    whether the re-takes were kept together.

    All views of an image, and all re-takes of one part (``retakes``: a group number per image,
    see ``core.store.datasets.retake_groups``), stay in the same fold, so no held-out photo was seen
    in any form. A class whose photos are all re-takes of one part leaves nothing to hold out
    but the part itself: then the photos are split one by one (and the caller says so).
    """
    n_images = len(labels)
    groups = np.arange(n_images) if retakes is None else np.asarray(retakes)
    parts_per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    together = min(parts_per_class) >= 2
    if not together:
        groups = np.arange(n_images)
        parts_per_class = [int(np.sum(labels == c)) for c in np.unique(labels)]
    folds = max(2, min(folds, min(parts_per_class)))
    if len(np.unique(groups)) == n_images:  # no re-takes: the plain stratified split
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(n_images), labels)
    else:
        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(n_images), labels, groups)
    probabilities = np.zeros((n_images, len(classes)), np.float32)
    originals = features.originals
    for k, (train, held_out) in enumerate(splits):
        rows = np.isin(features.groups, train)
        head = fit_head(features.take(rows), labels[features.groups[rows]], classes, last_channels, seed)
        probabilities[held_out] = features.take(originals[held_out]).probabilities(head)
        report("validating", k + 1, folds)
    return probabilities, folds, together


def _calibrate_cam_scale(head: ClassifierHead, images: list[np.ndarray], labels: np.ndarray,
                         profile_name: str, shape: InputShape) -> float:
    """Typical peak of defect evidence on defect photos, so heatmaps mean the same across models."""
    defect_rows = [i for i, y in enumerate(labels) if y != head.good_index][:24]
    if not defect_rows:
        return 1.0
    maps = get_extractor(profile_name).images([images[i] for i in defect_rows], shape)
    targets = head.top_defect(head.probabilities(maps))
    peaks = [head.gradcam(maps, j, int(targets[j])).max() for j in range(len(defect_rows))]
    return float(max(np.median(peaks), 1e-3))


def _new_version_id(tool: Tool) -> str:
    count = len(tool.versions()) + 1
    return f"v{count:03d}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train_tool(tool: Tool, data: LoadedImages | None = None, options: TrainingOptions = TrainingOptions(),
               on_progress: ProgressCallback | None = None,
               cancel: threading.Event | None = None) -> VersionMeta:
    """Make a new version of a tool as its kind does (train a classifier or an anomaly model and
    validate it; save a reading tool's setup), save it atomically, and return its metadata.

    ``data`` defaults to the tool's own dataset (a kind that learns from no photos reads none).
    The previous active version stays live if this run fails or is cancelled.
    """
    require(CONFIGURE)
    config = tool.config
    kind = get_kind(config.kind)
    report = _Reporter(on_progress, cancel)
    if data is None:
        data = ToolDataset(tool.images_dir, config.classes).load() if kind.learns else LoadedImages()
    counts = {c: int(sum(1 for y in data.labels if y == i)) for i, c in enumerate(config.classes)}
    kind.check_photos(counts, options.min_per_class)
    started = time.perf_counter()
    trained = kind.train(config, data, options, report)
    report("saving", 0, 1)
    scores = trained.scores
    is_defect = np.asarray(data.labels) != config.classes.index("good")
    wrong = [{"path": str(p), "score": float(s)} for p, s, d in zip(data.paths, scores, is_defect)
             if (s >= DECISION_POINT) != d]
    validation = replace(trained.validation, scores={  # the operating curve's photos
        side: tuple(round(float(s), 4) for s in scores[is_defect == (side == "defect")])
        for side in ("good", "defect")})
    meta = VersionMeta(
        id=_new_version_id(tool), kind=config.kind, profile=config.profile if kind.neural else None,
        classes=config.classes, created=datetime.now(timezone.utc).isoformat(), images=counts,
        suggested_threshold=DECISION_POINT, validation=validation, misclassified=tuple(wrong),
        held_out_by_photo={photo_key(p): round(float(s), 4) for p, s in zip(data.paths, scores)},
        skipped=tuple(str(p) for p in data.skipped),
        training_seconds=round(time.perf_counter() - started, 2),
        details={"seed": options.seed, **trained.details})
    save_version(tool, trained.model, meta)
    announce(tool.name, "trained", version=meta.id, profile=meta.profile,
             balanced_accuracy=validation.balanced_accuracy)
    report("saving", 1, 1)
    if options.activate:
        tool.activate(meta.id)
    return meta


def train_classifier(config: ToolConfig, data: LoadedImages, options: TrainingOptions,
                     report: Callable[[str, int, int], None]) -> Trained:
    """The classifier kind's training: head, out-of-fold defect scores, validation figures,
    extra metadata."""
    labels = np.asarray(data.labels)
    extractor = get_extractor(config.profile)
    last_channels = extractor.channels["last"]
    shape = InputShape.of_photos(data.images, extractor.profile.input_size)
    views = view_count(config.allow_flips, shape, options)
    features = extract_view_features(data.images, config.profile, shape, views, options.seed,
                                     config.allow_flips, report)
    oof, folds, together = cross_validate(features, labels, config.classes, last_channels,
                                          options.folds, options.seed, report, data.retakes())
    head = fit_head(features, labels[features.groups], config.classes, last_channels, options.seed)
    head.cam_scale = _calibrate_cam_scale(head, data.images, labels, config.profile, shape)
    is_defect = labels != head.good_index
    scores = head.defect_scores(oof)
    method = f"{folds}-fold cross-validation" + ("" if together else (
        " (photo by photo: a class's photos are re-takes of one part, so a held-out photo's part "
        "was seen in training; capture more parts)"))
    named = (named_defect_share(labels, head.top_defect(oof), scores >= DECISION_POINT, head.good_index)
             if len(config.defect_classes) > 1 else None)
    validation = Validation.from_json({
        **pass_fail_metrics(is_defect, scores, DECISION_POINT), "method": method,
        "classes": class_confusion(labels, oof.argmax(axis=1), config.classes), "named_defect_share": named})
    return Trained(head, scores, validation, {"input": shape.to_json(), "views_per_image": views})


def anomaly_maps_of(images: list[np.ndarray], profile_name: str, settings: AnomalySettings,
                    shape: InputShape) -> FeatureMaps:
    """Feature maps of photos as the live engine computes them for an anomaly tool."""
    return get_extractor(profile_name).images(settings.inputs(images), shape, BATCH)


def train_anomaly(config: ToolConfig, data: LoadedImages, options: TrainingOptions,
                  report: Callable[[str, int, int], None]) -> Trained:
    """The anomaly kind's training: memories of good patches; good photos scored held-out,
    defect photos (if any) by the model.

    The threshold is 0.5, which the score's calibration puts just above where held-out good parts
    reach; defect photos, if any, give the accuracy at it and the operating curve.
    """
    settings = options.anomaly
    labels = np.asarray(data.labels)
    good_rows = np.flatnonzero(labels == config.classes.index("good"))
    extractor = get_extractor(config.profile)
    projection = settings.random_last_projection(extractor.channels["last"], options.seed)
    good_images = [data.images[i] for i in good_rows]
    shape = InputShape.of_photos(good_images, extractor.profile.input_size)
    views = view_count(config.allow_flips, shape, options)
    features: dict[str, list[np.ndarray]] = {family: [] for family in settings.families}
    for maps in view_maps(good_images, views, options.seed, config.allow_flips, config.profile, shape,
                          report, settings.inputs):
        for family in settings.families:
            features[family].append(patch_features(maps, settings, projection, family))
    sources = np.repeat(np.arange(len(good_rows)), views)  # the good photo each view shows
    model, held_out = fit_memory({f: np.concatenate(v) for f, v in features.items()}, sources,
                                 np.arange(len(good_rows)) * views, settings, projection, options.seed,
                                 report)
    scores = np.zeros(len(labels), np.float32)
    scores[good_rows] = model.unit_scores(held_out)
    defect_rows = np.flatnonzero(labels != config.classes.index("good"))
    for start in range(0, len(defect_rows), BATCH):
        rows = defect_rows[start:start + BATCH]
        maps = anomaly_maps_of([data.images[i] for i in rows], config.profile, settings, shape)
        scores[rows] = model.score(maps)[0]
        report("scoring defect photos", start + len(rows), len(defect_rows))
    is_defect = labels != config.classes.index("good")
    validation = Validation.from_json({
        **pass_fail_metrics(is_defect, scores, DECISION_POINT),
        "method": "leave-one-out on good photos" + (", defect photos scored by the model"
                                                    if is_defect.any() else "")})
    return Trained(model, scores, validation, {"anomaly": settings.to_json(),
                                               "memory_patches": model.patch_count,
                                               "input": shape.to_json(), "views_per_image": views})


def save_version(tool: Tool, model: SavableModel, meta: VersionMeta) -> Path:
    """Write a version (the kind's model files and the metadata) into a hidden folder, then
    rename it into place in one atomic step."""
    final = tool.versions_dir / meta.id
    staging = tool.versions_dir / f".staging-{meta.id}"
    staging.mkdir(parents=True, exist_ok=False)
    model.save(staging)
    atomic_write_json(staging / "meta.json", meta.to_json())
    for file in staging.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    os.replace(staging, final)
    fsync_dir(tool.versions_dir)
    return final
