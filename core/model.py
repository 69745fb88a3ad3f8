"""The classifier head on top of a frozen backbone, and its exact, backward-free Grad-CAM.

Pooled features are ``[mean(last map), mean(mid map), max(mid map)]``, standardised, then one
linear layer with a softmax. Because the head is pooling followed by an affine map, the gradient
of a logit with respect to each feature map is known in closed form: Grad-CAM's channel weights
are the linear weights divided by the map area (plus the max-pooled weights for the mid map), so
the heatmap costs a weighted channel sum, with no backward pass through the backbone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from core.errors import InspectorError

WEIGHTS_FILE = "head.safetensors"


def read_model_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors model file's arrays and metadata (never unpickles anything)."""
    with safe_open(str(path), "numpy") as f:
        meta: dict[str, str] = f.metadata() or {}
    return load_file(str(path)), meta


def pool_features(mid: np.ndarray, last: np.ndarray) -> np.ndarray:
    """(N, C, H, W) maps -> (N, D) pooled features, the head's input."""
    return np.concatenate([last.mean((2, 3)), mid.mean((2, 3)), mid.max((2, 3))], axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@dataclass
class ClassifierHead:
    """Standardisation plus a linear layer over pooled features; ``classes[good_index]`` passes."""

    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # (n_classes, D)
    bias: np.ndarray  # (n_classes,)
    last_channels: int
    cam_scale: float = 1.0

    @property
    def good_index(self) -> int:
        return self.classes.index("good")

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std) @ self.weight.T + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))

    def defect_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """The probability of any defect: 1 - P(good). Compared with the tool's threshold."""
        return 1.0 - probabilities[:, self.good_index]

    def top_defect(self, probabilities: np.ndarray) -> np.ndarray:
        defect = probabilities.copy()
        defect[:, self.good_index] = -1
        return defect.argmax(axis=1)

    def gradcam(self, mid: np.ndarray, last: np.ndarray, target: int) -> np.ndarray:
        """Grad-CAM of ``logit[target] - logit[good]`` for one image, at the mid map's resolution.

        Returns evidence for the defect in logit units per location, clipped at zero, divided by
        ``cam_scale`` (fixed at training) so that 1.0 means "as strong as a typical defect".
        """
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
        return np.maximum(cam, 0) / self.cam_scale

    def save(self, folder: Path) -> None:
        save_file({"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias},
                  str(folder / WEIGHTS_FILE),
                  metadata={"classes": json.dumps(list(self.classes)),
                            "last_channels": str(self.last_channels),
                            "cam_scale": repr(self.cam_scale)})

    @classmethod
    def load(cls, folder: Path) -> ClassifierHead:
        path = folder / WEIGHTS_FILE
        try:
            tensors, meta = read_model_file(path)
            head = cls(tuple(json.loads(meta["classes"])), tensors["mean"], tensors["std"],
                       tensors["weight"], tensors["bias"], int(meta["last_channels"]),
                       float(meta["cam_scale"]))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise InspectorError(f"model file {path} is damaged or incomplete ({exc}); "
                                 "activate another version or retrain") from exc
        if head.weight.shape != (len(head.classes), head.mean.shape[0]):
            raise InspectorError(f"model file {path} has inconsistent shapes; retrain the tool")
        return head
