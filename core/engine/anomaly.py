"""Anomaly tools: trained on good photos only, they score how unusual a part looks and show where.

Defects are rare and varied, good parts plentiful, so this model learns only what good looks like
(the PatchCore family, sized for a 2-core CPU). Every photo first gets the same mean brightness and
contrast, since a global change of light is not a defect. Two memories of good patches look at
two scales, because one scale misses what the other sees:

- *global*: each cell of the mid-level (stride-16) map, averaged over its 3x3 neighbourhood, joined
  by the last convolution's map (stride 32) randomly projected to a few dimensions, so a patch is
  judged by its texture and by the larger part it sits in. Its image score is the mean of the
  distance map's highest half: a broad, steady measure of how unusual the part looks.
- *local*: each cell of the stride-8 map joined by the mid map's cell over it, each scaled to
  unit length (neither map drowns the other). Its image score is the mean of the distance map's
  highest 1 % (a handful of cells): a defect of a few cells (a pin hole, a spur, a thin crack) is
  not diluted by the rest of the part, and one odd cell (noise, a reflection) does not decide
  alone.

A memory keeps good patches from every
training photo and its orientations, thinned by a greedy k-centre coreset so that memory and
search stay small while still covering every kind of good patch. A patch's anomaly is its distance
to the nearest remembered patch.

Raw distances mean nothing to an operator, so training scores every good photo against the
memories without any patch of its own (leave-one-out). Each memory's raw score is expressed in
standard deviations of those held-out good scores, the two are added (the local one at half
weight: on the sets the defaults were tuned on it adds small defects without drowning the
global view, see BENCHMARKS.md), and the 0..1 score is a
logistic curve of that sum centred ``good_spreads`` standard deviations above the held-out mean:
0.5 means "more unusual than good parts almost ever are", the meaning the threshold slider has for
a classifier; the median good part scores about 0.05, and the heatmap reads 1.0 at that level.

Versions saved before a setting existed load with the values they were made with
(``_EARLIER_DEFAULTS``) and score exactly as they did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from safetensors.numpy import save_file

from core.engine.kinds.anomaly import MEMORY_FILE
from core.engine.model import (DamagedModel, check_tensor_names, meta_json, meta_number, read_model_file,
                               top_mean)
from core.engine.patches import local_average, on_grid
from core.engine.preprocessing import normalise_lighting
from core.engine.runtime import FeatureMaps

METHOD = "patch-memory"
GLOBAL, LOCAL = "global", "local"  # the two memories (scales), see the module docstring
# Versions saved before these settings existed were made this way.
_EARLIER_DEFAULTS = {"normalise_lighting": False, "fine_features": True, "last_features": 0,
                     "unit_cells": False, "local_memory_size": 0, "top_patches": 72}
_RETIRED = ("good_quantile",)  # settings of earlier versions that only mattered at their training
_PRESAMPLE = 4  # the coreset picks from at most this many times its size of random candidates


@dataclass(frozen=True)
class AnomalySettings:
    """The method's parameters, written into each version's meta.json."""

    memory_size: int = 4096  # patches the coreset keeps in the global memory
    neighbourhood: int = 3  # local averaging window of each map, in map cells
    blur_sigma: float = 2.0  # smoothing of the global distance map, in its cells
    projection: int = 32  # dimensions of the random projection the coreset is chosen in
    top_share: float = 0.5  # global image score: mean of this share of the map's highest cells
    local_top_share: float = 0.01  # local image score: the same, over a much smaller share
    top_patches: int = 0  # earlier versions: a fixed count of highest cells instead of a share
    normalise_lighting: bool = True  # same mean brightness and contrast for every photo
    fine_features: bool = False  # earlier versions: the stride-8 map inside the global memory
    last_features: int = 128  # dimensions of the projected last map added to each patch (0: none)
    unit_cells: bool = False  # global memory: each map's cells at unit length (local: always)
    local_memory_size: int = 8192  # patches of the local (stride-8) memory; 0: no local memory
    local_blur_sigma: float = 1.0  # smoothing of the local distance map, in its cells
    local_weight: float = 0.5  # the local memory's standardised score counts this much
    good_spreads: float = 2.0  # score 0.5 at the held-out good mean plus this many deviations

    def to_json(self) -> dict[str, Any]:
        return {"method": METHOD, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnomalySettings:
        """Settings as a version stored them (earlier versions: with the defaults of their day)."""
        data = {k: v for k, v in data.items() if k not in _RETIRED}
        if data.pop("method", None) != METHOD:
            raise ValueError("unknown anomaly method")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in _EARLIER_DEFAULTS.items() if k in known}, **data})

    @property
    def families(self) -> tuple[str, ...]:
        return (GLOBAL, LOCAL) if self.local_memory_size else (GLOBAL,)

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

    def image_scores(self, family: str, distances: np.ndarray) -> np.ndarray:
        """(N, H, W) distance maps of one memory -> (N,) raw image scores."""
        cells = distances.shape[1] * distances.shape[2]
        if family == LOCAL:
            return top_mean(distances, max(1, int(round(self.local_top_share * cells))))
        return top_mean(distances, self.top_patches or max(1, int(round(self.top_share * cells))))

    def blur(self, family: str) -> float:
        return self.local_blur_sigma if family == LOCAL else self.blur_sigma

    def weight(self, family: str) -> float:
        return self.local_weight if family == LOCAL else 1.0


def _unit(cells: np.ndarray) -> np.ndarray:
    return cells / (np.linalg.norm(cells, axis=2, keepdims=True) + 1e-6)


def patch_features(maps: FeatureMaps, settings: AnomalySettings, projection: np.ndarray | None,
                   family: str = GLOBAL) -> np.ndarray:
    """A batch's maps -> (N, h, w, D) patch features of one memory (see the module docstring):
    global: [fine (earlier versions), mid, projected last] cells on the mid grid (on the fine grid
    with ``settings.fine_features``); local: [fine, mid] cells on the fine grid."""
    local = family == LOCAL
    grid = (maps.fine if local or settings.fine_features else maps.mid).shape[2:]
    out = []
    for i in range(len(maps.mid)):
        cells = [local_average(maps.mid[i], settings.neighbourhood)]
        if local or settings.fine_features:
            cells.insert(0, local_average(maps.fine[i], settings.neighbourhood))
        if projection is not None and not local:
            cells.append(np.tensordot(maps.last[i], projection, axes=(0, 0)).astype(np.float32))
        cells = [on_grid(c, grid) for c in cells]
        unit = local or settings.unit_cells
        out.append(np.concatenate([_unit(c) for c in cells] if unit else cells, axis=2))
    return np.stack(out)


def greedy_coreset(features: np.ndarray, size: int, projection: int, seed: int,
                   report: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Indices of ``size`` rows chosen so that every row is near a chosen one (k-centre greedy).

    Distances are taken in a random projection (Johnson-Lindenstrauss), which keeps the choice
    nearly the same at a fraction of the cost; with more than ``_PRESAMPLE`` times ``size`` rows,
    the choice is made among that many random ones (each step costs one pass over the candidates).
    """
    if size >= len(features):
        return np.arange(len(features))
    rng = np.random.default_rng(seed)
    candidates = np.arange(len(features))
    if len(features) > _PRESAMPLE * size:
        candidates = np.sort(rng.choice(len(features), _PRESAMPLE * size, replace=False))
    x = features[candidates]
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
    return candidates[np.asarray(chosen)]


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
class PatchMemory:
    """The good patches of one scale, and where held-out good parts' raw scores lie."""

    cells: np.ndarray  # (M, C) float32
    mean: float  # of the held-out good raw scores (earlier versions: 0, with std 1)
    std: float
    blur_sigma: float

    def __post_init__(self) -> None:
        self.cells = np.ascontiguousarray(self.cells, np.float32)
        self._squared = (self.cells ** 2).sum(1)

    def distance_maps(self, features: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W, C) patch features -> (N, H, W) smoothed distances to the nearest remembered
        patch (memory rows ``excluded`` skipped)."""
        n, h, w, c = features.shape
        distances = nearest_distances(features.reshape(-1, c), self.cells, self._squared,
                                      excluded).reshape(n, h, w)
        if self.blur_sigma > 0:
            distances = np.stack([cv2.GaussianBlur(d, (0, 0), self.blur_sigma) for d in distances])
        return distances

    def standardised(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, np.float64) - self.mean) / self.std


@dataclass
class AnomalyModel:
    """Memories of good patches and the statistics that turn their distances into a 0..1 score."""

    memories: dict[str, PatchMemory]  # by family, in ``settings.families`` order
    centre: float  # summed standardised score mapped to 0.5
    spread: float  # standardised units per logistic unit
    heat_floor: float  # map value shown as no heat (a typical good cell, see ``evidence_map``)
    heat_level: float  # map value shown as 1.0 (as unusual as the threshold)
    settings: AnomalySettings
    last_projection: np.ndarray | None  # (C_last, last_features), see ``random_last_projection``

    @property
    def patch_count(self) -> int:
        return sum(len(m.cells) for m in self.memories.values())

    def features(self, maps: FeatureMaps, family: str) -> np.ndarray:
        return patch_features(maps, self.settings, self.last_projection, family)

    def unit_scores(self, standardised: np.ndarray) -> np.ndarray:
        """Summed standardised scores -> 0..1 anomaly scores (0.5 at ``centre``)."""
        z = np.clip((np.asarray(standardised, np.float64) - self.centre) / self.spread, -50, 50)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def heat(self, anomaly_map: np.ndarray) -> np.ndarray:
        """An anomaly map in heatmap units: 0 at a typical good cell, 1.0 at the score's 0.5."""
        return np.maximum(anomaly_map - self.heat_floor, 0) / max(self.heat_level - self.heat_floor, 1e-6)

    def score(self, maps: FeatureMaps) -> tuple[np.ndarray, np.ndarray]:
        """0..1 scores and anomaly maps (see ``evidence_map``) of a batch."""
        total, distances = 0.0, {}
        for family, memory in self.memories.items():
            distances[family] = memory.distance_maps(self.features(maps, family))
            raw = self.settings.image_scores(family, distances[family])
            total = total + self.settings.weight(family) * memory.standardised(raw)
        return self.unit_scores(total), evidence_map(distances, self.memories, self.settings)

    def save(self, folder: Path) -> None:
        tensors = {("memory" if family == GLOBAL else f"{family}_memory"): m.cells
                   for family, m in self.memories.items()}
        if self.last_projection is not None:
            tensors["last_projection"] = self.last_projection
        save_file(tensors, str(folder / MEMORY_FILE),
                  metadata={"centre": repr(self.centre), "spread": repr(self.spread),
                            "floor": repr(self.heat_floor), "heat_level": repr(self.heat_level),
                            "standardisation": json.dumps({f: [m.mean, m.std]
                                                           for f, m in self.memories.items()}),
                            "settings": json.dumps(self.settings.to_json())})

    @classmethod
    def load(cls, folder: Path) -> AnomalyModel:
        """A saved model, refused unless its arrays, shapes, statistics and settings are sound."""
        path = folder / MEMORY_FILE
        tensors, meta = read_model_file(path)
        settings = _settings(path, meta_json(path, meta, "settings"))
        names = {family: "memory" if family == GLOBAL else f"{family}_memory" for family in settings.families}
        check_tensor_names(path, tensors, {*names.values(), *(["last_projection"] if settings.last_features
                                                               else [])})
        # earlier versions: one memory, raw scores not standardised, heat up to the centre
        stats = meta_json(path, meta, "standardisation", '{"global": [0.0, 1.0]}')
        if not (isinstance(stats, dict) and all(
                isinstance(stats.get(f), list) and len(stats[f]) == 2 and all(
                    type(v) in (int, float) and np.isfinite(v) for v in stats[f]) and stats[f][1] > 0
                for f in names)):
            raise DamagedModel(path, "'standardisation' is not a finite mean and positive spread each")
        centre = meta_number(path, meta, "centre")
        model = cls({family: PatchMemory(tensors[name], float(stats[family][0]), float(stats[family][1]),
                                         settings.blur(family)) for family, name in names.items()},
                    centre, meta_number(path, meta, "spread"), meta_number(path, meta, "floor"),
                    meta_number(path, meta, "heat_level", centre), settings,
                    tensors.get("last_projection"))
        projection = model.last_projection
        if any(m.cells.ndim != 2 or not len(m.cells) for m in model.memories.values()) or (
                projection is not None and (projection.ndim != 2
                                            or projection.shape[1] != settings.last_features)):
            raise DamagedModel(path, "its arrays' shapes do not fit together")
        if not model.spread > 0:
            raise DamagedModel(path, "'spread' is not positive")
        return model


def _settings(path: Path, data: object) -> AnomalySettings:
    """A version's settings, refused unless each has the type of its default and is not negative."""
    if not isinstance(data, dict):
        raise DamagedModel(path, "'settings' is not a JSON object")
    try:
        settings = AnomalySettings.from_json(data)
    except (TypeError, ValueError):
        raise DamagedModel(path, "'settings' name an unknown method or setting") from None
    for f in fields(AnomalySettings):
        value, default = getattr(settings, f.name), f.default
        wanted = (int, float) if type(default) is float else (type(default),)
        if type(value) not in wanted or not np.isfinite(value) or value < 0:
            raise DamagedModel(path, f"setting '{f.name}' is not a number of its kind, 0 or more")
    return settings


def evidence_map(distances: dict[str, np.ndarray], memories: dict[str, PatchMemory],
                 settings: AnomalySettings) -> np.ndarray:
    """(N, H, W) distance maps per memory -> one (N, H, W) map on the finest grid: each memory's
    distances in its standardised units, weighted as in the image score, so the map shows what
    drove the score (the global map alone peaked up to 98 px beside a small blot; the local map
    alone found magnetic_tile's defect pixels worse: pixel ROC AUC 0.834 against 0.886 for this
    sum). With one memory of earlier versions (mean 0, std 1) it is the raw distance map."""
    grid = max((d.shape[1:] for d in distances.values()), key=lambda hw: hw[0] * hw[1])
    total = 0.0
    for family, d in distances.items():
        z = memories[family].standardised(d).astype(np.float32) * settings.weight(family)
        total = total + (z if z.shape[1:] == grid else np.stack(
            [cv2.resize(m, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR) for m in z]))
    return total


def fit_memory(features: dict[str, np.ndarray], sources: np.ndarray, originals: np.ndarray,
               settings: AnomalySettings, last_projection: np.ndarray | None, seed: int,
               report: Callable[[str, int, int], None]) -> tuple[AnomalyModel, np.ndarray]:
    """Build each memory from the patch features of every view and calibrate on held-out photos.

    ``features[family]`` is (V, H, W, C) for V views, made with ``last_projection``; ``sources[v]``
    is the photo a view shows and ``originals`` the view index of each photo itself. Returns the
    model and each photo's held-out summed standardised score (scored against memories without
    any patch from that photo's views).
    """
    memories, total, held_out_maps = {}, np.zeros(len(originals)), {}
    for family in settings.families:
        views = features[family]
        v, h, w, c = views.shape
        patches = views.reshape(-1, c)
        size = settings.local_memory_size if family == LOCAL else settings.memory_size
        stage = f"building the {family} memory"
        chosen = greedy_coreset(patches, size, settings.projection, seed,
                                lambda done, all_: report(stage, done, all_))
        report(stage, 1, 1)
        memory_source = np.repeat(sources, h * w)[chosen]
        memory = PatchMemory(patches[chosen], 0.0, 1.0, settings.blur(family))
        held_out = np.zeros((len(originals), h, w), np.float32)
        for i, view in enumerate(originals):
            held_out[i] = memory.distance_maps(views[view:view + 1],
                                               np.flatnonzero(memory_source == sources[view]))[0]
            report(f"validating the {family} memory on held-out good photos", i + 1, len(originals))
        raw = settings.image_scores(family, held_out)
        memory.mean, memory.std = float(raw.mean()), float(max(raw.std(), 1e-3 * abs(raw.mean()), 1e-6))
        memories[family] = memory
        total = total + settings.weight(family) * memory.standardised(raw)
        held_out_maps[family] = held_out
    centre = float(total.mean() + settings.good_spreads * total.std())
    spread = max((centre - float(np.median(total))) / 3.0, 1e-3)
    floor = float(np.median(evidence_map(held_out_maps, memories, settings)))
    model = AnomalyModel(memories, centre, spread, floor, centre, settings, last_projection)
    return model, total
