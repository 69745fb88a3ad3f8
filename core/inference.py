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

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from core.anomaly import AnomalyModel
from core.backbones import get_profile
from core.errors import InspectorError
from core.explanation import draw_result
from core.model import ClassifierHead
from core.preprocessing import InputShape, crop_roi, tta_variants
from core.runtime import FeatureMaps, get_extractor
from core.tools import Tool, ToolConfig

ANOMALY = "anomaly"  # the defect class an anomaly tool reports: it knows only 'unusual'


@dataclass(frozen=True)
class ToolResult:
    """One tool's decision on one frame."""

    tool: str
    verdict: str  # "PASS" or "FAIL"
    defect_class: str | None  # the most likely defect when FAIL
    score: float  # this frame's defect score (0..1)
    smoothed: float  # moving average of the last ``smoothing`` scores
    threshold: float
    box: tuple[int, int, int, int]  # ROI in frame pixels (x0, y0, x1, y1)
    heatmap: np.ndarray | None  # Grad-CAM or anomaly map over the ROI, 1.0 = a typical defect
    latency_ms: float
    version: str

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    def label(self) -> str:
        cls = f" {self.defect_class}" if self.defect_class and not self.passed else ""
        return f"{self.tool}: {self.verdict}{cls} {self.smoothed:.2f}"


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

    def judge(self, maps: FeatureMaps, heatmap: bool) -> tuple[float, str, np.ndarray | None]:
        """One ROI's maps (its TTA variants as rows): the mean defect score, the likeliest defect
        and (optionally) the heatmap of the ROI itself (row 0)."""
        if self.head is not None:
            probabilities = self.head.probabilities(maps)
            mean = probabilities.mean(axis=0, keepdims=True)
            heat = None
            if heatmap:
                heat = self.head.gradcam(maps, 0, int(self.head.top_defect(probabilities[:1])[0]))
            return (float(self.head.defect_scores(mean)[0]),
                    self.head.classes[int(self.head.top_defect(mean)[0])], heat)
        scores, anomaly = self.anomaly.score(maps)
        return float(scores.mean()), ANOMALY, self.anomaly.heat(anomaly[0]) if heatmap else None

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

    def _prepare(self, frame: np.ndarray) -> tuple[ToolConfig, TrainedModel, list[np.ndarray]]:
        with self._lock:
            config, model = self._config, self.model
        roi_image = crop_roi(frame, config.roi)
        images = tta_variants(roi_image, config.tta.variants) if config.tta.enabled else [roi_image]
        return config, model, model.inputs(images)

    def _decide(self, config: ToolConfig, model: TrainedModel, frame_shape: tuple[int, ...],
                score: float, defect: str, heat: np.ndarray | None, latency_ms: float) -> ToolResult:
        with self._lock:
            self._scores.append(score)
            smoothed = float(np.mean(self._scores))
        failed = smoothed >= config.threshold
        result = ToolResult(config.name, "FAIL" if failed else "PASS", defect if failed else None,
                            score, smoothed, config.threshold,
                            config.roi.to_pixels(frame_shape[1], frame_shape[0]), heat,
                            latency_ms, model.version)
        self.last_result = result
        return result


class Inspector:
    """Several tools on one frame; ROIs of tools sharing a network run in one batch."""

    def __init__(self, runners: list[ToolRunner]):
        self.runners = runners

    def inspect(self, frame: np.ndarray, heatmaps: bool = True) -> list[ToolResult]:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
            raise InspectorError(f"expected a BGR colour frame, got an array of shape {frame.shape}")
        start = time.perf_counter()
        prepared = [runner._prepare(frame) for runner in self.runners]
        groups: dict[tuple[str, InputShape], list[int]] = {}
        for index, (_, model, _) in enumerate(prepared):
            groups.setdefault((model.profile.name, model.input_shape), []).append(index)
        outputs: list[tuple[float, str, np.ndarray | None]] = [None] * len(prepared)  # type: ignore
        for (_, shape), indices in groups.items():
            images = [im for i in indices for im in prepared[i][2]]
            extractor = prepared[indices[0]][1].extractor
            maps = extractor.maps(extractor.tensor(images, shape))
            offset = 0
            for i in indices:
                _, model, own = prepared[i]
                outputs[i] = model.judge(maps.take(slice(offset, offset + len(own))), heatmaps)
                offset += len(own)
        latency = (time.perf_counter() - start) * 1000
        return [runner._decide(config, model, frame.shape, *outputs[i], latency)
                for i, (runner, (config, model, _)) in enumerate(zip(self.runners, prepared))]

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
