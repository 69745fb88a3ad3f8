"""Live inspection: crop each tool's ROI from a BGR frame, score, threshold, smooth, explain.

A tool is a classifier (defect score 1 - P(good), Grad-CAM heatmap) or an anomaly tool (score of
how unusual the ROI is, anomaly map as heatmap); both read the same backbone pass, so the ROIs of
tools sharing a network profile run in one batch whatever their kind.

``Inspector.inspect(frame)`` is what the webcam callback calls on its own thread. Settings
(threshold, smoothing window, TTA, ROI) may be changed from another thread at any moment through
``ToolRunner.use`` / ``configure``; each frame reads one consistent snapshot of them under a lock,
so a change takes effect on the next frame without restarting anything. Which runners judge a
camera's frames, and with which settings, is the station's business (``core.live_station``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from core.anomaly import AnomalyModel
from core.backbones import get_profile
from core.errors import InspectorError
from core.explanation import draw_result
from core.model import ClassifierHead, pool_features
from core.preprocessing import InputShape, crop_roi, tta_variants
from core.runtime import FeatureMaps, get_extractor
from core.tools import Tool, ToolConfig
from core.verdicts import ERROR, FAIL, ToolResult, short_error, verdict_of

ANOMALY = "anomaly"  # the defect class an anomaly tool reports: it knows only 'unusual'


class Explanation(NamedTuple):
    """One image under a model: its defect score, likeliest defect, heatmap and class probabilities
    (None for an anomaly tool, which knows only 'unusual')."""

    score: float
    defect_class: str
    heat: np.ndarray
    probabilities: np.ndarray | None


class TrainedModel:
    """A tool's model version ready to run: the backbone extractor plus a classifier head or an
    anomaly memory, whichever kind the version is."""

    def __init__(self, tool: Tool, version: str | None = None):
        self.version = version or tool.config.active_version
        if not self.version:
            raise InspectorError(f"tool '{tool.name}' has no trained model yet: train it first")
        meta = tool.version_meta(self.version)
        self.kind = meta.get("kind", "classifier")
        if not isinstance(meta.get("profile"), str):
            raise InspectorError(f"version {self.version} of tool '{tool.name}' names no network "
                                 "profile in its meta.json: retrain the tool or import it again")
        self.profile = get_profile(meta["profile"])
        self.input_shape = InputShape.from_json(meta.get("input"), self.profile.input_size)
        folder = tool.version_dir(self.version)
        self.head = ClassifierHead.load(folder) if self.kind == "classifier" else None
        self.anomaly = AnomalyModel.load(folder) if self.kind == "anomaly" else None
        self.extractor = get_extractor(self.profile)

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """ROI images as this model feeds them to the backbone (an anomaly tool evens out lighting)."""
        return self.anomaly.settings.inputs(images) if self.anomaly is not None else images

    def maps(self, images: list[np.ndarray]) -> FeatureMaps:
        """The maps of ROI images: everything either kind of model needs, one pass."""
        return self.extractor.maps(self.extractor.tensor(self.inputs(images), self.input_shape))

    def probabilities(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """Class probabilities of ROI images (no smoothing, no TTA): for evaluation and files."""
        if self.head is None:
            raise InspectorError("an anomaly tool has no class probabilities; use its defect scores")
        out = [self.head.probabilities(self.maps(images[start:start + batch]))
               for start in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.head.classes)), np.float32)

    def defect_scores(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """0..1 defect score of each ROI image (what the threshold is compared with), either kind."""
        out = [self.judge_all(self.maps(images[start:start + batch]))
               for start in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def judge_all(self, maps: FeatureMaps) -> np.ndarray:
        """Defect scores of a batch of maps."""
        if self.head is not None:
            return self.head.defect_scores(self.head.probabilities(maps))
        return self.anomaly.score(maps)[0]

    def judge(self, maps: FeatureMaps, heatmap: bool
              ) -> tuple[float, str, np.ndarray | None, np.ndarray]:
        """One ROI's maps (its TTA variants as rows): the mean defect score, the likeliest defect,
        (optionally) the heatmap of the ROI itself (row 0) and its pooled features (row 0, for
        the line's novelty check)."""
        features = pool_features(maps.take(slice(0, 1)))
        if self.head is not None:
            probabilities = self.head.probabilities(maps)
            mean = probabilities.mean(axis=0, keepdims=True)
            heat = None
            if heatmap:
                heat = self.head.gradcam(maps, 0, int(self.head.top_defect(probabilities[:1])[0]))
            return (float(self.head.defect_scores(mean)[0]),
                    self.head.classes[int(self.head.top_defect(mean)[0])], heat, features)
        scores, anomaly = self.anomaly.score(maps)
        return (float(scores.mean()), ANOMALY, self.anomaly.heat(anomaly[0]) if heatmap else None,
                features)

    def explain(self, images: list[np.ndarray]) -> list[Explanation]:
        """Score, likeliest defect and heatmap (Grad-CAM or anomaly map) of each image."""
        maps = self.maps(images)
        if self.head is None:
            scores, anomaly = self.anomaly.score(maps)
            return [Explanation(float(s), ANOMALY, self.anomaly.heat(m), None)
                    for s, m in zip(scores, anomaly)]
        probabilities = self.head.probabilities(maps)
        targets = self.head.top_defect(probabilities)
        scores = self.head.defect_scores(probabilities)
        return [Explanation(float(scores[i]), self.head.classes[int(targets[i])],
                            self.head.gradcam(maps, i, int(targets[i])), probabilities[i])
                for i in range(len(images))]


class ToolRunner:
    """One tool's live state: a model version, its settings snapshot and its moving average."""

    def __init__(self, tool: Tool, version: str | None = None):
        self.tool = tool
        self.model = TrainedModel(tool, version)
        self._config = tool.config
        self._scores: deque[float] = deque(maxlen=tool.config.smoothing)
        self._lock = threading.Lock()
        self.last_result: ToolResult | None = None

    @property
    def config(self) -> ToolConfig:
        with self._lock:
            return self._config

    def use(self, config: ToolConfig) -> ToolConfig:
        """Judge the next frames with these settings; the moving average restarts when the ROI
        changes (it averaged another part of the frame) and keeps its newest scores when only
        the window changes."""
        with self._lock:
            if config.roi != self._config.roi or config.smoothing != self._config.smoothing:
                self._scores = deque(self._scores if config.roi == self._config.roi else (),
                                     maxlen=config.smoothing)
            self._config = config
        return config

    def configure(self, **changes: Any) -> ToolConfig:
        """Change threshold, smoothing, tta, roi... for the next frame (nothing is saved)."""
        return self.use(replace(self.config, **changes))

    def reset(self) -> None:
        with self._lock:
            self._scores.clear()

    def snapshot(self) -> tuple[ToolConfig, TrainedModel]:
        """The settings and model version the next frame is judged with, read together."""
        with self._lock:
            return self._config, self.model

    @staticmethod
    def prepare(frame: np.ndarray, config: ToolConfig, model: TrainedModel) -> list[np.ndarray]:
        """The ROI of the frame (and its TTA variants) as the model takes them."""
        roi_image = crop_roi(frame, config.roi)
        images = tta_variants(roi_image, config.tta.variants) if config.tta.enabled else [roi_image]
        return model.inputs(images)

    def _decide(self, config: ToolConfig, model: TrainedModel, frame_shape: tuple[int, ...],
                judged: Judgement, latency_ms: float) -> ToolResult:
        """The verdict on this frame by ``verdict_of``; a score that is not a finite number (or a
        tool that failed to run) is an ERROR and stays out of the moving average."""
        score, defect, heat, error, features = judged
        with self._lock:
            if math.isfinite(score):
                self._scores.append(score)
            smoothed = float(np.mean(self._scores)) if math.isfinite(score) else math.nan
        verdict = verdict_of(smoothed, config.threshold)
        if verdict == ERROR and error is None:
            error = f"the model gave no usable score ({score}): retrain or re-import the tool"
        result = ToolResult(config.name, verdict, defect if verdict == FAIL else None,
                            score, smoothed, config.threshold,
                            config.roi.to_pixels(frame_shape[1], frame_shape[0]),
                            heat if verdict != ERROR else None, latency_ms, model.version, error,
                            features=features)
        self.last_result = result
        return result


class Judgement(NamedTuple):
    """What a model made of one ROI: its score, likeliest defect and heatmap, or why it could not."""

    score: float
    defect: str | None
    heat: np.ndarray | None
    error: str | None = None
    features: np.ndarray | None = None  # pooled features of the ROI itself (row 0)

    @classmethod
    def failed(cls, error: BaseException) -> Judgement:
        return cls(math.nan, None, None, short_error(error))


class Inspector:
    """Several tools on one frame; ROIs of tools sharing a network run in one batch."""

    def __init__(self, runners: list[ToolRunner]):
        self.runners = runners

    def inspect(self, frame: np.ndarray, heatmaps: bool = True,
                expected: str | None = None) -> list[ToolResult]:
        """Every tool's verdict on the frame. A tool that cannot run on it (a broken model, an
        unusable ROI) gets an ERROR verdict and every other tool is judged as usual. ``expected``
        is the value a trigger sent for this part (e.g. the order's serial): a reading tool set
        to expect the trigger's value compares what it reads with it."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
            raise InspectorError(f"expected a BGR colour frame, got an array of shape {frame.shape}")
        start = time.perf_counter()
        snapshots = [runner.snapshot() for runner in self.runners]
        judged: list[Judgement | None] = [None] * len(self.runners)
        prepared: dict[int, list[np.ndarray]] = {}
        for index, (runner, (config, model)) in enumerate(zip(self.runners, snapshots)):
            try:
                prepared[index] = runner.prepare(frame, config, model)
            except Exception as exc:  # noqa: BLE001 - one tool's failure is its own ERROR
                judged[index] = Judgement.failed(exc)
        groups: dict[tuple[str, InputShape], list[int]] = {}
        for index in prepared:
            model = snapshots[index][1]
            groups.setdefault((model.profile.name, model.input_shape), []).append(index)
        for indices in groups.values():
            try:
                self._judge_group(indices, snapshots, prepared, judged, heatmaps)
            except Exception:  # noqa: BLE001 - find out which tool of the batch cannot run
                for index in indices:
                    try:
                        self._judge_group([index], snapshots, prepared, judged, heatmaps)
                    except Exception as exc:  # noqa: BLE001 - this tool's failure is its ERROR
                        judged[index] = Judgement.failed(exc)
        latency = (time.perf_counter() - start) * 1000
        return [runner._decide(config, model, frame.shape, judged[i], latency)
                for i, (runner, (config, model)) in enumerate(zip(self.runners, snapshots))]

    @staticmethod
    def _judge_group(indices: list[int], snapshots: list[tuple[ToolConfig, TrainedModel]],
                     prepared: dict[int, list[np.ndarray]], judged: list[Judgement | None],
                     heatmaps: bool) -> None:
        """One backbone pass for the ROIs of tools sharing a network, their judgements in
        ``judged``."""
        model = snapshots[indices[0]][1]
        images = [im for i in indices for im in prepared[i]]
        maps = model.extractor.maps(model.extractor.tensor(images, model.input_shape))
        offset = 0
        for i in indices:
            own = len(prepared[i])
            score, defect, heat, features = snapshots[i][1].judge(
                maps.take(slice(offset, offset + own)), heatmaps)
            judged[i] = Judgement(score, defect, heat, features=features)
            offset += own

    @staticmethod
    def draw(frame: np.ndarray, results: list[ToolResult], heatmaps: bool = True) -> np.ndarray:
        """A copy of the frame with every tool's ROI, verdict and (optionally) heatmap."""
        out, corners = frame.copy(), Counter()
        for result in results:
            corner = result.box[:2]
            draw_result(out, result.box, result.label(), result.verdict,
                        result.heatmap if heatmaps else None, row=corners[corner])
            corners[corner] += 1
        return out
