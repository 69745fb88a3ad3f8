"""Running a frozen backbone fast: ONNX Runtime on a CPU, PyTorch on a GPU when there is one.

The ONNX graph is built once per profile and input shape from the local checkpoint and cached in
the workspace, so a second start (or a second tool on the same profile and shape) costs nothing.
One graph per shape, because the checkpoints' 'SAME' padding depends on each map's size.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from core.engine.backbones import OUTPUTS, Backbone, Profile, create_backbone, get_profile
from core.engine.preprocessing import InputShape, to_tensor
from core.store.workspace import atomic_write_bytes, workspace_root

_lock = threading.Lock()
_extractors: dict[str, FeatureExtractor] = {}


class FeatureMaps(NamedTuple):
    """The backbone's maps of one batch, each (N, C, H, W), in ``OUTPUTS`` order."""

    mid: np.ndarray  # stride 16: the classifier pools it, both kinds read its local patches
    last: np.ndarray  # last convolution (stride 32): pooled by the classifier
    fine: np.ndarray  # stride 8: optional anomaly patches

    def take(self, rows: slice | np.ndarray | list[int]) -> FeatureMaps:
        """The maps of some images of the batch."""
        return FeatureMaps(*(m[rows] for m in self))

    @classmethod
    def concatenate(cls, batches: list[FeatureMaps]) -> FeatureMaps:
        return cls(*(np.concatenate(maps) for maps in zip(*batches)))


def export_backbone_onnx(backbone: Backbone, path: Path, shape: InputShape) -> None:
    """Write the backbone as an ONNX graph for one input shape with a dynamic batch size (for
    TTA batches).

    Every map is an output of the same pass: a map a model does not need costs nothing more.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone, torch.zeros(1, 3, shape.height, shape.width), buffer,
                          input_names=["image"],
                          output_names=list(OUTPUTS), opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "n"}, **{name: {0: "n"} for name in OUTPUTS}})
    atomic_write_bytes(path, buffer.getvalue())


def _graph_tag(profile: Profile, shape: InputShape) -> str:
    """Names the cached graph after the exact weights file and shape, so a replaced file is
    re-exported."""
    stat = Path(profile.weights_file).stat()
    key = f"{profile.weights_file}:{stat.st_size}:{stat.st_mtime_ns}:{profile.input_size}:{list(OUTPUTS)}"
    if (shape.height, shape.width) != (profile.input_size, profile.input_size):
        key += f":{shape.height}x{shape.width}"  # the profile's square keeps its earlier name
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class FeatureExtractor:
    """Maps a normalised batch (N, 3, H, W) to the backbone's ``FeatureMaps``; ``channels`` gives
    each map's width."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.square = InputShape(profile.input_size, profile.input_size)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._sessions: dict[tuple[int, int], Any] = {}  # ONNX Runtime sessions by (H, W)
        self._sessions_lock = threading.Lock()
        self._backbone = create_backbone(profile).to(self.device) if self.device == "cuda" else None
        if self._backbone is not None:
            self.channels = self._backbone.channels
        else:
            outputs = self._session((self.square.height, self.square.width)).get_outputs()
            self.channels = {out.name: int(out.shape[1]) for out in outputs}

    def _session(self, size: tuple[int, int]) -> Any:
        """The ONNX Runtime session of one input size, exported and cached on first use."""
        with self._sessions_lock:
            if size not in self._sessions:
                import onnxruntime as ort

                shape = InputShape(*size)
                path = workspace_root() / "cache" / f"{self.profile.name}-{_graph_tag(self.profile, shape)}.onnx"
                if not path.is_file():
                    export_backbone_onnx(create_backbone(self.profile), path, shape)
                options = ort.SessionOptions()
                options.intra_op_num_threads = os.cpu_count() or 1
                options.log_severity_level = 3
                try:
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                except Exception:  # noqa: BLE001 - a damaged cached graph (a disk error): build it again
                    export_backbone_onnx(create_backbone(self.profile), path, shape)
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                self._sessions[size] = session
            return self._sessions[size]

    def tensor(self, images: list[np.ndarray], shape: InputShape | None = None) -> np.ndarray:
        """BGR images as this profile's normalised input batch of ``shape`` (default: its square)."""
        return to_tensor(images, shape or self.square, self.profile.mean, self.profile.std)

    def maps(self, batch: np.ndarray) -> FeatureMaps:
        """Every map of one pass: what a frame with classifier and anomaly tools needs."""
        if self._backbone is None:
            session = self._session((int(batch.shape[2]), int(batch.shape[3])))
            return FeatureMaps(*session.run(list(OUTPUTS), {"image": batch}))
        with torch.no_grad():
            maps = self._backbone(torch.from_numpy(batch).to(self.device))
        return FeatureMaps(*(m.float().cpu().numpy() for m in maps))

    def images(self, images: list[np.ndarray], shape: InputShape | None = None,
               batch: int = 16) -> FeatureMaps:
        """The maps of BGR images, in batches."""
        return FeatureMaps.concatenate([self.maps(self.tensor(images[start:start + batch], shape))
                                        for start in range(0, len(images), batch)])


def get_extractor(profile: str | Profile) -> FeatureExtractor:
    """A shared, thread-safe extractor per profile (ONNX Runtime sessions allow concurrent runs)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    with _lock:
        if profile.name not in _extractors:
            _extractors[profile.name] = FeatureExtractor(profile)
        return _extractors[profile.name]
