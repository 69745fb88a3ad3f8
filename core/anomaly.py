"""Anomaly tools: trained on good photos only, they score how unusual a part looks and show where.

Defects are rare and varied, good parts plentiful, so this model learns only what good looks like
(the PatchCore family, sized for a 2-core CPU). Every photo first gets the same mean brightness and
contrast, since a global change of light is not a defect. Every location of the backbone's
mid-level (stride-16) map, averaged over its 3x3 neighbourhood, is a patch feature; the last
convolution's map (stride 32), randomly projected to a few dimensions and upsampled onto the same
grid, joins it, so that a patch is judged by its texture and by the larger part it sits in (the
stride-8 map can be added too; on these networks it is low-level texture and measured worse). A memory keeps
good patches from every training photo and a few re-takes of it, thinned by a greedy k-centre
coreset so that memory and search stay small while still covering every kind of good patch. A
patch's anomaly is its distance to the nearest remembered patch; the anomaly map is those
distances, lightly smoothed; the image's raw score is the mean of the map's highest cells
(steadier than the single peak, measured better).

Raw distances mean nothing to an operator, so training scores every good photo against the
memory without any patch of its own (leave-one-out) and keeps the statistics of those held-out
scores. The 0..1 score is a logistic curve of the raw score centred on a high quantile of them:
0.5 means "as unusual as the most unusual good parts", the meaning the threshold slider has for a
classifier, and the heatmap reads 1.0 at that same level.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from safetensors.numpy import save_file

from core.errors import InspectorError
from core.model import read_model_file, top_mean
from core.patches import local_average, on_grid
from core.preprocessing import normalise_lighting
from core.runtime import FeatureMaps

MEMORY_FILE = "memory.safetensors"
METHOD = "patch-memory"
# Versions saved before these settings existed were made this way.
_EARLIER_DEFAULTS = {"normalise_lighting": False, "fine_features": True, "last_features": 0}


@dataclass(frozen=True)
class AnomalySettings:
    """The method's parameters, written into each version's meta.json."""

    memory_size: int = 4096  # patches kept by the coreset
    neighbourhood: int = 3  # local averaging window of each map, in map cells
    blur_sigma: float = 2.0  # smoothing of the anomaly map, in cells of the patch grid
    good_quantile: float = 0.98  # held-out good raw score mapped to 0.5
    projection: int = 32  # dimensions of the random projection the coreset is chosen in
    top_patches: int = 72  # raw score: mean of the map's highest cells (half the fast 12x12 map)
    normalise_lighting: bool = True  # same mean brightness and contrast for every photo
    fine_features: bool = False  # add the stride-8 map to each patch (and score on its grid)
    last_features: int = 128  # dimensions of the projected last map added to each patch (0: none)

    def to_json(self) -> dict[str, Any]:
        return {"method": METHOD, **asdict(self)}

    def random_last_projection(self, channels: int, seed: int) -> np.ndarray | None:
        """A random projection (Johnson-Lindenstrauss) of the last map's channels, or None.

        It keeps distances between the 1280-channel cells nearly the same at a tenth of the
        memory and search; saved with the memory, so a version reads the same on any station.
        """
        if not self.last_features:
            return None
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((channels, self.last_features))
                / self.last_features ** 0.5).astype(np.float32)

    def inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Photos as this method feeds them to the backbone."""
        return [normalise_lighting(im) for im in images] if self.normalise_lighting else images


def patch_features(maps: FeatureMaps, settings: AnomalySettings, projection: np.ndarray | None
                   ) -> np.ndarray:
    """A batch's maps -> (N, h, w, D) patch features on the mid grid (on the fine grid with
    ``settings.fine_features``): [fine, mid, projected last] cells, as settings ask."""
    grid = (maps.fine if settings.fine_features else maps.mid).shape[2:]
    out = []
    for i in range(len(maps.mid)):
        cells = [local_average(maps.mid[i], settings.neighbourhood)]
        if settings.fine_features:
            cells.insert(0, local_average(maps.fine[i], settings.neighbourhood))
        if projection is not None:
            cells.append(np.tensordot(maps.last[i], projection, axes=(0, 0)).astype(np.float32))
        out.append(np.concatenate([on_grid(c, grid) for c in cells], axis=2))
    return np.stack(out)


def greedy_coreset(features: np.ndarray, size: int, projection: int, seed: int,
                   report: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Indices of ``size`` rows chosen so that every row is near a chosen one (k-centre greedy).

    Distances are taken in a random projection (Johnson-Lindenstrauss), which keeps the choice
    nearly the same at a fraction of the cost.
    """
    if size >= len(features):
        return np.arange(len(features))
    rng = np.random.default_rng(seed)
    x = features
    if projection and x.shape[1] > projection:
        x = x @ (rng.standard_normal((x.shape[1], projection)) / projection ** 0.5).astype(np.float32)
    x = np.ascontiguousarray(x, np.float32)
    squared = (x * x).sum(1)
    chosen = [int(rng.integers(len(x)))]
    nearest = squared - 2 * (x @ x[chosen[0]]) + squared[chosen[0]]
    for step in range(1, size):
        i = int(nearest.argmax())
        chosen.append(i)
        candidate = x @ x[i]  # in place from here on: this loop is most of a training run
        candidate *= -2
        candidate += squared
        candidate += squared[i]
        np.minimum(nearest, candidate, out=nearest)
        if report is not None and step % 512 == 0:
            report(step, size)
    return np.asarray(chosen)


def nearest_distances(queries: np.ndarray, memory: np.ndarray, memory_squared: np.ndarray,
                      excluded: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance of each query row to its nearest memory row (rows ``excluded`` skipped).

    |q - m|^2 = |q|^2 + (|m|^2 - 2 q.m): the bracket is a matrix product and two in-place passes,
    and |q|^2 is added to the row minima only.
    """
    queries = np.ascontiguousarray(queries, np.float32)
    partial = queries @ memory.T
    partial *= -2
    partial += memory_squared
    if excluded is not None and len(excluded):
        partial[:, excluded] = np.inf
    squared = partial.min(1) + (queries * queries).sum(1)
    return np.sqrt(np.maximum(squared, 0))


@dataclass
class AnomalyModel:
    """A memory of good patches and the statistics that turn distances into a 0..1 score."""

    memory: np.ndarray  # (M, C) float32
    centre: float  # raw score mapped to 0.5 (a high quantile of held-out good scores)
    spread: float  # raw-score units per logistic unit
    floor: float  # raw level shown as no heat (the median held-out good score)
    settings: AnomalySettings
    last_projection: np.ndarray | None  # (C_last, last_features), see ``random_last_projection``

    def __post_init__(self) -> None:
        self.memory = np.ascontiguousarray(self.memory, np.float32)
        self._memory_squared = (self.memory ** 2).sum(1)

    def anomaly_maps(self, maps: FeatureMaps) -> np.ndarray:
        """(N, H, W) smoothed raw anomaly maps on the patch grid."""
        return self.distance_maps(patch_features(maps, self.settings, self.last_projection))

    def distance_maps(self, features: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W, C) patch features -> (N, H, W) smoothed distances to the nearest remembered
        patch (memory rows ``excluded`` skipped)."""
        n, h, w, c = features.shape
        distances = nearest_distances(features.reshape(-1, c), self.memory, self._memory_squared,
                                      excluded).reshape(n, h, w)
        if self.settings.blur_sigma > 0:
            distances = np.stack([cv2.GaussianBlur(d, (0, 0), self.settings.blur_sigma)
                                  for d in distances])
        return distances

    def unit_scores(self, raw: np.ndarray) -> np.ndarray:
        """Raw peak distances -> 0..1 anomaly scores (0.5 at ``centre``)."""
        z = np.clip((np.asarray(raw, np.float64) - self.centre) / self.spread, -50, 50)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def heat(self, anomaly_map: np.ndarray) -> np.ndarray:
        """An anomaly map in heatmap units: 0 at a typical good peak, 1.0 at the score's 0.5."""
        return np.maximum(anomaly_map - self.floor, 0) / max(self.centre - self.floor, 1e-6)

    def score(self, maps: FeatureMaps) -> tuple[np.ndarray, np.ndarray]:
        """0..1 scores and raw anomaly maps of a batch."""
        anomaly = self.anomaly_maps(maps)
        return self.unit_scores(top_mean(anomaly, self.settings.top_patches)), anomaly

    def save(self, folder: Path) -> None:
        tensors = {"memory": self.memory}
        if self.last_projection is not None:
            tensors["last_projection"] = self.last_projection
        save_file(tensors, str(folder / MEMORY_FILE),
                  metadata={"centre": repr(self.centre), "spread": repr(self.spread),
                            "floor": repr(self.floor), "settings": json.dumps(self.settings.to_json())})

    @classmethod
    def load(cls, folder: Path) -> AnomalyModel:
        path = folder / MEMORY_FILE
        try:
            tensors, meta = read_model_file(path)
            settings = json.loads(meta["settings"])
            if settings.pop("method", None) != METHOD:
                raise ValueError("unknown anomaly method")
            settings = AnomalySettings(**{**_EARLIER_DEFAULTS, **settings})
            model = cls(tensors["memory"], float(meta["centre"]), float(meta["spread"]),
                        float(meta["floor"]), settings,
                        tensors["last_projection"] if settings.last_features else None)
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise InspectorError(f"model file {path} is damaged or incomplete ({exc}); "
                                 "activate another version or retrain") from exc
        projected = model.last_projection.shape[1] if model.last_projection is not None else 0
        if model.memory.ndim != 2 or not len(model.memory) or not model.spread > 0 \
                or projected != model.settings.last_features:
            raise InspectorError(f"model file {path} has inconsistent shapes; retrain the tool")
        return model


def fit_memory(features: np.ndarray, sources: np.ndarray, originals: np.ndarray,
               settings: AnomalySettings, last_projection: np.ndarray | None, seed: int,
               report: Callable[[str, int, int], None]) -> tuple[AnomalyModel, np.ndarray]:
    """Build the memory from the patch features of every view and calibrate it on held-out photos.

    ``features`` is (V, H, W, C) for V views, made with ``last_projection``; ``sources[v]`` is the
    photo a view shows and ``originals`` the view index of each photo itself. Returns the model
    and each photo's held-out raw score (scored against the memory without any patch from that
    photo's views).
    """
    v, h, w, c = features.shape
    patches = features.reshape(-1, c)
    patch_source = np.repeat(sources, h * w)
    chosen = greedy_coreset(patches, settings.memory_size, settings.projection, seed,
                            lambda done, total: report("building the memory", done, total))
    report("building the memory", 1, 1)
    memory_source = patch_source[chosen]
    model = AnomalyModel(patches[chosen], 0.0, 1.0, 0.0, settings, last_projection)
    held_out = np.zeros(len(originals), np.float32)
    for i, view in enumerate(originals):
        own_patches = np.flatnonzero(memory_source == sources[view])
        distances = model.distance_maps(features[view:view + 1], own_patches)
        held_out[i] = top_mean(distances, settings.top_patches)[0]
        report("validating on held-out good photos", i + 1, len(originals))
    median = float(np.median(held_out))
    centre = float(np.quantile(held_out, settings.good_quantile))
    model.centre, model.floor = centre, median
    model.spread = max((centre - median) / 3.0, 1e-3 * max(centre, 1e-6))
    return model, held_out
