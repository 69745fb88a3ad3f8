"""The classifier head on top of a frozen backbone, and its exact, backward-free Grad-CAM.

Two kinds of evidence are added in logit space. Global: pooled features ``[mean(last map),
mean(mid map), max(mid map)]``, standardised, then one linear layer per class. Local: a linear map
of every cell of the mid-level (stride-16) map, averaged over its 3x3 neighbourhood, gives a defect
evidence map, and the mean of its ``patch_top`` highest cells is added to every defect class. The
local part finds a small crack or blowhole that global pooling dilutes; it is trained as
multiple-instance learning: a defect photo must have some defective cells, a good photo none.

Both parts are linear maps of feature maps followed by pooling, so the gradient of a logit with
respect to each map is known in closed form: Grad-CAM's channel weights are the linear weights
divided by the map area (plus the max-pooled weights for the mid map), and the local part's
evidence map is its own class activation map. The heatmap costs a few weighted channel sums, with
no backward pass through the backbone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file
from torch.nn import functional as F

from core.engine.kinds.classifier import WEIGHTS_FILE
from core.errors import InspectorError, quoted

if TYPE_CHECKING:
    from core.engine.runtime import FeatureMaps

MAX_MODEL_BYTES = 256 * 1024 * 1024  # a head is a few hundred kB, an anomaly memory tens of MB
_HEAD_TENSORS = {"mean", "std", "weight", "bias"}


class DamagedModel(InspectorError):
    """A model file that cannot be trusted: ``problem`` says why (an import words its own advice)."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"model file {path} is damaged ({problem}): activate another version or retrain")
        self.path, self.problem = path, problem


def read_model_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors model file's arrays and metadata (never unpickles anything), refused unless
    every array is float32 and finite: a NaN weight makes every score NaN, and NaN is never
    above a threshold, so every part would PASS. Sizes and types are read from the header before
    any array is."""
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise DamagedModel(path, f"{size // 2**20} MB, more than {MAX_MODEL_BYTES // 2**20} MB")
        with safe_open(str(path), "numpy") as f:
            meta: dict[str, str] = f.metadata() or {}
            dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
        wrong = sorted(name for name, dtype in dtypes.items() if dtype != "F32")
        if wrong:
            raise DamagedModel(path, f"{quoted(', '.join(wrong))} not float32")
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise DamagedModel(path, quoted(str(exc))) from None
    for name, array in tensors.items():
        if not np.isfinite(array).all():
            raise DamagedModel(path, f"'{name}' holds values that are not finite numbers")
    return tensors, meta


def check_tensor_names(path: Path, tensors: dict[str, np.ndarray], required: set[str]) -> None:
    """Refuse a model file whose arrays are not exactly those of its kind."""
    found = set(tensors)
    if found != required:
        missing, extra = sorted(required - found), sorted(found - required)
        raise DamagedModel(path, "; ".join(([f"lacks {quoted(', '.join(missing))}"] if missing else [])
                                      + ([f"holds unknown {quoted(', '.join(extra))}"] if extra else [])))


def meta_number(path: Path, meta: dict[str, str], key: str, default: float | None = None,
                kind: type = float) -> float:
    """A finite number from a model file's metadata, or ``DamagedModel``."""
    text = meta.get(key)
    if text is None and default is not None:
        return kind(default)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise DamagedModel(path, f"'{key}' is not a number") from None
    if not math.isfinite(value):
        raise DamagedModel(path, f"'{key}' is not a finite number")
    return value


def meta_json(path: Path, meta: dict[str, str], key: str, default: str | None = None) -> object:
    """A JSON value from a model file's metadata, or ``DamagedModel``."""
    try:
        return json.loads(meta[key] if default is None else meta.get(key, default))
    except KeyError:
        raise DamagedModel(path, f"'{key}' is missing") from None
    except (ValueError, RecursionError):
        raise DamagedModel(path, f"'{key}' is not valid JSON") from None


def pool_features(maps: FeatureMaps) -> np.ndarray:
    """A batch's maps -> (N, D) pooled features, the global part's input."""
    return np.concatenate([maps.last.mean((2, 3)), maps.mid.mean((2, 3)), maps.mid.max((2, 3))], axis=1)


def evidence_maps(mid: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    """(N, H, W) local defect evidence: a linear map of each mid cell's 3x3 neighbourhood average.

    Averaging is linear, so it is applied after the projection to one channel (the same numbers,
    a hundred times fewer operations).
    """
    out = np.empty((len(mid), *mid.shape[2:]), np.float32)
    for i in range(len(out)):
        projected = np.tensordot(weight, mid[i], axes=1).astype(np.float32)
        out[i] = cv2.blur(projected, (3, 3), borderType=cv2.BORDER_REFLECT) + bias
    return out


def neighbourhood_average(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> each cell averaged over its 3x3 neighbourhood, as ``evidence_maps`` does it
    (edge-replicated padding is OpenCV's reflected border for a 3x3 window)."""
    return F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def evidence_tensor(mid: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | float) -> torch.Tensor:
    """The torch twin of ``evidence_maps``, for ONNX export: (N, H * W) evidence."""
    return neighbourhood_average(F.conv2d(mid, weight.reshape(1, -1, 1, 1))).flatten(1) + bias


def top_mean(maps: np.ndarray, top: int) -> np.ndarray:
    """(N, H, W) -> each map's mean of its ``top`` highest cells."""
    flat = maps.reshape(len(maps), -1)
    top = min(max(top, 1), flat.shape[1])
    return np.partition(flat, flat.shape[1] - top, axis=1)[:, -top:].mean(1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@dataclass
class ClassifierHead:
    """Global linear layer over pooled features plus local evidence; ``classes[good_index]`` passes.

    ``patch_top`` = 0 means no local part (versions trained before it existed).
    """

    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # (n_classes, D)
    bias: np.ndarray  # (n_classes,)
    last_channels: int
    cam_scale: float = 1.0
    patch_weight: np.ndarray | None = None  # (C_mid,) of the evidence map, standardisation folded in
    patch_bias: float = 0.0
    patch_top: int = 0  # cells averaged into the local evidence

    @property
    def good_index(self) -> int:
        return self.classes.index("good")

    def evidence(self, mid: np.ndarray) -> np.ndarray | None:
        """(N, H, W) local defect evidence in logit units, or None without a local part."""
        if not self.patch_top:
            return None
        return evidence_maps(mid, self.patch_weight, self.patch_bias)

    def logits(self, pooled: np.ndarray, evidence: np.ndarray | None) -> np.ndarray:
        """Class logits from pooled features and the local evidence maps."""
        logits = ((pooled - self.mean) / self.std) @ self.weight.T + self.bias
        if evidence is not None:
            defects = np.arange(len(self.classes)) != self.good_index
            logits[:, defects] += top_mean(evidence, self.patch_top)[:, None]
        return logits

    def probabilities(self, maps: FeatureMaps) -> np.ndarray:
        return softmax(self.logits(pool_features(maps), self.evidence(maps.mid)))

    def defect_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """The probability of any defect: 1 - P(good). Compared with the tool's threshold."""
        return 1.0 - probabilities[:, self.good_index]

    def top_defect(self, probabilities: np.ndarray) -> np.ndarray:
        defect = probabilities.copy()
        defect[:, self.good_index] = -1
        return defect.argmax(axis=1)

    def gradcam(self, maps: FeatureMaps, row: int, target: int) -> np.ndarray:
        """Grad-CAM of ``logit[target] - logit[good]`` for image ``row``, on the mid map's grid.

        Returns evidence for the defect in logit units per location, clipped at zero, divided by
        ``cam_scale`` (fixed at training) so that 1.0 means "as strong as a typical defect". The
        local part adds each cell's evidence shared over the ``patch_top`` cells it is averaged in.
        """
        mid, last = maps.mid[row], maps.last[row]
        direction = (self.weight[target] - self.weight[self.good_index]) / self.std
        c_last, c_mid = self.last_channels, mid.shape[0]
        w_last = direction[:c_last] / (last.shape[1] * last.shape[2])
        w_mid = (direction[c_last:c_last + c_mid] + direction[c_last + c_mid:]) / (
            mid.shape[1] * mid.shape[2])
        cam_mid = np.tensordot(w_mid, mid, axes=1)
        cam_last = np.tensordot(w_last, last, axes=1)
        # Spread the last map's contributions over the finer mid grid, keeping their sum.
        area_ratio = (last.shape[1] * last.shape[2]) / (mid.shape[1] * mid.shape[2])
        cam = cam_mid + area_ratio * cv2.resize(cam_last, cam_mid.shape[::-1],
                                                interpolation=cv2.INTER_LINEAR)
        evidence = self.evidence(maps.mid[row:row + 1])
        if evidence is not None:
            cam = cam + np.maximum(evidence[0], 0) / self.patch_top
        return np.maximum(cam, 0) / self.cam_scale

    def save(self, folder: Path) -> None:
        tensors = {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias}
        if self.patch_top:
            tensors["patch_weight"] = self.patch_weight
        save_file(tensors, str(folder / WEIGHTS_FILE),
                  metadata={"classes": json.dumps(list(self.classes)),
                            "last_channels": str(self.last_channels),
                            "cam_scale": repr(self.cam_scale), "patch_bias": repr(self.patch_bias),
                            "patch_top": str(self.patch_top)})

    @classmethod
    def load(cls, folder: Path) -> ClassifierHead:
        """A saved head, refused unless its arrays, shapes and settings are all sound."""
        path = folder / WEIGHTS_FILE
        tensors, meta = read_model_file(path)
        top = meta_number(path, meta, "patch_top", 0, int)
        check_tensor_names(path, tensors, _HEAD_TENSORS | ({"patch_weight"} if top else set()))
        classes = meta_json(path, meta, "classes")
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                and "good" in classes and len(set(classes)) == len(classes) >= 2):
            raise DamagedModel(path, "'classes' is not a list of distinct class names with 'good'")
        head = cls(tuple(classes), tensors["mean"], tensors["std"], tensors["weight"], tensors["bias"],
                   meta_number(path, meta, "last_channels", kind=int),
                   meta_number(path, meta, "cam_scale"), tensors.get("patch_weight"),
                   meta_number(path, meta, "patch_bias", 0.0), top)
        features = head.mean.shape[0] if head.mean.ndim == 1 else 0
        mid = (features - head.last_channels) // 2
        if (head.std.shape != (features,) or head.weight.shape != (len(classes), features)
                or head.bias.shape != (len(classes),) or not 0 < mid
                or features != head.last_channels + 2 * mid
                or top and (head.patch_weight.shape != (mid,) or top > 4096) or top < 0):
            raise DamagedModel(path, "its arrays' shapes do not fit together")
        if not (head.std > 0).all() or not head.cam_scale > 0:
            raise DamagedModel(path, "a spread ('std' or 'cam_scale') is not positive")
        return head
