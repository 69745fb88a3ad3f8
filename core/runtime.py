"""Running a frozen backbone fast: ONNX Runtime on a CPU, PyTorch on a GPU when there is one.

The ONNX graph is built once per profile from the local checkpoint and cached in the workspace,
so a second start (or a second tool on the same profile) costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from core.backbones import Backbone, Profile, create_backbone, get_profile
from core.preprocessing import to_tensor
from core.workspace import atomic_write_bytes, workspace_root

_lock = threading.Lock()
_extractors: dict[str, FeatureExtractor] = {}
_OUTPUTS = ["mid", "last", "fine"]  # part of the cached graph's name: a change re-exports it


def export_backbone_onnx(backbone: Backbone, path: Path) -> None:
    """Write the backbone as an ONNX graph with a dynamic batch size (for TTA batches).

    The fine (stride-8) map is one more output of the same pass: it costs nothing to the
    classifier, which does not fetch it.
    """
    size = backbone.profile.input_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone, torch.zeros(1, 3, size, size), buffer, input_names=["image"],
                          output_names=_OUTPUTS, opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "n"}, **{name: {0: "n"} for name in _OUTPUTS}})
    atomic_write_bytes(path, buffer.getvalue())


def _weights_tag(profile: Profile) -> str:
    """Names the cached graph after the exact weights file, so a replaced file is re-exported."""
    stat = Path(profile.weights_file).stat()
    key = f"{profile.weights_file}:{stat.st_size}:{stat.st_mtime_ns}:{profile.input_size}:{_OUTPUTS}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class FeatureExtractor:
    """Maps a normalised batch (N, 3, S, S) to the backbone's (mid, last) feature maps, or with
    ``maps`` to (mid, last, fine) for anomaly tools."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            self._backbone = create_backbone(profile).to(self.device)
            self._session = None
            self.channels = self._backbone.channels
            self.fine_channels = self._backbone.fine_channels
        else:
            import onnxruntime as ort

            path = workspace_root() / "cache" / f"{profile.name}-{_weights_tag(profile)}.onnx"
            if not path.is_file():
                export_backbone_onnx(create_backbone(profile), path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
            mid, last, fine = self._session.get_outputs()
            self.channels = (int(mid.shape[1]), int(last.shape[1]))
            self.fine_channels = int(fine.shape[1])

    def tensor(self, images: list[np.ndarray]) -> np.ndarray:
        """BGR images as this profile's normalised input batch."""
        return to_tensor(images, self.profile.input_size, self.profile.mean, self.profile.std)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mid, last = self._run(batch, _OUTPUTS[:2])
        return mid, last

    def maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mid, last, fine) maps of one pass: what a frame with classifier and anomaly tools needs."""
        mid, last, fine = self._run(batch, _OUTPUTS)
        return mid, last, fine

    def _run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        if self._session is not None:
            return self._session.run(outputs, {"image": batch})
        with torch.no_grad():
            maps = dict(zip(_OUTPUTS, self._backbone(torch.from_numpy(batch).to(self.device))))
        return [maps[name].float().cpu().numpy() for name in outputs]


def get_extractor(profile: str | Profile) -> FeatureExtractor:
    """A shared, thread-safe extractor per profile (ONNX Runtime sessions allow concurrent runs)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    with _lock:
        if profile.name not in _extractors:
            _extractors[profile.name] = FeatureExtractor(profile)
        return _extractors[profile.name]
