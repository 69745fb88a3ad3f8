"""Live inspection: crop each tool's ROI from a BGR frame, score, threshold, smooth, explain.

What a tool's version is and how it judges a ROI is its kind's business (``core.engine.kinds``). A
neural kind (classifier, anomaly) reads the backbone's maps, so the ROIs of such tools sharing a
network profile run in one batch whatever their kind; a reading kind (code, text) reads its ROI
itself, compared with the value a trigger sent where it expects one.

``Inspector.inspect(frame)`` is what the webcam callback calls on its own thread. Settings
(threshold, smoothing window, TTA, ROI) may be changed from another thread at any moment through
``ToolRunner.use`` / ``configure``; each frame reads one consistent snapshot of them under a lock,
so a change takes effect on the next frame without restarting anything. Which runners judge a
camera's frames, and with which settings, is the station's business (``core.station.live_station``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any

import numpy as np

from core.engine.backbones import get_profile
from core.engine.explanation import draw_result
from core.engine.kinds import Explanation, Judgement, NeuralJudge, ReadingJudge, get_kind
from core.engine.kinds.classifier import ClassifierJudge
from core.engine.model import ClassifierHead, pool_features
from core.engine.preprocessing import InputShape, crop_roi, tta_variants
from core.engine.runtime import FeatureMaps, get_extractor
from core.errors import InspectorError
from core.records.verdicts import ERROR, FAIL, ToolResult, verdict_of
from core.store.tools import Tool, ToolConfig


class TrainedModel:
    """A tool's version ready to run, whatever its kind (``core.engine.kinds``): ``judge`` is what the
    kind loaded. A neural kind's version also has its backbone extractor, network profile and
    input shape; a reading kind's has none."""

    def __init__(self, tool: Tool, version: str | None = None):
        self.version = version or tool.config.active_version
        if not self.version:
            raise InspectorError(f"tool '{tool.name}' has no trained model yet: train it first")
        meta = tool.version_meta(self.version)
        self.kind = get_kind(meta.kind)
        self.judge: NeuralJudge | ReadingJudge = self.kind.load(tool.version_dir(self.version), meta)
        if self.kind.neural:
            if meta.profile is None:
                raise InspectorError(f"version {self.version} of tool '{tool.name}' names no network "
                                     "profile in its meta.json: retrain the tool or import it again")
            self.profile = get_profile(meta.profile)
            self.input_shape = InputShape.from_json(meta.details.get("input"), self.profile.input_size)
            self.extractor = get_extractor(self.profile)

    @property
    def head(self) -> ClassifierHead:
        """The classifier head of a classifier version."""
        if not isinstance(self.judge, ClassifierJudge):
            raise InspectorError(f"a {self.kind.name} tool has no classifier head")
        return self.judge.head

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """ROI images as this model feeds them to the backbone (an anomaly tool evens out lighting)."""
        return self.judge.inputs(images)

    def maps(self, images: list[np.ndarray]) -> FeatureMaps:
        """The maps of ROI images: everything the model needs, one pass."""
        return self.extractor.maps(self.extractor.tensor(self.inputs(images), self.input_shape))

    def _batches(self, images: list[np.ndarray], batch: int) -> list[FeatureMaps]:
        return [self.maps(images[start:start + batch]) for start in range(0, len(images), batch)]

    def probabilities(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """Class probabilities of ROI images (no smoothing, no TTA): for evaluation and files."""
        head = self.head
        out = [self.judge.probabilities(maps) for maps in self._batches(images, batch)]
        return np.concatenate(out) if out else np.zeros((0, len(head.classes)), np.float32)

    def defect_scores(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        """0..1 defect score of each ROI image (what the threshold is compared with), any kind;
        a reading tool that expects the trigger's value cannot score files (none was sent)."""
        if not self.kind.neural:
            return np.array([self.judge.read(image, None).score for image in images], np.float32)
        out = [self.judge.scores(maps) for maps in self._batches(images, batch)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def judge_maps(self, maps: FeatureMaps, heatmap: bool) -> Judgement:
        """One ROI's maps (its TTA variants as rows) judged, with the pooled features of the ROI
        itself (row 0) for the line's novelty check."""
        score, defect, heat = self.judge.judge(maps, heatmap)
        return Judgement(score, defect, heat, features=pool_features(maps.take(slice(0, 1)))[0])

    def explain(self, images: list[np.ndarray]) -> list[Explanation]:
        """Score, likeliest defect and heatmap (Grad-CAM or anomaly map) of each image."""
        return self.judge.explain(self.maps(images))


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
        """The ROI of the frame (and, for a neural kind, its TTA variants) as the model takes
        them; a reading kind reads the ROI itself."""
        roi_image = crop_roi(frame, config.roi)
        if not model.kind.neural:
            return [roi_image]
        images = tta_variants(roi_image, config.tta.variants) if config.tta.enabled else [roi_image]
        return model.inputs(images)

    def _decide(self, config: ToolConfig, model: TrainedModel, frame_shape: tuple[int, ...],
                judged: Judgement, latency_ms: float) -> ToolResult:
        """The verdict on this frame by ``verdict_of``; a score that is not a finite number (or a
        tool that failed to run) is an ERROR and stays out of the moving average."""
        score, defect, heat, error, reading, features = judged
        with self._lock:
            if math.isfinite(score):
                self._scores.append(score)
            smoothed = float(np.mean(self._scores)) if math.isfinite(score) else math.nan
        verdict = verdict_of(smoothed, config.threshold)
        if verdict == ERROR and error is None:
            error = f"the model gave no usable score ({score}): retrain or re-import the tool"
        judged_well = verdict != ERROR
        result = ToolResult(config.name, verdict, defect if verdict == FAIL else None,
                            score, smoothed, config.threshold,
                            config.roi.to_pixels(frame_shape[1], frame_shape[0]),
                            heat if judged_well else None, latency_ms, model.version, error,
                            reading if judged_well else None, features if judged_well else None)
        self.last_result = result
        return result


class Inspector:
    """Several tools on one frame; ROIs of neural tools sharing a network run in one batch, each
    reading tool reads its own ROI."""

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
        for index, images in prepared.items():
            model = snapshots[index][1]
            if not model.kind.neural:
                try:
                    judged[index] = model.judge.read(images[0], expected)
                except Exception as exc:  # noqa: BLE001 - this tool's failure is its ERROR
                    judged[index] = Judgement.failed(exc)
                continue
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
        """One backbone pass for the ROIs of neural tools sharing a network, their judgements in
        ``judged``."""
        model = snapshots[indices[0]][1]
        images = [im for i in indices for im in prepared[i]]
        maps = model.extractor.maps(model.extractor.tensor(images, model.input_shape))
        offset = 0
        for i in indices:
            own = len(prepared[i])
            judged[i] = snapshots[i][1].judge_maps(maps.take(slice(offset, offset + own)), heatmaps)
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
